"""What a playbook reaches, read without running it: its plays (import_playbook followed) with their
host patterns, every role and task file it names by a fixed name (`roles:`, role dependencies,
import_role / import_tasks, include_role / include_tasks), and what only a run decides (names
built from variables).

`ansible-playbook --syntax-check` follows the static imports only; the includes found here are
what it leaves out, and harness.playbook checks them on their own.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

_PREFIXES = ("", "ansible.builtin.", "ansible.legacy.")
_INCLUDE_ROLE = {f"{p}include_role" for p in _PREFIXES}
_IMPORT_ROLE = {f"{p}import_role" for p in _PREFIXES}
_INCLUDE_TASKS = {f"{p}include_tasks" for p in _PREFIXES}
_IMPORT_TASKS = {f"{p}import_tasks" for p in _PREFIXES}
_IMPORT_PLAYBOOK = {f"{p}import_playbook" for p in _PREFIXES}
_PLAY_TASKS = ("pre_tasks", "tasks", "post_tasks", "handlers")
_BLOCK = ("block", "rescue", "always")


class _Map(dict[str, Any]):
    """A YAML mapping that remembers its line."""

    line = 0


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, keeping mapping lines and reading Ansible's tags (!vault, !unsafe) as text."""


def _map(loader: _Loader, node: yaml.MappingNode) -> Iterator[_Map]:
    data = _Map()
    data.line = node.start_mark.line + 1
    yield data
    data.update({str(k): v for k, v in loader.construct_mapping(node).items()})


def _tagged(loader: _Loader, _suffix: str, node: yaml.Node) -> Any:
    return loader.construct_scalar(node) if isinstance(node, yaml.ScalarNode) else None


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _map)
_Loader.add_multi_constructor("!", _tagged)


def load(path: Path) -> Any:
    """A YAML file of Ansible's, None when it cannot be read."""
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)  # a safe loader
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None


def _where(path: Path, data: Any) -> str:
    return f"{path}:{data.line}" if isinstance(data, _Map) and data.line else str(path)


def _templated(value: Any) -> bool:
    return not isinstance(value, str) or "{{" in value or "{%" in value


@dataclass(frozen=True)
class Play:
    """One play: its name as Ansible gives it (the play's name, else its host pattern) and its
    host pattern as written."""

    name: str
    hosts: str
    where: str
    collections: tuple[str, ...] = ()


def _pattern(hosts: Any) -> str:
    if isinstance(hosts, list):
        return ",".join(str(h) for h in hosts)
    return "" if hosts is None else str(hosts)


def _plays(book: Path, seen: set[Path], unchecked: list[str]) -> Iterator[tuple[Mapping[str, Any], Path]]:
    seen.add(book.resolve())
    data = load(book)
    for entry in data if isinstance(data, list) else []:
        if not isinstance(entry, Mapping):
            continue
        key = next((k for k in entry if k in _IMPORT_PLAYBOOK), None)
        if key is None:
            yield entry, book
            continue
        target = entry[key]
        path = book.parent / str(target)
        if _templated(target) or not path.is_file():
            unchecked.append(f"{key} {target!r} at {_where(book, entry)}")
        elif path.resolve() not in seen:
            yield from _plays(path, seen, unchecked)


def plays(book: Path) -> list[Play]:
    """The plays of a playbook in the order Ansible runs them (import_playbook followed where its
    file is named literally)."""
    return plays_of(list(_plays(book, set(), [])))


@dataclass(frozen=True)
class Include:
    """A role or task file only a run reaches (include_role / include_tasks), named literally:
    `role` (a directory, or a collection's role by name) with `tasks_from`, or a task file `path`."""

    kind: str
    target: str
    where: str
    collections: tuple[str, ...]
    role: str | None = None
    tasks_from: str | None = None
    path: Path | None = None


@dataclass
class Reach:
    """What reading a playbook tells: the plays, the roles it uses by name (name -> directory),
    the includes `--syntax-check` does not follow, what is missing, and what only a run decides."""

    plays: list[Play] = field(default_factory=list)
    roles: dict[str, Path] = field(default_factory=dict)
    includes: list[Include] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)


def _task_file(directory: Path, name: str) -> Path | None:
    for candidate in (directory / name, directory / f"{name}.yml", directory / f"{name}.yaml"):
        if candidate.is_file():
            return candidate
    return None


