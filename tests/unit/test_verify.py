from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from harness import lifecycle, node_packages, phases, proc, report, verify
from harness.report import PhaseResult
from harness.spec import parse_scenario
from harness.verify import VerifyResult, pytest_argv, read_junit

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" tests="4" failures="1" skipped="1" errors="0">
<testcase classname="test_common" name="test_users[ssh://mgmt01]" time="0.5"/>
<testcase classname="test_common" name="test_hosts[ssh://gpu01]" time="0.1">
  <failure message="AssertionError: gpu01 does not resolve mgmt01">assert False</failure></testcase>
<testcase classname="test_common" name="test_gpu[ssh://gpu01]" time="0.0"><skipped message="no GPU"/></testcase>
<testcase classname="test_common" name="test_time[ssh://mgmt01]" time="0.2"/>
</testsuite></testsuites>"""


def test_junit_is_read_as_data(tmp_path: Path) -> None:
    f = tmp_path / "j.xml"
    f.write_text(JUNIT)
    passed, failed, skipped, failures = read_junit(f)
    assert (passed, failed, skipped) == (2, 1, 1)
    assert failures[0].name == "test_common::test_hosts[ssh://gpu01]"
    assert "does not resolve mgmt01" in failures[0].message


def test_pytest_runs_over_plain_ssh_with_the_runs_config(tmp_path: Path) -> None:
    argv = pytest_argv(tmp_path, ["mgmt01", "gpu01"], tmp_path / "ssh_config", tmp_path / "j.xml", "users")
    assert "--hosts=ssh://mgmt01,ssh://gpu01" in argv and f"--ssh-config={tmp_path / 'ssh_config'}" in argv
    assert argv[argv.index("-p") + 1] == "harness.pytest_plugin" and argv[-2:] == ["-k", "users"]


def test_first_failed_phase_decides_the_exit_code() -> None:
    rep = report.RunReport("s", "s-000000", order=lifecycle.PHASES)
    rep.record(report.PhaseResult("up", "passed", 1))
    rep.record(report.PhaseResult("provision", "passed", 1))
    rep.record(report.PhaseResult("idempotence", "failed", 1, [report.Failure("node01: Stamp", "changed")]))
    rep.record(report.PhaseResult("verify", "failed", 1))
    err = lifecycle.first_failure(rep)
    assert err is not None and err.exit_code == 12 and "node01: Stamp" in str(err)
    ok = report.RunReport("s", "s-1", order=lifecycle.PHASES)
    ok.record(report.PhaseResult("up", "passed", 1))
    assert lifecycle.first_failure(ok) is None


def _eleven_tests(path: Path) -> Path:
    """A pytest JUnit file of 11 tests, 6 of them failed."""
    cases = [f'<testcase classname="test_slurm" name="test_ok[{i}]" time="0.1"/>' for i in range(5)]
    cases += [
        f'<testcase classname="test_slurm" name="test_bad[{i}]" time="0.3">'
        f'<failure message="AssertionError: node{i} is down">assert False</failure></testcase>'
        for i in range(6)
    ]
    path.write_text(
        f'<?xml version="1.0"?><testsuites><testsuite name="pytest">{"".join(cases)}</testsuite></testsuites>'
    )
    return path


def test_verify_phase_hands_its_junit_to_the_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    junit = _eleven_tests(tmp_path / "verify-junit.xml")
    passed, failed, skipped, failures = read_junit(junit)

    def fake_run_tests(tests_dir: Path, **kwargs: Any) -> VerifyResult:
        return VerifyResult(1, passed, failed, skipped, failures, junit, tmp_path / "verify.log", 4.0)

    monkeypatch.setattr(verify, "run_tests", fake_run_tests)
    run: Any = SimpleNamespace(path=tmp_path, nodes=["node01"], ssh_config=tmp_path / "ssh_config")
    scenario: Any = SimpleNamespace(
        tests="tests",
        resolve=lambda p: tmp_path / p,
        provision=None,
        source=tmp_path / "s.yml",
        base_dir=tmp_path,
        name="t",
    )

    phase, _ = phases.verify_phase(run, scenario)

    assert (phase.status, phase.junit, phase.detail) == ("failed", junit, "5 passed, 6 failed, 0 skipped")
    rep = report.RunReport("slurm", "r1", [report.PhaseResult("up", "passed", 1.0), phase])
    report.write_reports(rep, tmp_path / "reports")
    root = ET.parse(tmp_path / "reports" / "junit.xml").getroot()
    [suite] = root.findall("testsuite[@name='slurm.verify']")
    assert len(suite.findall("testcase")) == 11
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("11", "6", "0")
    assert sum(1 for _ in root.iter("testcase")) == int(root.get("tests", "0"))
    assert int(root.get("failures", "0")) == 6


def test_failures_of_silent_nodes_are_told_apart_from_failed_checks() -> None:
    from harness.report import Failure
    from harness.verify import only_unreachable, unreachable_nodes

    silent = [
        Failure("t::test_munge[gpu01]", "UNREACHABLE: gpu01 did not answer SSH\nAssertionError"),
        Failure("t::test_srun", "UNREACHABLE: gpu01, gpu02 did not answer SSH\nrc 255"),
    ]
    assert unreachable_nodes(silent) == ["gpu01", "gpu02"]
    assert only_unreachable(silent)
    assert not only_unreachable([*silent, Failure("t::test_sinfo", "assert 'idle' in 'down'")])
    assert not only_unreachable([])


def test_without_an_ssh_config_pytest_reaches_the_hosts_through_the_inventory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inv = tmp_path / "site.yml"
    argv = pytest_argv(tmp_path, ["dgx01", "dgx02"], None, tmp_path / "j.xml", None, inv)
    assert "--hosts=ansible://dgx01,ansible://dgx02" in argv and f"--ansible-inventory={inv}" in argv
    assert not [a for a in argv if a.startswith("--ssh-config")]
    seen: dict[str, Any] = {}

    def fake_run_logged(argv: list[str], log_path: Path, *, env: dict[str, str], cwd: Path) -> Any:
        seen.update(argv=argv, env=env)
        return SimpleNamespace(rc=4, duration=0.1)

    monkeypatch.setattr(proc, "run_logged", fake_run_logged)
    verify.run_tests(tmp_path, nodes=["dgx01"], inventory=inv, ssh_config=None, out_dir=tmp_path / "out")
    # Empty, not inherited from the caller's shell: the plugin then uses the inventory's own settings.
    assert seen["env"]["HARNESS_SSH_CONFIG"] == "" and seen["env"]["HARNESS_INVENTORY"] == str(inv)


# --- two passes: the quick verdict, then the disturbing tests -------------------------------------

FAULTS = """\
import pytest


