"""A scenario's Ansible requirements file (`provision.collections`): its collections and roles,
from local directories and tarballs only, installed offline into the cache once per content.

Every entry is checked before anything is installed (SpecError, exit 2, naming the entry and what
to do): a Galaxy, git or web source is refused (runs are offline), a tarball must be one
`ansible-galaxy collection build` / `download` made. The collections are installed with
`--force`, so a fork of a collection the `ansible` package ships (same name, same version) is
installed all the same; the cache holds a directory only after every requested collection is
there with its MANIFEST.json and every role with its tasks or meta. Roles (`roles:` entries with a
local `src`) are installed with `ansible-galaxy role install --no-deps` (tarballs) or copied
(directories) into `<cache>/roles`: no dependency is ever fetched from Galaxy.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness import proc, tools
from harness.errors import HostError, SpecError
from harness.paths import cache_dir

_TARBALL = (".tar.gz", ".tgz", ".tar")
_REBUILD = (
    "rebuild it with `ansible-galaxy collection build` or fetch it again with `ansible-galaxy collection download`"
)


@dataclass(frozen=True)
class Entry:
    """One local entry of a requirements file: `key` is where it is (`collections[0]`), `names`
    the collections (`ns.name`) or the role it installs."""

    key: str
    path: Path
    kind: str  # "dir", "file" or "subdirs"
    names: tuple[str, ...]


@dataclass(frozen=True)
class Requirements:
    file: Path
    collections: tuple[Entry, ...]
    roles: tuple[Entry, ...]

    @property
    def sources(self) -> list[Path]:
        return [e.path for e in (*self.collections, *self.roles)]


def _strip_tarball(name: str) -> str:
    return next((name[: -len(s)] for s in _TARBALL if name.endswith(s)), name)


def _manifest_name(info: Any) -> str:
    ns, name = (info.get("namespace"), info.get("name")) if isinstance(info, dict) else (None, None)
    if not isinstance(ns, str) or not isinstance(name, str):
        raise ValueError("no namespace and name in it")
    return f"{ns}.{name}"


def _tarball_collection(path: Path) -> str:
    """`ns.name` from a collection tarball's MANIFEST.json; ValueError saying what is wrong."""
    try:
        with tarfile.open(path) as tar:
            member = tar.extractfile("MANIFEST.json")
            if member is None:
                raise ValueError("MANIFEST.json is not a file")
            return _manifest_name(json.load(member).get("collection_info"))
    except KeyError:
        raise ValueError("no MANIFEST.json in it") from None
    except (tarfile.TarError, EOFError) as exc:
        raise ValueError(f"not a readable tar archive ({type(exc).__name__})") from exc
    except (OSError, json.JSONDecodeError, AttributeError) as exc:
        raise ValueError(f"not a readable collection tarball ({exc})") from exc


def _dir_collection(path: Path) -> str | None:
    """`ns.name` of a collection directory (galaxy.yml or MANIFEST.json), None if it is none."""
    try:
        if (path / "galaxy.yml").is_file():
            return _manifest_name(yaml.safe_load((path / "galaxy.yml").read_text(encoding="utf-8")))
        if (path / "MANIFEST.json").is_file():
            return _manifest_name(json.loads((path / "MANIFEST.json").read_text()).get("collection_info"))
    except (OSError, ValueError, yaml.YAMLError, AttributeError):
        return None
    return None


def _collection_names(path: Path, kind: str) -> tuple[str, ...]:
    if kind == "file":
        return (_tarball_collection(path),)
    if kind == "dir":
        name = _dir_collection(path)
        if name is None:
            raise ValueError("not a collection directory (no readable galaxy.yml or MANIFEST.json)")
        return (name,)
    found = [_dir_collection(d) for d in [*path.glob("*"), *path.glob("*/*")] if d.is_dir()]
    names = tuple(sorted({n for n in found if n}))
    if not names:
        raise ValueError("no collection directory (galaxy.yml) in it or one level below")
    return names


