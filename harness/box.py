"""Building, caching and registering Vagrant boxes from Debian packages (debootstrap).

A box build is one sequence: debootstrap → customize in a chroot → a partitioned disk image
(ext4 filled with `mke2fs -d`, extlinux boot loader) → qcow2 → a `.box` archive → `vagrant box
add` through a local catalog, so that each recipe hash is its own box version. Builds are cached
by the hash of the recipe directory; a failed build leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import logging
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from harness import proc
from harness.debootstrap import DebootstrapProgress
from harness.errors import BoxError, SpecError
from harness.paths import BOX_RECIPES_DIR, cache_dir, probe_kernel_path

log = logging.getLogger(__name__)

BUILDER_VERSION = "3"
PARTITION_OFFSET = 1024 * 1024
_MBR_CANDIDATES = ("/usr/lib/syslinux/mbr/mbr.bin", "/usr/lib/EXTLINUX/mbr.bin")
_INSECURE_KEY_GLOBS = (
    "/usr/share/rubygems-integration/all/gems/vagrant-*/keys/vagrant.pub",
    "/opt/vagrant/embedded/gems/gems/vagrant-*/keys/vagrant.pub",
    "/opt/vagrant/embedded/gems/vagrant-*/keys/vagrant.pub",
)


@dataclass(frozen=True)
class BoxRecipe:
    key: str  # directory name under vagrant/boxes, e.g. "debian12"
    name: str  # Vagrant box name, e.g. "harness/debian12"
    directory: Path
    suite: str
    mirror: str
    security_mirror: str
    disk_gib: int
    packages: tuple[str, ...]

    def content_hash(self) -> str:
        h = hashlib.sha256(BUILDER_VERSION.encode())
        for f in sorted(p for p in self.directory.rglob("*") if p.is_file()):
            h.update(f.relative_to(self.directory).as_posix().encode())
            h.update(f.read_bytes())
        return h.hexdigest()

    @property
    def version(self) -> str:
        """A Vagrant box version derived from the content hash (one version per recipe content)."""
        return f"1.0.{int(self.content_hash()[:7], 16)}"


@dataclass(frozen=True)
class BuiltBox:
    recipe: BoxRecipe
    path: Path
    version: str
    seconds: float
    cached: bool


@dataclass(frozen=True)
class InstalledBox:
    name: str
    provider: str
    version: str


def available_recipes(recipes_dir: Path = BOX_RECIPES_DIR) -> list[str]:
    return sorted(p.parent.name for p in recipes_dir.glob("*/recipe.yml"))


def load_recipe(key: str, recipes_dir: Path = BOX_RECIPES_DIR) -> BoxRecipe:
    path = recipes_dir / key / "recipe.yml"
    if not path.is_file():
        known = ", ".join(available_recipes(recipes_dir)) or "(none)"
        raise SpecError(key, [f"no box recipe named {key!r} under {recipes_dir}; known recipes: {known}"])
    data = yaml.safe_load(path.read_text())
    try:
        return BoxRecipe(
            key=key,
            name=str(data["name"]),
            directory=path.parent,
            suite=str(data["suite"]),
            mirror=str(data["mirror"]),
            security_mirror=str(data["security_mirror"]),
            disk_gib=int(data["disk_gib"]),
            packages=tuple(str(p) for p in data["packages"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise SpecError(str(path), [f"recipe is missing or has a bad value for {exc}"]) from exc


def recipe_for_box(box_name: str, recipes_dir: Path = BOX_RECIPES_DIR) -> BoxRecipe | None:
    for key in available_recipes(recipes_dir):
        recipe = load_recipe(key, recipes_dir)
        if recipe.name == box_name:
            return recipe
    return None


def _check(result: proc.CommandResult, what: str, logfile: Path) -> proc.CommandResult:
    if not result.ok:
        raise BoxError(f"box build failed while {what}: {result.describe()}\nFull log: {logfile}")
    return result


def _insecure_public_key() -> Path:
    for pattern in _INSECURE_KEY_GLOBS:
        hits = sorted(glob.glob(pattern))
        if hits:
            return Path(hits[-1])
    raise BoxError("Vagrant's public key (keys/vagrant.pub) was not found: install vagrant (`harness host setup`).")


def _mbr_bin() -> Path:
    for c in _MBR_CANDIDATES:
        if Path(c).is_file():
            return Path(c)
    raise BoxError("syslinux's mbr.bin was not found: install syslinux-common and extlinux (`harness host setup`).")


@contextlib.contextmanager
def _chroot_mounts(root: Path, logfile: Path) -> Iterator[None]:
    mounted: list[Path] = []
    try:
        for src, fstype in (("/proc", "proc"), ("/sys", "sysfs"), ("/dev", None)):
            target = root / src.lstrip("/")
            target.mkdir(exist_ok=True)
            argv = (
                ["mount", "--bind", src, str(target)]
                if fstype is None
                else ["mount", "-t", fstype, fstype, str(target)]
            )
            _check(proc.run(argv), f"mounting {src} into the chroot", logfile)
            mounted.append(target)
        yield
    finally:
        for target in reversed(mounted):
            proc.run(["umount", "-l", str(target)])


def _kernel_version(root: Path) -> str:
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise BoxError(f"debootstrap produced no kernel in {root / 'boot'}: is linux-image-amd64 in the recipe?")
    return kernels[-1].name.removeprefix("vmlinuz-")


def _make_image(root: Path, raw: Path, disk_gib: int, logfile: Path) -> None:
    size = disk_gib * 1024**3
    part_bytes = size - PARTITION_OFFSET
    with raw.open("wb") as fh:
        fh.truncate(size)
    _check(
        proc.run_logged(
            [
                "parted",
                "-s",
                str(raw),
                "mklabel",
                "msdos",
                "mkpart",
                "primary",
                "ext4",
                "1MiB",
                "100%",
                "set",
                "1",
                "boot",
                "on",
            ],
            logfile,
        ),
        "partitioning the disk image",
        logfile,
    )
    _check(
        proc.run_logged(
            [
                "mke2fs",
                "-q",
                "-t",
                "ext4",
                "-b",
                "4096",
                "-L",
                "harnessroot",
                "-O",
                "^64bit,^metadata_csum",
                "-E",
                f"offset={PARTITION_OFFSET}",
                "-d",
                str(root),
                str(raw),
                str(part_bytes // 4096),
            ],
            logfile,
        ),
        "creating the root filesystem",
        logfile,
    )
    loop = _check(
        proc.run(
            ["losetup", "--find", "--show", "--offset", str(PARTITION_OFFSET), "--sizelimit", str(part_bytes), str(raw)]
        ),
        "attaching the image to a loop device",
        logfile,
    ).stdout.strip()
    mnt = Path(tempfile.mkdtemp(prefix="harness-box-mnt-"))
    try:
        _check(proc.run(["mount", loop, str(mnt)]), "mounting the root filesystem", logfile)
        try:
            _check(
                proc.run_logged(["extlinux", "--install", str(mnt / "boot" / "extlinux")], logfile),
                "installing extlinux",
                logfile,
            )
        finally:
            proc.run(["umount", str(mnt)])
    finally:
        proc.run(["losetup", "-d", loop])
        mnt.rmdir()
    _check(
        proc.run(["dd", f"if={_mbr_bin()}", f"of={raw}", "bs=440", "count=1", "conv=notrunc"]),
        "writing the MBR",
        logfile,
    )


def _write_box_archive(recipe: BoxRecipe, qcow2: Path, out: Path) -> None:
    meta = {"provider": "libvirt", "format": "qcow2", "virtual_size": recipe.disk_gib}
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        (Path(tmp) / "metadata.json").write_text(json.dumps(meta))
        shutil.copy(recipe.directory / "Vagrantfile", Path(tmp) / "Vagrantfile")
        partial = out.with_suffix(".partial")
        with tarfile.open(partial, "w") as tar:
            tar.add(Path(tmp) / "metadata.json", arcname="metadata.json")
            tar.add(Path(tmp) / "Vagrantfile", arcname="Vagrantfile")
            tar.add(qcow2, arcname="box.img")
        partial.rename(out)


def cached_box_path(recipe: BoxRecipe) -> Path:
    return cache_dir() / "boxes" / f"{recipe.key}-{recipe.content_hash()[:12]}.box"


def build_box(recipe: BoxRecipe, *, force: bool = False, on_step: Callable[[str], None] | None = None) -> BuiltBox:
    """Build the box for a recipe (or reuse the cached build of the same recipe content)."""
    step = on_step or (lambda _s: None)
    out = cached_box_path(recipe)
    version = recipe.version  # from the recipe as it is now, not as it may be after a long build
    if out.is_file() and not force:
        return BuiltBox(recipe, out, version, 0.0, cached=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    logfile = out.with_suffix(".log")
    logfile.write_text("")
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix=f"build-{recipe.key}-", dir=out.parent))
    try:
        root = work / "rootfs"
        step(f"debootstrap {recipe.suite} ({len(recipe.packages)} packages and what they need) from {recipe.mirror}")
        progress = DebootstrapProgress(step)
        _check(
            proc.run_logged(
                [
                    "debootstrap",
                    "--variant=minbase",
                    f"--include={','.join(recipe.packages)}",
                    recipe.suite,
                    str(root),
                    recipe.mirror,
                ],
                logfile,
                on_line=progress,
            ),
            "running debootstrap",
            logfile,
        )
        step(progress.summary())
        step("customizing the root filesystem")
        shutil.copy(_insecure_public_key(), root / "tmp" / "vagrant.pub")
        shutil.copy(recipe.directory / "customize.sh", root / "tmp" / "customize.sh")
        kver = _kernel_version(root)
        with _chroot_mounts(root, logfile):
            _check(
                proc.run_logged(
                    [
                        "chroot",
                        str(root),
                        "/bin/sh",
                        "/tmp/customize.sh",
                        kver,
                        recipe.mirror,
                        recipe.security_mirror,
                        recipe.suite,
                    ],
                    logfile,
                    env={"DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"},
                ),
                "customizing the root filesystem",
                logfile,
            )
        step(f"making a {recipe.disk_gib} GiB disk image")
        raw = work / "disk.raw"
        _make_image(root, raw, recipe.disk_gib, logfile)
        # The box's kernel doubles as the KVM probe's test kernel (see accelerator.probe_kvm).
        probe = probe_kernel_path()
        probe.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(root / "boot" / f"vmlinuz-{kver}", probe)
        shutil.rmtree(root)
        step("converting to qcow2 and packing the box")
        qcow2 = work / "box.img"
        _check(
            proc.run_logged(["qemu-img", "convert", "-O", "qcow2", str(raw), str(qcow2)], logfile),
            "converting to qcow2",
            logfile,
        )
        raw.unlink()
        _write_box_archive(recipe, qcow2, out)
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for stale in out.parent.glob(f"{recipe.key}-*.box"):
        if stale != out:  # older builds of this recipe: Vagrant keeps its own copy once added
            for f in (stale, stale.with_suffix(".json"), stale.with_suffix(".log")):
                f.unlink(missing_ok=True)
    return BuiltBox(recipe, out, version, time.monotonic() - started, cached=False)


def installed_boxes() -> list[InstalledBox]:
    result = proc.run(["vagrant", "box", "list", "--machine-readable"], timeout=120)
    if not result.ok:
        raise BoxError(f"cannot list Vagrant boxes: {result.describe()}")
    boxes: list[InstalledBox] = []
    name = provider = ""
    for line in result.stdout.splitlines():
        parts = line.split(",", 3)
        if len(parts) < 4:
            continue
        kind, value = parts[2], parts[3]
        if kind == "box-name":
            name = value
        elif kind == "box-provider":
            provider = value
        elif kind == "box-version":
            boxes.append(InstalledBox(name, provider, value))
    return boxes


def register_box(built: BuiltBox) -> None:
    """`vagrant box add` through a one-entry catalog so the box carries its recipe version."""
    recipe = built.recipe
    if any(b.name == recipe.name and b.version == built.version and b.provider == "libvirt" for b in installed_boxes()):
        return
    catalog = {
        "name": recipe.name,
        "versions": [
            {"version": built.version, "providers": [{"name": "libvirt", "url": built.path.resolve().as_uri()}]}
        ],
    }
    catalog_path = built.path.with_suffix(".json")
    catalog_path.write_text(json.dumps(catalog, indent=2))
    result = proc.run(["vagrant", "box", "add", "--force", "--provider", "libvirt", str(catalog_path)], timeout=1800)
    if not result.ok:
        raise BoxError(f"`vagrant box add` failed: {result.describe()}")


def box_is_installed(name: str) -> bool:
    return any(b.name == name and b.provider == "libvirt" for b in installed_boxes())


def remove_box(name: str) -> list[InstalledBox]:
    """Remove every libvirt version of a box from Vagrant. Pool volumes are the provider's job."""
    removed = []
    for box in installed_boxes():
        if box.name == name and box.provider == "libvirt":
            result = proc.run(
                ["vagrant", "box", "remove", "--force", "--provider", "libvirt", "--box-version", box.version, name],
                timeout=300,
            )
            if not result.ok:
                raise BoxError(f"`vagrant box remove {name}` failed: {result.describe()}")
            removed.append(box)
    return removed
