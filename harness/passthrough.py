"""GPU passthrough preflight and allocation: which host devices each node of a scenario gets.

`plan_allocation` checks every request against a `Discovery` (from harness.gpus), the devices running
libvirt domains hold and the lock files of other harness runs, and reports every problem at once.
`allocate` does the same and then takes the locks. One lock file per device
(`<lockdir>/<address>.lock`, JSON {run_id, pid}) keeps two runs from handing one device to two VMs;
`release_locks` gives a run's locks back at teardown.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from harness import flock, pci
from harness.errors import HostError
from harness.gpus import DEFAULT_VENDORS, IOMMU_ADVICE, Discovery, PciDevice, iommu_off_problem
from harness.paths import state_dir
from harness.proc import pid_alive
from harness.spec import GpuRequest, Node

LOCK_SUFFIX = ".lock"
_GUARD = ".guard"


def default_lockdir() -> Path:
    """Host-wide, shared by every harness process of this user."""
    return state_dir() / "gpu-locks"


@dataclass(frozen=True)
class Hostdev:
    """One PCI function to pass through, with the hex fields vagrant-libvirt's `libvirt.pci` takes."""

    address: str
    domain: str  # "0x0000"
    bus: str  # "0x08"
    slot: str  # "0x00"
    function: str  # "0x0"

    @classmethod
    def from_address(cls, address: str) -> Hostdev:
        addr = pci.PciAddress.parse(address)
        domain, bus, slot, function = (f"0x{f}" for f in addr.fields)
        return cls(str(addr), domain, bus, slot, function)


@dataclass(frozen=True)
class Allocation:
    """Node name -> the host devices it gets (GPUs with their card functions and IOMMU group mates)."""

    hostdevs: Mapping[str, tuple[Hostdev, ...]] = field(default_factory=dict)

    def __getitem__(self, node: str) -> tuple[Hostdev, ...]:
        return self.hostdevs.get(node, ())

    @property
    def addresses(self) -> tuple[str, ...]:
        return tuple(sorted(h.address for devs in self.hostdevs.values() for h in devs))

    def to_json(self) -> dict[str, list[str]]:
        return {node: [h.address for h in devs] for node, devs in self.hostdevs.items()}


@dataclass(frozen=True)
class DeviceLock:
    address: str
    run_id: str
    pid: int
    path: Path

    @property
    def alive(self) -> bool:
        return pid_alive(self.pid)


def requests_from_nodes(nodes: Sequence[Node]) -> list[tuple[str, GpuRequest]]:
    """The (node name, request) pairs of the nodes that ask for GPUs."""
    return [(n.name, n.gpus) for n in nodes if n.gpus]


def memory_problem(required_mib: int, available_mib: int) -> str | None:
    """None when the VMs fit in the host's available memory, else what to do about it."""
    if required_mib <= available_mib:
        return None
    return (
        f"the scenario's VMs need {required_mib} MiB of memory but the host has only {available_mib} MiB available "
        f"(short by {required_mib - available_mib} MiB; VMs with GPUs pin all their memory): lower `memory:` or "
        "`count:` of some nodes, or stop other VMs and programs on the host"
    )


# --- locks


def _lock_path(lockdir: Path, address: str) -> Path:
    return lockdir / f"{address}{LOCK_SUFFIX}"


def _read_lock(path: Path) -> DeviceLock:
    """A lock file; one that cannot be read as {run_id, pid} counts as held by nobody (pid 0, stale)."""
    address = path.name.removesuffix(LOCK_SUFFIX)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return DeviceLock(address, str(data["run_id"]), int(data["pid"]), path)
    except (OSError, ValueError, KeyError, TypeError):
        return DeviceLock(address, "?", 0, path)


def read_locks(lockdir: Path) -> list[DeviceLock]:
    if not lockdir.is_dir():
        return []
    return [_read_lock(p) for p in sorted(lockdir.glob(f"*{LOCK_SUFFIX}"))]


def stale_locks(lockdir: Path) -> list[DeviceLock]:
    """Locks whose process is gone: they may be taken over."""
    return [lock for lock in read_locks(lockdir) if not lock.alive]


@contextmanager
def _guard(lockdir: Path) -> Iterator[None]:
    """Serialise lock changes between harness processes, so a stale lock is taken over by one only."""
    with flock.exclusive(lockdir / _GUARD):
        yield


