from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness.report import (
    Failure,
    PhaseResult,
    RunReport,
    format_seconds,
    mask_secrets,
    redact,
    secret_values,
    write_reports,
)


def _report() -> RunReport:
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
    assert list(data["phases"]) == ["up", "provision", "idempotence", "verify", "destroy"]
    assert data["phases"]["up"] == {"status": "passed", "seconds": 62.4, "failures": [], "detail": ""}
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
    # 5 phases + 2 failing tasks; provision and both tasks fail; 2 phases skipped.
    counts = [suite.get(a) for a in ("tests", "failures", "skipped", "errors")]
    assert counts == ["7", "3", "2", "0"]
    assert float(suite.get("time", "0")) == pytest.approx(62.4 + 30.25 + 5.0)
    assert root.get("tests") == "7" and root.get("failures") == "3"
    cases = {(c.get("classname"), c.get("name")): c for c in suite.findall("testcase")}
    assert cases[("tiny", "up")].find("failure") is None and cases[("tiny", "up")].get("time") == "62.400"
    assert cases[("tiny", "verify")].find("skipped") is not None
    assert cases[("tiny", "provision")].find("failure") is not None
    task = cases[("tiny.provision", "node2: Check the scratch disk")].find("failure")
    assert task is not None
    assert task.get("message") == "non-zero return code"
    assert task.text is not None and "scratch disk" in task.text and "\x1b" not in task.text
    assert suite.find("properties/property[@name='run_id']").get("value") == "20250101-abc"  # type: ignore[union-attr]


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
    assert data["phases"]["destroy"] == {"status": "skipped", "seconds": 0.0, "failures": [], "detail": ""}
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