class _Walker:
    def __init__(self, book: Path, role_dirs: list[Path]) -> None:
        self.book = book
        # Where Ansible looks for a role by name: the playbook's roles/, the roles path, the playbook's directory.
        self.role_dirs = [book.parent / "roles", *role_dirs, book.parent]
        self.out = Reach()
        self._seen: set[tuple[Path, str]] = set()
        self._collections: tuple[str, ...] = ()

    def find_role(self, name: str) -> Path | None:
        if "/" in name:
            path = self.book.parent / name
            return path if path.is_dir() else None
        for d in self.role_dirs:
            if (d / name / "tasks").is_dir() or (d / name / "meta").is_dir():
                return d / name
        return None

    def walk(self) -> Reach:
        for entry, path in _plays(self.book, set(), self.out.unchecked):
            self.out.plays.extend(plays_of([(entry, path)]))
            self._collections = self.out.plays[-1].collections
            for role in entry.get("roles") or [] if isinstance(entry.get("roles"), list) else []:
                name = role.get("role") or role.get("name") if isinstance(role, Mapping) else role
                self.role(name, None, "roles:", _where(path, role), dynamic=False)
            for section in _PLAY_TASKS:
                self.tasks(entry.get(section), path, None)
        return self.out

    def role(self, name: Any, tasks_from: Any, kind: str, where: str, *, dynamic: bool) -> None:
        if _templated(name) or (tasks_from is not None and _templated(tasks_from)):
            self.out.unchecked.append(
                f"{kind} {name!r}" + (f" tasks_from {tasks_from!r}" if tasks_from else "") + f" at {where}"
            )
            return
        found = self.find_role(name)
        # `ns.collection.role`; a Galaxy role (`user.role`) is a directory like any other.
        collection_role = found is None and name.count(".") >= 2 and "/" not in name
        if found is None and not collection_role:
            if dynamic:  # a static one is the syntax check's to name
                dirs = ", ".join(str(d) for d in self.role_dirs)
                self.out.missing.append(f"{kind} {name!r} at {where}: no role {name!r} in {dirs}")
            return
        if dynamic:
            target = str(found) if found is not None else name
            self.out.includes.append(Include(kind, name, where, self._collections, target, tasks_from))
        if found is not None:
            if "/" not in name:
                self.out.roles.setdefault(name, found)
            self.role_dir(found, tasks_from or "main")

    def role_dir(self, role: Path, tasks_from: str) -> None:
        if (role, tasks_from) in self._seen:
            return
        self._seen.add((role, tasks_from))
        meta = load(role / "meta" / "main.yml")
        deps = meta.get("dependencies") if isinstance(meta, Mapping) else None
        for dep in deps if isinstance(deps, list) else []:
            name = dep.get("role") or dep.get("name") if isinstance(dep, Mapping) else dep
            self.role(name, None, "dependency", _where(role / "meta" / "main.yml", dep), dynamic=False)
        for path in (_task_file(role / "tasks", tasks_from), _task_file(role / "handlers", "main")):
            if path is not None and (path, "") not in self._seen:
                self._seen.add((path, ""))
                self.tasks(load(path), path, role)

    def tasks(self, tasks: Any, path: Path, role: Path | None) -> None:
        for task in tasks if isinstance(tasks, list) else []:
            if not isinstance(task, Mapping):
                continue
            for key in _BLOCK:
                self.tasks(task.get(key), path, role)
            for key, value in task.items():
                if key in _INCLUDE_ROLE or key in _IMPORT_ROLE:
                    args = value if isinstance(value, Mapping) else {"name": value}
                    self.role(
                        args.get("name"), args.get("tasks_from"), key, _where(path, task), dynamic=key in _INCLUDE_ROLE
                    )
                elif key in _INCLUDE_TASKS or key in _IMPORT_TASKS:
                    args = value if isinstance(value, Mapping) else {"file": value}
                    target = args.get("file", args.get("_raw_params"))
                    self.task_file(target, key, _where(path, task), path, role, dynamic=key in _INCLUDE_TASKS)

    def task_file(self, target: Any, kind: str, where: str, path: Path, role: Path | None, *, dynamic: bool) -> None:
        if _templated(target):
            self.out.unchecked.append(f"{kind} {target!r} at {where}")
            return
        dirs = [*([role / "tasks"] if role is not None else []), path.parent, self.book.parent]
        found = next((f for f in (_task_file(d, target) for d in dirs) if f is not None), None)
        if found is None:
            if dynamic:
                self.out.missing.append(f"{kind} {target!r} at {where}: no such file in {', '.join(map(str, dirs))}")
            return
        if dynamic:
            tasks_dir = (role / "tasks").resolve() if role is not None else None
            if tasks_dir is not None and found.resolve().is_relative_to(tasks_dir):
                # In its role's context (the role's collections keyword applies), as Ansible runs it.
                rel = str(found.resolve().relative_to(tasks_dir))
                self.out.includes.append(Include(kind, target, where, self._collections, str(role), rel))
            else:
                self.out.includes.append(Include(kind, target, where, self._collections, path=found.resolve()))
        if (found, "") not in self._seen:
            self._seen.add((found, ""))
            self.tasks(load(found), found, role)


def plays_of(entries: list[tuple[Mapping[str, Any], Path]]) -> list[Play]:
    out = []
    for entry, path in entries:
        hosts = _pattern(entry.get("hosts"))
        collections = tuple(str(c) for c in entry.get("collections") or [] if isinstance(c, str))
        out.append(Play(str(entry.get("name") or hosts), hosts, _where(path, entry), collections))
    return out


def reach(book: Path, role_dirs: list[Path]) -> Reach:
    """Everything the playbook reaches by a fixed name, with `role_dirs` as the roles path."""
    return _Walker(book, role_dirs).walk()


def includes_playbook(reached: Reach, path: Path) -> Path:
    """A playbook importing, statically, every role and task file the playbook only includes, so
    that `ansible-playbook --syntax-check` of it resolves their roles and modules; one play per
    `collections:` keyword the includes were found under."""
    by_collections: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for inc in reached.includes:
        if inc.role is not None:
            args = {"name": inc.role, **({"tasks_from": inc.tasks_from} if inc.tasks_from else {})}
            task: dict[str, Any] = {"name": f"{inc.kind} at {inc.where}", "ansible.builtin.import_role": args}
        else:
            task = {"name": f"{inc.kind} at {inc.where}", "ansible.builtin.import_tasks": str(inc.path)}
        by_collections.setdefault(inc.collections, []).append(task)
    plays = [
        {"name": "what the playbook includes", "hosts": "all", "gather_facts": False, "tasks": tasks}
        | ({"collections": list(collections)} if collections else {})
        for collections, tasks in by_collections.items()
    ]
    path.write_text(yaml.safe_dump(plays, sort_keys=False), encoding="utf-8")
    return path
