from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from harness import lifecycle, phases, proc, report, verify
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
    scenario: Any = SimpleNamespace(tests="tests", resolve=lambda p: tmp_path / p)

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
