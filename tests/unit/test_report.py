from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from harness import report
from harness.lifecycle import PHASES
from harness.report import (
    Failure,
    PhaseResult,
    format_seconds,
    mask_secrets,
    redact,
    render_markdown,
    secret_values,
    write_reports,
)


def RunReport(
    scenario: str,
    run_id: str,
    phases: list[PhaseResult] | None = None,
    metadata: dict[str, Any] | None = None,
) -> report.RunReport:
    """A report of the lifecycle's sequence, as `harness run` makes them."""
    return report.RunReport(scenario, run_id, phases or [], metadata or {}, order=PHASES)


def _report() -> report.RunReport:
    return RunReport(
        scenario="tiny",
        run_id="20250101-abc",
        phases=[
            PhaseResult("up", "passed", 62.4),
            PhaseResult(
                "provision",
                "failed",
                30.25,
                [
                    Failure(
                        "node2: Check the scratch disk", "non-zero return code\nstderr:\nscratch \x1b[31mdisk\x1b[0m!"
                    ),
                    Failure("node1: Fail on purpose", "non-zero return code"),
                ],
                "2 hosts: ok=7 changed=3 failed=2",
            ),
            PhaseResult("idempotence", "skipped"),
            PhaseResult("verify", "skipped"),
            PhaseResult("destroy", "passed", 5.0),
        ],
        metadata={
            "box": "harness/debian12",
            "extra_vars": {"slurm_version": "23.11", "munge_key": "AAAA", "db_password": "hunter2"},
            "api_token": "t0k3n",
            "nodes": [{"name": "gpu01", "ssh_private_key": "/k"}],
        },
    )


def test_summary_json_has_one_entry_per_phase_with_failures(tmp_path: Path) -> None:
    paths = write_reports(_report(), tmp_path / "reports")

    assert [p.name for p in paths] == ["summary.json", "junit.xml", "summary.md"]
    data = json.loads((tmp_path / "reports" / "summary.json").read_text())
    assert data["scenario"] == "tiny"
    assert data["run_id"] == "20250101-abc"
    assert data["status"] == "failed"
    assert list(data["phases"]) == ["up", "provision", "quick", "idempotence", "verify", "destroy"]
    assert data["phases"]["up"] == {"status": "passed", "seconds": 62.4, "failures": [], "detail": "", "retries": []}
    assert data["phases"]["provision"]["detail"] == "2 hosts: ok=7 changed=3 failed=2"
    assert data["phases"]["idempotence"]["status"] == "skipped"
    second = data["phases"]["provision"]["failures"][1]
    assert second == {"name": "node1: Fail on purpose", "message": "non-zero return code"}


def test_secrets_never_reach_the_reports(tmp_path: Path) -> None:
    write_reports(_report(), tmp_path)

    data = json.loads((tmp_path / "summary.json").read_text())
    assert data["metadata"] == {
        "box": "harness/debian12",
        "extra_vars": {"slurm_version": "23.11"},
        "nodes": [{"name": "gpu01"}],
    }
    for name in ("summary.json", "junit.xml", "summary.md"):
        text = (tmp_path / name).read_text()
        for secret in ("hunter2", "t0k3n", "AAAA", "munge_key", "db_password"):
            assert secret not in text, (name, secret)


def test_junit_counts_and_testcases(tmp_path: Path) -> None:
    write_reports(_report(), tmp_path)
    root = ET.parse(tmp_path / "junit.xml").getroot()

    assert root.tag == "testsuites"
    [suite] = root.findall("testsuite")
    assert suite.get("name") == "tiny"
    # up, quick, idempotence, verify, destroy as phases; provision failed: its 2 failing tasks, counted once.
    counts = [suite.get(a) for a in ("tests", "failures", "skipped", "errors")]
    assert counts == ["7", "2", "3", "0"]
    assert float(suite.get("time", "0")) == pytest.approx(62.4 + 30.25 + 5.0)
    assert root.get("tests") == "7" and root.get("failures") == "2"
    cases = {(c.get("classname"), c.get("name")): c for c in suite.findall("testcase")}
    assert len(cases) == 7
    assert cases[("tiny", "up")].find("failure") is None and cases[("tiny", "up")].get("time") == "62.400"
    assert cases[("tiny", "verify")].find("skipped") is not None
    assert ("tiny", "provision") not in cases
    task = cases[("tiny.provision", "node2: Check the scratch disk")].find("failure")
    assert task is not None
    assert task.get("message") == "non-zero return code"
    assert task.text is not None and "scratch disk" in task.text and "\x1b" not in task.text
    assert suite.find("properties/property[@name='run_id']").get("value") == "20250101-abc"  # type: ignore[union-attr]


