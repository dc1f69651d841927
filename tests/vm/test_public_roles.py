"""Public roles' Molecule scenarios run unchanged (tests/fixtures/public-roles/<name>, each with its
ORIGIN and LICENSE): geerlingguy's git, nfs and memcached roles, written for Molecule's docker
driver, converged on the harness's Debian 12 box with Debian packages only."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.provider import libvirt as lv
from tests.vm.cli import harness
from tests.vm.conftest import NIGHTLY

pytestmark = pytest.mark.vm

ROLES = Path(__file__).parent.parent / "fixtures" / "public-roles"


@pytest.mark.parametrize("role", ["git", "nfs", "memcached"])
def test_a_public_roles_molecule_scenario_runs_unchanged(
    role: str, tmp_path: Path, runs_dir: Path, figure: Callable[[str, str], None]
) -> None:
    if not NIGHTLY:
        # One VM end to end each: git took 12 min on TCG, 2026-12-07 (figures: README, Molecule scenarios).
        pytest.skip("nightly: a public role's Molecule scenario end to end; set HARNESS_NIGHTLY=1 to run it")
    proc = harness(runs_dir, "run", str(ROLES / role / "molecule" / "default"), "--report-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    for name in ("up", "provision", "idempotence", "destroy"):
        assert summary["phases"][name]["status"] == "passed", (name, summary["phases"][name])
        figure(f"public role {role} {name}", f"{summary['phases'][name]['seconds']:.0f} s")
    with lv.connect() as conn:
        assert lv.run_objects(conn, f"hx-{summary['run_id']}").empty()
