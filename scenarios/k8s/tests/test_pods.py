"""Workloads on the agents: a busybox pod runs on each agent, a pod reaches a pod on the other
agent over flannel, and cluster DNS resolves the API service."""

from __future__ import annotations

import pytest

from harness.k8s_fixtures import REQUEST_TIMEOUT, Kube, pod_manifest, unique_name

HTTP_PORT = 8080


def test_busybox_runs_on_each_agent(kube: Kube, k8s_namespace: str, agents: list[str], busybox_image: str) -> None:
    for node in agents:
        out = kube.run_pod(k8s_namespace, pod_manifest(unique_name("hello"), busybox_image, ["hostname"], node=node))
        assert out.strip().startswith("hello-"), out


def test_pod_reaches_a_pod_on_the_other_agent(
    kube: Kube, k8s_namespace: str, agents: list[str], busybox_image: str
) -> None:
    if len(agents) < 2:
        pytest.skip("one agent only: no other agent to reach")
    serve = ["sh", "-c", f"echo pong > /tmp/index.html && exec httpd -f -p {HTTP_PORT} -h /tmp"]
    server = kube.start_pod(
        k8s_namespace,
        pod_manifest(unique_name("server"), busybox_image, serve, node=agents[0], restart_policy="Always"),
    )
    assert server.status is not None and server.spec is not None
    assert server.spec.node_name == agents[0]
    url = f"http://{server.status.pod_ip}:{HTTP_PORT}/index.html"
    fetch = ["wget", "-qO-", "-T", "10", url]
    out = kube.run_pod(k8s_namespace, pod_manifest(unique_name("client"), busybox_image, fetch, node=agents[1]))
    assert out.strip() == "pong", f"{url} from {agents[1]}: {out!r}"


def test_cluster_dns_resolves_the_api_service(
    kube: Kube, k8s_namespace: str, agents: list[str], busybox_image: str
) -> None:
    service = kube.core.read_namespaced_service("kubernetes", "default", _request_timeout=REQUEST_TIMEOUT)
    assert service.spec is not None and service.spec.cluster_ip
    name = "kubernetes.default.svc.cluster.local"
    lookup = ["nslookup", "-type=a", name]
    out = kube.run_pod(k8s_namespace, pod_manifest(unique_name("dns"), busybox_image, lookup, node=agents[-1]))
    assert service.spec.cluster_ip in out, f"nslookup {name} did not answer {service.spec.cluster_ip}:\n{out}"
