"""ci/test.sh runs two lanes of VM tests at once (tests/vm/conftest.py LANES): what may share the
host with slurm is named, exists, and never restarts libvirtd, kills the harness or collects garbage."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.vm.conftest import LANES

VM_TESTS = Path(__file__).resolve().parents[1] / "vm"
# What a test that must have the host to itself does: restart or stop libvirt's daemons, kill the
# harness (SIGKILL, then gc), remove other runs' objects.
HOST_WIDE = re.compile(r"libvirtd|virtqemud|SIGKILL|signal\.SIG|\"gc\"|'gc'|sweep\.")


def test_every_lane_file_exists_once_and_slurm_has_a_lane_of_its_own() -> None:
    files = [f for lane in LANES.values() for f in lane]
    assert len(files) == len(set(files))
    assert LANES["slurm"] == ("test_slurm.py",)
    for name in files:
        assert (VM_TESTS / name).is_file(), name


def test_nothing_beside_slurm_touches_what_the_whole_host_shares() -> None:
    for name in LANES["beside-slurm"]:
        text = (VM_TESTS / name).read_text()
        assert not HOST_WIDE.search(text), (name, HOST_WIDE.search(text))


def test_the_host_wide_tests_are_outside_the_lanes() -> None:
    laned = {f for lane in LANES.values() for f in lane}
    host_wide = {p.name for p in VM_TESTS.glob("test_*.py") if HOST_WIDE.search(p.read_text())}
    assert host_wide and not host_wide & laned, host_wide & laned


def test_ci_runs_the_lanes_from_that_list() -> None:
    script = (VM_TESTS.parents[1] / "ci" / "test.sh").read_text()
    assert "from tests.vm.conftest import LANES" in script and "--basetemp" in script


def _lanes_exit(tmp_path: Path, slurm_exit: int, other_exit: int) -> int:
    """ci/test.sh's own lines from its EXIT trap on, with the two pytest runs replaced by commands
    that exit as given: what the script exits with."""
    script = (VM_TESTS.parents[1] / "ci" / "test.sh").read_text()
    trap = next(line for line in script.splitlines() if line.startswith("trap "))
    body = "\n".join(
        [
            "set -euo pipefail",
            "rc=0",
            f'lanes="{tmp_path / "lanes"}"',
            'mkdir -p "$lanes"',
            trap,
            f"(sleep 0.2; exit {slurm_exit}) &",
            "slurm_pid=$!",
            f"(exit {other_exit}) || rc=$?",
            "slurm_rc=0",
            'wait "$slurm_pid" || slurm_rc=$?',
            '[ "$slurm_rc" = 0 ] || rc=$slurm_rc',
            "exit $rc",
        ]
    )
    return subprocess.run(["bash", "-c", body], check=False, timeout=30).returncode


def test_the_lanes_exit_code_is_the_tests_never_the_cleanups(tmp_path: Path) -> None:
    """Under `set -e` a failing command in the EXIT trap (killing a lane that already ended) became
    the exit code: a green CI run exited 1 (2026-12-08)."""
    assert _lanes_exit(tmp_path, 0, 0) == 0
    assert _lanes_exit(tmp_path, 1, 0) == 1
    assert _lanes_exit(tmp_path, 0, 1) == 1
    assert not (tmp_path / "lanes").exists()
