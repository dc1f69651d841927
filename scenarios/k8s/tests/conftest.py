"""Helpers for the k8s scenario's tests: the harness's Kubernetes fixtures (`kube`, `k8s_server`,
`k8s_namespace`, `k8s_bundle_record`), the images the tests run and the pods they create."""

from __future__ import annotations

from typing import Any

import pytest

from harness.k8s_checks import node_images

pytest_plugins = ("harness.k8s_fixtures",)

AGENT_GROUP = "gpu"


@pytest.fixture(scope="session")
def agents(cluster: Any) -> list[str]:
    nodes = cluster.group(AGENT_GROUP)
    if not nodes:
        pytest.fail(f"the inventory has no group {AGENT_GROUP!r} of k3s agents", pytrace=False)
    return list(nodes)


@pytest.fixture(scope="session")
def gpu_agents(cluster: Any, agents: list[str]) -> dict[str, int]:
    """Agents with GPUs passed through (inventory harness_gpus) → how many; skip when none has one."""
    found = {n: len(cluster.vars(n).get("harness_gpus") or []) for n in agents}
    found = {n: k for n, k in found.items() if k}
    if not found:
        pytest.skip("no GPU passed through to any agent (inventory harness_gpus empty): the GPU checks need one")
    return found


@pytest.fixture(scope="session")
def busybox_image(kube: Any, k8s_bundle_record: dict[str, Any], agents: list[str]) -> str:
    """bundle.yml test_images.busybox, else the busybox image of k3s's air-gap images on the agents."""
    named = (k8s_bundle_record.get("test_images") or {}).get("busybox")
    if named:
        return str(named)
    node = kube.core.read_node(agents[0])
    images = [i for i in node_images(node) if "busybox" in i and "@" not in i]
    if not images:
        pytest.fail(f"no busybox image on {agents[0]} and none named in bundle.yml test_images.busybox", pytrace=False)
    return images[0]


@pytest.fixture(scope="session")
def cuda_image(k8s_bundle_record: dict[str, Any]) -> str:
    named = (k8s_bundle_record.get("test_images") or {}).get("cuda")
    if not named:
        pytest.skip(
            "bundle.yml names no test_images.cuda (an image of the bundle with nvidia-smi, such as a CUDA base image)"
        )
    return str(named)
