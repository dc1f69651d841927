from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from harness.errors import HostError
from harness.gpus import discover
from harness.passthrough import (
    Allocation,
    Hostdev,
    acquire_locks,
    allocate,
    memory_problem,
    plan_allocation,
    release_locks,
    requests_from_nodes,
    stale_locks,
)
from harness.spec import GpuRequest, Node

SYSFS = Path(__file__).resolve().parents[1] / "fixtures" / "sysfs"


def build_tree(root: Path, listing: str) -> None:
    spec = importlib.util.spec_from_file_location("make_trees", SYSFS / "make_trees.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.build_tree(root, listing)


def plan(
    tree: str,
    requests: Sequence[tuple[str, GpuRequest]],
    lockdir: Path,
    in_use: Mapping[str, str] | None = None,
    run_id: str = "run-a",
) -> Allocation:
    return plan_allocation(requests, discover(SYSFS / tree), in_use or {}, lockdir, run_id)


def refused(
    tree: str, requests: Sequence[tuple[str, GpuRequest]], lockdir: Path, in_use: Mapping[str, str] | None = None
) -> str:
    with pytest.raises(HostError) as exc:
        plan(tree, requests, lockdir, in_use)
    return str(exc.value)


def addrs(alloc: Allocation, node: str) -> list[str]:
    return [h.address for h in alloc[node]]


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def write_lock(lockdir: Path, address: str, run_id: str, pid: int) -> Path:
    lockdir.mkdir(parents=True, exist_ok=True)
    path = lockdir / f"{address}.lock"
    path.write_text(json.dumps({"run_id": run_id, "pid": pid}))
    return path


def test_hostdev_fields_for_vagrant_libvirt() -> None:
    assert Hostdev.from_address("8a:00.1") == Hostdev("0000:8a:00.1", "0x0000", "0x8a", "0x00", "0x1")


def test_two_nodes_with_two_gpus_each_never_share(tmp_path: Path) -> None:
    alloc = plan("dgx1", [("gpu01", 2), ("gpu02", 2)], tmp_path)
    assert addrs(alloc, "gpu01") == ["0000:06:00.0", "0000:07:00.0"]
    assert addrs(alloc, "gpu02") == ["0000:0a:00.0", "0000:0b:00.0"]
    assert len(set(alloc.addresses)) == 4
    assert alloc.to_json() == {"gpu01": ["0000:06:00.0", "0000:07:00.0"], "gpu02": ["0000:0a:00.0", "0000:0b:00.0"]}


def test_counts_prefer_one_numa_node(tmp_path: Path) -> None:
    alloc = plan("dgx1", [("gpu01", 3), ("gpu02", 3)], tmp_path)
    assert addrs(alloc, "gpu01") == ["0000:06:00.0", "0000:07:00.0", "0000:0a:00.0"]
    assert addrs(alloc, "gpu02") == ["0000:85:00.0", "0000:86:00.0", "0000:89:00.0"], "not 0b plus two of NUMA 1"


def test_count_spans_numa_nodes_when_it_must(tmp_path: Path) -> None:
    alloc = plan("dgx1", [("big", 6)], tmp_path)
    assert addrs(alloc, "big") == [
        "0000:06:00.0", "0000:07:00.0", "0000:0a:00.0", "0000:0b:00.0", "0000:85:00.0", "0000:86:00.0",
    ]  # fmt: skip


def test_gpu_brings_its_audio_function(tmp_path: Path) -> None:
    alloc = plan("consumer", [("gpu01", ["01:00.0"])], tmp_path)
    assert alloc["gpu01"] == (
        Hostdev("0000:01:00.0", "0x0000", "0x01", "0x00", "0x0"),
        Hostdev("0000:01:00.1", "0x0000", "0x01", "0x00", "0x1"),
    )
    assert addrs(plan("consumer", [("gpu01", 1)], tmp_path), "gpu01") == ["0000:01:00.0", "0000:01:00.1"]


def test_auto_takes_the_ready_gpus_left(tmp_path: Path) -> None:
    alloc = plan("dgx1", [("fixed", ["0000:89:00.0"]), ("rest", "auto")], tmp_path)
    assert addrs(alloc, "fixed") == ["0000:89:00.0"]
    assert len(alloc["rest"]) == 7 and "0000:89:00.0" not in addrs(alloc, "rest")
    dgx2 = plan("dgx2", [("all", "auto")], tmp_path)
    assert len(dgx2["all"]) == 16, "auto takes GPUs, not NVSwitches"


def test_auto_on_two_nodes_is_refused(tmp_path: Path) -> None:
    msg = refused("dgx1", [("a", "auto"), ("b", "auto")], tmp_path)
    assert "auto is set on a, b" in msg and "only one node" in msg


def test_nodes_without_gpus_need_nothing(tmp_path: Path) -> None:
    alloc = plan("iommu_off", [("login", 0), ("mgmt", [])], tmp_path)
    assert alloc["login"] == () and alloc["mgmt"] == () and alloc.addresses == ()


def test_consumer_count_two_says_why_the_second_card_is_not_ready(tmp_path: Path) -> None:
    msg = refused("consumer", [("gpu01", 2)], tmp_path)
    assert "asks for 2 GPU(s) but 1 are ready and free (0000:01:00.0)" in msg
    assert "0000:02:00.0" in msg and "bound to nvidia" in msg and "options vfio-pci ids=10de:0fb1,10de:15fc" in msg
    assert "snd_hda_intel" in msg


def test_explicit_address_problems(tmp_path: Path) -> None:
    msg = refused(
        "consumer",
        [("a", ["0000:05:00.0"]), ("b", ["0000:01:00.1"]), ("c", ["0000:02:00.0"]), ("d", ["0000:00:1f.6", "x"])],
        tmp_path,
    )
    assert "5 problem(s)" in msg
    assert "d: 'x' is not a PCI address" in msg
    assert "a: 0000:05:00.0 is not an NVIDIA GPU on this host" in msg
    assert "b: 0000:01:00.1 (10de:0fb1, kind audio) is not an NVIDIA GPU" in msg
    assert "c: 0000:02:00.0 cannot be passed through" in msg and "bound to nvidia" in msg
    assert "d: 0000:00:1f.6 is not an NVIDIA GPU on this host" in msg, "a NIC is not a GPU"


def test_same_gpu_on_two_nodes_is_refused(tmp_path: Path) -> None:
    msg = refused("dgx1", [("a", ["0000:06:00.0"]), ("b", ["06:00.0"])], tmp_path)
    assert "b: 0000:06:00.0" in msg and "also goes to a" in msg


def test_shared_group_gpu_names_the_nic(tmp_path: Path) -> None:
    msg = refused("shared_group", [("gpu01", ["0000:03:00.0"])], tmp_path)
    assert "0000:04:00.0" in msg and "e1000e" in msg and "0000:00:1c.0" not in msg


def test_iommu_off_is_said_once_with_the_fix(tmp_path: Path) -> None:
    msg = refused("iommu_off", [("gpu01", 1)], tmp_path)
    assert msg.count("intel_iommu=on iommu=pt") == 1 and "amd_iommu=on iommu=pt" in msg
    assert "0000:01:00.0: the IOMMU is off" in msg and "bound to nvidia" in msg


def test_in_use_locked_and_short_are_all_reported(tmp_path: Path) -> None:
    write_lock(tmp_path, "0000:07:00.0", "run-b", os.getpid())
    msg = refused(
        "dgx1",
        [("a", ["0000:06:00.0"]), ("b", ["0000:07:00.0"]), ("c", 7)],
        tmp_path,
        in_use={"0000:06:00.0": "other_gpu01"},
    )
    assert "3 problem(s)" in msg
    assert "0000:06:00.0 is held by the running libvirt domain 'other_gpu01'" in msg
    assert "virsh destroy other_gpu01" in msg and "virsh detach-device" in msg
    assert "0000:07:00.0 is locked by harness run run-b" in msg and f"pid {os.getpid()}" in msg
    assert "c: asks for 7 GPU(s) but 6 are ready and free" in msg


def test_own_and_stale_locks_do_not_block(tmp_path: Path) -> None:
    write_lock(tmp_path, "0000:06:00.0", "run-a", os.getpid())
    write_lock(tmp_path, "0000:07:00.0", "run-old", dead_pid())
    assert addrs(plan("dgx1", [("a", 2)], tmp_path, run_id="run-a"), "a") == ["0000:06:00.0", "0000:07:00.0"]


def test_companion_in_use_blocks_the_gpu(tmp_path: Path) -> None:
    msg = refused("consumer", [("gpu01", ["0000:01:00.0"])], tmp_path, in_use={"0000:01:00.1": "vm1"})
    assert "0000:01:00.1 is held by the running libvirt domain 'vm1'" in msg


def test_locks_acquire_release(tmp_path: Path) -> None:
    lockdir = tmp_path / "locks"
    taken = acquire_locks(lockdir, "run-a", ["0000:06:00.0", "0000:07:00.0"])
    assert sorted(p.name for p in taken) == ["0000:06:00.0.lock", "0000:07:00.0.lock"]
    assert json.loads(taken[0].read_text()) == {"run_id": "run-a", "pid": os.getpid()}
    acquire_locks(lockdir, "run-a", ["0000:06:00.0"])  # taking one's own lock again is fine
    write_lock(lockdir, "0000:0a:00.0", "run-c", os.getpid())
    assert release_locks(lockdir, "run-a") == ["0000:06:00.0", "0000:07:00.0"]
    assert sorted(p.name for p in lockdir.glob("*.lock")) == ["0000:0a:00.0.lock"]


def test_acquire_is_all_or_nothing(tmp_path: Path) -> None:
    write_lock(tmp_path, "0000:07:00.0", "run-b", os.getpid())
    with pytest.raises(HostError) as exc:
        acquire_locks(tmp_path, "run-a", ["0000:06:00.0", "0000:07:00.0", "0000:0a:00.0"])
    assert "0000:07:00.0 is locked by harness run run-b" in str(exc.value)
    assert sorted(p.name for p in tmp_path.glob("*.lock")) == ["0000:07:00.0.lock"]


def test_stale_lock_is_listed_and_taken_over(tmp_path: Path) -> None:
    pid = dead_pid()
    write_lock(tmp_path, "0000:06:00.0", "run-old", pid)
    (tmp_path / "0000:07:00.0.lock").write_text("{half a JSON")
    write_lock(tmp_path, "0000:0a:00.0", "run-live", os.getpid())
    assert [(lock.address, lock.pid) for lock in stale_locks(tmp_path)] == [("0000:06:00.0", pid), ("0000:07:00.0", 0)]
    acquire_locks(tmp_path, "run-a", ["0000:06:00.0", "0000:07:00.0"])
    assert stale_locks(tmp_path) == []
    assert json.loads((tmp_path / "0000:06:00.0.lock").read_text())["run_id"] == "run-a"


def test_allocate_locks_and_a_second_run_is_refused(tmp_path: Path) -> None:
    disc = discover(SYSFS / "dgx1")
    first = allocate([("gpu01", 8)], disc, {}, tmp_path, "run-a")
    assert len(first["gpu01"]) == 8 and len(list(tmp_path.glob("*.lock"))) == 8
    with pytest.raises(HostError) as exc:
        allocate([("gpu01", 1)], disc, {}, tmp_path, "run-b")
    assert "asks for 1 GPU(s) but 0 are ready and free" in str(exc.value) and "locked by harness run run-a" in str(
        exc.value
    )
    release_locks(tmp_path, "run-a")
    assert len(allocate([("gpu01", 1)], disc, {}, tmp_path, "run-b")["gpu01"]) == 1


def test_stand_in_vendor_device_can_be_allocated(tmp_path: Path) -> None:
    listing = """
    0000:00:1c.0  8086:a110  060400  pcieport  3  0
    0000:05:00.0  8086:10d3  020000  vfio-pci  4  0
    """
    sysfs = tmp_path / "sysfs"
    build_tree(sysfs, listing)
    disc = discover(sysfs, frozenset({"8086"}))
    alloc = plan_allocation([("n", 1)], disc, {}, tmp_path / "locks", "r")
    assert addrs(alloc, "n") == ["0000:05:00.0"]
    with pytest.raises(HostError) as exc:
        plan_allocation([("n", ["0000:00:1c.0"])], disc, {}, tmp_path / "locks", "r")
    assert "is not a GPU of vendor 8086" in str(exc.value), "a bridge is never handed out"


def test_requests_from_nodes() -> None:
    nodes = [
        Node(name="login", groups=("login",), cpus=1, memory=1024, disk=8, gpus=0),
        Node(name="gpu01", groups=("gpu",), cpus=1, memory=1024, disk=8, gpus=2),
    ]
    assert requests_from_nodes(nodes) == [("gpu01", 2)]


def test_memory_problem() -> None:
    assert memory_problem(4096, 8192) is None
    msg = memory_problem(16384, 8192)
    assert msg is not None and "16384 MiB" in msg and "8192 MiB" in msg and "memory:" in msg
