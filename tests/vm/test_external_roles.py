"""A site's own role set rehearsed as it is (tests/fixtures/external): its roles outside this
repository, one named like ours, modules from community.general and ansible.posix, a collection
installed offline from a requirements file, dashed group names, and a role written the usual way
(`apt: update_cache, cache_valid_time`) against the box's apt state."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.provider import libvirt as lv
from tests.vm.cli import harness

pytestmark = pytest.mark.vm

SCENARIO = Path(__file__).parent.parent / "fixtures" / "external" / "scenario.yml"


def test_external_role_set_converges_twice_and_its_tests_pass(
    tmp_path: Path, runs_dir: Path, figure: Callable[[str, str], None]
) -> None:
    proc = harness(runs_dir, "run", str(SCENARIO), "--report-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    for name in ("up", "provision", "idempotence", "verify", "destroy"):
        assert summary["phases"][name]["status"] == "passed", (name, summary["phases"][name])
        figure(f"external roles {name}", f"{summary['phases'][name]['seconds']:.0f} s")
    # The user's lmod won over the harness's, and the run said so before booting anything.
    assert "role 'lmod' from" in proc.stderr and "tests/fixtures/external/roles/lmod" in proc.stderr
    # One JUnit file holds every verify test by name.
    cases = {c.get("name") for c in ET.parse(tmp_path / "junit.xml").getroot().iter("testcase")}
    assert {"test_the_sites_lmod_role_ran_not_the_harness_role", "test_role_from_the_local_collection_ran"} <= {
        str(c).split("[")[0] for c in cases
    }, cases
    with lv.connect() as conn:
        assert lv.run_objects(conn, f"hx-{summary['run_id']}").empty()
