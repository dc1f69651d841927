"""What a scenario's playbook needs, settled before any VM exists: where its roles come from, the
collections it uses (installed offline, cached by content) and a syntax check that resolves every
role and module.

Role resolution order (README "Roles and collections"): the playbook's own `roles/` directory
(Ansible's rule), then the scenario's `provision.roles_path` in its order, then this harness's
`roles/` last. The user's role always wins over ours of the same name; `harness validate` names
every such role so the choice is visible.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness import k8s_bundle, proc, tools
from harness.errors import HostError, SpecError
from harness.paths import ROLES_DIR, cache_dir
from harness.spec import Scenario

log = logging.getLogger(__name__)


def roles_path(scenario: Scenario) -> list[Path]:
    """ANSIBLE_ROLES_PATH for a scenario: its own directories first, this harness's roles last."""
    assert scenario.provision is not None
    own = [scenario.resolve(p) for p in scenario.provision.roles_path]
    return list(dict.fromkeys([*own, ROLES_DIR]))


def _role_dirs(playbook: Path, path: list[Path]) -> list[Path]:
    return [playbook.parent / "roles", *path]


@dataclass(frozen=True)
class Shadow:
    """A role name defined in several places: `used` is what Ansible takes, `hidden` the others."""

    name: str
    used: Path
    hidden: tuple[Path, ...]


def shadowed_roles(playbook: Path, path: list[Path]) -> list[Shadow]:
    """Role names found in more than one directory of the search order."""
    seen: dict[str, list[Path]] = {}
    for d in _role_dirs(playbook, path):
        if d.is_dir():
            for role in sorted(p for p in d.iterdir() if (p / "tasks").is_dir() or (p / "meta").is_dir()):
                where = seen.setdefault(role.name, [])
                if role.resolve() not in [w.resolve() for w in where]:
                    where.append(role)
    return [Shadow(n, ps[0], tuple(ps[1:])) for n, ps in sorted(seen.items()) if len(ps) > 1]


