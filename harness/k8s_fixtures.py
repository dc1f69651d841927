"""Kubernetes fixtures for scenario tests: load them with `pytest_plugins = ("harness.k8s_fixtures",)`
in the scenario's tests/conftest.py (next to the harness plugin's `cluster` and testinfra's `host`).

`kube` is a client of the cluster's API built from the kubeconfig k3s writes on the server
(/etc/rancher/k3s/k3s.yaml, read over SSH with the `cluster` fixture), its server address rewritten
to the server's private IP (which the API certificate names: roles/k3s sets tls-san). It uses its
own `Configuration`, never the client library's global one. Its helpers wait with deadlines and
fail with the events and logs that say why.
"""

from __future__ import annotations

import copy
import ipaddress
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import pytest
import yaml
from kubernetes import config as kube_config
from kubernetes.client import (
    ApiClient,
    AppsV1Api,
    CoreV1Api,
    NodeV1Api,
    V1Namespace,
    V1ObjectMeta,
    V1Pod,
)
from kubernetes.client.exceptions import ApiException

from harness.k8s_checks import GPU_RESOURCE, format_events, not_ready, wait_for

KUBECONFIG_PATH = "/etc/rancher/k3s/k3s.yaml"
BUNDLE_RECORD = "/etc/rancher/k3s/bundle.yml"  # bundle.yml of the bundle the cluster came from (roles/k3s)
API_PORT = 6443
SERVER_GROUP = "mgmt"
# Seconds for a pod to run to completion or become ready: image import and first start of a pod
# take long on an emulated (TCG) node.
POD_TIMEOUT = 300.0
NODE_TIMEOUT = 300.0  # seconds for every node to be registered and Ready
REQUEST_TIMEOUT = 30  # seconds for one API call
LOG_LINES = 50


def api_url(address: str, port: int = API_PORT) -> str:
    """https://ADDRESS:PORT, with an IPv6 address in brackets."""
    try:
        host = f"[{address}]" if ipaddress.ip_address(address).version == 6 else address
    except ValueError:  # a host name
        host = address
    return f"https://{host}:{port}"


def rewrite_kubeconfig(kubeconfig: Mapping[str, Any], server: str) -> dict[str, Any]:
    """A copy of `kubeconfig` whose every cluster's server is `server` (k3s writes
    https://127.0.0.1:6443, which only works on the server itself)."""
    out = copy.deepcopy(dict(kubeconfig))
    clusters = out.get("clusters")
    if not isinstance(clusters, list) or not clusters:
        raise ValueError("not a kubeconfig: no clusters")
    for entry in clusters:
        cluster = entry.get("cluster") if isinstance(entry, dict) else None
        if not isinstance(cluster, dict) or "server" not in cluster:
            raise ValueError(f"not a kubeconfig: cluster entry without a server: {entry!r}")
        cluster["server"] = server
    return out


def api_client(kubeconfig: Mapping[str, Any]) -> ApiClient:
    """An ApiClient with its own Configuration from a kubeconfig dict (the global one untouched)."""
    client: ApiClient = kube_config.new_client_from_config_dict(  # type: ignore[no-untyped-call]
        dict(kubeconfig), persist_config=False
    )
    return client


