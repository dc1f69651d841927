"""How the VMs run: the KVM probe (booting the box's kernel under KVM: a PVM-only KVM runs a boot
sector but hangs a Linux guest) and the accelerator every VM of a run uses (KVM, or TCG with a
capped translation cache)."""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from harness import proc
from harness.errors import HostError, UsageError
from harness.paths import probe_kernel_path, state_dir

log = logging.getLogger(__name__)

PROBE_MARKER = "HARNESS-PROBE-OK"


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
    detail: str  # in words
    raw: str = ""  # the last lines QEMU printed when the guest did not boot (absent from old cache files)


def _last_line(text: str, limit: int = 90) -> str:
    lines = text.strip().splitlines()
    line = lines[-1].strip() if lines else ""
    line = re.sub(r"^qemu-system-x86_64: ", "", line)
    return line if len(line) <= limit else line[: limit - 1] + "…"


# What QEMU's crash output means, in words: (regex over one line of output, words). First match wins.
_CRASH_WORDS = (
    (r"kvm_buf_set_msrs|kvm_put_msrs|kvm_arch_put_registers", "QEMU aborted setting CPU registers"),
    (r"kvm_get_msrs|kvm_arch_get_registers", "QEMU aborted reading CPU registers"),
    (r"KVM internal error\. Suberror: 1\b", "KVM could not emulate an instruction"),
    (r"KVM internal error", "KVM reported an internal error"),
    (r"KVM: entry failed, hardware error", "the CPU refused to enter the guest"),
    (r"failed to set MSR", "KVM refused a CPU register value"),
    (r"Assertion .*failed|^Aborted", "QEMU aborted"),
)


def _crash_words(lines: list[str]) -> tuple[str, int] | None:
    """The words for the first known crash pattern and the index of the first line that shows a crash."""
    hits = [(words, i) for pattern, words in _CRASH_WORDS for i, ln in enumerate(lines) if re.search(pattern, ln)]
    return (hits[0][0], min(i for _, i in hits)) if hits else None


def judge_probe(accel: str, result: proc.CommandResult) -> AccelProbe:
    """Decide from a probe guest's output whether the accelerator runs ordinary guests.

    `detail` says it in words; `raw` keeps QEMU's own last lines (from the first line that shows a
    crash, when one does: a register dump follows KVM's internal errors)."""
    out = result.stdout + result.stderr
    if PROBE_MARKER in result.stdout:
        return AccelProbe(accel, True, f"a test guest booted under {accel}")
    lines = [ln.strip() for ln in out.strip().splitlines() if ln.strip()]
    crash = _crash_words(lines)
    raw = "\n".join(lines[crash[1] : crash[1] + 8] if crash else lines[-8:])
    if result.rc == 127:
        return AccelProbe(accel, False, "qemu-system-x86_64 is not installed (run `harness host setup`)", raw)
    lowered = out.lower()
    if "could not access kvm kernel module" in lowered or "failed to initialize kvm" in lowered:
        return AccelProbe(accel, False, f"{accel} is not available ({_last_line(out)})", raw)
    kvm = accel == "kvm"
    if crash is None and result.rc == 124:
        late = "a test guest did not boot under KVM in time, so KVM is not used" if kvm else ""
        return AccelProbe(accel, False, late or f"the test guest did not boot under {accel} in time", raw)
    if crash is not None:
        why = crash[0]
    elif result.rc < 0:
        why = "QEMU aborted" if result.rc == -6 else f"QEMU was killed by signal {-result.rc}"
    else:
        why = _last_line(out) or f"QEMU exited with status {result.rc}"
    if kvm:
        crashed = f"a test guest crashed under KVM ({why}), so it cannot run ordinary guests"
        return AccelProbe(accel, False, crashed, raw)
    return AccelProbe(accel, False, f"the test guest did not boot under {accel} ({why})", raw)


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


KERNEL_MARKER = "Kernel panic - not syncing"


def probe_kernel(accel: str, kernel: Path, timeout: float = 20.0) -> AccelProbe:
    """Boot a real Linux kernel under `accel` until it panics for want of a root filesystem.

    A boot sector proves little: a PVM-only KVM runs real-mode code but hangs or crashes a Linux
    guest (CPU features such as cmpxchg16b and xrstor). Reaching the root-mount panic means the
    kernel set up the CPU, memory and interrupts: ordinary guests run. Under KVM it takes a second."""
    cpu = ["-cpu", "host"] if accel == "kvm" else []
    argv = [
        "qemu-system-x86_64", "-accel", accel, *cpu, "-m", "256", "-display", "none", "-no-reboot",
        "-serial", "stdio", "-monitor", "none", "-nodefaults", "-kernel", str(kernel),
        "-append", "console=ttyS0 panic=-1 root=/dev/harness-probe-no-root",
    ]  # fmt: skip
    result = proc.run_until(argv, KERNEL_MARKER, timeout=timeout)
    if result.rc == 0 and KERNEL_MARKER in result.stdout:
        return AccelProbe(accel, True, f"a test Linux kernel booted under {accel}")
    if result.rc == 124 and accel == "kvm" and not result.stderr.strip():
        return AccelProbe(
            accel,
            False,
            f"a test Linux kernel did not boot under KVM within {timeout:.0f}s, so KVM cannot run "
            "ordinary guests here (a real-mode boot sector did; this is what a PVM-only KVM does)",
        )
    return judge_probe(accel, result)


