"""The Kubernetes assertions and waits against recorded API responses (tests/fixtures/k8s/*.json,
shaped like what a k3s v1.31 API server returns), deserialized with the client's own ApiClient."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import ApiClient, V1DaemonSet, V1NodeList

from harness import k8s_checks as kc

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "k8s"


def recorded(name: str, kind: str) -> Any:
    """A recorded API response as the client returns it."""
    return ApiClient().deserialize((FIX / f"{name}.json").read_text(), kind, "application/json")


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_nodes_ready_with_internal_ips_and_gpus() -> None:
    nodes: V1NodeList = recorded("nodes-ready", "V1NodeList")
    assert kc.node_names(nodes) == ["gpu01", "gpu02", "mgmt01"]
    assert kc.not_ready(nodes, ["mgmt01", "gpu01", "gpu02"]) == []
    by_name = {n.metadata.name: n for n in nodes.items if n.metadata}
    assert {name: kc.internal_ip(n) for name, n in by_name.items()} == {
        "mgmt01": "10.77.0.11",
        "gpu01": "10.77.0.21",
        "gpu02": "10.77.0.22",
    }
    assert [kc.gpu_allocatable(by_name[n]) for n in ("mgmt01", "gpu01", "gpu02")] == [0, 1, 0]
    assert "docker.io/rancher/mirrored-library-busybox:1.36.1" in kc.node_images(by_name["gpu02"])


def test_not_ready_names_absent_and_not_ready_nodes_with_the_reason() -> None:
    nodes = recorded("nodes-joining", "V1NodeList")
    problems = kc.not_ready(nodes, ["mgmt01", "gpu01", "gpu02"])
    assert problems[0].startswith("gpu01 (Ready=False: KubeletNotReady container runtime network not ready")
    assert problems[1] == "gpu02 (absent)"


def test_pod_problems_name_image_pulls_unready_and_unscheduled_pods_not_completed_ones() -> None:
    pods = recorded("pods-kube-system", "V1PodList")
    problems = kc.pod_problems(pods)
    assert problems == [
        "kube-system/metrics-server-5985cbc9d7-q2jgm: metrics-server: ImagePullBackOff: Back-off pulling image "
        '"docker.io/rancher/mirrored-metrics-server:v0.7.2"',
        "kube-system/nvidia-device-plugin-daemonset-8xk2d: containers not ready: nvidia-device-plugin-ctr",
        "kube-system/svclb-unscheduled: phase Pending",
    ]
    assert kc.image_pull_failures(pods) == [
        "kube-system/metrics-server-5985cbc9d7-q2jgm: metrics-server "
        "docker.io/rancher/mirrored-metrics-server:v0.7.2: ImagePullBackOff"
    ]


def test_daemonset_readiness() -> None:
    ds: V1DaemonSet = recorded("daemonset-device-plugin", "V1DaemonSet")
    assert not kc.daemonset_ready(ds)
    assert kc.describe_daemonset(ds) == (
        "kube-system/nvidia-device-plugin-daemonset: desired 2, ready 1, up to date 2, unavailable 1"
    )
    assert ds.status is not None
    ds.status.number_ready, ds.status.number_unavailable = 2, 0
    assert kc.daemonset_ready(ds) and kc.daemonset_ready(ds, at_least=2) and not kc.daemonset_ready(ds, at_least=3)


def test_events_oldest_first() -> None:
    text = kc.format_events(recorded("events", "CoreV1EventList"))
    first, second = text.splitlines()
    assert first == "Normal Scheduled pod/cuda-1a2b3c: Successfully assigned harness-test-1a2b3c/cuda-1a2b3c to gpu01"
    assert second.startswith("Warning Failed pod/cuda-1a2b3c: Failed to pull image") and second.endswith("(x3)")


def test_wait_for_returns_once_the_probe_is_satisfied() -> None:
    answers = iter([recorded("nodes-joining", "V1NodeList"), recorded("nodes-ready", "V1NodeList")])
    clock = FakeClock()
    expected = ["mgmt01", "gpu01", "gpu02"]

    def all_ready() -> V1NodeList | None:
        nodes: V1NodeList = next(answers)
        return nodes if not kc.not_ready(nodes, expected) else None

    nodes = kc.wait_for(
        all_ready,
        timeout=60,
        what="every node Ready",
        clock=clock,
        sleep=clock.sleep,
    )
    assert kc.node_names(nodes) == sorted(expected) and clock.sleeps == [3.0]


def test_wait_for_gives_up_at_the_deadline_with_the_last_answer_and_the_diagnosis() -> None:
    clock = FakeClock()
    nodes = recorded("nodes-joining", "V1NodeList")
    with pytest.raises(pytest.fail.Exception) as info:
        kc.wait_for(
            lambda: kc.not_ready(nodes, ["gpu01"]) == [],
            timeout=10,
            interval=4,
            what="gpu01 to be Ready",
            diagnose=lambda: "not ready: " + ", ".join(kc.not_ready(nodes, ["gpu01"])),
            clock=clock,
            sleep=clock.sleep,
        )
    message = str(info.value)
    assert message.startswith("gave up after 10 s waiting for gpu01 to be Ready; last answer: False")
    assert "not ready: gpu01 (Ready=False: KubeletNotReady" in message
    assert clock.sleeps == [4, 4, 4]


def test_wait_for_retries_api_errors_and_shows_the_last_one() -> None:
    clock = FakeClock()

    def probe() -> None:
        raise ConnectionRefusedError("connection refused")

    with pytest.raises(pytest.fail.Exception, match=r"last answer: 'ConnectionRefusedError: connection refused'"):
        kc.wait_for(probe, timeout=5, what="the API", clock=clock, sleep=clock.sleep)
