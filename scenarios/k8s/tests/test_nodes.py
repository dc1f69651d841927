"""The cluster's nodes and system pods, from the API: the node set is the inventory's, every node
Ready with the private IP as its InternalIP, the server tainted, the system pods healthy."""

from __future__ import annotations

from typing import Any

from harness.k8s_checks import (
    image_pull_failures,
    internal_ip,
    node_names,
    pod_problems,
    wait_for,
)
from harness.k8s_fixtures import REQUEST_TIMEOUT, Kube

READY_TIMEOUT = 300.0
SYSTEM_NAMESPACE = "kube-system"


def test_node_set_is_the_inventory(kube: Kube, k8s_server: str, agents: list[str]) -> None:
    nodes = kube.core.list_node(_request_timeout=REQUEST_TIMEOUT)
    assert node_names(nodes) == sorted({k8s_server, *agents})


def test_every_node_is_ready(kube: Kube, k8s_server: str, agents: list[str]) -> None:
    kube.wait_nodes_ready({k8s_server, *agents})


def test_internal_ip_is_the_private_ip(kube: Kube, cluster: Any) -> None:
    nodes = kube.core.list_node(_request_timeout=REQUEST_TIMEOUT)
    got = {n.metadata.name: internal_ip(n) for n in nodes.items if n.metadata}
    assert got == {name: cluster.private_ip(name) for name in got}


def test_server_runs_the_control_plane_only(kube: Kube, k8s_server: str) -> None:
    node = kube.core.read_node(k8s_server, _request_timeout=REQUEST_TIMEOUT)
    taints = {(t.key, t.effect) for t in (node.spec.taints if node.spec else None) or []}
    assert ("node-role.kubernetes.io/control-plane", "NoSchedule") in taints, taints


def test_system_pods_are_healthy(kube: Kube) -> None:
    def problems() -> list[str]:
        return pod_problems(kube.core.list_namespaced_pod(SYSTEM_NAMESPACE, _request_timeout=REQUEST_TIMEOUT))

    wait_for(
        lambda: not problems(),
        timeout=READY_TIMEOUT,
        what=f"every pod in {SYSTEM_NAMESPACE} to be running or completed",
        diagnose=lambda: "\n".join(problems()) + "\n" + kube.events(SYSTEM_NAMESPACE),
    )


def test_no_pod_fails_to_pull_an_image(kube: Kube) -> None:
    pods = kube.core.list_pod_for_all_namespaces(_request_timeout=REQUEST_TIMEOUT)
    failures = image_pull_failures(pods)
    assert not failures, "images the air-gap bundle lacks (no registry is reachable):\n" + "\n".join(failures)
