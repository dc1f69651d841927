"""`harness run k8s` end to end: k3s from the air-gap bundle in HARNESS_K3S_BUNDLE on mgmt01 (server)
and gpu01, gpu02 (agents), converged twice, and every Kubernetes test of scenarios/k8s/tests passing
(the GPU ones skip without passed-through GPUs). Without a bundle the tests skip and say how to get
one; a bundle that is given but broken fails them (it is never a skip)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from harness import k8s_bundle
from harness.errors import SpecError
from tests.vm.cli import harness
from tests.vm.conftest import verify_cases

REQUIRED_TESTS = {
    "test_node_set_is_the_inventory",
    "test_every_node_is_ready",
    "test_internal_ip_is_the_private_ip",
    "test_server_runs_the_control_plane_only",
    "test_system_pods_are_healthy",
    "test_no_pod_fails_to_pull_an_image",
    "test_busybox_runs_on_each_agent",
    "test_pod_reaches_a_pod_on_the_other_agent",
    "test_cluster_dns_resolves_the_api_service",
}
# Skipped (with their reason) where no GPU is passed through; they must pass where one is.
GPU_TESTS = {
    "test_nvidia_runtime_class_exists",
    "test_device_plugin_is_ready_on_every_gpu_agent",
    "test_allocatable_gpus_match_the_passed_through_ones",
    "test_a_pod_with_one_gpu_runs_nvidia_smi",
}
RUN_TIMEOUT = 90 * 60


def configured_bundle() -> k8s_bundle.K3sBundle:
    """The bundle in HARNESS_K3S_BUNDLE, checked: skip when the variable is unset, fail when it names
    something that is not a usable bundle."""
    __tracebackhide__ = True
    value = os.environ.get(k8s_bundle.ENV, "").strip()
    if not value:
        pytest.skip(f"no k3s air-gap bundle: set {k8s_bundle.ENV} to a bundle directory. {k8s_bundle.HOW_TO_GET}")
    try:
        return k8s_bundle.check_bundle(Path(value).expanduser().resolve())
    except SpecError as exc:
        pytest.fail(f"{k8s_bundle.ENV}={value} is not a usable k3s air-gap bundle:\n{exc}", pytrace=False)


def test_configured_bundle_is_usable() -> None:
    """Runs without VMs too: a broken bundle is reported before any VM test tries to use it."""
    checked = configured_bundle()
    assert checked.files.verified


@pytest.mark.vm
def test_run_k8s_converges_twice_and_every_kubernetes_test_passes(
    tmp_path: Path, runs_dir: Path, figure: Callable[[str, str], None]
) -> None:
    checked = configured_bundle()
    figure("k8s bundle", checked.summary())
    started = time.monotonic()
    proc = harness(runs_dir, "run", "k8s", "--report-dir", str(tmp_path), timeout=RUN_TIMEOUT)
    figure("k8s run, up to destroy (wall)", f"{time.monotonic() - started:.0f} s")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-8000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    for name in ("up", "provision", "idempotence", "verify", "destroy"):
        phase = summary["phases"][name]
        assert phase["status"] == "passed", (name, phase)
        figure(f"k8s {name}", f"{phase['seconds']:.0f} s  {phase['detail']}")
    junit = tmp_path / "junit.xml"
    cases = verify_cases(junit if junit.exists() else runs_dir / str(summary["run_id"]) / "verify-junit.xml")
    missing = (REQUIRED_TESTS | GPU_TESTS) - set(cases)
    assert not missing, f"Kubernetes tests that did not run: {sorted(missing)}"
    not_passed = {n: o for n, o in cases.items() if n in REQUIRED_TESTS and set(o) != {"passed"}}
    assert not not_passed, f"every node and pod test must pass: {not_passed}"
    gpu_failed = {n: o for n, o in cases.items() if n in GPU_TESTS and not set(o) <= {"passed", "skipped"}}
    assert not gpu_failed, f"GPU tests failed: {gpu_failed}"