def _verify_junit(path: Path, passed: int, failed: int, skipped: int) -> Path:
    cases = [f'<testcase classname="test_a" name="test_ok_{i}" time="0.1"/>' for i in range(passed)]
    cases += [
        f'<testcase classname="test_a" name="test_bad_{i}" time="0.2"><failure message="no">x</failure></testcase>'
        for i in range(failed)
    ]
    cases += [
        f'<testcase classname="test_b" name="test_skip_{i}"><skipped message="no GPU"/></testcase>'
        for i in range(skipped)
    ]
    path.write_text(
        f'<?xml version="1.0"?><testsuites><testsuite name="pytest" tests="{len(cases)}">{"".join(cases)}'
        "</testsuite></testsuites>"
    )
    return path


def _counts(el: ET.Element) -> tuple[int, int, int, int]:
    return tuple(int(el.get(k, "-1")) for k in ("tests", "failures", "errors", "skipped"))  # type: ignore[return-value]


def _assert_counts_match_testcases(root: ET.Element) -> None:
    totals = [0, 0, 0, 0]
    for suite in root.findall("testsuite"):
        cases = suite.findall("testcase")
        outcome = [next((t for t in ("failure", "error", "skipped") if c.find(t) is not None), "") for c in cases]
        expected = (len(cases), outcome.count("failure"), outcome.count("error"), outcome.count("skipped"))
        assert _counts(suite) == expected, suite.get("name")
        totals = [a + b for a, b in zip(totals, expected, strict=True)]
    assert _counts(root) == tuple(totals)


def test_junit_takes_every_verify_test_into_its_own_suite(tmp_path: Path) -> None:
    junit = _verify_junit(tmp_path / "verify-junit.xml", passed=4, failed=6, skipped=1)
    verify = PhaseResult(
        "verify", "failed", 12.5, [Failure(f"test_a::test_bad_{i}", "no") for i in range(6)], junit=junit
    )
    report = RunReport(
        "tiny", "r1", [PhaseResult("up", "passed", 1.0), PhaseResult("provision", "passed", 2.0), verify]
    )
    write_reports(report, tmp_path / "out")
    root = ET.parse(tmp_path / "out" / "junit.xml").getroot()

    main, tests = root.findall("testsuite")
    assert tests.get("name") == "tiny.verify"
    assert len(tests.findall("testcase")) == 11
    assert _counts(tests) == (11, 6, 0, 1)
    assert float(tests.get("time", "0")) == pytest.approx(12.5)
    assert {c.get("name") for c in main.findall("testcase")} == {"up", "provision", "quick", "idempotence", "destroy"}
    # 11 tests + up, provision, quick, idempotence (skipped), destroy (skipped)
    assert _counts(root) == (16, 6, 0, 4)
    _assert_counts_match_testcases(root)
    bad = tests.find("testcase[@name='test_bad_0']/failure")
    assert bad is not None and bad.get("message") == "no"


def test_junit_verify_failures_the_file_does_not_name_get_their_own_case(tmp_path: Path) -> None:
    junit = _verify_junit(tmp_path / "verify-junit.xml", passed=0, failed=0, skipped=0)
    verify = PhaseResult("verify", "failed", 1.0, [Failure("pytest", "no test was collected from tests/")], junit=junit)
    write_reports(RunReport("tiny", "r1", [verify]), tmp_path)
    root = ET.parse(tmp_path / "junit.xml").getroot()

    [case] = root.findall("testsuite[@name='tiny.verify']/testcase")
    assert (case.get("classname"), case.get("name")) == ("tiny.verify", "pytest")
    assert case.find("failure") is not None
    _assert_counts_match_testcases(root)


def test_tests_left_out_are_named_in_every_report_as_pytest_would_name_them(tmp_path: Path) -> None:
    junit = _verify_junit(tmp_path / "verify-junit.xml", passed=2, failed=0, skipped=0)
    left = [
        report.NotRun(
            "sub/test_faults.py::TestSlurm::test_restart[ssh://gpu01]", "disturbing: left for the full verdict"
        ),
        report.NotRun("test_reboot.py::test_reboot", "disturbing: left for the full verdict"),
    ]
    verify = PhaseResult("verify", "passed", 1.0, junit=junit, partial=True, not_run=left)
    full = RunReport("tiny", "r0", [PhaseResult("verify", "passed", 1.0, junit=junit)])
    assert full.to_dict()["partial"] is False and "partial" not in render_markdown(full)
    write_reports(RunReport("tiny", "r1", [verify]), tmp_path)

    root = ET.parse(tmp_path / "junit.xml").getroot()
    skipped = root.findall("testsuite[@name='tiny.verify']/testcase/skipped/..")
    assert [(c.get("classname"), c.get("name")) for c in skipped] == [
        ("sub.test_faults.TestSlurm", "test_restart[ssh://gpu01]"),
        ("test_reboot", "test_reboot"),
    ]
    _assert_counts_match_testcases(root)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["partial"] is True
    assert [n["name"] for n in summary["phases"]["verify"]["not_run"]] == [n.name for n in left]
    markdown = (tmp_path / "summary.md").read_text()
    assert markdown.startswith("# tiny: passed (partial verdict)")
    assert "## Not run" in markdown and "- verify: `test_reboot.py::test_reboot`: disturbing: left" in markdown


