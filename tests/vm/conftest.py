"""VM tests boot real libvirt VMs. Without what they need they skip, or fail loudly when
HARNESS_REQUIRE_VM=1 (CI), so a broken host never passes as 'all skipped'."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import box, rundir
from harness.errors import HarnessError
from harness.paths import SCENARIOS_DIR
from harness.provider import libvirt as lv
from harness.spec import Scenario, load_scenario

# The nightly target (ci/nightly.sh) sets HARNESS_NIGHTLY=1: the long rehearsals that do not fit the
# per-submission CI budget run there.
NIGHTLY = os.environ.get("HARNESS_NIGHTLY") == "1"


def _vm_prerequisite_problem() -> str | None:
    try:
        with lv.connect() as conn:
            conn.getLibVersion()
    except HarnessError as exc:
        return str(exc)
    try:
        if not box.box_is_installed("harness/debian12"):
            return "box harness/debian12 is not installed: run `harness box build debian12` (ci/bootstrap.sh does)"
    except HarnessError as exc:
        return str(exc)
    return None


@pytest.fixture(scope="session")
def vm_ready() -> None:
    problem = _vm_prerequisite_problem()
    if problem is None:
        return
    if os.environ.get("HARNESS_REQUIRE_VM") == "1":
        pytest.fail(f"VM tests are required (HARNESS_REQUIRE_VM=1) but cannot run: {problem}", pytrace=False)
    pytest.skip(f"VM tests need libvirt and the debian12 box: {problem}")


# ci/test.sh runs these VM test files in two lanes at once, two pytest processes: slurm's four VMs
# leave part of the host's cores idle (single-node plays, waits on jobs and SSH), and the
# well-behaved one-node runs of the second lane fill it. Each lane runs its files one after another.
# Every other VM test (what restarts libvirtd, kills the harness, or is timed alone) runs before, alone.
LANES = {
    "slurm": ("test_slurm.py",),
    "beside-slurm": ("test_unreachable.py", "test_run_phases.py", "test_external_roles.py"),
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("vm") is not None:
            item.fixturenames.insert(0, "vm_ready")  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def runs_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    d = tmp_path_factory.mktemp("runs")
    old = os.environ.get("HARNESS_RUNS_DIR")
    os.environ["HARNESS_RUNS_DIR"] = str(d)
    yield d
    if old is None:
        os.environ.pop("HARNESS_RUNS_DIR", None)
    else:
        os.environ["HARNESS_RUNS_DIR"] = old


def scenario(name: str) -> Scenario:
    return load_scenario(name, [SCENARIOS_DIR])


def assert_nothing_left(run: rundir.RunState) -> None:
    __tracebackhide__ = True
    with lv.connect() as conn:
        left = lv.run_objects(conn, run.prefix)
    assert left.empty(), f"run {run.run_id} left libvirt objects behind: {left.describe()}"


def verify_cases(junit: Path) -> dict[str, list[str]]:
    """Test name (without parameters) → outcomes of its cases ('passed', 'failure', 'error', 'skipped')."""
    out: dict[str, list[str]] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = case.get("name", "").split("[", 1)[0]
        kids = [c.tag for c in case if c.tag in ("failure", "error", "skipped")]
        out.setdefault(name, []).append(kids[0] if kids else "passed")
    return out
