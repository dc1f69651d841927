"""Promotion to "real" hosts, with VMs standing in for them: a cluster brought up without the
harness provisioning it, an inventory written the way a site writes one (its own connection
settings), and `harness promote` gated on a green rehearsal of exactly the same content."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from harness import nodes
from harness.paths import ROLES_DIR, SCENARIOS_DIR
from harness.provider import libvirt as lv

from .conftest import scenario

pytestmark = pytest.mark.vm


def _harness(runs_dir: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "HARNESS_RUNS_DIR": str(runs_dir), "NO_COLOR": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "harness", *args], env=full, capture_output=True, text=True, timeout=3600
    )


def _site_copy(tmp_path: Path) -> Path:
    """The smoke scenario and the roles, copied: the test edits a role without touching the repo."""
    site = tmp_path / "site"
    shutil.copytree(SCENARIOS_DIR / "smoke", site / "smoke")
    shutil.copytree(ROLES_DIR, site / "roles")
    sc = yaml.safe_load((site / "smoke" / "scenario.yml").read_text())
    sc["provision"]["roles_path"] = ["../roles"]
    (site / "smoke" / "scenario.yml").write_text(yaml.safe_dump(sc))
    return site / "smoke" / "scenario.yml"


def _site_inventory(tmp_path: Path, run: object) -> Path:
    """An inventory as a site writes it: addresses, user and key of its own, an ssh_config of its
    own through ansible_ssh_common_args; the harness's run files are not used."""
    from harness.inventory import parse_ssh_config

    conns = parse_ssh_config(run.ssh_config.read_text())  # type: ignore[attr-defined]
    ssh_cfg = tmp_path / "site_ssh_config"
    ssh_cfg.write_text("Host *\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n")
    hosts = {
        name: {
            "ansible_host": c.host,
            "ansible_port": c.port,
            "ansible_user": c.user,
            "ansible_ssh_private_key_file": str(c.private_key),
            "harness_private_ip": run.private_ips[name],  # type: ignore[attr-defined]
        }
        for name, c in conns.items()
    }
    inv = {
        "all": {
            "vars": {
                "harness_cluster_name": "site-a",
                "harness_private_subnet": run.private_subnet,  # type: ignore[attr-defined]
                "ansible_ssh_common_args": f"-F {ssh_cfg}",
            },
            "hosts": hosts,
            "children": {"mgmt": {"hosts": {"mgmt01": {}}}, "gpu": {"hosts": {"gpu01": {}}}},
        }
    }
    path = tmp_path / "site-inventory.yml"
    path.write_text(yaml.safe_dump(inv))
    return path


def test_promote_is_gated_on_a_green_rehearsal_of_the_same_content(
    tmp_path: Path, runs_dir: Path, figure: Callable[[str, str], None]
) -> None:
    sc_file = _site_copy(tmp_path)
    empty_state = {"HARNESS_STATE_DIR": str(tmp_path / "no-ledger")}
    real = nodes.up(scenario("pair"))  # the "real" hosts: never provisioned by the harness
    try:
        inventory = _site_inventory(tmp_path, real)
        refused = _harness(runs_dir, "promote", str(sc_file), "-i", str(inventory), env=empty_state)
        assert refused.returncode == 16, refused.stdout + refused.stderr

        rehearsed = tmp_path / "rehearsal"
        # Green without the idempotence converge (README: it may be skipped), which test_smoke checks.
        green = _harness(runs_dir, "run", str(sc_file), "--skip-idempotence", "--report-dir", str(rehearsed))
        assert green.returncode == 0, green.stdout + green.stderr
        record = rehearsed / "rehearsal.json"
        assert json.loads(record.read_text())

        role_file = tmp_path / "site" / "roles" / "common" / "tasks" / "main.yml"
        original = role_file.read_text()
        role_file.write_text(original + "\n# a change nobody rehearsed\n")
        changed = _harness(runs_dir, "promote", str(sc_file), "-i", str(inventory), "--rehearsal", str(record))
        assert changed.returncode == 16, changed.stdout + changed.stderr
        assert "roles/common/tasks/main.yml" in changed.stdout + changed.stderr
        role_file.write_text(original)

        reports = tmp_path / "promotion"
        promoted = _harness(
            runs_dir, "promote", str(sc_file), "-i", str(inventory), "--rehearsal", str(record),
            "--report-dir", str(reports),
        )  # fmt: skip
        assert promoted.returncode == 0, promoted.stdout + promoted.stderr
        summary = json.loads((reports / "summary.json").read_text())
        assert summary["phases"]["provision"]["status"] == "passed"
        assert summary["phases"]["verify"]["status"] == "passed", summary["phases"]["verify"]
        figure(
            "promote smoke to 2 stand-in hosts (converge + tests)",
            f"{summary['phases']['provision']['seconds']:.0f} s + {summary['phases']['verify']['seconds']:.0f} s",
        )

        check = _harness(runs_dir, "promote", str(sc_file), "-i", str(inventory), "--rehearsal", str(record), "--check")
        assert check.returncode == 0, check.stdout + check.stderr
    finally:
        nodes.teardown(real)
    with lv.connect() as conn:
        assert lv.run_objects(conn, real.prefix).empty()
