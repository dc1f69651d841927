from __future__ import annotations

from pathlib import Path

from harness import lifecycle, report
from harness.verify import pytest_argv, read_junit

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
    rep = report.RunReport("s", "s-000000")
    rep.record(report.PhaseResult("up", "passed", 1))
    rep.record(report.PhaseResult("provision", "passed", 1))
    rep.record(report.PhaseResult("idempotence", "failed", 1, [report.Failure("node01: Stamp", "changed")]))
    rep.record(report.PhaseResult("verify", "failed", 1))
    err = lifecycle.first_failure(rep)
    assert err is not None and err.exit_code == 12 and "node01: Stamp" in str(err)
    ok = report.RunReport("s", "s-1")
    ok.record(report.PhaseResult("up", "passed", 1))
    assert lifecycle.first_failure(ok) is None
