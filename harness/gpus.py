"""GPU and PCI discovery from sysfs: which devices there are, their drivers and IOMMU groups, and, in
words, what keeps each one from being passed through to a VM (VFIO). Read-only: nothing here writes.

The sysfs layout read (the root is a parameter so tests use fake trees, tests/fixtures/sysfs/):

    <root>/bus/pci/devices/<address>/{vendor,device,class,numa_node}
    <root>/bus/pci/devices/<address>/driver       -> .../bus/pci/drivers/<name>
    <root>/bus/pci/devices/<address>/iommu_group  -> .../kernel/iommu_groups/<N>
    <root>/kernel/iommu_groups/<N>/devices/<address>
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

NVIDIA = "10de"
DEFAULT_VENDORS: frozenset[str] = frozenset({NVIDIA})
VFIO_DRIVER = "vfio-pci"
VFIO_ROLE = "the vfio_host role (roles/vfio_host)"
BRIDGE_CLASS = "0604"
_GPU_CLASSES = ("0300", "0302")

PciKind = Literal["gpu", "nvswitch", "audio", "other"]


@dataclass(frozen=True)
class PciDevice:
    """One PCI function as sysfs shows it, with what blocks its passthrough (`problems`)."""

    address: str
    vendor_id: str
    device_id: str
    kind: PciKind
    driver: str | None
    iommu_group: int | None
    iommu_group_devices: tuple[str, ...]
    numa_node: int | None
    passthrough_ready: bool
    problems: tuple[str, ...]
    class_code: str = ""  # six hex digits, e.g. "030200"

    @property
    def ids(self) -> str:
        """`vendor:device`, as vfio-pci's `ids=` option and `lspci -n` write it."""
        return f"{self.vendor_id}:{self.device_id}"

    @property
    def slot(self) -> str:
        """`domain:bus:slot`, shared by every function of one card."""
        return self.address.rsplit(".", 1)[0]

    @property
    def is_bridge(self) -> bool:
        return self.class_code.startswith(BRIDGE_CLASS)

    def to_json(self) -> dict[str, object]:
        return {
            "address": self.address,
            "vendor_id": self.vendor_id,
            "device_id": self.device_id,
            "kind": self.kind,
            "driver": self.driver,
            "iommu_group": self.iommu_group,
            "iommu_group_devices": list(self.iommu_group_devices),
            "numa_node": self.numa_node,
            "passthrough_ready": self.passthrough_ready,
            "problems": list(self.problems),
        }


@dataclass(frozen=True)
class Discovery:
    """The devices of the chosen vendors plus every other member of their IOMMU groups."""

    devices: tuple[PciDevice, ...]
    iommu_enabled: bool
    vendors: frozenset[str] = DEFAULT_VENDORS

    def device(self, address: str) -> PciDevice | None:
        return next((d for d in self.devices if d.address == address), None)

    @property
    def vendor_devices(self) -> tuple[PciDevice, ...]:
        return tuple(d for d in self.devices if d.vendor_id in self.vendors)

    @property
    def gpus(self) -> tuple[PciDevice, ...]:
        """The devices a node can ask for: the vendors' GPUs. With vendors other than NVIDIA alone (a
        stand-in device for a rehearsal), any non-bridge device of those vendors that is no audio function."""
        if self.vendors == DEFAULT_VENDORS:
            return tuple(d for d in self.vendor_devices if d.kind == "gpu")
        return tuple(d for d in self.vendor_devices if d.kind in ("gpu", "other") and not d.is_bridge)

    @property
    def vfio_ids(self) -> tuple[str, ...]:
        return tuple(sorted({d.ids for d in self.vendor_devices}))

    def to_json(self) -> dict[str, object]:
        return {"devices": [d.to_json() for d in self.devices], "vfio_ids": list(self.vfio_ids)}


@dataclass(frozen=True)
class _Raw:
    """What sysfs says about one device, before judging it."""

    address: str
    vendor_id: str
    device_id: str
    class_code: str
    driver: str | None
    iommu_group: int | None
    numa_node: int | None

    @property
    def ids(self) -> str:
        return f"{self.vendor_id}:{self.device_id}"

    @property
    def is_bridge(self) -> bool:
        return self.class_code.startswith(BRIDGE_CLASS)


def discover(sysfs_root: Path = Path("/sys"), vendors: frozenset[str] = DEFAULT_VENDORS) -> Discovery:
    """Read the PCI devices of `vendors` (lowercase hex ids) and their IOMMU group mates from sysfs."""
    raws = {r.address: r for r in _read_devices(sysfs_root / "bus" / "pci" / "devices")}
    groups = _read_groups(sysfs_root / "kernel" / "iommu_groups", raws.values())
    iommu_enabled = bool(groups)
    wanted = {a for a, r in raws.items() if r.vendor_id in vendors}
    for address in list(wanted):
        group = raws[address].iommu_group
        if group is not None:
            wanted.update(m for m in groups.get(group, ()) if m in raws)
    vfio_ids = tuple(sorted({raws[a].ids for a in wanted if raws[a].vendor_id in vendors}))
    devices = tuple(_judge(raws[a], raws, groups, iommu_enabled, vfio_ids) for a in sorted(wanted))
    return Discovery(devices=devices, iommu_enabled=iommu_enabled, vendors=frozenset(vendors))


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None


def _link_name(path: Path) -> str | None:
    """The last component of a symlink's target (`.../drivers/nvidia` -> `nvidia`), or None."""
    try:
        return Path(os.readlink(path)).name
    except OSError:
        return None


def _hex(value: str | None) -> str:
    return (value or "").lower().removeprefix("0x")


