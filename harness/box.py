"""Building, caching and registering Vagrant boxes from Debian packages (debootstrap).

A box build is one sequence: debootstrap → customize in a chroot → a partitioned disk image
(ext4 filled with `mke2fs -d`, extlinux boot loader) → qcow2 → a `.box` archive → `vagrant box
add` through a local catalog, so that each recipe hash is its own box version. Builds are cached
by the hash of the recipe directory; a failed build leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
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
from harness.errors import BoxError, SpecError, UsageError
from harness.paths import BOX_RECIPES_DIR, cache_dir, probe_kernel_path

log = logging.getLogger(__name__)

BUILDER_VERSION = "3"
DEFAULT_RECIPE = "debian12"
DEBOOTSTRAP_SCRIPTS_DIR = Path("/usr/share/debootstrap/scripts")
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
    # Archive components debootstrap installs from and the box's sources.list names.
    components: tuple[str, ...] = ("main",)
    # debootstrap's script for the suite when it has none of that name (Debian 12's debootstrap
    # knows jammy but not noble: noble is bootstrapped with the jammy script).
    script: str | None = None
    # The archive keyring debootstrap checks the Release file with; None: debootstrap's default
    # (Debian's keyring, which holds the bookworm and trixie keys).
    keyring: Path | None = None
    # A recipe whose mirror and keyring the user names (`harness box build ubuntu2204 --mirror
    # URL --keyring FILE`): Debian 12 ships no Ubuntu keyring and no Ubuntu mirror is known here.
    # They are not part of the content hash (preflight must know the version without them): a
    # build from another mirror is `--force`.
    needs_source: bool = False
    # The recipe this one is made like (`base: debian12`): its customize.sh runs first (as
    # /tmp/base-customize.sh, with the same arguments) and this recipe's customize.sh then changes
    # what differs; its Vagrantfile is the box's unless this recipe has one.
    base: BoxRecipe | None = None

    def content_hash(self) -> str:
        h = hashlib.sha256(BUILDER_VERSION.encode())
        for name, f in self.files():
            h.update(name.encode())
            h.update(f.read_bytes())
        return h.hexdigest()

    def files(self) -> list[tuple[str, Path]]:
        """The files the box is made from, by name: this recipe's, then its base's (`base:NAME/...`),
        so a change to the base recipe is a new build of this one."""
        out = [(f.relative_to(self.directory).as_posix(), f) for f in sorted(self.directory.rglob("*")) if f.is_file()]
        if self.base is not None:
            out += [(f"base:{self.base.key}/{name}", f) for name, f in self.base.files()]
        return out

    def box_file(self, name: str) -> Path:
        """A file of the box's recipe (Vagrantfile, customize.sh): this recipe's, else its base's."""
        own = self.directory / name
        return own if own.is_file() or self.base is None else self.base.box_file(name)

    def customize_scripts(self) -> tuple[Path, Path | None]:
        """The script that customizes the root filesystem (/tmp/customize.sh) and the one it runs
        first (/tmp/base-customize.sh): the customize.sh of the recipe that has one (this one or
        its base, e.g. ubuntu2404 → ubuntu2204) and that recipe's base's."""
        if (self.directory / "customize.sh").is_file() or self.base is None:
            return self.directory / "customize.sh", self.base.box_file("customize.sh") if self.base else None
        return self.base.customize_scripts()

    def debootstrap_argv(self, root: Path) -> list[str]:
        """The debootstrap command line that makes this recipe's root filesystem in `root`."""
        argv = ["debootstrap", "--variant=minbase", f"--include={','.join(self.packages)}"]
        if self.components != ("main",):
            argv.append(f"--components={','.join(self.components)}")
        if self.keyring is not None:
            argv.append(f"--keyring={self.keyring}")
        argv += [self.suite, str(root), self.mirror]
        if self.script is not None:
            argv.append(str(DEBOOTSTRAP_SCRIPTS_DIR / self.script))
        return argv

    def with_source(self, mirror: str | None, keyring: Path | None, security_mirror: str | None = None) -> BoxRecipe:
        """This recipe with the mirror and keyring the user named (both required where the recipe
        says it needs them); the security mirror defaults to the mirror."""
        if not self.needs_source:
            if mirror is None and keyring is None and security_mirror is None:
                return self
            mirror = mirror or self.mirror
            security_mirror = security_mirror or (self.security_mirror if mirror == self.mirror else mirror)
        missing = [opt for opt, v in (("--mirror URL", mirror), ("--keyring FILE", keyring)) if v is None]
        if self.needs_source and missing:
            raise UsageError(
                f"box recipe {self.key!r} builds from a mirror and archive keyring you name: "
                f"`harness box build {self.key} --mirror URL --keyring FILE` (missing: {', '.join(missing)})"
            )
        if keyring is not None and not keyring.is_file():
            raise UsageError(f"archive keyring {keyring} is not a file: name the archive's keyring (a .gpg file)")
        assert mirror is not None
        return dataclasses.replace(
            self,
            mirror=mirror.rstrip("/"),
            security_mirror=(security_mirror or mirror).rstrip("/"),
            keyring=keyring.resolve() if keyring is not None else self.keyring,
        )

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
            components=tuple(str(c) for c in data.get("components", ["main"])),
            script=str(data["debootstrap_script"]) if data.get("debootstrap_script") else None,
            needs_source=bool(data.get("needs_source", False)),
            base=load_recipe(str(data["base"]), recipes_dir) if data.get("base") else None,
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
        raise BoxError(
            f"debootstrap produced no kernel in {root / 'boot'}: is the kernel package "
            "(linux-image-amd64 on Debian, linux-image-virtual on Ubuntu) in the recipe?"
        )
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
        shutil.copy(recipe.box_file("Vagrantfile"), Path(tmp) / "Vagrantfile")
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
                recipe.debootstrap_argv(root),
                logfile,
                on_line=progress,
            ),
            "running debootstrap",
            logfile,
        )
        step(progress.summary())
        step("customizing the root filesystem")
        shutil.copy(_insecure_public_key(), root / "tmp" / "vagrant.pub")
        script, base_script = recipe.customize_scripts()
        shutil.copy(script, root / "tmp" / "customize.sh")
        if base_script is not None:
            shutil.copy(base_script, root / "tmp" / "base-customize.sh")
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
        if recipe.key == DEFAULT_RECIPE:
            # The default box's kernel doubles as the KVM probe's test kernel (see accelerator.probe_kvm).
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