def test_gpu():
    pytest.skip("no GPU")


@pytest.mark.disturbing
def test_reboot():
    pass


@pytest.mark.disturbing
def test_restart():
    assert False, "slurmctld did not come back"
"""


def _tests_dir(root: Path, *, with_faults: bool = True) -> Path:
    """A scenario's tests that need no node: two that read state, a skip and, unless told
    otherwise, two marked disturbing (one fails). --strict-markers: the plugin registers the marker."""
    tests = root / "tests"
    tests.mkdir(parents=True)
    (tests / "pytest.ini").write_text("[pytest]\naddopts = --strict-markers\n")
    (tests / "test_state.py").write_text("def test_reads():\n    pass\n\n\ndef test_reads_more():\n    pass\n")
    if with_faults:
        (tests / "test_faults.py").write_text(FAULTS)
    return tests


def _verify(
    root: Path, tests: Path, select: str | None = None, quick: bool = False
) -> tuple[PhaseResult, VerifyResult, list[str]]:
    """verify_phase for real (no node is contacted: no test uses one, and without the run's
    ssh_config a failed test is not followed by an SSH probe); and what it said, each line checked
    to come before the second pass began."""
    run: Any = SimpleNamespace(path=root / "run", nodes=["node01"], ssh_config=None)
    scenario: Any = SimpleNamespace(
        tests="tests", resolve=lambda p: tests, provision=None, source=root / "s.yml", base_dir=root, name="t"
    )
    said: list[str] = []

    def on_progress(phase: str, msg: str) -> None:
        assert phase == "verify" and not (root / "run" / "verify-junit-disturbing.xml").exists(), "said late"
        said.append(msg)

    phase, result = phases.verify_phase(run, scenario, select, on_progress, quick=quick)
    assert result is not None
    return phase, result, said


def _pytest_runs(root: Path) -> list[str]:
    """The pytest command lines verify.log records, one per pytest process."""
    return [line for line in (root / "run" / "logs" / "verify.log").read_text().splitlines() if line.startswith("$ ")]


def test_marker_expressions_are_and_ed_with_the_select_expression(tmp_path: Path) -> None:
    ssh_config, junit = tmp_path / "ssh_config", tmp_path / "j.xml"
    argv = pytest_argv(tmp_path, ["gpu01"], ssh_config, junit, "munge", marker="not disturbing")
    assert argv[-4:] == ["-m", "not disturbing", "-k", "munge"] and f"--junitxml={junit}" in argv
    listing = pytest_argv(
        tmp_path, ["gpu01"], ssh_config, None, None, marker="disturbing", collected=tmp_path / "ids", collect_only=True
    )
    assert "--collect-only" in listing and f"--harness-collected={tmp_path / 'ids'}" in listing
    assert listing[-2:] == ["-m", "disturbing"] and not [a for a in listing if a.startswith("--junitxml")]


def test_the_quick_verdict_is_said_first_then_the_full_verdict_is_both_passes(tmp_path: Path) -> None:
    phase, result, said = _verify(tmp_path, _tests_dir(tmp_path))

    assert said == ["quick verdict: 2 passed, 0 failed, 1 skipped (2 disturbing test(s) next)"]
    assert result.quick is not None and result.quick.ok and result.quick.counts == "2 passed, 0 failed, 1 skipped"
    assert result.disturbing == ["test_faults.py::test_reboot", "test_faults.py::test_restart"]
    assert (result.counts, result.ok, result.rc, result.partial) == ("3 passed, 1 failed, 1 skipped", False, 1, False)
    assert (phase.status, phase.partial, phase.not_run) == ("failed", False, [])
    assert phase.detail == "3 passed, 1 failed, 1 skipped (quick verdict first: 2 passed, 0 failed, 1 skipped)"
    assert [f.name for f in phase.failures] == ["test_faults::test_restart"]
    assert "slurmctld did not come back" in phase.failures[0].message
    # One JUnit file of both passes, under the name reports read.
    assert phase.junit == tmp_path / "run" / "verify-junit.xml"
    assert read_junit(phase.junit)[:3] == (3, 1, 1)
    runs = _pytest_runs(tmp_path)
    assert len(runs) == 3 and "--collect-only" in runs[0]
    assert runs[1].endswith("-m not disturbing") and runs[2].endswith("-m disturbing")
    # The first pass's own seconds, for the quick verdict's time (ci/bench.sh), in summary.json.
    assert phase.quick_seconds == result.quick.seconds and 0 < phase.quick_seconds < phase.seconds
    report.write_reports(report.RunReport("slurm", "r1", [phase]), tmp_path / "reports")
    summary = json.loads((tmp_path / "reports" / "summary.json").read_text())
    assert summary["phases"]["verify"]["quick_seconds"] == round(result.quick.seconds, 3)


def test_quick_stops_at_the_quick_verdict_and_the_report_names_what_was_left_out(tmp_path: Path) -> None:
    phase, result, said = _verify(tmp_path, _tests_dir(tmp_path), quick=True)

    assert said == ["quick verdict: 2 passed, 0 failed, 1 skipped (2 disturbing test(s) left for the full verdict)"]
    assert (
        result.partial and result.ok and result.counts == "2 passed, 0 failed, 1 skipped"
    )  # the failing one never ran
    assert (phase.status, phase.partial) == ("passed", True)
    assert phase.detail == (
        "quick verdict (partial): 2 passed, 0 failed, 1 skipped; left for the full verdict: 2 disturbing test(s)"
    )
    assert [(n.name, n.why) for n in phase.not_run] == [
        ("test_faults.py::test_reboot", "disturbing: left for the full verdict"),
        ("test_faults.py::test_restart", "disturbing: left for the full verdict"),
    ]
    assert phase.junit is not None and read_junit(phase.junit)[:3] == (2, 0, 1)
    assert len(_pytest_runs(tmp_path)) == 2  # what it left out is listed by collection, never run
    assert not (tmp_path / "run" / "verify-junit-disturbing.xml").exists()

    rep = report.RunReport("slurm", "r1", [report.PhaseResult("up", "passed", 1.0), phase])
    report.write_reports(rep, tmp_path / "reports")
    summary = json.loads((tmp_path / "reports" / "summary.json").read_text())
    assert summary["partial"] is True and summary["phases"]["verify"]["partial"] is True
    assert summary["phases"]["verify"]["not_run"] == [
        {"name": "test_faults.py::test_reboot", "why": "disturbing: left for the full verdict"},
        {"name": "test_faults.py::test_restart", "why": "disturbing: left for the full verdict"},
    ]
    assert "partial" not in summary["phases"]["up"]
    # verify is the quick pass itself: no quick_seconds of its own
    assert phase.quick_seconds is None and "quick_seconds" not in summary["phases"]["verify"]
    markdown = (tmp_path / "reports" / "summary.md").read_text()
    assert markdown.startswith("# slurm: passed (partial verdict)\n")
    assert "- verify: `test_faults.py::test_restart`: disturbing: left for the full verdict" in markdown
    # junit.xml: the tests that ran, and those left out as skipped, with the reason.
    [suite] = ET.parse(tmp_path / "reports" / "junit.xml").getroot().findall("testsuite[@name='slurm.verify']")
    left = {c.get("name"): c.find("skipped") for c in suite.findall("testcase[@classname='test_faults']")}
    assert {name: None if s is None else s.get("message") for name, s in left.items()} == {
        "test_gpu": "no GPU",
        "test_reboot": "disturbing: left for the full verdict",
        "test_restart": "disturbing: left for the full verdict",
    }
    assert (suite.get("tests"), suite.get("skipped"), suite.get("failures")) == ("5", "3", "0")


def test_select_narrows_both_passes_and_the_disturbing_list(tmp_path: Path) -> None:
    _, result, said = _verify(tmp_path, _tests_dir(tmp_path), select="reboot or reads_more")

    assert said == ["quick verdict: 1 passed, 0 failed, 0 skipped (1 disturbing test(s) next)"]
    assert result.disturbing == ["test_faults.py::test_reboot"]
    assert (result.counts, result.ok) == ("2 passed, 0 failed, 0 skipped", True)
    runs = _pytest_runs(tmp_path)
    assert len(runs) == 3 and all(run.endswith("-k reboot or reads_more") for run in runs)


def test_tests_that_never_name_the_marker_run_as_one_pytest_process(tmp_path: Path) -> None:
    for quick in (False, True):
        root = tmp_path / str(quick)
        phase, result, said = _verify(root, _tests_dir(root, with_faults=False), quick=quick)
        assert (result.counts, result.ok, result.partial, result.quick) == (
            "2 passed, 0 failed, 0 skipped",
            True,
            False,
            None,
        )
        assert said == [] and phase.detail == result.counts and not phase.partial
        [only] = _pytest_runs(root)
        assert "disturbing" not in only and "--collect-only" not in only
        assert phase.junit == root / "run" / "verify-junit.xml"


def test_the_slurm_scenarios_disturbing_tests_are_its_resilience_tests(tmp_path: Path) -> None:
    scenarios = Path(__file__).resolve().parents[2] / "scenarios"
    assert [d.parent.name for d in sorted(scenarios.glob("*/tests")) if verify.names_disturbing(d)] == ["slurm"]
    inv = tmp_path / "inventory.yml"
    nodes = ["login01", "mgmt01", "gpu01", "gpu02"]
    groups = {"login": nodes[:1], "mgmt": nodes[1:2], "gpu": nodes[2:]}
    children = {g: {"hosts": dict.fromkeys(ns)} for g, ns in groups.items()}
    inv.write_text(json.dumps({"all": {"hosts": dict.fromkeys(nodes), "children": children}}))
    ids = tmp_path / "ids"
    tests = scenarios / "slurm" / "tests"
    argv = pytest_argv(
        tests, nodes, tmp_path / "ssh_config", None, None, marker="disturbing", collected=ids, collect_only=True
    )
    res = proc.run(argv, cwd=tests, env={"HARNESS_INVENTORY": str(inv), "PYTHONDONTWRITEBYTECODE": "1"})
    assert res.rc == 0, res.describe()
    assert ids.read_text().splitlines() == [
        "test_resilience.py::test_a_running_job_survives_a_slurmctld_restart",
        "test_resilience.py::test_a_rebooted_gpu_node_comes_back_idle_with_its_nfs_mounts",
        "test_resilience.py::test_stopped_slurmd_marks_the_node_down_and_back",
        "test_resilience.py::test_nfs_mount_survives_a_server_restart",
    ]


# --- side by side: the undisturbing test files in parallel, the disturbing ones one by one ---------

MEET = """\
import os
import time
from pathlib import Path

