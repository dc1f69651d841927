"""The `kube` fixture's parts without a cluster: the kubeconfig k3s writes, rewritten to the server's
private IP and made into a client with its own Configuration; test pod manifests; running a pod
against a fake API that answers with recorded responses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from kubernetes.client import ApiClient, Configuration, CoreV1EventList, V1NodeList, V1Pod

from harness import k8s_fixtures as kf

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "k8s"


def test_rewrite_kubeconfig_points_every_cluster_at_the_server_and_leaves_the_input_alone() -> None:
    original = yaml.safe_load((FIX / "k3s.yaml").read_text())
    rewritten = kf.rewrite_kubeconfig(original, kf.api_url("10.77.0.11"))
    assert rewritten["clusters"][0]["cluster"]["server"] == "https://10.77.0.11:6443"
    assert original["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:6443"
    assert rewritten["users"] == original["users"]


@pytest.mark.parametrize("bad", [{}, {"clusters": []}, {"clusters": [{"name": "x", "cluster": {}}]}])
def test_rewrite_kubeconfig_refuses_what_is_no_kubeconfig(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="not a kubeconfig"):
        kf.rewrite_kubeconfig(bad, "https://10.0.0.1:6443")


def test_api_url_brackets_ipv6() -> None:
    assert kf.api_url("fd00::11") == "https://[fd00::11]:6443"
    assert kf.api_url("mgmt01", 16443) == "https://mgmt01:16443"


def test_api_client_has_its_own_configuration() -> None:
    config = kf.rewrite_kubeconfig(yaml.safe_load((FIX / "k3s.yaml").read_text()), "https://10.77.0.11:6443")
    client = kf.api_client(config)
    try:
        assert client.configuration.host == "https://10.77.0.11:6443"
        assert client.configuration.ssl_ca_cert and Path(client.configuration.ssl_ca_cert).read_bytes().startswith(
            b"-----BEGIN CERTIFICATE-----"
        )
        assert Configuration.get_default_copy().host != "https://10.77.0.11:6443"  # the global one untouched
    finally:
        client.close()  # type: ignore[no-untyped-call]


def test_pod_manifest_is_a_valid_pod() -> None:
    body = kf.pod_manifest("gpu-1", "cuda:12", ["nvidia-smi", "-L"], node="gpu01", runtime_class="nvidia", gpus=1)
    pod = V1Pod.from_dict(body)
    assert pod is not None and pod.spec is not None
    assert pod.spec.node_selector == {"kubernetes.io/hostname": "gpu01"} and pod.spec.runtime_class_name == "nvidia"
    container = pod.spec.containers[0]
    assert container.resources is not None and container.resources.limits == {"nvidia.com/gpu": "1"}
    assert container.image_pull_policy == "IfNotPresent" and pod.spec.restart_policy == "Never"
    plain = kf.pod_manifest("hello", "busybox", ["true"])["spec"]
    assert "nodeSelector" not in plain and "runtimeClassName" not in plain


def _recorded(name: str, kind: str) -> Any:
    return ApiClient().deserialize((FIX / f"{name}.json").read_text(), kind, "application/json")


class FakeCore:
    """CoreV1Api for a pod's life: answers read_namespaced_pod with recorded pods in turn."""

    def __init__(self, phases: list[str]) -> None:
        self.answers = [_recorded(f"pod-{p}", "V1Pod") for p in phases]
        self.created: list[V1Pod] = []

    def create_namespaced_pod(self, namespace: str, body: V1Pod, **_: Any) -> V1Pod:
        self.created.append(body)
        return body

    def read_namespaced_pod(self, name: str, namespace: str, **_: Any) -> V1Pod:
        answer: V1Pod = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return answer

    def read_namespaced_pod_log(self, name: str, namespace: str, **_: Any) -> str:
        return "hello-1a2b3c\n"

    def list_namespaced_event(self, namespace: str, **_: Any) -> CoreV1EventList:
        return cast(CoreV1EventList, _recorded("events", "CoreV1EventList"))


def _kube(core: FakeCore) -> kf.Kube:
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    return kf.Kube(cast(Any, core), cast(Any, None), cast(Any, None), clock=lambda: now[0], sleep=sleep)