def _create_lock(path: Path, run_id: str) -> bool:
    """Create the lock file atomically; False when it already exists."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump({"run_id": run_id, "pid": os.getpid()}, fh)
    return True


def _locked_message(lock: DeviceLock) -> str:
    return (
        f"{lock.address} is locked by harness run {lock.run_id} (pid {lock.pid}), which is still running: "
        f"wait for it to finish or destroy its cluster (its lock is {lock.path})"
    )


def _take(path: Path, run_id: str) -> DeviceLock | None:
    """Take one lock (over a stale one, or again for the same run); the live holder when it cannot be had."""
    if _create_lock(path, run_id):
        return None
    holder = _read_lock(path)
    if holder.alive and holder.run_id != run_id:
        return holder
    path.unlink(missing_ok=True)
    _create_lock(path, run_id)
    return None


def acquire_locks(lockdir: Path, run_id: str, addresses: Iterable[str]) -> list[Path]:
    """Lock every address for run_id, or none: on failure release what was taken and raise HostError."""
    taken: list[Path] = []
    refused: list[str] = []
    with _guard(lockdir):
        for address in sorted(set(addresses)):
            path = _lock_path(lockdir, address)
            existed = path.exists()
            holder = _take(path, run_id)
            if holder is not None:
                refused.append(_locked_message(holder))
            elif not existed:
                taken.append(path)
        if refused:
            for path in taken:
                path.unlink(missing_ok=True)
            raise HostError(_problem_text("cannot lock the devices", refused))
    return taken


def release_locks(lockdir: Path, run_id: str) -> list[str]:
    """Remove run_id's locks (only those); returns the addresses released."""
    if not lockdir.is_dir():
        return []
    released = []
    with _guard(lockdir):
        for lock in read_locks(lockdir):
            if lock.run_id == run_id:
                lock.path.unlink(missing_ok=True)
                released.append(lock.address)
    return released


# --- allocation


def _problem_text(what: str, problems: Sequence[str]) -> str:
    return f"{what}: {len(problems)} problem(s)\n" + "\n".join(f"  - {p}" for p in problems)


def _what_gpu(discovery: Discovery) -> str:
    if discovery.vendors == DEFAULT_VENDORS:
        return "an NVIDIA GPU"
    return f"a GPU of vendor {', '.join(sorted(discovery.vendors))}"


class _Planner:
    """The state of one allocation: which node got which device, and every problem met on the way."""

    def __init__(self, discovery: Discovery, in_use: Mapping[str, str], locks: Mapping[str, DeviceLock]) -> None:
        self.discovery = discovery
        self.in_use = in_use
        self.locks = locks
        self.owner: dict[str, str] = {}  # address -> node
        self.problems: list[str] = []

    def unit(self, gpu: PciDevice) -> tuple[PciDevice, ...]:
        """The GPU, the other functions of its card and the non-bridge members of its IOMMU group."""
        mates = set(gpu.iommu_group_devices)
        return tuple(
            d for d in self.discovery.devices if (d.slot == gpu.slot or d.address in mates) and not d.is_bridge
        )

    def blockers(self, gpu: PciDevice) -> list[str]:
        """Why the GPU (with its unit) cannot be passed through by this run; empty when it can.
        With the IOMMU off that is said once for the host, not again for every device."""
        found: list[str] = []
        for dev in self.unit(gpu):
            found += [p for p in dev.problems if p != iommu_off_problem(dev.address)]
            if not self.discovery.iommu_enabled:
                found.append(f"{dev.address}: the IOMMU is off")
            if dev.address in self.in_use:
                dom = self.in_use[dev.address]
                found.append(
                    f"{dev.address} is held by the running libvirt domain {dom!r}: stop it (`virsh destroy {dom}`) "
                    f"or detach the device from it (`virsh detach-device {dom} <hostdev.xml>`)"
                )
            if dev.address in self.locks:
                found.append(_locked_message(self.locks[dev.address]))
        return list(dict.fromkeys(found))

    def holder(self, gpu: PciDevice, besides: str = "") -> str | None:
        """The node (other than `besides`) that already has a device of this GPU's unit."""
        owners = (self.owner.get(d.address) for d in self.unit(gpu))
        return next((o for o in owners if o is not None and o != besides), None)

    def take(self, node: str, gpu: PciDevice) -> None:
        for dev in self.unit(gpu):
            self.owner[dev.address] = node

    def gpu_count(self, node: str) -> int:
        return sum(1 for g in self.discovery.gpus if self.owner.get(g.address) == node)

    def explicit(self, node: str, addresses: Sequence[str]) -> None:
        for raw in addresses:
            try:
                address = pci.normalize_address(raw)
            except ValueError as exc:
                self.problems.append(f"{node}: {exc}")
                continue
            dev = self.discovery.device(address)
            if dev is None:
                self.problems.append(
                    f"{node}: {address} is not {_what_gpu(self.discovery)} on this host: fix the address "
                    "(see `harness gpus`)"
                )
            elif dev not in self.discovery.gpus:
                self.problems.append(
                    f"{node}: {address} ({dev.ids}, kind {dev.kind}) is not {_what_gpu(self.discovery)}: "
                    "ask for a GPU's address (`harness gpus` lists them)"
                )
            elif other := self.holder(dev, besides=node):
                self.problems.append(
                    f"{node}: {address} (or a device of its card or IOMMU group) also goes to {other}; "
                    "a device can go to one node only"
                )
            elif blockers := self.blockers(dev):
                self.problems.append(f"{node}: {address} cannot be passed through: " + "; ".join(blockers))
            else:
                self.take(node, dev)

    def free_gpus(self) -> list[PciDevice]:
        return [g for g in self.discovery.gpus if not self.blockers(g) and not self.holder(g)]

    def unusable(self) -> str:
        """Each GPU that cannot be had, and why."""
        out = []
        for gpu in self.discovery.gpus:
            if blockers := self.blockers(gpu):
                out += blockers
            elif other := self.holder(gpu):
                out.append(f"{gpu.address} goes to {other}")
        return "; not usable:" + "".join(f"\n      * {r}" for r in out) if out else "; the host has no other GPU"

    def count(self, node: str, wanted: int) -> None:
        free = self.free_gpus()
        if len(free) < wanted:
            ready = ", ".join(g.address for g in free) or "none"
            self.problems.append(
                f"{node}: asks for {wanted} GPU(s) but {len(free)} are ready and free ({ready}){self.unusable()}"
            )
            return
        for gpu in _prefer_one_numa_node(free, wanted):
            if self.gpu_count(node) < wanted and not self.holder(gpu):
                self.take(node, gpu)

    def auto(self, node: str) -> None:
        free = self.free_gpus()
        if not free:
            self.problems.append(f"{node}: asks for gpus: auto but no GPU is ready and free{self.unusable()}")
        for gpu in free:
            if not self.holder(gpu):
                self.take(node, gpu)

    def allocation(self, nodes: Sequence[str]) -> Allocation:
        return Allocation(
            {
                node: tuple(Hostdev.from_address(a) for a in sorted(a for a, n in self.owner.items() if n == node))
                for node in nodes
            }
        )


