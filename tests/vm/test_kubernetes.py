"""`harness run kubernetes` end to end (nightly): upstream Kubernetes v1.20.2 from the server bundle
built from Debian's source (`harness bundle kubernetes`, cached; a cold build takes about 29 min on
the 2-core CI host) with roles/kubernetes: etcd and the control plane on mgmt01, a kubelet on gpu01,
converged twice (the second changes nothing), and scenarios/kubernetes/tests passing against the live
API server: the worker registered and Ready with its private IP, a busybox pod from the bundle run."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.provider import libvirt as lv
from tests.vm.cli import harness
from tests.vm.conftest import NIGHTLY, verify_cases

REQUIRED_TESTS = {
    "test_node_set_is_the_inventory_workers",
    "test_every_worker_is_ready",
    "test_internal_ip_is_the_private_ip",
    "test_busybox_runs_on_each_worker",
}
BUNDLE_TIMEOUT = 60 * 60  # a cold build: about 29 min on 2 cores
RUN_TIMEOUT = 90 * 60  # the first converge took over 25 min under TCG on a shared host


@pytest.mark.vm
def test_run_kubernetes_converges_twice_and_runs_a_pod(
    tmp_path: Path, runs_dir: Path, figure: Callable[[str, str], None]
) -> None:
    if not NIGHTLY:
        pytest.skip(
            "nightly (the server bundle's cold build takes about 29 min, the run about 15 min under TCG); "
            "set HARNESS_NIGHTLY=1 to run it"
        )
    started = time.monotonic()
    built = harness(runs_dir, "bundle", "kubernetes", timeout=BUNDLE_TIMEOUT)
    assert built.returncode == 0, built.stdout[-4000:] + built.stderr[-8000:]
    figure("kubernetes server bundle (harness bundle kubernetes)", f"{time.monotonic() - started:.0f} s")

    started = time.monotonic()
    proc = harness(runs_dir, "run", "kubernetes", "--keep", "--report-dir", str(tmp_path), timeout=RUN_TIMEOUT)
    figure("kubernetes run, up to verify (wall)", f"{time.monotonic() - started:.0f} s")
    summary = json.loads((tmp_path / "summary.json").read_text()) if (tmp_path / "summary.json").exists() else {}
    run_id = summary.get("run_id")
    try:
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-8000:]
        for name in ("up", "provision", "idempotence", "verify"):
            phase = summary["phases"][name]
            assert phase["status"] == "passed", (name, phase)
            figure(f"kubernetes {name}", f"{phase['seconds']:.0f} s  {phase['detail']}")
        cases = verify_cases(runs_dir / str(run_id) / "verify-junit.xml")
        missing = REQUIRED_TESTS - set(cases)
        assert not missing, f"Kubernetes tests that did not run: {sorted(missing)}"
        not_passed = {n: o for n, o in cases.items() if set(o) != {"passed"}}
        assert not not_passed, f"every case must pass, none skipped: {not_passed}"
        status = json.loads(harness(runs_dir, "status", "kubernetes", "--json").stdout)
        figure("kubernetes host memory of the 2 VMs (QEMU RSS)", f"{status['host_rss_mib_total']} MiB")
    finally:
        destroyed = harness(runs_dir, "destroy", "kubernetes", timeout=600)
    assert destroyed.returncode == 0, destroyed.stdout + destroyed.stderr
    with lv.connect() as conn:
        assert lv.run_objects(conn, f"hx-{run_id}").empty()