def _probe_cache_key(kernel: Path | None) -> str:
    try:
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot_id = "unknown"
    probe = "bootsector"
    if kernel is not None:
        st = kernel.stat()
        probe = f"{kernel}:{st.st_size}:{st.st_mtime_ns}"
    return f"{platform.release()}|{boot_id}|{probe}"


def probe_kvm(use_cache: bool = True) -> AccelProbe:
    """Can KVM run ordinary guests here? Probed once per host boot and test kernel (cached).

    The test is the box's Linux kernel (saved by `harness box build`); before any box exists,
    only a boot sector can be tried, which is not cached and says so."""
    if not Path("/dev/kvm").exists():
        return AccelProbe("kvm", False, "/dev/kvm does not exist")
    kernel = probe_kernel_path() if probe_kernel_path().is_file() else None
    cache = state_dir() / "kvm-probe.json"
    key = _probe_cache_key(kernel)
    if use_cache and cache.is_file():
        try:
            data = json.loads(cache.read_text())
            if data.get("key") == key:
                return AccelProbe(**data["probe"])
        except (ValueError, TypeError, KeyError):
            pass
    if kernel is None:
        probe = probe_accel("kvm")
        if probe.usable:
            detail = f"{probe.detail} (boot sector only: a Linux kernel is tried once a box is built)"
            probe = AccelProbe(probe.accel, True, detail)
        return probe
    probe = probe_kernel("kvm", kernel)
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
    # TCG only: QEMU's translation cache per VM in MiB (libvirt <features><tcg><tb-cache>);
    # None leaves QEMU's default (1 GiB since QEMU 5.0).
    tb_cache_mib: int | None = None

    @property
    def is_tcg(self) -> bool:
        return self.driver == "qemu"


# The TCG translation cache QEMU gives each VM is 1 GiB by default, and a VM that runs long enough
# fills it: a 1 GiB guest then holds about 2 GiB of host memory. Capped here (ci/bench.sh tb-cache
# measures the sizes side by side: memory and converge time).
TCG_TB_CACHE_MIB = 256


def choose_accelerator(
    kvm: AccelProbe, forced: str | None = None, tb_cache_mib: int | None = TCG_TB_CACHE_MIB
) -> Accelerator:
    """KVM when the probe booted a guest under it, TCG otherwise. HARNESS_ACCEL=tcg|kvm forces.
    Under TCG each VM's translation cache is capped at `tb_cache_mib` (None: QEMU's default)."""
    if forced == "tcg" or (forced is None and not kvm.usable):
        why = "forced by HARNESS_ACCEL=tcg" if forced == "tcg" else "KVM cannot run ordinary guests here"
        return Accelerator("qemu", "custom", "qemu64", f"TCG (software emulation, slower): {why}", tb_cache_mib)
    if forced not in (None, "kvm"):
        raise HostError(f"HARNESS_ACCEL={forced!r} is not understood: use 'kvm' or 'tcg'.")
    return Accelerator("kvm", "host-passthrough", None, "KVM" + (" (forced by HARNESS_ACCEL=kvm)" if forced else ""))


def tb_cache_setting(value: str | None) -> int | None:
    """HARNESS_TCG_TB_CACHE: MiB of translation cache per TCG VM; unset: TCG_TB_CACHE_MIB; 0: QEMU's default."""
    if value is None or not value.strip():
        return TCG_TB_CACHE_MIB
    try:
        mib = int(value)
    except ValueError:
        mib = -1
    if mib < 0 or 0 < mib < 16:
        raise UsageError(
            f"HARNESS_TCG_TB_CACHE={value!r} is not understood: give MiB of TCG translation cache per VM "
            f"(16 or more; 0 leaves QEMU's default of 1024), or unset it for the harness's {TCG_TB_CACHE_MIB}."
        )
    return mib or None


def host_accelerator() -> Accelerator:
    forced = os.environ.get("HARNESS_ACCEL") or None
    tb_cache = tb_cache_setting(os.environ.get("HARNESS_TCG_TB_CACHE"))
    if forced == "tcg":
        return choose_accelerator(AccelProbe("kvm", False, "not probed"), forced, tb_cache)
    return choose_accelerator(probe_kvm(), forced, tb_cache)
