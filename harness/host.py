"""Host probes and host setup: KVM usability (by booting a tiny guest), IOMMU, memory, disk,
libvirt and Vagrant versions, and installing/starting what the harness needs."""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness import proc
from harness.errors import HostError
from harness.provider import libvirt as lv

log = logging.getLogger(__name__)

APT_PACKAGES = (
    "vagrant",
    "vagrant-libvirt",
    "libvirt-daemon-system",
    "libvirt-daemon-driver-qemu",
    "libvirt-clients",
    "libvirt-dev",
    "pkg-config",
    "qemu-system-x86",
    "qemu-utils",
    "dnsmasq-base",
    "debootstrap",
    "extlinux",
    "syslinux-common",
    "parted",
    "e2fsprogs",
    "openssh-client",
    "iproute2",
    "nftables",
    "iptables",
    "rsync",
    "apt-cacher-ng",  # the package cache of air-gapped runs (harness/cache.py)
    "apt-utils",  # apt-ftparchive: the index of an apt bundle (harness/apt_bundle_build.py)
    "gnupg",  # gpg: signs an apt bundle with a key made for it
    "gpgv",  # checks an apt bundle's signature (harness/apt_bundle.py)
)
# Where `ensure_pool` puts libvirt's storage pool (lv.POOL) when the host has none.
POOL_PATH = "/var/lib/libvirt/images"


def meminfo_mib() -> dict[str, int]:
    out: dict[str, int] = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts:
            out[key] = int(parts[0]) // 1024
    return out


def disk_free_gib(path: str) -> float:
    p = Path(path)
    while not p.exists():
        p = p.parent
    return shutil.disk_usage(p).free / 1024**3


def iommu_groups(sysfs_root: Path = Path("/sys")) -> int:
    d = sysfs_root / "kernel" / "iommu_groups"
    return len(list(d.iterdir())) if d.is_dir() else 0


def _version(argv: list[str], pattern: str) -> str | None:
    result = proc.run(argv, timeout=60)
    if not result.ok:
        return None
    m = re.search(pattern, result.stdout)
    return m.group(1) if m else result.stdout.strip() or None


def vagrant_version() -> str | None:
    return _version(["vagrant", "--version"], r"Vagrant (\S+)")


def vagrant_libvirt_version() -> str | None:
    return _version(["vagrant", "plugin", "list"], r"vagrant-libvirt \(([^,)]+)")


@dataclass
class Check:
    name: str
    ok: bool
    value: str
    hint: str = ""


@dataclass
class DoctorReport:
    checks: list[Check] = field(default_factory=list)
    accelerator: str = ""

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def to_json(self) -> dict[str, object]:
        return {"ok": self.ok, "accelerator": self.accelerator, "checks": [asdict(c) for c in self.checks]}


def _daemon_pids(names: tuple[str, ...] = ("libvirtd", "virtlogd")) -> dict[str, int | None]:
    """Each daemon's pid (the lowest, for one that forked), None when it does not run."""
    pids: dict[str, int | None] = dict.fromkeys(names)
    for pid_dir in sorted(Path("/proc").iterdir(), key=lambda d: int(d.name) if d.name.isdigit() else 0):
        if not pid_dir.name.isdigit():
            continue
        try:
            comm = (pid_dir / "comm").read_text().strip()
        except OSError:
            continue
        if comm in pids and pids[comm] is None:
            pids[comm] = int(pid_dir.name)
    return pids


def daemons_running() -> dict[str, bool]:
    return {name: pid is not None for name, pid in _daemon_pids().items()}


def libvirtd_pid() -> int | None:
    """The running libvirtd's pid: a different one later means libvirtd was restarted meanwhile."""
    return _daemon_pids(("libvirtd",))["libvirtd"]


def systemd_is_init() -> bool:
    return Path("/run/systemd/system").is_dir()


def start_daemons() -> list[str]:
    """Start virtlogd and libvirtd when they are not running. Returns what was started."""
    started = []
    running = daemons_running()
    for name in ("virtlogd", "libvirtd"):
        if running[name]:
            continue
        # A daemon outlives every run: never started as one of a run's processes (proc.RUN_ENV).
        argv = ["systemctl", "start", name] if systemd_is_init() else ["env", "-u", proc.RUN_ENV, name, "-d"]
        result = proc.run(argv, timeout=60)
        if not result.ok:
            raise HostError(f"cannot start {name}: {result.describe()}")
        started.append(name)
    if started:
        _wait_for_libvirt()
    return started


def _wait_for_libvirt(timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = proc.run(["virsh", "-c", lv.URI, "version"], timeout=10)
        if result.ok:
            return
        if time.monotonic() > deadline:
            raise HostError(f"libvirtd did not answer within {timeout:.0f}s: {result.describe()}")
        time.sleep(0.5)


def ensure_pool() -> bool:
    """Make sure libvirt's storage pool (lv.POOL, `default`) exists and runs. Returns True if it changed."""
    virsh = ["virsh", "-c", lv.URI]
    info = proc.run([*virsh, "pool-info", lv.POOL], timeout=30)
    changed = False
    if not info.ok:
        Path(POOL_PATH).mkdir(parents=True, exist_ok=True)
        for args in (["pool-define-as", lv.POOL, "dir", "--target", POOL_PATH], ["pool-autostart", lv.POOL]):
            result = proc.run([*virsh, *args], timeout=30)
            if not result.ok:
                raise HostError(f"cannot create libvirt storage pool {lv.POOL!r}: {result.describe()}")
        changed = True
        info = proc.run([*virsh, "pool-info", lv.POOL], timeout=30)
    if "running" not in info.stdout:
        result = proc.run([*virsh, "pool-start", lv.POOL], timeout=30)
        if not result.ok:
            raise HostError(f"cannot start libvirt storage pool {lv.POOL!r}: {result.describe()}")
        changed = True
    return changed


def missing_packages(packages: tuple[str, ...] = APT_PACKAGES) -> list[str]:
    result = proc.run(["dpkg-query", "-W", "-f", "${Package} ${db:Status-Status}\n", *packages], timeout=60)
    installed = {line.split()[0] for line in result.stdout.splitlines() if line.endswith(" installed")}
    return [p for p in packages if p not in installed]


def install_packages(packages: list[str]) -> proc.CommandResult | None:
    if not packages:
        return None
    if os.geteuid() != 0:
        raise HostError(f"installing {' '.join(packages)} needs root: run `sudo harness host setup`.")
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    update = proc.run(["apt-get", "update", "-q"], timeout=900, env=env)
    if not update.ok:
        raise HostError(f"apt-get update failed: {update.describe()}")
    result = proc.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages], timeout=1800, env=env)
    if not result.ok:
        raise HostError(f"apt-get install failed: {result.describe()}")
    return result
