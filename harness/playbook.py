"""What a scenario's playbook needs, settled before any VM exists: where its roles come from, the
collections it uses (installed offline, cached by content) and a syntax check that resolves every
role and module.

Role resolution order (docs/roles-and-collections.md): the playbook's own `roles/` directory
(Ansible's rule), then the scenario's `provision.roles_path` in its order, then the roles of its
requirements file (`provision.collections`, `roles:`), then this harness's `roles/` last. The
user's role always wins over ours of the same name, and the user's copy of a collection over the
one the `ansible` package ships; `harness validate` names every such role and collection.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from harness import galaxy, k8s_bundle, playbook_reach, proc, tools
from harness.paths import ROLES_DIR
from harness.spec import Scenario

log = logging.getLogger(__name__)


def roles_path(scenario: Scenario) -> list[Path]:
    """ANSIBLE_ROLES_PATH for a scenario: its own directories first, then the roles its
    requirements file installs (`roles:`, installed offline, cached), this harness's roles last."""
    assert scenario.provision is not None
    own = [scenario.resolve(p) for p in scenario.provision.roles_path]
    installed = collections_path(scenario)
    roles = installed / "roles" if installed is not None else None
    required = [roles] if roles is not None and roles.is_dir() and any(roles.iterdir()) else []
    return list(dict.fromkeys([*own, *required, ROLES_DIR]))


def _role_dirs(playbook: Path, path: list[Path]) -> list[Path]:
    return [playbook.parent / "roles", *path]


@dataclass(frozen=True)
class Shadow:
    """A role name defined in several places: `used` is what Ansible takes, `hidden` the others."""

    name: str
    used: Path
    hidden: tuple[Path, ...]


def shadowed_roles(playbook: Path, path: list[Path], used: set[str] | None = None) -> list[Shadow]:
    """Role names found in more than one directory of the search order; with `used`, only those
    (the roles the playbook uses)."""
    seen: dict[str, list[Path]] = {}
    for d in _role_dirs(playbook, path):
        if d.is_dir():
            for role in sorted(p for p in d.iterdir() if (p / "tasks").is_dir() or (p / "meta").is_dir()):
                where = seen.setdefault(role.name, [])
                if role.resolve() not in [w.resolve() for w in where]:
                    where.append(role)
    found = [Shadow(n, ps[0], tuple(ps[1:])) for n, ps in sorted(seen.items()) if len(ps) > 1]
    return [s for s in found if used is None or s.name in used]


def collections_path(scenario: Scenario) -> Path | None:
    """The scenario's requirements (`provision.collections`) installed offline (cached): the
    directory with `ansible_collections/` and `roles/`; None without requirements."""
    assert scenario.provision is not None
    req = scenario.provision.collections
    return galaxy.install(scenario.resolve(req)) if req is not None else None


def extra_vars(scenario: Scenario) -> dict[str, Any]:
    """The extra vars of a converge of this scenario, rehearsal or promotion alike: what the
    harness adds (the k3s bundle directory), then the scenario's own, which win."""
    assert scenario.provision is not None
    return {**k8s_bundle.extra_vars(scenario), **scenario.provision.extra_vars}


def _default_collection_paths() -> list[Path]:
    return [Path.home() / ".ansible" / "collections", Path("/usr/share/ansible/collections")]


def collections_search_path(collections: Path) -> str:
    """The run's collections first, then Ansible's default places (a collection installed with
    `ansible-galaxy collection install` stays visible). The `ansible` package's collections come
    after all of these (Ansible scans Python's path last), so the user's copy of a collection wins."""
    return os.pathsep.join(str(p) for p in [collections, *_default_collection_paths()])


def shadowed_collections(collections: Path | None) -> list[galaxy.CollectionShadow]:
    """The run's collections that hide another copy of the same name (a patched fork of a
    collection the `ansible` package ships): `harness validate` and `run` name each."""
    if collections is None:
        return []
    return galaxy.shadowed_collections(collections, galaxy.other_collection_roots(_default_collection_paths()))


