"""`harness run slurm` end to end on four VMs: NFS, munge, Slurm, Lmod and Prometheus converge,
converge again with no change (nightly), and every cluster test passes with none skipped; then the
host memory of the four VMs is read, a selected rerun of the tests works on the kept cluster
(nightly), and destroy leaves nothing. Each phase's time is reported as a measured figure.

Per-submission CI leaves slurm's second converge out (161 s quiet, over 200 s on a loaded host):
idempotence is checked per submission on smoke, on the site role set (test_external_roles.py) and
by ci/bench.sh; the nightly target converges slurm twice, with both strategies. Per-submission CI
also stops at verify's quick verdict (`--quick`, about 4 min less): the tests marked disturbing
(a gpu node reboot, slurmctld and slurmd restarts, an NFS server restart) must then be the ones
the report names as left for the full verdict, and the nightly target runs them."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.provider import libvirt as lv
from tests.vm.cli import harness
from tests.vm.conftest import NIGHTLY, verify_cases

pytestmark = pytest.mark.vm

# Every behaviour the Slurm issue asks for, by test name in scenarios/slurm/tests.
REQUIRED_TESTS = {
    "test_services_active_and_enabled",
    "test_ports_listen_only_where_they_should",
    "test_munge_key",
    "test_nfs_mounts",
    "test_nfs_exports_only_to_private_subnet",
    "test_munge_credential_decodes_on_another_node",
    "test_sinfo_shows_every_gpu_node_idle",
    "test_srun_on_both_gpu_nodes",
    "test_job_steps_run_confined_in_their_own_cgroup",
    "test_batch_job_writes_to_its_nfs_home",
    "test_shared_module_loads_in_a_job",
    "test_a_running_job_survives_a_slurmctld_restart",
    "test_a_rebooted_gpu_node_comes_back_idle_with_its_nfs_mounts",
    "test_stopped_slurmd_marks_the_node_down_and_back",
    "test_nfs_mount_survives_a_server_restart",
    "test_prometheus_sees_every_node_exporter",
}
# The required tests marked disturbing (scenarios/slurm/tests/test_resilience.py).
DISTURBING_TESTS = {
    "test_a_running_job_survives_a_slurmctld_restart",
    "test_a_rebooted_gpu_node_comes_back_idle_with_its_nfs_mounts",
    "test_stopped_slurmd_marks_the_node_down_and_back",
    "test_nfs_mount_survives_a_server_restart",
}
RUN_TIMEOUT = 75 * 60


def test_run_slurm_converges_and_every_cluster_test_passes(
    tmp_path: Path, runs_dir: Path, figure: Callable[[str, str], None]
) -> None:
    started = time.monotonic()
    extra = [] if NIGHTLY else ["--skip-idempotence", "--quick"]
    proc = harness(runs_dir, "run", "slurm", "--keep", "--report-dir", str(tmp_path), *extra, timeout=RUN_TIMEOUT)
    figure("slurm run, up to verify (wall)", f"{time.monotonic() - started:.0f} s")
    summary = json.loads((tmp_path / "summary.json").read_text()) if (tmp_path / "summary.json").exists() else {}
    run_id = summary.get("run_id")
    try:
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-8000:]
        phases = summary["phases"]
        for name in ("up", "provision", "idempotence", "verify"):
            if name == "idempotence" and not NIGHTLY:
                assert phases[name]["status"] == "skipped", (name, phases[name])
                continue
            assert phases[name]["status"] == "passed", (name, phases[name])
            figure(f"slurm {name}", f"{phases[name]['seconds']:.0f} s  {phases[name]['detail']}")
        if NIGHTLY:
            assert "changed=0" in phases["idempotence"]["detail"]

        cases = verify_cases(runs_dir / str(run_id) / "verify-junit.xml")
        left = {n["name"].rsplit("::", 1)[-1].split("[")[0] for n in phases["verify"].get("not_run", [])}
        if NIGHTLY:
            assert not left and not phases["verify"].get("partial"), phases["verify"]
        else:  # the quick verdict: the resilience tests, and only they, left for the full one
            assert phases["verify"].get("partial") is True, phases["verify"]
            assert left == DISTURBING_TESTS, (left, phases["verify"])
        missing = REQUIRED_TESTS - set(cases) - left
        assert not missing, f"tests the issue asks for did not run: {sorted(missing)}"
        not_passed = {n: o for n, o in cases.items() if set(o) != {"passed"}}
        assert not not_passed, f"every case must pass, none skipped: {not_passed}"
        figure("slurm verify cases", f"{sum(map(len, cases.values()))}, all passed")

        status = json.loads(harness(runs_dir, "status", "slurm", "--json").stdout)
        assert len(status["nodes"]) == 4 and all(n["state"] == "running" for n in status["nodes"])
        figure("slurm host memory of the 4 VMs (QEMU RSS)", f"{status['host_rss_mib_total']} MiB")

        if NIGHTLY:
            # Per-submission CI leaves this out (44 s): test_smoke.py reruns verify on a kept cluster.
            t0 = time.monotonic()
            rerun = harness(runs_dir, "verify", "slurm", "-k", "munge", timeout=900)
            figure("slurm verify -k munge on the kept cluster", f"{time.monotonic() - t0:.1f} s")
            assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    finally:
        destroyed = harness(runs_dir, "destroy", "slurm", timeout=600)
    assert destroyed.returncode == 0, destroyed.stdout + destroyed.stderr
    with lv.connect() as conn:
        assert lv.run_objects(conn, f"hx-{run_id}").empty()
