"""Host probes and host setup: KVM usability (by booting a tiny guest), IOMMU, memory, disk,
libvirt and Vagrant versions, and installing/starting what the harness needs."""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness import proc
from harness.errors import HostError
from harness.paths import state_dir

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
)
POOL_NAME = "default"
POOL_PATH = "/var/lib/libvirt/images"
PROBE_MARKER = "HARNESS-PROBE-OK"
LIBVIRT_URI = "qemu:///system"


def _boot_sector() -> bytes:
    """A 512-byte boot sector that prints PROBE_MARKER on COM1 and halts (real mode, org 0x7c00)."""
    code = bytes.fromhex("31c08ed8fcbaf803be0000ac84c07403eeebf8faf4ebfc")
    msg_addr = 0x7C00 + len(code)
    code = code.replace(bytes.fromhex("be0000"), b"\xbe" + msg_addr.to_bytes(2, "little"), 1)
    sector = code + PROBE_MARKER.encode() + b"\r\n\x00"
    return sector.ljust(510, b"\x00") + b"\x55\xaa"


@dataclass(frozen=True)
class AccelProbe:
    """What booting a tiny guest under an accelerator showed."""

    accel: str
    usable: bool
    detail: str


def _last_line(text: str, limit: int = 90) -> str:
    lines = text.strip().splitlines()
    line = lines[-1].strip() if lines else ""
    line = re.sub(r"^qemu-system-x86_64: ", "", line)
    return line if len(line) <= limit else line[: limit - 1] + "…"


def judge_probe(accel: str, result: proc.CommandResult) -> AccelProbe:
    """Decide from a probe guest's output whether the accelerator runs ordinary guests."""
    out = result.stdout + result.stderr
    if PROBE_MARKER in result.stdout:
        return AccelProbe(accel, True, f"a test guest booted under {accel}")
    if result.rc == 127:
        return AccelProbe(accel, False, "qemu-system-x86_64 is not installed (run `harness host setup`)")
    lowered = out.lower()
    if "could not access kvm kernel module" in lowered or "failed to initialize kvm" in lowered:
        return AccelProbe(accel, False, f"{accel} is not available ({_last_line(out)})")
    if accel == "kvm":
        why = "KVM internal error" if "KVM internal error" in out else _last_line(out) or f"exit {result.rc}"
        return AccelProbe(accel, False, f"a test guest crashed under KVM, so it cannot run ordinary guests ({why})")
    return AccelProbe(
        accel, False, f"the test guest did not boot under {accel} ({_last_line(out) or f'exit {result.rc}'})"
    )


def probe_accel(accel: str, timeout: float = 8.0) -> AccelProbe:
    """Boot the probe boot sector under `accel` (kvm or tcg) and judge the result."""
    with tempfile.TemporaryDirectory(prefix="harness-probe-") as tmp:
        img = Path(tmp) / "probe.img"
        img.write_bytes(_boot_sector())
        cpu = ["-cpu", "host"] if accel == "kvm" else []
        argv = [
            "qemu-system-x86_64",
            "-accel",
            accel,
            *cpu,
            "-m",
            "16",
            "-display",
            "none",
            "-no-reboot",
            "-serial",
            "stdio",
            "-monitor",
            "none",
            "-nodefaults",
            "-drive",
            f"file={img},format=raw,if=ide",
        ]
        result = proc.run_until(argv, PROBE_MARKER, timeout=timeout)
    return judge_probe(accel, result)


def _probe_cache_key() -> str:
    try:
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot_id = "unknown"
    return f"{platform.release()}|{boot_id}"


