"""`harness run smoke` end to end, then everything that works on a kept cluster, on that one cluster
(one boot, one first converge, for the CI budget):

- up, the common role converges and converges again with no change, the scenario's tests pass,
  reports are written; `harness verify` reruns on the kept cluster without re-provisioning;
- promotion, with the kept cluster standing in for a site's real hosts (already converged, as a
  real cluster is): an inventory written the way a site writes one, `harness promote` refused
  without a green rehearsal of exactly this content, then converging and testing them, and
  `--check`;
- checkpoints: a reset undoes what came after and leaves a usable cluster; `run --reuse --from
  converged` passes end to end (the nightly target also runs `--reuse` from `booted`);
- destroy leaves nothing.

The run is of a copy of the smoke scenario and the roles (site/), so the test can edit a role
without touching the repository; the scenario's name stays `smoke`."""

from __future__ import annotations

import json
import shutil
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from harness import rundir
from harness.inventory import parse_ssh_config
from harness.paths import ROLES_DIR, SCENARIOS_DIR
from harness.provider import libvirt as lv
from tests.vm.cli import harness
from tests.vm.conftest import NIGHTLY

pytestmark = pytest.mark.vm


def _site_copy(tmp_path: Path) -> Path:
    """The smoke scenario and the roles, copied: the test edits a role without touching the repo."""
    site = tmp_path / "site"
    shutil.copytree(SCENARIOS_DIR / "smoke", site / "smoke")
    shutil.copytree(ROLES_DIR, site / "roles")
    sc = yaml.safe_load((site / "smoke" / "scenario.yml").read_text())
    sc["provision"]["roles_path"] = ["../roles"]
    (site / "smoke" / "scenario.yml").write_text(yaml.safe_dump(sc))
    # A second, late unit (a play of its own): the inner loop can start after roles/common.
    _probe_role(site / "roles", "v1")
    book = yaml.safe_load((site / "smoke" / "site.yml").read_text())
    book.append({"name": "Leave a probe file", "hosts": "all", "become": True, "roles": [{"role": "probe"}]})
    (site / "smoke" / "site.yml").write_text(yaml.safe_dump(book, sort_keys=False))
    return site / "smoke" / "scenario.yml"


def _probe_role(roles: Path, version: str) -> None:
    tasks = [
        {
            "name": "Write the probe file",
            "ansible.builtin.copy": {"dest": "/etc/harness-probe", "content": f"{version}\n", "mode": "0644"},
        }
    ]
    (roles / "probe" / "tasks").mkdir(parents=True, exist_ok=True)
    (roles / "probe" / "tasks" / "main.yml").write_text(yaml.safe_dump(tasks, sort_keys=False))


def test_run_smoke_then_promote_reset_and_reuse_the_kept_cluster(
    tmp_path: Path, runs_dir: Path, figure: Callable[[str, str], None]
) -> None:
    sc_file = _site_copy(tmp_path)
    sc = str(sc_file)
    rehearsal = tmp_path / "rehearsal"
    proc = harness(runs_dir, "run", sc, "--keep", "--report-dir", str(rehearsal))
    summary = json.loads((rehearsal / "summary.json").read_text()) if (rehearsal / "summary.json").exists() else {}
    run_id = summary.get("run_id")
    try:
        assert proc.returncode == 0, proc.stdout + proc.stderr
        phases = summary["phases"]
        for name in ("up", "provision", "quick", "idempotence", "verify"):
            assert phases[name]["status"] == "passed", (name, phases[name])
            figure(f"smoke {name}", f"{phases[name]['seconds']:.0f} s")
        # The quick verdict came before the idempotence converge, which then changed nothing: verify
        # carried its tests (smoke has no disturbing test) instead of running them again.
        assert phases["quick"]["detail"].startswith("quick verdict: "), phases["quick"]
        assert "ran before the idempotence converge, which changed nothing" in phases["verify"]["detail"]
        assert phases["verify"]["detail"].startswith(phases["quick"]["detail"].removeprefix("quick verdict: "))
        assert phases["destroy"]["status"] == "skipped"
        junit = ET.parse(rehearsal / "junit.xml").getroot()
        assert int(junit.get("failures", "0")) == 0 and int(junit.get("tests", "0")) >= 5
        assert "| verify |" in (rehearsal / "summary.md").read_text()
        assert json.loads((rehearsal / "rehearsal.json").read_text())

        started = time.monotonic()
        rerun = harness(runs_dir, "verify", sc)
        figure("smoke verify rerun on the kept cluster", f"{time.monotonic() - started:.1f} s")
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        selected = harness(runs_dir, "verify", sc, "-k", "no_such_test_name")
        assert selected.returncode == 13 and "no test was collected" in selected.stderr

        _promotion(tmp_path, runs_dir, sc_file, rundir.load(runs_dir / str(run_id)), figure)
        _checkpoints_and_reuse(tmp_path, runs_dir, sc, figure)
    finally:
        destroyed = harness(runs_dir, "destroy", sc, timeout=600)
    assert destroyed.returncode == 0, destroyed.stdout + destroyed.stderr
    with lv.connect() as conn:
        assert lv.run_objects(conn, f"hx-{run_id}").empty()