import pytest

HERE = Path(__file__).parent


def _meet(me, other):
    # Passes only while the other file runs at the same time, in another process.
    (HERE / f"{me}.pid").write_text(str(os.getpid()))
    deadline = time.monotonic() + 60
    while not (HERE / f"{other}.pid").exists():
        assert time.monotonic() < deadline, f"{other} never ran beside {me}"
        time.sleep(0.1)
    assert (HERE / f"{other}.pid").read_text() != str(os.getpid())


def test_{me}():
    _meet("{me}", "{other}")


@pytest.mark.disturbing
def test_{me}_alone():
    # The disturbing pass: one process, so nobody runs beside it.
    (HERE / "{me}.alone").write_text(str(os.getpid()))
"""


def test_undisturbing_test_files_run_side_by_side_and_disturbing_ones_in_one_process(tmp_path: Path) -> None:
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "pytest.ini").write_text("[pytest]\naddopts = --strict-markers\n")
    for me, other in (("nodes", "cluster"), ("cluster", "nodes")):
        (tests / f"test_{me}.py").write_text(MEET.replace("{me}", me).replace("{other}", other))
    assert verify.side_by_side(tests) == 2 and verify.side_by_side(tests, limit=1) == 1

    phase, result, _ = _verify(tmp_path, tests)

    assert result.ok and result.counts == "4 passed, 0 failed, 0 skipped", phase.detail
    quick, disturbing = _pytest_runs(tmp_path)[1:]
    assert "-n 2 --dist loadfile -m not disturbing" in quick and " -n " not in disturbing
    # The two disturbing tests ran in the same process, after both quick ones.
    assert (tests / "nodes.alone").read_text() == (tests / "cluster.alone").read_text()


def test_a_single_test_file_runs_without_workers(tmp_path: Path) -> None:
    tests = _tests_dir(tmp_path, with_faults=False)
    assert verify.side_by_side(tests) == 1
    argv = pytest_argv(tests, ["n1"], tmp_path / "c", None, None, workers=1)
    assert "-n" not in argv
    three = pytest_argv(tests, ["n1"], tmp_path / "c", None, None, workers=3)
    assert three[three.index("-n") : three.index("-n") + 4] == ["-n", "3", "--dist", "loadfile"]
    # Collecting never needs workers.
    assert "-n" not in pytest_argv(tests, ["n1"], tmp_path / "c", None, None, collect_only=True, workers=3)


# --- the quick verdict before the idempotence converge, verify completing it ----------------------


def _split(root: Path, tests: Path) -> tuple[PhaseResult, VerifyResult, PhaseResult, VerifyResult]:
    """The quick pass as the lifecycle's quick step runs it, then verify completing it."""
    run: Any = SimpleNamespace(path=root / "run", nodes=["node01"], ssh_config=None)
    scenario: Any = SimpleNamespace(
        tests="tests", resolve=lambda p: tests, provision=None, source=root / "s.yml", base_dir=root, name="t"
    )
    quick_phase, first = phases.verify_phase(run, scenario, None, None, quick=True)
    assert first is not None
    full_phase, result = phases.verify_phase(run, scenario, None, None, after=first)
    assert result is not None
    return quick_phase, first, full_phase, result