_CORE = re.compile(r"\[core (\d+\.\d+\.\d+\S*)\]")


@cache
def _core_version_of(path: str) -> str:
    result = proc.run([path, "--version"], timeout=120, env={"ANSIBLE_NOCOLOR": "1"})
    found = _CORE.search(result.stdout) if result.ok else None
    return found.group(1) if found else ""


def ansible_core_version() -> str:
    """The ansible-core of the `ansible-playbook` the harness runs (`2.19.15`, as its `--version`
    says), or "" when there is none or it says no version. Asked once per process."""
    found = tools.which("ansible-playbook")
    return _core_version_of(found) if found else ""


def ansible_env(role_dirs: list[Path], collections: Path | None) -> dict[str, str]:
    """Where Ansible looks for roles and collections (the collections of the `ansible` package,
    a harness dependency, are found through Python's path in any case)."""
    env = {"ANSIBLE_ROLES_PATH": os.pathsep.join(str(p.resolve()) for p in role_dirs)}
    if collections is not None:
        env["ANSIBLE_COLLECTIONS_PATH"] = collections_search_path(collections)
    return env


# ansible-core <= 2.18 writes `ERROR! msg` and "The error appears to be in 'path': line N";
# 2.19 writes `[ERROR]: msg` and `Origin: path:line:column`.
_ERROR = re.compile(r"^(?:ERROR!|\[ERROR\]:) (.*)$", re.MULTILINE)
_LOCATION = re.compile(
    r"The error appears to be in '([^']+)': line (\d+)|^Origin: (\S+?):(\d+)(?::\d+)?$", re.MULTILINE
)


@dataclass(frozen=True)
class SyntaxCheck:
    ok: bool
    problems: list[str]
    shadows: list[Shadow]
    seconds: float
    # Roles and task files only include_role / include_tasks reach (checked on their own), and the
    # includes whose names a run builds (not checked).
    included: int = 0
    unchecked: tuple[str, ...] = ()
    collection_shadows: tuple[galaxy.CollectionShadow, ...] = ()


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
    collections = collections_path(scenario)
    env = ansible_env(path, collections)
    with tempfile.TemporaryDirectory(prefix="harness-syntax-") as tmp:
        inv = Path(tmp) / "inventory.yml"
        _placeholder_inventory(scenario, inv)
        argv = [tools.find("ansible-playbook"), "--syntax-check", "-i", str(inv), str(playbook)]
        result = proc.run(argv, env={**env, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_LOCAL_TEMP": tmp}, timeout=300)
        reached = playbook_reach.reach(playbook, path)
        if result.ok and reached.includes:  # what --syntax-check does not follow, imported statically
            argv[-1] = str(playbook_reach.includes_playbook(reached, Path(tmp) / "included.yml"))
            roles = ansible_env([playbook.parent / "roles", *path, playbook.parent], None)  # as the playbook's own
            included = proc.run(
                argv, env={**env, **roles, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_LOCAL_TEMP": tmp}, timeout=300
            )
            result = replace(included, duration=result.duration + included.duration)
    problems: list[str] = []
    if not result.ok:
        text = result.stderr + result.stdout
        errors = _ERROR.findall(text)
        found = _LOCATION.search(text)
        where = ""
        if found:
            file, line = (found.group(1), found.group(2)) if found.group(1) else (found.group(3), found.group(4))
            where = f" ({file}, line {line})"
        problems = [f"provision.playbook: {playbook.name}: {e.strip()}{where}" for e in errors] or [
            f"provision.playbook: {playbook.name}: {result.describe()}"
        ]
    problems += [f"provision.playbook: {playbook.name}: {m}" for m in reached.missing]
    result = replace(result, rc=result.rc or int(bool(reached.missing)))
    shadows = shadowed_roles(playbook, path, set(reached.roles))
    return SyntaxCheck(
        result.ok,
        problems,
        shadows,
        result.duration,
        included=len(reached.includes),
        unchecked=tuple(reached.unchecked),
        collection_shadows=tuple(shadowed_collections(collections)),
    )
