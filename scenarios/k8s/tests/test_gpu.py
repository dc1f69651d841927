"""GPUs in Kubernetes, on agents with GPUs passed through (skipped elsewhere): the nvidia
RuntimeClass, the device plugin ready on each GPU agent, allocatable nvidia.com/gpu equal to the
passed-through GPUs, and a pod with nvidia.com/gpu: 1 running `nvidia-smi -L`."""

from __future__ import annotations

from typing import Any

from harness.k8s_checks import GPU_RESOURCE, daemonset_ready, describe_daemonset, gpu_allocatable, wait_for
from harness.k8s_fixtures import REQUEST_TIMEOUT, Kube, pod_manifest, unique_name

PLUGIN_TIMEOUT = 300.0
RUNTIME_CLASS = "nvidia"


def test_nvidia_runtime_class_exists(kube: Kube, gpu_agents: dict[str, int]) -> None:
    rc = kube.node.read_runtime_class(RUNTIME_CLASS, _request_timeout=REQUEST_TIMEOUT)
    assert rc.handler == RUNTIME_CLASS


def _device_plugins(kube: Kube) -> list[Any]:
    sets = kube.apps.list_daemon_set_for_all_namespaces(_request_timeout=REQUEST_TIMEOUT).items
    return [ds for ds in sets if ds.metadata and "nvidia-device-plugin" in (ds.metadata.name or "")]


def test_device_plugin_is_ready_on_every_gpu_agent(kube: Kube, gpu_agents: dict[str, int]) -> None:
    def ready() -> bool:
        plugins = _device_plugins(kube)
        return bool(plugins) and all(daemonset_ready(ds, at_least=len(gpu_agents)) for ds in plugins)

    wait_for(
        ready,
        timeout=PLUGIN_TIMEOUT,
        what=f"the NVIDIA device plugin DaemonSet ready on {', '.join(gpu_agents)}",
        diagnose=lambda: (
            "\n".join(describe_daemonset(ds) for ds in _device_plugins(kube))
            or "no DaemonSet named nvidia-device-plugin (bundle.yml manifests)"
        ),
    )


def test_allocatable_gpus_match_the_passed_through_ones(kube: Kube, gpu_agents: dict[str, int]) -> None:
    def counts() -> dict[str, int]:
        return {n: gpu_allocatable(kube.core.read_node(n, _request_timeout=REQUEST_TIMEOUT)) for n in gpu_agents}

    wait_for(
        lambda: counts() == gpu_agents,
        timeout=PLUGIN_TIMEOUT,
        what=f"allocatable {GPU_RESOURCE} to be {gpu_agents}",
        diagnose=lambda: f"allocatable now: {counts()}",
    )


def test_a_pod_with_one_gpu_runs_nvidia_smi(
    kube: Kube, k8s_namespace: str, gpu_agents: dict[str, int], cuda_image: str
) -> None:
    node = next(iter(gpu_agents))
    name = unique_name("nvidia-smi")
    body = pod_manifest(name, cuda_image, ["nvidia-smi", "-L"], node=node, runtime_class=RUNTIME_CLASS, gpus=1)
    out = kube.run_pod(k8s_namespace, body)
    gpus = [line for line in out.splitlines() if line.startswith("GPU ")]
    assert len(gpus) == 1, f"the pod asked for one GPU and sees {len(gpus)}:\n{out}"