def _collection_entry(base: Path, key: str, entry: object) -> Entry:
    """A local collection entry, or ValueError saying why it cannot be one."""
    name = (entry.get("source") or entry.get("name")) if isinstance(entry, dict) else entry
    kind = entry.get("type") if isinstance(entry, dict) else None
    if not isinstance(name, str):
        raise ValueError("expected a name (a directory or tarball)")
    local = kind in ("dir", "file", "subdirs") or name.startswith((".", "/"))
    # What `ansible-galaxy collection download` writes: `name: ns-name-1.0.0.tar.gz`, no type.
    if kind is None and name.endswith(_TARBALL):
        local = True
    if not local:
        raise ValueError(
            f"{name!r} would come from a Galaxy server; runs are offline: give a local directory or tarball "
            "(type: dir or file), e.g. from `ansible-galaxy collection download`"
        )
    path = (base / name).resolve()
    if not path.exists():
        raise ValueError(f"{path} does not exist")
    kind = kind or ("dir" if path.is_dir() else "file")
    try:
        return Entry(key, path, kind, _collection_names(path, kind))
    except ValueError as exc:
        what = _REBUILD if kind == "file" else "give the collection's directory (where its galaxy.yml is)"
        raise ValueError(f"{path}: {exc}; {what}") from None


def _role_entry(base: Path, key: str, entry: object) -> Entry:
    src = (entry.get("src") or entry.get("name")) if isinstance(entry, dict) else entry
    if not isinstance(src, str):
        raise ValueError("expected src: a local role tarball or directory")
    path = (base / src).resolve()
    remote = "://" in src or (isinstance(entry, dict) and entry.get("scm")) or not path.exists()
    if remote:
        raise ValueError(
            f"{src!r} would come from Galaxy or a git/web server; runs are offline: give a local tarball or "
            "directory (`src: ./vendor/<role>.tar.gz`, `name: <role>`), e.g. `ansible-galaxy role install "
            "-p vendor <role>` then `tar czf` on a connected machine"
        )
    given = entry.get("name") if isinstance(entry, dict) and entry.get("src") else None
    name = given if isinstance(given, str) else _strip_tarball(path.name)
    if path.is_dir():
        if not ((path / "tasks").is_dir() or (path / "meta").is_dir()):
            raise ValueError(f"{path} is not a role directory (no tasks/ or meta/)")
        return Entry(key, path, "dir", (name,))
    try:
        with tarfile.open(path) as tar:
            members = tar.getnames()
    except (tarfile.TarError, OSError, EOFError) as exc:
        why = type(exc).__name__
        raise ValueError(f"{path} is not a readable role tarball ({why}); make it again with `tar czf`") from exc
    if not any(m.split("/")[-2:] in (["meta", "main.yml"], ["meta", "main.yaml"]) for m in members):
        raise ValueError(f"{path} holds no role (no meta/main.yml, which `ansible-galaxy role install` needs)")
    return Entry(key, path, "file", (name,))


