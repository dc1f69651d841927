"""libvirt's QEMU capability cache, and the /dev/kvm permissions that keep it stable.

libvirt probes QEMU once and caches what it found, keyed among other things on whether its QEMU
user can open /dev/kvm. On a host without udev, /dev/kvm stays `root:root 0600`: the probe runs as
root (KVM on), every later check as the QEMU user (KVM off), so libvirt throws the cache away and
probes QEMU again on every capability query: 4-12 s each, minutes for one `vagrant up`. udev on a
normal Debian host makes /dev/kvm `root:kvm 0660`, and the QEMU user is in group kvm; doing the
same here makes the cache stable. On a host where udev already did it, nothing changes.
"""

from __future__ import annotations

import grp
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HostError

KVM_DEVICE = Path("/dev/kvm")
KVM_GROUP = "kvm"
SLOW_QUERY_S = 1.0  # a cached capability query answers in well under 0.1 s


@dataclass(frozen=True)
class KvmDevice:
    path: Path
    exists: bool
    owner: str = ""
    mode: int = 0
    group_ok: bool = False  # group kvm may read and write it

    def describe(self) -> str:
        if not self.exists:
            return f"{self.path} does not exist"
        return f"{self.path} is {self.owner} {self.mode:04o}"


def kvm_device(path: Path = KVM_DEVICE, group: str = KVM_GROUP) -> KvmDevice:
    try:
        st = path.stat()
    except FileNotFoundError:
        return KvmDevice(path, False)
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        gid = -1
    try:
        group_name = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group_name = str(st.st_gid)
    mode = stat.S_IMODE(st.st_mode)
    owner = f"{'root' if st.st_uid == 0 else st.st_uid}:{group_name}"
    return KvmDevice(path, True, owner, mode, st.st_gid == gid and mode & 0o060 == 0o060)


def fix_kvm_device(path: Path = KVM_DEVICE, group: str = KVM_GROUP) -> str | None:
    """Give /dev/kvm to group kvm, 0660, as udev does; a line saying what changed, or None."""
    dev = kvm_device(path, group)
    if not dev.exists or dev.group_ok:
        return None
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        return None  # no kvm group (libvirt not installed yet): nothing to give it to
    try:
        os.chown(path, -1, gid)
        os.chmod(path, dev.mode | 0o660)
    except OSError as exc:
        raise HostError(
            f"cannot give {path} to group {group} (mode 0660): {exc}; run `harness host setup` as root"
        ) from exc
    after = kvm_device(path, group)
    return (
        f"{dev.describe()} → {after.owner} {after.mode:04o} (as udev sets it), "
        "so libvirt keeps its QEMU capabilities cached"
    )


@dataclass(frozen=True)
class CapabilityTiming:
    seconds: tuple[float, ...]

    @property
    def reprobing(self) -> bool:
        """Every query was slow: libvirt re-probes QEMU each time instead of using its cache."""
        return bool(self.seconds) and min(self.seconds) > SLOW_QUERY_S

    def describe(self) -> str:
        return ", ".join(f"{s:.2f}s" for s in self.seconds)


def time_capability_queries(conn: object, queries: int = 2) -> CapabilityTiming:
    """Time `queries` domain-capability queries (what vagrant-libvirt asks for each domain)."""
    seconds = []
    for _ in range(queries):
        started = time.monotonic()
        conn.getDomainCapabilities(None, "x86_64", None, "qemu", 0)  # type: ignore[attr-defined]
        seconds.append(time.monotonic() - started)
    return CapabilityTiming(tuple(seconds))