def _read_devices(devices_dir: Path) -> list[_Raw]:
    if not devices_dir.is_dir():
        return []
    out = []
    for dev in sorted(devices_dir.iterdir()):
        group = _link_name(dev / "iommu_group")
        numa = _read_text(dev / "numa_node")
        out.append(
            _Raw(
                address=dev.name.lower(),
                vendor_id=_hex(_read_text(dev / "vendor")),
                device_id=_hex(_read_text(dev / "device")),
                class_code=_hex(_read_text(dev / "class")),
                driver=_link_name(dev / "driver"),
                iommu_group=int(group) if group and group.isdigit() else None,
                numa_node=int(numa) if numa and numa.lstrip("-").isdigit() and int(numa) >= 0 else None,
            )
        )
    return out


def _read_groups(groups_dir: Path, raws: Iterable[_Raw]) -> dict[int, tuple[str, ...]]:
    """IOMMU group number -> member addresses, from kernel/iommu_groups and the devices' own links."""
    members: dict[int, set[str]] = {}
    if groups_dir.is_dir():
        for group in groups_dir.iterdir():
            if group.name.isdigit():
                found = (group / "devices").iterdir() if (group / "devices").is_dir() else iter(())
                members.setdefault(int(group.name), set()).update(d.name.lower() for d in found)
    for raw in raws:
        if raw.iommu_group is not None:
            members.setdefault(raw.iommu_group, set()).add(raw.address)
    return {g: tuple(sorted(m)) for g, m in members.items()}


def _kind(raw: _Raw) -> PciKind:
    if raw.class_code.startswith(_GPU_CLASSES):
        return "gpu"
    if raw.class_code.startswith("0680") and raw.vendor_id == NVIDIA:
        return "nvswitch"
    if raw.class_code.startswith("0403"):
        return "audio"
    return "other"


IOMMU_ADVICE = (
    "add `intel_iommu=on iommu=pt` (Intel CPU) or `amd_iommu=on iommu=pt` (AMD CPU) to the kernel command line "
    "(GRUB_CMDLINE_LINUX in /etc/default/grub, then `update-grub`) and reboot, or run " + VFIO_ROLE
)


def iommu_off_problem(address: str) -> str:
    """What to say about a device on a host whose IOMMU is off."""
    return f"{address}: the IOMMU is off (the kernel shows no IOMMU groups): {IOMMU_ADVICE}"


def vfio_bind_advice(ids: tuple[str, ...], driver: str | None) -> str:
    """How to hand devices with these `vendor:device` ids to vfio-pci at boot."""
    nvidia = ["nvidia"] if any(i.startswith(f"{NVIDIA}:") for i in ids) else []
    softdeps = list(dict.fromkeys(nvidia + ([driver] if driver else [])))
    lines = " and ".join(f"`softdep {d} pre: vfio-pci`" for d in softdeps)
    return (
        f"bind it to vfio-pci: put `options vfio-pci ids={','.join(ids)}` and {lines} in /etc/modprobe.d/vfio.conf, "
        f"rebuild the initramfs (`update-initramfs -u` or `dracut -f`) and reboot, or run {VFIO_ROLE}"
    )


def _driver_problem(raw: _Raw, vfio_ids: tuple[str, ...]) -> str | None:
    if raw.is_bridge or raw.driver == VFIO_DRIVER:
        return None
    ids = vfio_ids if raw.ids in vfio_ids else tuple(sorted({*vfio_ids, raw.ids}))
    bound = f"is bound to {raw.driver}, not {VFIO_DRIVER}" if raw.driver else "is bound to no driver"
    return f"{raw.address} ({raw.ids}) {bound}: {vfio_bind_advice(ids, raw.driver)}"


def _group_mate_problem(raw: _Raw, mate: _Raw) -> str | None:
    """A bridge stays with the host (pcieport) and is never passed through, so its mates do not matter."""
    if raw.is_bridge or mate.is_bridge or mate.driver == VFIO_DRIVER:
        return None
    return (
        f"{raw.address} shares IOMMU group {raw.iommu_group} with {mate.address} ({mate.ids}), which is bound to "
        f"{mate.driver or 'no driver'}, not {VFIO_DRIVER}; a group passes through whole: bind {mate.address} to "
        f"{VFIO_DRIVER} as well (the host then loses it) or move the card to a slot with its own IOMMU group"
    )


def _judge(
    raw: _Raw,
    raws: dict[str, _Raw],
    groups: dict[int, tuple[str, ...]],
    iommu_enabled: bool,
    vfio_ids: tuple[str, ...],
) -> PciDevice:
    problems: list[str | None] = []
    if not iommu_enabled:
        problems.append(iommu_off_problem(raw.address))
    elif raw.iommu_group is None:
        problems.append(
            f"{raw.address}: the IOMMU is on but the device is in no IOMMU group: check the BIOS (VT-d / AMD-Vi) "
            "and `dmesg | grep -i -e DMAR -e IOMMU`"
        )
    problems.append(_driver_problem(raw, vfio_ids))
    mates = groups.get(raw.iommu_group, ()) if raw.iommu_group is not None else ()
    problems += [_group_mate_problem(raw, raws[m]) for m in mates if m != raw.address and m in raws]
    found = tuple(p for p in problems if p)
    return PciDevice(
        address=raw.address,
        vendor_id=raw.vendor_id,
        device_id=raw.device_id,
        kind=_kind(raw),
        driver=raw.driver,
        iommu_group=raw.iommu_group,
        iommu_group_devices=mates,
        numa_node=raw.numa_node,
        passthrough_ready=not found,
        problems=found,
        class_code=raw.class_code,
    )
