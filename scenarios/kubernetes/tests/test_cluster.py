"""Upstream Kubernetes from the server bundle, through the API server: the nodes are the
inventory's workers, each Ready with its private IP as InternalIP, and a busybox pod from the
bundle runs on each of them (no registry is reachable: the image was imported by the role)."""

from __future__ import annotations

from typing import Any

from harness.k8s_checks import internal_ip, node_names
from harness.k8s_fixtures import REQUEST_TIMEOUT, Kube, pod_manifest, unique_name


def test_node_set_is_the_inventory_workers(kube: Kube, workers: list[str]) -> None:
    assert node_names(kube.core.list_node(_request_timeout=REQUEST_TIMEOUT)) == workers


def test_every_worker_is_ready(kube: Kube, workers: list[str]) -> None:
    kube.wait_nodes_ready(workers)


def test_internal_ip_is_the_private_ip(kube: Kube, cluster: Any) -> None:
    nodes = kube.core.list_node(_request_timeout=REQUEST_TIMEOUT)
    got = {n.metadata.name: internal_ip(n) for n in nodes.items if n.metadata}
    assert got == {name: cluster.private_ip(name) for name in got}


def test_busybox_runs_on_each_worker(kube: Kube, k8s_namespace: str, workers: list[str], busybox_image: str) -> None:
    for node in workers:
        out = kube.run_pod(k8s_namespace, pod_manifest(unique_name("hello"), busybox_image, ["hostname"], node=node))
        assert out.strip().startswith("hello-"), out