class Kube:
    """The cluster's API, and helpers that run pods and explain failures."""

    def __init__(
        self,
        core: CoreV1Api,
        apps: AppsV1Api,
        node: NodeV1Api,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.core, self.apps, self.node = core, apps, node
        self.clock, self.sleep = clock, sleep

    @classmethod
    def from_api_client(cls, api: ApiClient) -> Kube:
        return cls(CoreV1Api(api), AppsV1Api(api), NodeV1Api(api))

    def events(self, namespace: str, name: str | None = None) -> str:
        """Events of a namespace (of one object when `name` is given), for a failure message."""
        selector = f"involvedObject.name={name}" if name else None
        try:
            events = self.core.list_namespaced_event(
                namespace, field_selector=selector, _request_timeout=REQUEST_TIMEOUT
            )
        except ApiException as exc:
            return f"(cannot list events: {exc.status} {exc.reason})"
        return format_events(events)

    def logs(self, namespace: str, pod: str, lines: int = LOG_LINES) -> str:
        try:
            return str(
                self.core.read_namespaced_pod_log(pod, namespace, tail_lines=lines, _request_timeout=REQUEST_TIMEOUT)
            )
        except ApiException as exc:
            return f"(no logs: {exc.status} {exc.reason})"

    def diagnose(self, namespace: str, pod: str) -> str:
        """A pod's phase and container states, its events and its log: why it did not do its job."""
        try:
            p = self.core.read_namespaced_pod(pod, namespace, _request_timeout=REQUEST_TIMEOUT)
            st = p.status
            states = [
                f"  {c.name}: {c.state.to_dict() if c.state else '?'}"
                for c in ((st.container_statuses or []) if st else [])
            ]
            head = f"pod {namespace}/{pod} on {p.spec.node_name if p.spec else '?'}: phase {st.phase if st else '?'}"
            head += "\n" + "\n".join(states) if states else ""
        except ApiException as exc:
            head = f"pod {namespace}/{pod}: cannot read it ({exc.status} {exc.reason})"
        return (
            f"{head}\n--- events of {pod} ---\n{self.events(namespace, pod)}\n"
            f"--- last {LOG_LINES} log lines of {pod} ---\n{self.logs(namespace, pod)}"
        )

    def wait_nodes_ready(self, expected: Iterable[str], timeout: float = NODE_TIMEOUT) -> None:
        """Wait until every node in `expected` is registered and Ready; fail naming the others and the events."""
        __tracebackhide__ = True
        names = sorted(set(expected))

        def missing() -> list[str]:
            return not_ready(self.core.list_node(_request_timeout=REQUEST_TIMEOUT), names)

        wait_for(
            lambda: not missing(),
            timeout=timeout,
            what=f"nodes {', '.join(names)} to be Ready",
            diagnose=lambda: "not ready: " + ", ".join(missing()) + "\n" + self.events("default"),
            clock=self.clock,
            sleep=self.sleep,
        )

    def create_pod(self, namespace: str, manifest: Mapping[str, Any]) -> str:
        body = V1Pod.from_dict(dict(manifest))
        assert body is not None and body.metadata is not None and body.metadata.name
        self.core.create_namespaced_pod(namespace, body, _request_timeout=REQUEST_TIMEOUT)
        return body.metadata.name

    def _phase(self, namespace: str, name: str) -> str:
        pod = self.core.read_namespaced_pod(name, namespace, _request_timeout=REQUEST_TIMEOUT)
        return (pod.status.phase if pod.status else None) or "Unknown"

    def run_pod(self, namespace: str, manifest: Mapping[str, Any], timeout: float = POD_TIMEOUT) -> str:
        """Create a pod (restartPolicy Never), wait until it Succeeded and return its log. Fails the
        test with its states, events and log when it fails or the deadline passes."""
        __tracebackhide__ = True
        name = self.create_pod(namespace, manifest)
        phase = wait_for(
            lambda: (p := self._phase(namespace, name)) in ("Succeeded", "Failed") and p,
            timeout=timeout,
            what=f"pod {namespace}/{name} to run to completion",
            diagnose=lambda: self.diagnose(namespace, name),
            clock=self.clock,
            sleep=self.sleep,
        )
        if phase != "Succeeded":
            pytest.fail(f"pod {namespace}/{name} failed\n{self.diagnose(namespace, name)}", pytrace=False)
        return self.logs(namespace, name, lines=1000)

    def start_pod(self, namespace: str, manifest: Mapping[str, Any], timeout: float = POD_TIMEOUT) -> V1Pod:
        """Create a long-running pod and wait until it is Running with every container ready."""
        __tracebackhide__ = True
        name = self.create_pod(namespace, manifest)

        def ready() -> V1Pod | None:
            pod = self.core.read_namespaced_pod(name, namespace, _request_timeout=REQUEST_TIMEOUT)
            st = pod.status
            ok = st is not None and st.phase == "Running" and all(c.ready for c in st.container_statuses or [])
            return pod if ok and st is not None and st.pod_ip else None

        return wait_for(
            ready,
            timeout=timeout,
            what=f"pod {namespace}/{name} to be Running and ready",
            diagnose=lambda: self.diagnose(namespace, name),
            clock=self.clock,
            sleep=self.sleep,
        )


def unique_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def pod_manifest(
    name: str,
    image: str,
    command: list[str],
    *,
    node: str | None = None,
    restart_policy: str = "Never",
    runtime_class: str | None = None,
    gpus: int = 0,
) -> dict[str, Any]:
    """A test pod: one container running `command` (image never pulled when present: no registry
    is reachable), on `node` when given (its hostname label), with `gpus` nvidia.com/gpu."""
    container: dict[str, Any] = {"name": "main", "image": image, "imagePullPolicy": "IfNotPresent", "command": command}
    if gpus:
        container["resources"] = {"limits": {GPU_RESOURCE: str(gpus)}}
    spec: dict[str, Any] = {"restartPolicy": restart_policy, "containers": [container]}
    if node is not None:
        spec["nodeSelector"] = {"kubernetes.io/hostname": node}
    if runtime_class is not None:
        spec["runtimeClassName"] = runtime_class
    labels = {"app.kubernetes.io/part-of": "harness-test"}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels}, "spec": spec}


