"""The box's disk reaches the storage pool whole, once, even with several runs starting together
and after an upload that was cut off (harness/box_volume.py). Needs libvirt, boots nothing: a
small qcow2 image stands in for a box, under a box name of its own, removed at the end."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from harness import box_volume, proc
from harness.provider import libvirt as lv

pytestmark = pytest.mark.vm

BOX, VERSION = "harness-test/tiny", "0.0.1"


def _pool_path(name: str) -> Path | None:
    with lv.connect() as conn:
        pool = conn.storagePoolLookupByName(lv.POOL)
        pool.refresh(0)
        try:
            return Path(pool.storageVolLookupByName(name).path())
        except libvirt.libvirtError:
            return None


def _delete(name: str) -> None:
    with lv.connect() as conn:
        pool = conn.storagePoolLookupByName(lv.POOL)
        pool.refresh(0)
        with contextlib.suppress(libvirt.libvirtError):
            pool.storageVolLookupByName(name).delete(0)


@pytest.fixture
def tiny_box(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("VAGRANT_HOME", str(tmp_path / "vagrant.d"))
    monkeypatch.setenv("HARNESS_STATE_DIR", str(tmp_path / "state"))
    image = box_volume.box_image(BOX, VERSION)
    image.parent.mkdir(parents=True)
    assert proc.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "64M"]).ok
    with image.open("ab") as fh:  # some bytes past the header, so a cut-off copy differs
        fh.write(os.urandom(3 << 20))
    name = box_volume.volume_name(BOX, VERSION)
    _delete(name)
    yield image
    _delete(name)


def _ensure(_i: int) -> str:
    return box_volume.ensure(BOX, VERSION)


def test_runs_starting_together_get_one_whole_copy(tiny_box: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(3) as pool:
        names = pool.map(_ensure, range(3))
    assert set(names) == {box_volume.volume_name(BOX, VERSION)}
    path = _pool_path(names[0])
    assert path is not None and path.read_bytes() == tiny_box.read_bytes()


def test_a_cut_off_copy_is_replaced(tiny_box: Path) -> None:
    name = box_volume.ensure(BOX, VERSION)
    path = _pool_path(name)
    assert path is not None
    with path.open("r+b") as fh:  # what a SIGKILLed upload leaves: the first part only
        fh.truncate(path.stat().st_size // 2)
    messages: list[str] = []
    assert box_volume.ensure(BOX, VERSION, messages.append) == name
    assert any("not a whole copy" in m for m in messages), messages
    fresh = _pool_path(name)
    assert fresh is not None and fresh.read_bytes() == tiny_box.read_bytes()