def test_run_pod_waits_for_completion_and_returns_the_log() -> None:
    core = FakeCore(["pending", "pending", "succeeded"])
    out = _kube(core).run_pod("ns", kf.pod_manifest("hello-1a2b3c", "busybox", ["hostname"], node="gpu01"))
    assert out == "hello-1a2b3c\n"
    assert core.created[0].metadata is not None and core.created[0].metadata.name == "hello-1a2b3c"


def test_a_failed_pod_fails_the_test_with_its_states_events_and_log() -> None:
    core = FakeCore(["pending", "failed"])
    with pytest.raises(pytest.fail.Exception) as info:
        _kube(core).run_pod("ns", kf.pod_manifest("hello-1a2b3c", "busybox", ["nope"]))
    text = str(info.value)
    assert text.startswith("pod ns/hello-1a2b3c failed")
    assert "'exit_code': 127" in text
    assert "Warning Failed pod/cuda-1a2b3c: Failed to pull image" in text
    assert "--- last 50 log lines of hello-1a2b3c ---\nhello-1a2b3c" in text


def test_a_pod_that_never_finishes_fails_at_the_deadline() -> None:
    core = FakeCore(["pending"])
    with pytest.raises(pytest.fail.Exception, match=r"gave up after 300 s waiting for pod ns/hello-1a2b3c to run"):
        _kube(core).run_pod("ns", kf.pod_manifest("hello-1a2b3c", "busybox", ["sleep", "1d"]))


def test_start_pod_returns_the_running_pod_with_its_ip() -> None:
    running = json.loads((FIX / "pod-succeeded.json").read_text())
    running["status"] = {
        "phase": "Running",
        "podIP": "10.42.1.9",
        "containerStatuses": [{"name": "main", "image": "busybox", "imageID": "", "ready": True, "restartCount": 0}],
    }
    core = FakeCore(["pending"])
    core.answers = [core.answers[0], V1Pod.from_dict(running)]
    pod = _kube(core).start_pod("ns", kf.pod_manifest("server-1", "busybox", ["httpd"], restart_policy="Always"))
    assert pod.status is not None and pod.status.pod_ip == "10.42.1.9"


class FakeNodes(FakeCore):
    """CoreV1Api listing nodes: gpu01 Ready only from the second listing on; gpu02 never registers."""

    def __init__(self) -> None:
        super().__init__(["pending"])
        self.listings = 0

    def list_node(self, **_: Any) -> V1NodeList:
        self.listings += 1
        ready = "True" if self.listings > 1 else "False"
        node = {"metadata": {"name": "gpu01"}, "status": {"conditions": [{"type": "Ready", "status": ready}]}}
        return cast(V1NodeList, V1NodeList.from_dict({"items": [node]}))


def test_wait_nodes_ready_waits_for_every_node_and_names_the_missing() -> None:
    core = FakeNodes()
    _kube(core).wait_nodes_ready(["gpu01"])
    assert core.listings == 2
    with pytest.raises(pytest.fail.Exception, match=r"nodes gpu01, gpu02 to be Ready[\s\S]*not ready: gpu02"):
        _kube(FakeNodes()).wait_nodes_ready(["gpu02", "gpu01"])


def _collected(tests_dir: str) -> set[str]:
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "harness.pytest_plugin", tests_dir],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {line.split("::", 1)[1].split("[", 1)[0] for line in proc.stdout.splitlines() if "::" in line}


def test_the_k8s_scenario_tests_collect_and_are_the_ones_the_vm_test_requires() -> None:
    """scenarios/k8s/tests load with the harness plugin and harness.k8s_fixtures (no cluster needed to
    collect), and tests/vm/test_k8s.py names every one of them, so a renamed test cannot pass unseen."""
    from tests.vm.test_k8s import GPU_TESTS, REQUIRED_TESTS

    assert _collected("scenarios/k8s/tests") == REQUIRED_TESTS | GPU_TESTS


def test_the_kubernetes_scenario_tests_collect_and_are_the_ones_the_vm_test_requires() -> None:
    """The same for scenarios/kubernetes/tests (upstream Kubernetes) and tests/vm/test_kubernetes.py."""
    from tests.vm.test_kubernetes import REQUIRED_TESTS

    assert _collected("scenarios/kubernetes/tests") == REQUIRED_TESTS
