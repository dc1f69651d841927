"""Helpers for the kubernetes scenario's tests: the harness's Kubernetes fixtures (`kube`,
`k8s_server`, `k8s_namespace`, `k8s_bundle_record`) pointed at roles/kubernetes's files, the
workers, and the busybox image of the server bundle."""

from __future__ import annotations

from typing import Any

import pytest

pytest_plugins = ("harness.k8s_fixtures",)

# What roles/kubernetes writes on the control plane.
ADMIN_KUBECONFIG = "/etc/kubernetes/admin.conf"
BUNDLE_RECORD = "/etc/kubernetes/bundle.yml"


@pytest.fixture(scope="session")
def k8s_kubeconfig_path() -> str:
    return ADMIN_KUBECONFIG


@pytest.fixture(scope="session")
def k8s_bundle_record_path() -> str:
    return BUNDLE_RECORD


@pytest.fixture(scope="session")
def workers(cluster: Any, k8s_server: str) -> list[str]:
    """Every node but the control plane (roles/kubernetes runs a kubelet on those only)."""
    nodes = sorted(n for n in cluster.nodes if n != k8s_server)
    if not nodes:
        pytest.fail("the inventory has no node besides the control plane: no worker", pytrace=False)
    return nodes


@pytest.fixture(scope="session")
def busybox_image(k8s_bundle_record: dict[str, Any]) -> str:
    """The busybox image of the server bundle (bundle.yml images.busybox.ref), imported on every worker."""
    ref = ((k8s_bundle_record.get("images") or {}).get("busybox") or {}).get("ref")
    if not ref:
        pytest.fail("the control plane's bundle.yml names no images.busybox.ref", pytrace=False)
    return str(ref)
