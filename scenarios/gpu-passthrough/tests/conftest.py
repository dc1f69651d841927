"""Helpers for the gpu-passthrough scenario's tests. Every test here needs an NVIDIA GPU in the VM:
where none was passed through, the tests skip and say so instead of failing."""

from __future__ import annotations

import os
from typing import Any

import pytest

# Image a container GPU check runs; a site sets one its nodes can pull or have loaded
# (no registry is reachable from the harness's own VMs). It must have nvidia-smi on its PATH,
# or be any image (the toolkit mounts nvidia-smi into containers that ask for GPUs).
CONTAINER_IMAGE_ENV = "HARNESS_GPU_TEST_IMAGE"


def _has_nvidia_gpu(cluster: Any, node: str) -> bool:
    res = cluster.run(node, "grep -l 0x10de /sys/bus/pci/devices/*/vendor")
    return res.ok and bool(res.stdout.strip())


@pytest.fixture(scope="session")
def gpu_nodes(cluster: Any) -> list[str]:
    return cluster.group("gpu")


@pytest.fixture(autouse=True)
def _needs_passed_through_gpu(cluster: Any, gpu_nodes: list[str]) -> None:
    """Skip with the reason when a GPU node has no NVIDIA device (nothing was passed through)."""
    for node in gpu_nodes:
        if not _has_nvidia_gpu(cluster, node):
            pytest.skip(f"no NVIDIA GPU passed through to {node}: run on a host where `harness gpus` finds ready GPUs")


@pytest.fixture(scope="session")
def container_image() -> str:
    image = os.environ.get(CONTAINER_IMAGE_ENV, "")
    if not image:
        pytest.skip(
            f"no container image for the GPU container check: set {CONTAINER_IMAGE_ENV} to an image the "
            "GPU nodes can pull or already have (the harness's VMs reach no registry)"
        )
    return image