def test_junit_without_a_readable_verify_file_lists_verify_failures(tmp_path: Path) -> None:
    verify = PhaseResult(
        "verify", "failed", 1.0, [Failure("pytest", "pytest did not run")], junit=tmp_path / "gone.xml"
    )
    write_reports(RunReport("tiny", "r1", [verify]), tmp_path)
    root = ET.parse(tmp_path / "junit.xml").getroot()

    [suite] = root.findall("testsuite")
    assert suite.find("testcase[@classname='tiny.verify'][@name='pytest']/failure") is not None
    assert suite.find("testcase[@name='verify']") is None
    _assert_counts_match_testcases(root)


def test_junit_failed_phase_without_named_failures_is_one_failed_case(tmp_path: Path) -> None:
    report = RunReport(
        "tiny",
        "r1",
        [
            PhaseResult("up", "failed", 3.0, [Failure("up", "vagrant up failed: no box")]),
            PhaseResult("idempotence", "failed", 2.0),
        ],
    )
    write_reports(report, tmp_path)
    root = ET.parse(tmp_path / "junit.xml").getroot()

    [suite] = root.findall("testsuite")
    cases = {(c.get("classname"), c.get("name")): c for c in suite.findall("testcase")}
    assert len(cases) == 6  # every standard phase once
    up = cases[("tiny", "up")]  # a failure named like its phase keeps the phase's test id
    assert up.get("time") == "3.000"
    assert up.find("failure") is not None and up.find("failure").get("message") == "vagrant up failed: no box"  # type: ignore[union-attr]
    idem = cases[("tiny", "idempotence")].find("failure")
    assert idem is not None and idem.get("message") == "phase idempotence failed"
    assert _counts(root) == (6, 2, 0, 4)
    _assert_counts_match_testcases(root)


def test_junit_is_valid_xml_even_with_control_characters(tmp_path: Path) -> None:
    report = RunReport("tiny", "r1", [PhaseResult("verify", "failed", 1.0, [Failure("test_x", "bad \x00\x07 bytes")])])
    write_reports(report, tmp_path)

    root = ET.parse(tmp_path / "junit.xml").getroot()
    failure = root.find(".//testcase[@name='test_x']/failure")
    assert failure is not None and failure.text == "bad  bytes"


def test_markdown_summary_table_and_failures(tmp_path: Path) -> None:
    write_reports(_report(), tmp_path)
    md = (tmp_path / "summary.md").read_text()

    assert md.startswith("# tiny: failed\n")
    assert "| Phase | Status | Time | Failures |" in md
    assert "| up | passed | 1m 02s | 0 |" in md
    assert "| provision | failed | 30.2s | 2 |" in md
    assert "| idempotence | skipped | 0.0s | 0 |" in md
    assert "| **total** | **failed** | 1m 38s | 2 |" in md
    assert "### provision: node2: Check the scratch disk" in md
    assert "\x1b" not in md
    assert md.index("## Failures") > md.index("| **total**")


def test_phases_never_reached_are_skipped_and_passing_run_passes(tmp_path: Path) -> None:
    report = RunReport("tiny", "r2")
    report.record(PhaseResult("up", "passed", 3.0))
    report.record(PhaseResult("up", "passed", 4.0))

    assert report.phase("up").seconds == 4.0
    assert report.status == "passed"
    write_reports(report, tmp_path)
    data = json.loads((tmp_path / "summary.json").read_text())
    assert data["status"] == "passed"
    assert data["phases"]["destroy"] == {
        "status": "skipped",
        "seconds": 0.0,
        "failures": [],
        "detail": "",
        "retries": [],
    }
    assert "## Failures" not in (tmp_path / "summary.md").read_text()
    with pytest.raises(KeyError, match="verify"):
        report.phase("verify")


def test_markdown_fences_survive_backticks_in_messages(tmp_path: Path) -> None:
    report = RunReport("tiny", "r3", [PhaseResult("verify", "failed", 1.0, [Failure("t", "```\ncode\n```")])])
    write_reports(report, tmp_path)
    md = (tmp_path / "summary.md").read_text()
    assert "````text\n```\ncode\n```\n````" in md


def test_redact_drops_secret_like_keys_at_any_depth() -> None:
    data = {"Password": 1, "sshKey": 2, "a": {"SECRET_x": 3, "b": [{"token": 4, "keep": 5}]}, "name": "x"}
    assert redact(data) == {"a": {"b": [{"keep": 5}]}, "name": "x"}


def test_secret_values_and_masking() -> None:
    values = secret_values({"vault_password": "hunter22", "nested": {"api_token": "abcd1234"}, "user": "root"})
    assert sorted(values) == ["abcd1234", "hunter22"]
    assert mask_secrets("login hunter22 as root", values) == "login ******** as root"


@pytest.mark.parametrize(("seconds", "text"), [(0.04, "0.0s"), (12.34, "12.3s"), (125, "2m 05s"), (3725, "1h 02m")])
def test_format_seconds(seconds: float, text: str) -> None:
    assert format_seconds(seconds) == text
