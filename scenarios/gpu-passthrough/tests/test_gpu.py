"""The GPU passed through to the VM works: the driver lists it, a container sees it, a Slurm job
with --gres=gpu:1 runs nvidia-smi on it, and the DCGM exporter serves its metrics on 9400."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest

from harness.pytest_plugin import journal

ROLES = Path(__file__).resolve().parents[3] / "roles"
JOB_TIMEOUT = 300


def _gpu_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("GPU ")]


def test_nvidia_smi_lists_the_gpus(cluster: Any, gpu_nodes: list[str]) -> None:
    for node in gpu_nodes:
        on_bus = cluster.check(node, "grep -l 0x10de /sys/bus/pci/devices/*/vendor").split()
        listed = _gpu_lines(cluster.check(node, "nvidia-smi -L"))
        assert listed, f"{node}: nvidia-smi -L lists no GPU"
        assert len(listed) <= len(on_bus), (listed, on_bus)


def test_a_container_sees_the_gpu(cluster: Any, gpu_nodes: list[str], container_image: str) -> None:
    node = gpu_nodes[0]
    image = shlex.quote(container_image)
    have = cluster.run(node, f"sudo docker image inspect {image} >/dev/null 2>&1 || sudo docker pull {image}")
    if not have.ok:
        pytest.skip(f"container image {container_image} is not available on {node}: {have.stderr.strip()[-300:]}")
    out = cluster.check(node, f"sudo docker run --rm --gpus all {image} nvidia-smi -L", timeout=JOB_TIMEOUT)
    assert _gpu_lines(out), out


def test_slurm_job_gets_a_gpu(cluster: Any, gpu_nodes: list[str]) -> None:
    if not (ROLES / "slurm").is_dir():
        pytest.skip("roles/slurm is not in this repository: no Slurm in site.yml")
    mgmt = cluster.group("mgmt")[0]
    out = cluster.check(mgmt, f"srun -w {gpu_nodes[0]} --gres=gpu:1 -t 5 nvidia-smi -L", timeout=JOB_TIMEOUT)
    assert len(_gpu_lines(out)) == 1, f"the job should see exactly one GPU:\n{out}"


def test_dcgm_exporter_is_scrapable_from_mgmt(cluster: Any, gpu_nodes: list[str]) -> None:
    mgmt = cluster.group("mgmt")[0]
    for node in gpu_nodes:
        ip = cluster.private_ip(node)
        fetch = f"import urllib.request as u; print(u.urlopen('http://{ip}:9400/metrics', timeout=20).read().decode())"
        res = cluster.run(mgmt, f"python3 -c {shlex.quote(fetch)}")
        if not res.ok:
            log = journal(cluster.host(node), "dcgm-exporter")
            pytest.fail(f"{node}:9400/metrics not reachable from {mgmt}: {res.stderr}\n{log}", pytrace=False)
        assert "DCGM_FI_DEV_GPU_TEMP" in res.stdout or "DCGM_FI_" in res.stdout
