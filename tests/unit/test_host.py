from __future__ import annotations

import json
import shutil
from dataclasses import asdict

import pytest

from harness import accelerator
from harness.proc import CommandResult


def result(rc: int, out: str = "", err: str = "") -> CommandResult:
    return CommandResult(("qemu-system-x86_64",), rc, out, err, 0.1)


def test_marker_means_usable() -> None:
    assert accelerator.judge_probe("kvm", result(0, accelerator.PROBE_MARKER + "\r\n")).usable


@pytest.mark.parametrize(
    "err",
    [
        "KVM internal error. Suberror: 1\nemulation failure\n",
        "qemu-system-x86_64: ../../target/i386/kvm/kvm.c:3183: kvm_buf_set_msrs: Assertion failed.",
        "Could not access KVM kernel module: No such file or directory\nfailed to initialize kvm",
    ],
)
def test_crashes_and_missing_kvm_mean_unusable(err: str) -> None:
    probe = accelerator.judge_probe("kvm", result(1, "", err))
    assert not probe.usable and probe.detail


def test_timeout_without_marker_is_unusable() -> None:
    assert not accelerator.judge_probe("kvm", result(124, "SeaBIOS", "timed out")).usable


def test_unusable_kvm_chooses_tcg_with_a_cpu_model_that_boots() -> None:
    accel = accelerator.choose_accelerator(accelerator.AccelProbe("kvm", False, "crashed"))
    assert (accel.driver, accel.cpu_mode, accel.cpu_model) == ("qemu", "custom", "qemu64")
    assert accel.is_tcg and "TCG" in accel.reason and "KVM cannot run ordinary guests" in accel.reason


def test_usable_kvm_chooses_kvm_and_env_can_force_tcg() -> None:
    ok = accelerator.AccelProbe("kvm", True, "booted")
    assert accelerator.choose_accelerator(ok).driver == "kvm"
    assert accelerator.choose_accelerator(ok, "tcg").driver == "qemu"


def test_boot_sector_is_a_valid_mbr() -> None:
    sector = accelerator._boot_sector()
    assert len(sector) == 512 and sector.endswith(b"\x55\xaa") and accelerator.PROBE_MARKER.encode() in sector


@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 not installed")
def test_probe_guest_really_boots_under_tcg() -> None:
    assert accelerator.probe_accel("tcg", timeout=30).usable


ASSERTION = (
    "qemu-system-x86_64: error: failed to set MSR 0x10a to 0x200000c8b\n"
    "qemu-system-x86_64: ../../target/i386/kvm/kvm.c:3183: kvm_buf_set_msrs: Assertion "
    "`ret == cpu->kvm_msr_buf->nmsrs' failed.\n"
)


def test_qemu_assertion_is_said_in_words_and_kept_raw() -> None:
    probe = accelerator.judge_probe("kvm", result(-6, "", ASSERTION))
    assert not probe.usable
    assert probe.detail == (
        "a test guest crashed under KVM (QEMU aborted setting CPU registers), so it cannot run ordinary guests"
    )
    assert "kvm.c" not in probe.detail and "Assertion" not in probe.detail
    assert probe.raw.splitlines() == [
        "qemu-system-x86_64: error: failed to set MSR 0x10a to 0x200000c8b",
        "qemu-system-x86_64: ../../target/i386/kvm/kvm.c:3183: kvm_buf_set_msrs: Assertion "
        "`ret == cpu->kvm_msr_buf->nmsrs' failed.",
    ]


def test_kvm_internal_error_is_said_in_words_and_raw_starts_at_the_error() -> None:
    dump = "\n".join(f"EAX=0000000{i} EBX=00000000 ECX=00000000 EDX=00000000" for i in range(20))
    err = f"KVM internal error. Suberror: 1\nextra data[0]: 0x0000000000000000\nemulation failure\n{dump}\n"
    probe = accelerator.judge_probe("kvm", result(1, "", err))
    assert "KVM could not emulate an instruction" in probe.detail and "EAX" not in probe.detail
    assert probe.raw.splitlines()[0] == "KVM internal error. Suberror: 1"
    assert len(probe.raw.splitlines()) == 8


@pytest.mark.parametrize(
    ("err", "words"),
    [
        ("KVM internal error. Suberror: 3\n", "KVM reported an internal error"),
        ("KVM: entry failed, hardware error 0x80000021\n", "the CPU refused to enter the guest"),
        ("qemu-system-x86_64: ../../accel/kvm/kvm-all.c:1: foo: Assertion `x' failed.\n", "QEMU aborted"),
        ("something unexpected happened\n", "something unexpected happened"),
    ],
)
def test_other_crashes_in_words(err: str, words: str) -> None:
    probe = accelerator.judge_probe("kvm", result(1, "", err))
    assert probe.detail == f"a test guest crashed under KVM ({words}), so it cannot run ordinary guests"
    assert probe.raw == err.strip()


def test_signal_without_output_and_timeout_in_words() -> None:
    assert "(QEMU aborted)" in accelerator.judge_probe("kvm", result(-6)).detail
    assert "signal 11" in accelerator.judge_probe("kvm", result(-11)).detail
    late = accelerator.judge_probe("kvm", result(124, "SeaBIOS (version 1.16.2)\n"))
    assert late.detail == "a test guest did not boot under KVM in time, so KVM is not used"
    assert late.raw == "SeaBIOS (version 1.16.2)"
    assert accelerator.judge_probe("tcg", result(124)).detail == "the test guest did not boot under tcg in time"


def test_a_booted_guest_has_no_raw_output() -> None:
    assert accelerator.judge_probe("kvm", result(0, accelerator.PROBE_MARKER + "\r\n")).raw == ""


def test_cached_probe_without_raw_still_loads() -> None:
    """kvm-probe.json files written before AccelProbe had `raw` load as before; new ones keep it."""
    old = json.loads('{"accel": "kvm", "usable": false, "detail": "crashed"}')
    assert accelerator.AccelProbe(**old) == accelerator.AccelProbe("kvm", False, "crashed", "")
    new = asdict(accelerator.judge_probe("kvm", result(-6, "", ASSERTION)))
    assert accelerator.AccelProbe(**json.loads(json.dumps(new))).raw.endswith("failed.")