def requirement_sources(requirements: Path) -> list[Path]:
    """Local paths (directories, tarballs) a requirements file installs from."""
    try:
        data = yaml.safe_load(requirements.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise SpecError(str(requirements), [f"cannot read the collections requirements: {exc}"]) from exc
    entries = data.get("collections") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise SpecError(str(requirements), ["collections: expected a list of collections to install"])
    sources: list[Path] = []
    problems: list[str] = []
    for k, entry in enumerate(entries):
        name = entry.get("source") or entry.get("name") if isinstance(entry, dict) else entry
        kind = entry.get("type") if isinstance(entry, dict) else None
        local = isinstance(name, str) and (kind in ("dir", "file", "subdirs") or name.startswith((".", "/")))
        if not local:
            problems.append(
                f"collections[{k}]: {name!r} would come from a Galaxy server; runs are offline: give a local "
                "directory or tarball (type: dir or file), e.g. from `ansible-galaxy collection download`"
            )
            continue
        path = (requirements.parent / str(name)).resolve()
        if not path.exists():
            problems.append(f"collections[{k}]: {path} does not exist")
        sources.append(path)
    if problems:
        raise SpecError(str(requirements), problems)
    return sources


def _digest(requirements: Path, sources: list[Path]) -> str:
    h = hashlib.sha256(requirements.read_bytes())
    for src in sources:
        files = sorted(p for p in src.rglob("*") if p.is_file()) if src.is_dir() else [src]
        for f in files:
            h.update(str(f.relative_to(src) if src.is_dir() else f.name).encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def install_collections(requirements: Path) -> Path:
    """Install a requirements file's collections offline into the cache; the collections path.

    Cached by the content of the file and of every directory or tarball it names, so a run
    reinstalls only after something changed."""
    sources = requirement_sources(requirements)
    target = cache_dir() / "collections" / _digest(requirements, sources)
    if (target / "ansible_collections").is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="install-", dir=target.parent))
    try:
        argv = [tools.find("ansible-galaxy"), "collection", "install", "--offline", "-r", str(requirements),
                "-p", str(work)]  # fmt: skip
        result = proc.run(argv, cwd=requirements.parent, timeout=600)
        if not result.ok:
            raise HostError(f"cannot install the collections of {requirements}: {result.describe()}")
        work.rename(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info("collections of %s installed in %s", requirements, target)
    return target


def collections_path(scenario: Scenario) -> Path | None:
    assert scenario.provision is not None
    req = scenario.provision.collections
    return install_collections(scenario.resolve(req)) if req is not None else None


def extra_vars(scenario: Scenario) -> dict[str, Any]:
    """The extra vars of a converge of this scenario, rehearsal or promotion alike: what the
    harness adds (the k3s bundle directory), then the scenario's own, which win."""
    assert scenario.provision is not None
    return {**k8s_bundle.extra_vars(scenario), **scenario.provision.extra_vars}


def collections_search_path(collections: Path) -> str:
    """The run's collections first, then Ansible's default places (a collection installed with
    `ansible-galaxy collection install` stays visible)."""
    defaults = [Path.home() / ".ansible" / "collections", Path("/usr/share/ansible/collections")]
    return os.pathsep.join(str(p) for p in [collections, *defaults])


def ansible_env(role_dirs: list[Path], collections: Path | None) -> dict[str, str]:
    """Where Ansible looks for roles and collections (the collections of the `ansible` package,
    a harness dependency, are found through Python's path in any case)."""
    env = {"ANSIBLE_ROLES_PATH": os.pathsep.join(str(p.resolve()) for p in role_dirs)}
    if collections is not None:
        env["ANSIBLE_COLLECTIONS_PATH"] = collections_search_path(collections)
    return env


_ERROR = re.compile(r"^ERROR! (.*)$", re.MULTILINE)


@dataclass(frozen=True)
class SyntaxCheck:
    ok: bool
    problems: list[str]
    shadows: list[Shadow]
    seconds: float


def _placeholder_inventory(scenario: Scenario, path: Path) -> None:
    """The run's groups with its node names, so the playbook's host patterns resolve."""
    groups: dict[str, dict[str, dict[str, object]]] = {}
    for node in scenario.expanded_nodes():
        for g in node.groups:
            groups.setdefault(g, {"hosts": {}})["hosts"][node.name] = {}
    for g, members in scenario.groups.items():
        groups.setdefault(g, {"hosts": {}})["hosts"].update({m: {} for m in members})
    hosts = {n.name: {"ansible_host": "127.0.0.1"} for n in scenario.expanded_nodes()}
    path.write_text(yaml.safe_dump({"all": {"hosts": hosts, "children": groups}}, sort_keys=True))


def syntax_check(scenario: Scenario) -> SyntaxCheck:
    """`ansible-playbook --syntax-check` with the run's roles and collections: every role and
    module must resolve. Seconds, no VM. Installs the scenario's collections (cached)."""
    assert scenario.provision is not None
    playbook = scenario.resolve(scenario.provision.playbook)
    path = roles_path(scenario)
    env = ansible_env(path, collections_path(scenario))
    with tempfile.TemporaryDirectory(prefix="harness-syntax-") as tmp:
        inv = Path(tmp) / "inventory.yml"
        _placeholder_inventory(scenario, inv)
        argv = [tools.find("ansible-playbook"), "--syntax-check", "-i", str(inv), str(playbook)]
        result = proc.run(argv, env={**env, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_LOCAL_TEMP": tmp}, timeout=300)
    problems: list[str] = []
    if not result.ok:
        text = result.stderr + result.stdout
        errors = _ERROR.findall(text)
        location = re.search(r"The error appears to be in '([^']+)': line (\d+)", text)
        where = f" ({location.group(1)}, line {location.group(2)})" if location else ""
        problems = [f"provision.playbook: {playbook.name}: {e.strip()}{where}" for e in errors] or [
            f"provision.playbook: {playbook.name}: {result.describe()}"
        ]
    return SyntaxCheck(result.ok, problems, shadowed_roles(playbook, path), result.duration)
