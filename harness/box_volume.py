"""The box's disk in the libvirt storage pool: uploaded once and whole before any domain uses it.

vagrant-libvirt copies a box's disk into the pool the first time a `vagrant up` needs it, under a
lock that only its own process sees: it creates the volume, then streams the image into it. Another
`vagrant up` that starts meanwhile finds the volume, builds its nodes' overlays on the half-copied
image and boots them, and QEMU, having read the image's tables while they were incomplete, sits in
the BIOS ("no bootable device") for good: two runs started together on a host that had never used
this box version hung that way. A copy cut off by SIGKILL leaves the same trap for every later run.

So `harness up` puts the volume in place itself, before Vagrant runs, under a host-wide lock (the
box image file itself, so every process using that image waits for the same lock), and only
trusts a volume whose bytes equal the image's. A checked volume is remembered by its inode, size
and mtime, so later runs pay a stat, not a comparison.
"""

from __future__ import annotations

import filecmp
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import libvirt

from harness import flock
from harness.errors import ProviderError
from harness.paths import state_dir
from harness.provider import libvirt as lv

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


def volume_name(box: str, version: str) -> str:
    """The pool volume vagrant-libvirt gives a box's disk (its HandleBoxImage.get_volume_name)."""
    return f"{box.replace('/', '-VAGRANTSLASH-')}_vagrant_box_image_{version}_box.img"


def box_image(box: str, version: str) -> Path:
    """The box's disk image as Vagrant keeps it (VAGRANT_HOME, default ~/.vagrant.d)."""
    home = Path(os.environ.get("VAGRANT_HOME") or Path.home() / ".vagrant.d")
    return home / "boxes" / box.replace("/", "-VAGRANTSLASH-") / version / "libvirt" / "box.img"


def _stamp(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_ino, st.st_size, st.st_mtime_ns]


def _checked_file() -> Path:
    return state_dir() / "box-volumes.json"


def _checked() -> dict[str, list[int]]:
    try:
        data = json.loads(_checked_file().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _remember(path: Path) -> None:
    data = _checked()
    data[str(path)] = _stamp(path)
    target = _checked_file()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(target)


def _whole(volume_path: Path, image: Path) -> bool:
    """The volume holds exactly the image's bytes (checked once per volume file, then remembered)."""
    try:
        if _checked().get(str(volume_path)) == _stamp(volume_path):
            return True
        if volume_path.stat().st_size != image.stat().st_size:
            return False
        same = filecmp.cmp(volume_path, image, shallow=False)
    except OSError:
        return False
    if same:
        _remember(volume_path)
    return same


def qcow2_virtual_size(image: Path) -> int:
    """The disk size a qcow2 image presents (its header: magic 'QFI\xfb', size at bytes 24-31)."""
    with image.open("rb") as fh:
        header = fh.read(32)
    if len(header) < 32 or header[:4] != b"QFI\xfb":
        raise ProviderError(f"{image} is not a qcow2 image: rebuild the box (`harness box build`).")
    return int.from_bytes(header[24:32], "big")


def _upload(pool: libvirt.virStoragePool, conn: libvirt.virConnect, name: str, image: Path) -> Path:
    size, capacity = image.stat().st_size, qcow2_virtual_size(image)
    xml = (
        f"<volume><name>{name}</name><capacity unit='bytes'>{capacity}</capacity>"
        f"<allocation unit='bytes'>{size}</allocation><target><format type='qcow2'/></target></volume>"
    )
    vol = pool.createXML(xml, 0)
    try:
        stream = conn.newStream(0)
        vol.upload(stream, 0, size, 0)
        with image.open("rb") as fh:

            def source(_stream: libvirt.virStream, nbytes: int, _opaque: object) -> bytes:
                return fh.read(min(nbytes, _CHUNK))

            stream.sendAll(source, None)
        stream.finish()
    except BaseException:
        try:
            vol.delete(0)
        except libvirt.libvirtError as exc:
            log.warning("could not remove the half-copied volume %s: %s", name, exc.get_error_message())
        raise
    return Path(vol.path())


def ensure(box: str, version: str, on_progress: Callable[[str], None] = lambda _msg: None) -> str:
    """Make the pool hold box `box` version `version` whole under vagrant-libvirt's name; returns
    the name. A volume of that name that is not a whole copy (an upload cut off, or one still under
    way in a process that did not lock) is replaced."""
    image = box_image(box, version)
    if not image.is_file():
        raise ProviderError(f"box {box} {version} has no disk image at {image}: rebuild it (`harness box build`).")
    name = volume_name(box, version)
    with flock.exclusive(image, "rb"), lv.connect() as conn:
        try:
            pool = conn.storagePoolLookupByName(lv.POOL)
            pool.refresh(0)
            try:
                vol: libvirt.virStorageVol | None = pool.storageVolLookupByName(name)
            except libvirt.libvirtError:
                vol = None
            if vol is not None:
                if _whole(Path(vol.path()), image):
                    return name
                on_progress(f"box volume {name} is not a whole copy of the box (an upload cut off): copying it again")
                vol.delete(0)
            on_progress(f"copying box {box} {version} into storage pool {lv.POOL}")
            _remember(_upload(pool, conn, name, image))
            return name
        except libvirt.libvirtError as exc:
            raise ProviderError(f"cannot put box {box} {version} into storage pool {lv.POOL}: {exc}") from exc