@pytest.fixture(scope="session")
def k8s_server_group() -> str:
    """The inventory group whose first host is the k3s server (override in a conftest)."""
    return SERVER_GROUP


@pytest.fixture(scope="session")
def k8s_server(cluster: Any, k8s_server_group: str) -> str:
    servers = cluster.group(k8s_server_group)
    if not servers:
        pytest.fail(f"the inventory has no group {k8s_server_group!r} with the k3s server", pytrace=False)
    return str(servers[0])


@pytest.fixture(scope="session")
def k8s_kubeconfig_path() -> str:
    """Where the server keeps the admin kubeconfig (k3s's; roles/kubernetes: /etc/kubernetes/admin.conf)."""
    return KUBECONFIG_PATH


@pytest.fixture(scope="session")
def k8s_bundle_record_path() -> str:
    """Where the server keeps bundle.yml of the bundle it came from (roles/k3s's; override in a conftest)."""
    return BUNDLE_RECORD


@pytest.fixture(scope="session")
def kubeconfig(cluster: Any, k8s_server: str, k8s_kubeconfig_path: str) -> dict[str, Any]:
    """The server's kubeconfig (admin), pointed at its private IP."""
    raw = yaml.safe_load(cluster.read_file(k8s_server, k8s_kubeconfig_path))
    if not isinstance(raw, dict):
        pytest.fail(f"{k8s_kubeconfig_path} on {k8s_server} is not a kubeconfig", pytrace=False)
    return rewrite_kubeconfig(raw, api_url(cluster.private_ip(k8s_server)))


@pytest.fixture(scope="session")
def kube(kubeconfig: dict[str, Any]) -> Iterator[Kube]:
    api = api_client(kubeconfig)
    try:
        yield Kube.from_api_client(api)
    finally:
        api.close()  # type: ignore[no-untyped-call]


@pytest.fixture(scope="session")
def k8s_bundle_record(cluster: Any, k8s_server: str, k8s_bundle_record_path: str) -> dict[str, Any]:
    """bundle.yml of the bundle the cluster was installed from ({} when the server has none)."""
    res = cluster.run(k8s_server, "sudo cat %s", k8s_bundle_record_path)
    data = yaml.safe_load(res.stdout) if res.ok else None
    return data if isinstance(data, dict) else {}


@pytest.fixture(scope="session")
def k8s_namespace(kube: Kube) -> Iterator[str]:
    """A namespace of this test session, deleted (with its pods) at the end."""
    name = unique_name("harness-test")
    kube.core.create_namespace(V1Namespace(metadata=V1ObjectMeta(name=name)), _request_timeout=REQUEST_TIMEOUT)
    try:
        yield name
    finally:
        kube.core.delete_namespace(name, _request_timeout=REQUEST_TIMEOUT)