def read_requirements(requirements: Path) -> Requirements:
    """Every entry of a requirements file, checked to be local and readable; SpecError listing
    every problem (the entry, what is wrong, what to do)."""
    try:
        data = yaml.safe_load(requirements.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise SpecError(str(requirements), [f"cannot read the requirements file: {exc}"]) from exc
    sections = {s: data.get(s) for s in ("collections", "roles")} if isinstance(data, dict) else {}
    if not any(isinstance(v, list) for v in sections.values()):
        raise SpecError(str(requirements), ["expected `collections:` and/or `roles:`, each a list of local sources"])
    problems: list[str] = []
    found: dict[str, list[Entry]] = {"collections": [], "roles": []}
    for section, entries in sections.items():
        if entries is not None and not isinstance(entries, list):
            problems.append(f"{section}: expected a list")
            continue
        make = _collection_entry if section == "collections" else _role_entry
        for k, entry in enumerate(entries or []):
            try:
                found[section].append(make(requirements.parent, f"{section}[{k}]", entry))
            except ValueError as exc:
                problems.append(f"{section}[{k}]: {exc}")
    if problems:
        raise SpecError(str(requirements), problems)
    return Requirements(requirements, tuple(found["collections"]), tuple(found["roles"]))


def requirement_sources(requirements: Path) -> list[Path]:
    """Local paths (directories, tarballs) a requirements file installs from."""
    return read_requirements(requirements).sources


def _digest(req: Requirements) -> str:
    h = hashlib.sha256(req.file.read_bytes())
    for src in req.sources:
        files = sorted(p for p in src.rglob("*") if p.is_file()) if src.is_dir() else [src]
        for f in files:
            h.update(str(f.relative_to(src) if src.is_dir() else f.name).encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _missing(req: Requirements, root: Path) -> list[str]:
    """What `root` lacks of the requirements: an incomplete install is never cached."""
    missing: list[str] = []
    for e in req.collections:
        for name in e.names:
            if not (root / "ansible_collections" / name.replace(".", "/") / "MANIFEST.json").is_file():
                missing.append(f"{e.key}: collection {name} (from {e.path})")
    for e in req.roles:
        role = root / "roles" / e.names[0]
        if not ((role / "tasks").is_dir() or (role / "meta").is_dir()):
            missing.append(f"{e.key}: role {e.names[0]} (from {e.path})")
    return missing


def _install_roles(req: Requirements, work: Path) -> None:
    roles = work / "roles"
    roles.mkdir()
    files = [{"src": str(e.path), "name": e.names[0]} for e in req.roles if e.kind == "file"]
    for e in req.roles:
        if e.kind == "dir":
            shutil.copytree(e.path, roles / e.names[0], symlinks=True)
    if files:
        listed = work / "roles-requirements.yml"
        listed.write_text(yaml.safe_dump(files))
        argv = [tools.find("ansible-galaxy"), "role", "install", "--no-deps", "-r", str(listed), "-p", str(roles)]
        result = proc.run(argv, cwd=req.file.parent, timeout=600)
        listed.unlink()
        if not result.ok:
            raise SpecError(
                str(req.file),
                [f"roles: ansible-galaxy could not install them: {result.describe()}", "fix or remake the tarballs"],
            )


def _install_collections(req: Requirements, work: Path) -> None:
    # --force: a collection the `ansible` package ships in the same version is installed all the
    # same (without it ansible-galaxy says "Nothing to do" and a patched fork is never used).
    argv = [tools.find("ansible-galaxy"), "collection", "install", "--offline", "--force", "-r", str(req.file),
            "-p", str(work)]  # fmt: skip
    result = proc.run(argv, cwd=req.file.parent, timeout=600)
    if not result.ok:
        raise SpecError(
            str(req.file),
            [
                f"collections: ansible-galaxy could not install them offline: {result.describe()}",
                "each entry must be a tarball from `ansible-galaxy collection build`/`download` or a collection "
                "directory, and every collection they depend on must be listed too (or ship with Ansible)",
            ],
        )


def install(requirements: Path) -> Path:
    """Install a requirements file's collections and roles offline into the cache; the directory
    holding `ansible_collections/` and `roles/`. Cached by the content of the file and of every
    directory or tarball it names, so a run reinstalls only after something changed."""
    req = read_requirements(requirements)
    target = cache_dir() / "collections" / _digest(req)
    if target.is_dir() and not _missing(req, target):
        return target
    shutil.rmtree(target, ignore_errors=True)  # incomplete (an older harness cached "Nothing to do")
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="install-", dir=target.parent))
    try:
        (work / "ansible_collections").mkdir()
        if req.collections:
            _install_collections(req, work)
        _install_roles(req, work)
        missing = _missing(req, work)
        if missing:
            raise HostError(
                f"ansible-galaxy reported success for {requirements} but did not install: {'; '.join(missing)}. "
                "Nothing was cached; run again with -vv and report it"
            )
        work.rename(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


@dataclass(frozen=True)
class CollectionShadow:
    """A collection of the requirements file that also exists elsewhere on Ansible's search path
    (the `ansible` package's, ~/.ansible/collections): the user's copy is used, whole."""

    name: str
    used: Path
    hidden: tuple[Path, ...]

    def describe(self) -> str:
        def version(p: Path) -> str:
            try:
                return str(json.loads((p / "MANIFEST.json").read_text())["collection_info"]["version"])
            except (OSError, ValueError, KeyError, TypeError):
                return "?"

        others = ", ".join(f"{p} {version(p)}" for p in self.hidden)
        return f"collection {self.name!r}: using {self.used} {version(self.used)} (shadows {others}, not used)"


def other_collection_roots(defaults: list[Path]) -> list[Path]:
    """Where else Ansible finds collections: `defaults` (the configured places after the run's),
    then every `ansible_collections` on Python's path (the `ansible` package's)."""
    scanned = [Path(p) for p in sys.path if p and (Path(p) / "ansible_collections").is_dir()]
    return list(dict.fromkeys([*defaults, *scanned]))


def shadowed_collections(installed: Path, others: list[Path]) -> list[CollectionShadow]:
    """The collections under `installed` that also exist under one of `others`."""
    shadows: list[CollectionShadow] = []
    for manifest in sorted((installed / "ansible_collections").glob("*/*/MANIFEST.json")):
        ns, name = manifest.parent.parent.name, manifest.parent.name
        hidden = tuple(
            d for root in others if (d := root / "ansible_collections" / ns / name).is_dir() and d != manifest.parent
        )
        if hidden:
            shadows.append(CollectionShadow(f"{ns}.{name}", manifest.parent, hidden))
    return shadows
