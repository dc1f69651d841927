from __future__ import annotations

import shutil

import pytest

from harness import host
from harness.proc import CommandResult


def result(rc: int, out: str = "", err: str = "") -> CommandResult:
    return CommandResult(("qemu-system-x86_64",), rc, out, err, 0.1)


def test_marker_means_usable() -> None:
    assert host.judge_probe("kvm", result(0, host.PROBE_MARKER + "\r\n")).usable


@pytest.mark.parametrize(
    "err",
    [
        "KVM internal error. Suberror: 1\nemulation failure\n",
        "qemu-system-x86_64: ../../target/i386/kvm/kvm.c:3183: kvm_buf_set_msrs: Assertion failed.",
        "Could not access KVM kernel module: No such file or directory\nfailed to initialize kvm",
    ],
)
def test_crashes_and_missing_kvm_mean_unusable(err: str) -> None:
    probe = host.judge_probe("kvm", result(1, "", err))
    assert not probe.usable and probe.detail


def test_timeout_without_marker_is_unusable() -> None:
    assert not host.judge_probe("kvm", result(124, "SeaBIOS", "timed out")).usable


def test_unusable_kvm_chooses_tcg_with_a_cpu_model_that_boots() -> None:
    accel = host.choose_accelerator(host.AccelProbe("kvm", False, "crashed"))
    assert (accel.driver, accel.cpu_mode, accel.cpu_model) == ("qemu", "custom", "qemu64")
    assert accel.is_tcg and "TCG" in accel.reason and "KVM cannot run ordinary guests" in accel.reason


def test_usable_kvm_chooses_kvm_and_env_can_force_tcg() -> None:
    ok = host.AccelProbe("kvm", True, "booted")
    assert host.choose_accelerator(ok).driver == "kvm"
    assert host.choose_accelerator(ok, "tcg").driver == "qemu"


def test_boot_sector_is_a_valid_mbr() -> None:
    sector = host._boot_sector()
    assert len(sector) == 512 and sector.endswith(b"\x55\xaa") and host.PROBE_MARKER.encode() in sector


@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 not installed")
def test_probe_guest_really_boots_under_tcg() -> None:
    assert host.probe_accel("tcg", timeout=30).usable
