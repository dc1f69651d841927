"""Container image tarballs written without a registry or an image tool: the `docker save` layout
(docker-archive) that `ctr images import`, `docker load` and `podman load` all read, and that
upstream Kubernetes ships its server images in (kubernetes/server/bin/<image>.tar).

A docker-archive is a tar of:

    manifest.json            [{"Config": "<config digest>.json", "RepoTags": [ref], "Layers": ["<diff id>/layer.tar"]}]
    <config digest>.json     the image config: architecture, os, config (Entrypoint, Cmd, Env), rootfs.diff_ids
    <diff id>/layer.tar      one uncompressed layer: the image's file system
    repositories             {"<name>": {"<tag>": "<diff id>"}} (what older docker load reads)

Everything is written deterministically (fixed mtimes, owners, order), so the same inputs give the
same bytes and the same digests.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# 2000-01-01T00:00:00Z: a fixed time for every tar member and the config's `created`.
EPOCH = 946684800
CREATED = "2000-01-01T00:00:00Z"


@dataclass(frozen=True)
class Entry:
    """One file-system entry of a layer: a file (data, mode), a directory, or a symlink (target)."""

    path: str
    data: bytes | None = None
    mode: int = 0o755
    symlink: str | None = None

    @property
    def is_dir(self) -> bool:
        return self.data is None and self.symlink is None


@dataclass(frozen=True)
class Image:
    """An image of one layer: its reference (name:tag), its entries and how it starts."""

    ref: str
    entries: Sequence[Entry]
    entrypoint: Sequence[str] = ()
    cmd: Sequence[str] = ()
    env: Sequence[str] = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)
    architecture: str = "amd64"
    labels: Mapping[str, str] = field(default_factory=dict)


def split_ref(ref: str) -> tuple[str, str]:
    """name and tag of a reference (`registry/name:tag`; a colon before the last slash is a port)."""
    name, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag:
        return ref, "latest"
    return name, tag


def _info(name: str, *, size: int = 0, mode: int = 0o755) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, mode, EPOCH
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def _parents(path: str) -> list[str]:
    parts = path.strip("/").split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def layer_tar(entries: Sequence[Entry]) -> bytes:
    """The layer: every entry, with its parent directories, sorted by path."""
    by_path: dict[str, Entry] = {}
    for e in entries:
        for parent in _parents(e.path):
            by_path.setdefault(parent, Entry(parent))
        by_path[e.path.strip("/")] = e
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(by_path):
            e = by_path[path]
            if e.symlink is not None:
                info = _info(path, mode=0o777)
                info.type, info.linkname = tarfile.SYMTYPE, e.symlink
                tar.addfile(info)
            elif e.data is None:
                info = _info(path + "/", mode=e.mode)
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                tar.addfile(_info(path, size=len(e.data), mode=e.mode), io.BytesIO(e.data))
    return buf.getvalue()


def config(image: Image, diff_id: str) -> dict[str, Any]:
    """The image config (OCI image-spec config, which docker reads as well)."""
    cfg: dict[str, Any] = {"Env": list(image.env)}
    if image.entrypoint:
        cfg["Entrypoint"] = list(image.entrypoint)
    if image.cmd:
        cfg["Cmd"] = list(image.cmd)
    if image.labels:
        cfg["Labels"] = dict(image.labels)
    return {
        "architecture": image.architecture,
        "os": "linux",
        "created": CREATED,
        "config": cfg,
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
        "history": [{"created": CREATED, "created_by": "harness.oci_image"}],
    }


def _json(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def archive(image: Image) -> bytes:
    """The docker-archive tarball of `image`."""
    layer = layer_tar(image.entries)
    diff_id = hashlib.sha256(layer).hexdigest()
    cfg = _json(config(image, diff_id))
    cfg_name = f"{hashlib.sha256(cfg).hexdigest()}.json"
    name, tag = split_ref(image.ref)
    members = [
        (f"{diff_id}/", None),
        (f"{diff_id}/VERSION", b"1.0"),
        (f"{diff_id}/layer.tar", layer),
        (cfg_name, cfg),
        ("manifest.json", _json([{"Config": cfg_name, "RepoTags": [image.ref], "Layers": [f"{diff_id}/layer.tar"]}])),
        ("repositories", _json({name: {tag: diff_id}})),
    ]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for member, data in members:
            if data is None:
                info = _info(member)
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                tar.addfile(_info(member, size=len(data), mode=0o644), io.BytesIO(data))
    return buf.getvalue()


def write(image: Image, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(archive(image))
    return dest


def archive_problems(path: Path) -> tuple[list[str], list[str]]:
    """(references, problems) of a docker-archive tarball: its manifest.json read, and every config
    and layer it names present with the digest the config's diff_ids give."""
    problems: list[str] = []
    refs: list[str] = []
    try:
        with tarfile.open(path, mode="r:*") as tar:
            names = set(tar.getnames())

            def read(member: str) -> bytes | None:
                if member not in names:
                    problems.append(f"{path.name}: {member} is named in manifest.json but not in the archive")
                    return None
                fh = tar.extractfile(member)
                return fh.read() if fh is not None else None

            raw = read("manifest.json") if "manifest.json" in names else None
            if raw is None:
                return [], [f"{path.name}: no manifest.json: not a docker-archive image (`docker save` layout)"]
            manifest = json.loads(raw)
            for item in manifest if isinstance(manifest, list) else []:
                refs += list(item.get("RepoTags") or [])
                cfg_raw = read(str(item.get("Config")))
                if cfg_raw is None:
                    continue
                diff_ids = json.loads(cfg_raw).get("rootfs", {}).get("diff_ids", [])
                layers = list(item.get("Layers") or [])
                if len(diff_ids) != len(layers):
                    problems.append(f"{path.name}: {len(layers)} layer(s) but {len(diff_ids)} diff_id(s) in its config")
                for layer_name, diff_id in zip(layers, diff_ids, strict=False):
                    data = read(str(layer_name))
                    if data is not None and f"sha256:{hashlib.sha256(data).hexdigest()}" != diff_id:
                        problems.append(f"{path.name}: {layer_name} does not have the digest its config gives")
    except (OSError, tarfile.TarError, ValueError, AttributeError) as exc:
        return refs, [*problems, f"{path.name}: not a readable image tarball: {exc}"]
    if not refs and not problems:
        problems.append(f"{path.name}: manifest.json names no image (RepoTags)")
    return refs, problems