def _prefer_one_numa_node(free: list[PciDevice], wanted: int) -> list[PciDevice]:
    """The free GPUs in address order, those of the first NUMA node with `wanted` of them first."""
    for numa in dict.fromkeys(g.numa_node for g in free):
        same = [g for g in free if g.numa_node == numa]
        if len(same) >= wanted:
            return same + [g for g in free if g not in same]
    return free


def _live_foreign_locks(lockdir: Path, run_id: str) -> dict[str, DeviceLock]:
    return {lock.address: lock for lock in read_locks(lockdir) if lock.run_id != run_id and lock.alive}


def plan_allocation(
    requests: Sequence[tuple[str, GpuRequest]],
    discovery: Discovery,
    in_use: Mapping[str, str],
    lockdir: Path,
    run_id: str,
) -> Allocation:
    """Give every node the GPUs it asks for (explicit addresses first, then counts, then `auto`), or raise
    HostError listing every problem. Takes no locks."""
    planner = _Planner(discovery, in_use, _live_foreign_locks(lockdir, run_id))
    nodes = [node for node, _ in requests]
    if any(req for _, req in requests) and not discovery.iommu_enabled:
        planner.problems.append(
            f"the IOMMU is off on this host (the kernel shows no IOMMU groups), so no device can be passed through: "
            f"{IOMMU_ADVICE}"
        )
    autos = [node for node, req in requests if req == "auto"]
    if len(autos) > 1:
        planner.problems.append(
            f"gpus: auto is set on {', '.join(autos)}; only one node may take all the GPUs that are left: "
            "give the others a count or addresses"
        )
    for node, req in requests:
        if isinstance(req, list):
            planner.explicit(node, req)
    for node, req in requests:
        if isinstance(req, int) and req > 0:
            planner.count(node, req)
    if len(autos) == 1:
        planner.auto(autos[0])
    if planner.problems:
        raise HostError(_problem_text("cannot give the scenario its GPUs", planner.problems))
    return planner.allocation(nodes)


def allocate(
    requests: Sequence[tuple[str, GpuRequest]],
    discovery: Discovery,
    in_use: Mapping[str, str],
    lockdir: Path,
    run_id: str,
) -> Allocation:
    """plan_allocation, then lock every allocated device for run_id (release them with release_locks)."""
    allocation = plan_allocation(requests, discovery, in_use, lockdir, run_id)
    acquire_locks(lockdir, run_id, allocation.addresses)
    return allocation