def _site_inventory(tmp_path: Path, run: rundir.RunState) -> Path:
    """An inventory as a site writes it: addresses, user and key of its own, an ssh_config of its
    own through ansible_ssh_common_args; the harness's run files are not used."""
    conns = parse_ssh_config(run.ssh_config.read_text())
    ssh_cfg = tmp_path / "site_ssh_config"
    ssh_cfg.write_text("Host *\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n")
    hosts = {
        name: {
            "ansible_host": c.host,
            "ansible_port": c.port,
            "ansible_user": c.user,
            "ansible_ssh_private_key_file": str(c.private_key),
            "harness_private_ip": run.private_ips[name],
        }
        for name, c in conns.items()
    }
    inv = {
        "all": {
            "vars": {
                "harness_cluster_name": "site-a",
                "harness_private_subnet": run.private_subnet,
                "ansible_ssh_common_args": f"-F {ssh_cfg}",
            },
            "hosts": hosts,
            "children": {"mgmt": {"hosts": {"mgmt01": {}}}, "gpu": {"hosts": {"gpu01": {}}}},
        }
    }
    path = tmp_path / "site-inventory.yml"
    path.write_text(yaml.safe_dump(inv))
    return path


def _promotion(
    tmp_path: Path, runs_dir: Path, sc_file: Path, run: rundir.RunState, figure: Callable[[str, str], None]
) -> None:
    """`harness promote` gated on a green rehearsal of the same content, against the kept cluster
    reached through a site's own inventory."""
    sc = str(sc_file)
    inventory = _site_inventory(tmp_path, run)
    empty_ledger = {"HARNESS_STATE_DIR": str(tmp_path / "no-ledger")}
    refused = harness(runs_dir, "promote", sc, "-i", str(inventory), env=empty_ledger)
    assert refused.returncode == 16, refused.stdout + refused.stderr
    assert "no green rehearsal" in refused.stderr, refused.stderr

    record = tmp_path / "rehearsal" / "rehearsal.json"
    role_file = sc_file.parent.parent / "roles" / "common" / "tasks" / "main.yml"
    original = role_file.read_text()
    role_file.write_text(original + "\n# a change nobody rehearsed\n")
    try:
        changed = harness(runs_dir, "promote", sc, "-i", str(inventory), "--rehearsal", str(record))
    finally:
        role_file.write_text(original)
    assert changed.returncode == 16, changed.stdout + changed.stderr
    assert "roles/common/tasks/main.yml" in changed.stdout + changed.stderr

    reports = tmp_path / "promotion"
    promoted = harness(
        runs_dir, "promote", sc, "-i", str(inventory), "--rehearsal", str(record), "--report-dir", str(reports)
    )
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr
    summary = json.loads((reports / "summary.json").read_text())
    assert summary["phases"]["provision"]["status"] == "passed"
    assert summary["phases"]["verify"]["status"] == "passed", summary["phases"]["verify"]
    figure(
        "promote smoke to its 2 converged stand-in hosts (converge + tests)",
        f"{summary['phases']['provision']['seconds']:.0f} s + {summary['phases']['verify']['seconds']:.0f} s",
    )
    check = harness(runs_dir, "promote", sc, "-i", str(inventory), "--rehearsal", str(record), "--check")
    assert check.returncode == 0, check.stdout + check.stderr