@pytest.mark.parametrize("with_faults", [True, False])
def test_verify_completing_an_earlier_quick_verdict_is_the_verdict_of_one_verify(
    tmp_path: Path, with_faults: bool
) -> None:
    """Split around the idempotence converge or not, the same tests give the same verdict, the same
    failures and the same JUnit; and no test runs twice."""
    _, plain, _ = _verify(tmp_path / "plain", _tests_dir(tmp_path / "plain", with_faults=with_faults))
    root = tmp_path / "split"
    _, first, phase, result = _split(root, _tests_dir(root, with_faults=with_faults))

    assert (result.counts, result.rc, result.ok) == (plain.counts, plain.rc, plain.ok)
    assert [f.name for f in result.failures] == [f.name for f in plain.failures]
    assert (
        read_junit(root / "run" / "verify-junit.xml")[:3]
        == read_junit(tmp_path / "plain" / "run" / "verify-junit.xml")[:3]
    )
    assert phase.status == ("failed" if with_faults else "passed") and not phase.partial
    runs = _pytest_runs(root)
    if with_faults:  # collect, the quick pass (in the quick step), then only the disturbing pass
        assert len(runs) == 3 and runs[1].endswith("-m not disturbing") and runs[2].endswith("-m disturbing")
        assert first.partial and result.quick is not None and result.quick.counts == "2 passed, 0 failed, 1 skipped"
    else:  # one pass was every test: verify carries it, no pytest of its own
        assert len(runs) == 1 and not first.partial and result is first
    # verify's seconds are its own (the quick pass was timed in its step), and it says what it carried
    assert phase.seconds <= result.seconds - first.seconds + 0.001
    assert "ran before the idempotence converge, which changed nothing" in phase.detail