def probe_kvm(use_cache: bool = True) -> AccelProbe:
    """Can KVM run ordinary guests here? Probed once per host boot (cached in the state dir)."""
    if not Path("/dev/kvm").exists():
        return AccelProbe("kvm", False, "/dev/kvm does not exist")
    cache = state_dir() / "kvm-probe.json"
    key = _probe_cache_key()
    if use_cache and cache.is_file():
        try:
            data = json.loads(cache.read_text())
            if data.get("key") == key:
                return AccelProbe(**data["probe"])
        except (ValueError, TypeError, KeyError):
            pass
    probe = probe_accel("kvm")
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"key": key, "probe": asdict(probe)}))
    return probe


@dataclass(frozen=True)
class Accelerator:
    """The libvirt domain type and CPU settings every VM of a run uses."""

    driver: str  # libvirt domain type: "kvm" or "qemu" (TCG)
    cpu_mode: str
    cpu_model: str | None
    reason: str

    @property
    def is_tcg(self) -> bool:
        return self.driver == "qemu"


def choose_accelerator(kvm: AccelProbe, forced: str | None = None) -> Accelerator:
    """KVM when the probe booted a guest under it, TCG otherwise. HARNESS_ACCEL=tcg|kvm forces."""
    if forced == "tcg" or (forced is None and not kvm.usable):
        why = "forced by HARNESS_ACCEL=tcg" if forced == "tcg" else "KVM cannot run ordinary guests here"
        return Accelerator("qemu", "custom", "qemu64", f"TCG (software emulation, slower): {why}")
    if forced not in (None, "kvm"):
        raise HostError(f"HARNESS_ACCEL={forced!r} is not understood: use 'kvm' or 'tcg'.")
    return Accelerator("kvm", "host-passthrough", None, "KVM" + (" (forced by HARNESS_ACCEL=kvm)" if forced else ""))


def host_accelerator() -> Accelerator:
    forced = os.environ.get("HARNESS_ACCEL") or None
    if forced == "tcg":
        return choose_accelerator(AccelProbe("kvm", False, "not probed"), forced)
    return choose_accelerator(probe_kvm(), forced)


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


def daemons_running() -> dict[str, bool]:
    names = {"libvirtd": False, "virtlogd": False}
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            comm = (pid_dir / "comm").read_text().strip()
        except OSError:
            continue
        if comm in names:
            names[comm] = True
    return names


def systemd_is_init() -> bool:
    return Path("/run/systemd/system").is_dir()


def start_daemons() -> list[str]:
    """Start virtlogd and libvirtd when they are not running. Returns what was started."""
    started = []
    running = daemons_running()
    for name in ("virtlogd", "libvirtd"):
        if running[name]:
            continue
        argv = ["systemctl", "start", name] if systemd_is_init() else [name, "-d"]
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
        result = proc.run(["virsh", "-c", LIBVIRT_URI, "version"], timeout=10)
        if result.ok:
            return
        if time.monotonic() > deadline:
            raise HostError(f"libvirtd did not answer within {timeout:.0f}s: {result.describe()}")
        time.sleep(0.5)


def ensure_pool() -> bool:
    """Make sure libvirt's `default` storage pool exists and runs. Returns True if it changed."""
    virsh = ["virsh", "-c", LIBVIRT_URI]
    info = proc.run([*virsh, "pool-info", POOL_NAME], timeout=30)
    changed = False
    if not info.ok:
        Path(POOL_PATH).mkdir(parents=True, exist_ok=True)
        for args in (["pool-define-as", POOL_NAME, "dir", "--target", POOL_PATH], ["pool-autostart", POOL_NAME]):
            result = proc.run([*virsh, *args], timeout=30)
            if not result.ok:
                raise HostError(f"cannot create libvirt storage pool {POOL_NAME!r}: {result.describe()}")
        changed = True
        info = proc.run([*virsh, "pool-info", POOL_NAME], timeout=30)
    if "running" not in info.stdout:
        result = proc.run([*virsh, "pool-start", POOL_NAME], timeout=30)
        if not result.ok:
            raise HostError(f"cannot start libvirt storage pool {POOL_NAME!r}: {result.describe()}")
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