def _checkpoints_and_reuse(tmp_path: Path, runs_dir: Path, sc: str, figure: Callable[[str, str], None]) -> None:
    """On the kept smoke cluster: up saved `booted`, the green converge `converged`; a reset undoes
    what came after and leaves a usable cluster; `run --reuse` passes end to end and says which
    base it started from."""
    listed = harness(runs_dir, "snapshot", sc, "--list")
    assert listed.returncode == 0 and "booted" in listed.stdout and "converged" in listed.stdout, listed.stdout

    assert harness(runs_dir, "ssh", sc, "gpu01", "--", "touch /tmp/after-the-checkpoint").returncode == 0
    started = time.monotonic()
    reset = harness(runs_dir, "reset", sc, "converged")
    figure("smoke reset to converged (2 nodes, with clock step and SSH check)", f"{time.monotonic() - started:.1f} s")
    assert reset.returncode == 0, reset.stdout + reset.stderr
    gone = harness(runs_dir, "ssh", sc, "gpu01", "--", "test ! -e /tmp/after-the-checkpoint")
    assert gone.returncode == 0, "a file written after the checkpoint survived the reset"
    clock = harness(runs_dir, "ssh", sc, "mgmt01", "--", "date +%s.%N")
    assert clock.returncode == 0 and abs(float(clock.stdout.strip()) - time.time()) < 2.0, clock.stdout

    site = Path(sc).parent.parent
    _inner_loop(tmp_path, runs_dir, sc, site, figure)
    if not NIGHTLY:
        return
    # The nightly target also runs the loop whole: --full from converged, and from booted (a full
    # first converge: about 5 min under TCG).
    for base, extra in (("converged", ["--from", "converged", "--full"]), ("booted", [])):
        reports = tmp_path / f"reuse-{base}"
        started = time.monotonic()
        reused = harness(runs_dir, "run", sc, "--reuse", "--report-dir", str(reports), *extra)
        figure(f"smoke run --reuse from {base} (full)", f"{time.monotonic() - started:.0f} s")
        assert reused.returncode == 0, reused.stdout + reused.stderr
        summary = json.loads((reports / "summary.json").read_text())
        assert f"reset to checkpoint {base!r}" in summary["phases"]["up"]["detail"]
        assert f"reset to checkpoint {base!r}" in summary["metadata"]["base"]
        assert summary["phases"]["destroy"]["status"] == "skipped"  # --reuse keeps the cluster
        assert not summary["partial"], summary
        for phase in ("provision", "idempotence", "verify"):
            assert summary["phases"][phase]["status"] == "passed", (base, phase, summary["phases"][phase])


def _inner_loop(tmp_path: Path, runs_dir: Path, sc: str, site: Path, figure: Callable[[str, str], None]) -> None:
    """The edit loop on top of `converged`: a comment-only edit is answered without a converge or a
    verify (the verdict of the checkpoint's state carried over, labelled partial); an edit of the
    late unit converges only that unit (roles/common is skipped), and the tests run."""
    common = site / "roles" / "common" / "tasks" / "main.yml"
    common.write_text(common.read_text() + "# a comment only\n")
    reports = tmp_path / "reuse-comment"
    started = time.monotonic()
    reused = harness(runs_dir, "run", sc, "--reuse", "--from", "converged", "--report-dir", str(reports))
    figure("smoke comment-only edit → verdict (--reuse --from converged)", f"{time.monotonic() - started:.0f} s")
    assert reused.returncode == 0, reused.stdout + reused.stderr
    summary = json.loads((reports / "summary.json").read_text())
    phases = summary["phases"]
    assert "reset to checkpoint 'converged'" in phases["up"]["detail"]
    assert "nothing to converge" in phases["provision"]["detail"], phases["provision"]
    assert "not run" in phases["idempotence"]["detail"], phases["idempotence"]
    assert "carried over" in phases["verify"]["detail"], phases["verify"]
    assert summary["partial"] and summary["metadata"]["scope"]["cutoff"], summary
    assert not json.loads((reports / "rehearsal.json").read_text())["green"]  # partial: promote refuses it

    _probe_role(site / "roles", "v2")
    reports = tmp_path / "reuse-edit"
    started = time.monotonic()
    argv = ["run", sc, "--reuse", "--from", "converged", "--report-dir", str(reports)]
    reused = harness(runs_dir, *argv, *([] if NIGHTLY else ["--skip-idempotence"]))
    figure(
        "smoke one-task edit of a late role → verdict (--reuse --from converged)", f"{time.monotonic() - started:.0f} s"
    )
    assert reused.returncode == 0, reused.stdout + reused.stderr
    summary = json.loads((reports / "summary.json").read_text())
    phases = summary["phases"]
    assert phases["provision"]["status"] == "passed" and "ran 1 of 2 units" in phases["provision"]["detail"], phases
    assert summary["metadata"]["scope"]["first_converge"]["skipped"] == [
        "play 1 (Apply the common baseline to every node): role common"
    ]
    assert phases["verify"]["status"] == "passed" and "carried" not in phases["verify"]["detail"], phases["verify"]
    assert summary["partial"], summary
    probe = harness(runs_dir, "ssh", sc, "gpu01", "--", "cat /etc/harness-probe")
    assert probe.stdout.strip() == "v2", probe.stdout + probe.stderr