def test_the_quick_step_runs_the_quick_pass_and_verify_reruns_everything_after_a_changing_idempotence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lifecycle: the quick verdict before the idempotence converge; when that converge changed
    something, the tests ran on a state that is gone, so verify runs every test again."""
    tests = _tests_dir(tmp_path)
    (tmp_path / "site.yml").write_text("- hosts: all\n  tasks: []\n")
    scenario = parse_scenario(
        "name: t\nnodes:\n  - name: node01\nprovision:\n  playbook: site.yml\ntests: tests\n", tmp_path / "s.yml"
    )
    assert scenario.tests is not None and scenario.resolve(scenario.tests) == tests
    run: Any = SimpleNamespace(path=tmp_path / "run", nodes=["node01"], ssh_config=None, run_id="t-1")
    monkeypatch.setattr(node_packages, "record_after_green", lambda *a, **k: None)
    # the quick step: collect the disturbing ones, the quick pass; then verify: only the disturbing pass,
    # or all three again
    for idempotence, pytest_runs in (("passed", 2 + 1), ("failed", 2 + 3)):
        ctx = lifecycle.RunContext(scenario, run=run)
        ctx.results["up"] = report.PhaseResult("up", "passed")
        ctx.results["provision"] = report.PhaseResult("provision", "passed")
        (tmp_path / "run" / "logs" / "verify.log").unlink(missing_ok=True)
        quick_step = next(s for s in lifecycle.SEQUENCE if s.name == "quick")
        verify_step = next(s for s in lifecycle.SEQUENCE if s.name == "verify")
        assert quick_step.applies(ctx)
        quick = quick_step.work(ctx)
        assert (quick.status, quick.partial) == ("passed", False), quick
        assert quick.detail == "quick verdict: 2 passed, 0 failed, 1 skipped; 2 disturbing test(s) left for verify"
        ctx.results["idempotence"] = report.PhaseResult("idempotence", idempotence)  # type: ignore[arg-type]
        verdict = verify_step.work(ctx)
        assert (verdict.status, verdict.partial) == ("failed", False)
        assert verdict.detail.startswith("3 passed, 1 failed, 1 skipped")
        assert len(_pytest_runs(tmp_path)) == pytest_runs, idempotence
