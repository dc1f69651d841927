from __future__ import annotations

import grp
import os
import time
from pathlib import Path

import pytest

from harness import capabilities


def _own_group() -> str:
    return grp.getgrgid(os.getgid()).gr_name


def test_device_only_root_may_open_gets_group_rw(tmp_path: Path) -> None:
    dev = tmp_path / "kvm"
    dev.write_text("")
    dev.chmod(0o600)
    group = _own_group()
    assert not capabilities.kvm_device(dev, group).group_ok
    said = capabilities.fix_kvm_device(dev, group)
    assert said is not None and "0600" in said and "0660" in said
    assert capabilities.kvm_device(dev, group).group_ok
    assert dev.stat().st_mode & 0o777 == 0o660


def test_a_device_udev_already_set_up_is_left_alone(tmp_path: Path) -> None:
    dev = tmp_path / "kvm"
    dev.write_text("")
    dev.chmod(0o660)
    assert capabilities.fix_kvm_device(dev, _own_group()) is None
    assert dev.stat().st_mode & 0o777 == 0o660


def test_no_device_or_no_group_changes_nothing(tmp_path: Path) -> None:
    assert capabilities.fix_kvm_device(tmp_path / "absent", _own_group()) is None
    dev = tmp_path / "kvm"
    dev.write_text("")
    dev.chmod(0o600)
    assert capabilities.fix_kvm_device(dev, "no-such-group-here") is None
    assert dev.stat().st_mode & 0o777 == 0o600


class _Conn:
    def __init__(self, clock: list[float], step: float) -> None:
        self.clock, self.step = clock, step

    def getDomainCapabilities(self, *_a: object) -> str:
        self.clock[0] += self.step
        return "<domainCapabilities/>"


@pytest.mark.parametrize(("step", "reprobing"), [(4.5, True), (0.04, False)])
def test_two_slow_queries_mean_a_reprobe_loop(monkeypatch: pytest.MonkeyPatch, step: float, reprobing: bool) -> None:
    clock = [0.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])  # capabilities times with time.monotonic
    timing = capabilities.time_capability_queries(_Conn(clock, step))
    assert timing.reprobing is reprobing
    assert len(timing.seconds) == 2
