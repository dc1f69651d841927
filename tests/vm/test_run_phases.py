"""`harness run` end to end on real VMs: each failure kind is reported in its own phase, naming the
task or test, with its own exit code, and no VM is left behind. The roles used here live outside
this repository's roles/ (tests/fixtures/vm/external-roles), as a user's would."""

from __future__ import annotations

import json
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness.provider import libvirt as lv
from tests.vm.cli import harness
from tests.vm.conftest import NIGHTLY

pytestmark = pytest.mark.vm
FIX = Path(__file__).parent.parent / "fixtures" / "vm"


def harness_run(scenario: Path, report_dir: Path, runs_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return harness(runs_dir, "run", str(scenario), "--report-dir", str(report_dir), *extra, timeout=1800)


def assert_run_left_nothing(summary: dict[str, object]) -> None:
    __tracebackhide__ = True
    with lv.connect() as conn:
        left = lv.run_objects(conn, f"hx-{summary['run_id']}")
    assert left.empty(), f"run {summary['run_id']} left {left.describe()}"


# (scenario, exit code, failed phase, text its failure names, later phases: status and text they name).
# Per-submission CI boots twice: a failing role, then drift and a failing test in one run (the exit
# code names the first failed phase; verify still runs and names its test). The nightly target also
# runs drift and the failing test apart (exit 12 with verify passed; exit 13).
CASES = [
    ("failing-role", 11, "provision", "Fail on purpose", {"idempotence": ("skipped", ""), "verify": ("skipped", "")}),
    (
        "drift-failing-test",
        12,
        "idempotence",
        "Stamp the time on every run",
        {"verify": ("failed", "test_marker_says_something_else")},
    ),
    ("drift", 12, "idempotence", "Stamp the time on every run", {"verify": ("passed", "")}),
    ("failing-test", 13, "verify", "test_marker_says_something_else", {}),
]
NIGHTLY_ONLY = {"drift", "failing-test"}


@pytest.mark.parametrize(
    ("scenario", "exit_code", "phase", "expect_in_failure", "later_phases"),
    [pytest.param(*case, id=case[0]) for case in CASES],
)
def test_failure_is_reported_in_its_phase(
    tmp_path: Path,
    runs_dir: Path,
    scenario: str,
    exit_code: int,
    phase: str,
    expect_in_failure: str,
    later_phases: dict[str, tuple[str, str]],
) -> None:
    if scenario in NIGHTLY_ONLY and not NIGHTLY:
        pytest.skip(f"nightly: {scenario} alone (per-submission CI runs drift-failing-test, both failures in one boot)")
    proc = harness_run(FIX / scenario / "scenario.yml", tmp_path, runs_dir)
    output = proc.stdout + proc.stderr
    assert proc.returncode == exit_code, output
    summary = json.loads((tmp_path / "summary.json").read_text())
    phases = summary["phases"]
    assert phases["up"]["status"] == "passed"
    assert phases[phase]["status"] == "failed", phases
    failures = json.dumps(phases[phase]["failures"])
    assert expect_in_failure in failures
    if phase != "verify":
        assert "node01" in failures
    for name, (status, names) in later_phases.items():
        assert phases[name]["status"] == status, phases
        assert names in json.dumps(phases[name].get("failures", [])), phases[name]
        assert names in output
    assert phases["destroy"]["status"] == "passed"
    junit = ET.parse(tmp_path / "junit.xml").getroot()
    assert expect_in_failure in ET.tostring(junit, encoding="unicode")
    assert expect_in_failure in output
    assert_run_left_nothing(summary)
