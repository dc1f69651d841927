"""The inner loop's scope: which parts of a playbook a converge on top of checkpoint `converged` runs.

A playbook is a sequence of units: per play, its `pre_tasks`, each role of its `roles:` (with the
roles it depends on in `meta/main.yml` and the roles its tasks import or include by a fixed name),
its `tasks`, its `post_tasks`. Each unit has a digest over its entry in the play and its roles'
files; YAML files are digested by their parsed content, so a comment changes nothing. Everything
else a converge reads is shared: the playbook and its directory (group_vars, host_vars, vars files),
the scenario file, extra vars (secret values through a keyed hash that never leaves the run
directory), collections, the inventory, the harness and ansible-core versions, the strategy.

When `converged` is saved, `UnitsRecord` keeps the units' digests and the shared digest beside
the run; the idempotence converge that proved that state marks it `idempotent`, a full green
verify of it marks it `verified` (with the tests' digest). On `--reuse --from converged`:

- the first converge starts at the first unit whose digest changed: the units before it were proven
  to change nothing on exactly this state;
- the second converge runs from the start up to the last unit the first one changed: later units
  ran on the final state and changed nothing;
- everything runs when anything shared changed, the checkpoint was not proven idempotent, or a unit
  that runs could depend at run time on one that is skipped (a variable registered or set by
  `set_fact` there, `include_vars`/`add_host`/`group_by`/`set_stats`, a role both run and skipped in
  one play, `playbook_dir`, paths above the playbook's directory), or the playbook cannot be read.

Skipping never edits the user's files: a copy of the playbook, beside links to everything in the
playbook's directory, tags the skipped units `harness_scope_skip`, and Ansible runs it with
`--skip-tags harness_scope_skip` (role handlers stay defined, role variables stay loaded).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import secrets
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness import __version__, k8s_bundle, offline, playbook, rehearsal
from harness.ansible_events import TaskChange
from harness.report import redact
from harness.spec import Scenario

log = logging.getLogger(__name__)

SKIP_TAG = "harness_scope_skip"
RECORD_FILE = "converged-units.json"
KEY_FILE = "scope.key"
SCHEMA = 1
_INCLUDE_ROLE = {
    f"{p}{m}" for p in ("", "ansible.builtin.", "ansible.legacy.") for m in ("include_role", "import_role")
}
_SET_FACT = {f"{p}set_fact" for p in ("", "ansible.builtin.", "ansible.legacy.")}
_RUNTIME_STATE = {
    f"{p}{m}"
    for p in ("", "ansible.builtin.", "ansible.legacy.")
    for m in ("include_vars", "add_host", "group_by", "set_stats")
}
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _yaml_digest(path: Path) -> str:
    """sha256 of a YAML file's parsed content (comments and layout do not count), else of its bytes."""
    raw = path.read_bytes()
    if path.suffix in (".yml", ".yaml"):
        try:
            data = yaml.safe_load(raw)
        except yaml.YAMLError:  # Ansible's own tags (!unsafe, !vault): the bytes decide
            data = None
        else:
            return "y" + hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()
    return hashlib.sha256(raw).hexdigest()


def _load_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None


def _walk(data: Any) -> Iterator[Mapping[str, Any]]:
    """Every mapping inside a YAML document (tasks, blocks, module arguments)."""
    if isinstance(data, Mapping):
        yield data
        for value in data.values():
            yield from _walk(value)
    elif isinstance(data, list):
        for value in data:
            yield from _walk(value)


@dataclass(frozen=True)
class Behaviour:
    """What a piece of Ansible code does beyond its own tasks, as far as reading it tells."""

    roles: frozenset[str] = frozenset()  # roles it imports or includes by a fixed name
    dynamic_roles: bool = False  # a role name built at run time
    sets: frozenset[str] = frozenset()  # variables it registers or sets with set_fact
    runtime_state: tuple[str, ...] = ()  # modules that change variables or the inventory for later tasks
    playbook_dir: bool = False

    def __or__(self, other: Behaviour) -> Behaviour:
        return Behaviour(
            self.roles | other.roles,
            self.dynamic_roles or other.dynamic_roles,
            self.sets | other.sets,
            tuple(dict.fromkeys(self.runtime_state + other.runtime_state)),
            self.playbook_dir or other.playbook_dir,
        )


def behaviour(data: Any, text: str = "") -> Behaviour:
    roles: set[str] = set()
    sets: set[str] = set()
    state: list[str] = []
    dynamic = False
    for node in _walk(data):
        if isinstance(node.get("register"), str):
            sets.add(node["register"])
        for key, value in node.items():
            if key in _INCLUDE_ROLE:
                name = value.get("name") if isinstance(value, Mapping) else value
                if not isinstance(name, str) or "{{" in name:
                    dynamic = True
                else:
                    roles.add(name)
            elif key in _SET_FACT and isinstance(value, Mapping):
                sets.update(str(k) for k in value if k != "cacheable")
            elif key in _RUNTIME_STATE:
                state.append(key.rsplit(".", 1)[-1])
    return Behaviour(frozenset(roles), dynamic, frozenset(sets), tuple(dict.fromkeys(state)), "playbook_dir" in text)


@dataclass(frozen=True)
class Unit:
    index: int
    play: int
    label: str  # `play 2 (Export /home): role nfs_server`
    digest: str
    roles: tuple[str, ...]  # its roles: the role itself, its dependencies, roles it imports
    behaviour: Behaviour
    text: str  # its code, to see whether it reads a variable a skipped unit sets

    def reads(self, names: Iterable[str]) -> list[str]:
        words = set(_WORD.findall(self.text))
        return sorted(n for n in names if n in words)


@dataclass(frozen=True)
class Units:
    """A playbook cut into units, with the digest of what they share."""

    units: tuple[Unit, ...]
    shared: str
    shared_files: dict[str, str]
    problems: tuple[str, ...] = ()  # why this playbook cannot be run in part: everything runs


class _Roles:
    """Role directories found the way Ansible finds them: the playbook's roles/, then the roles path."""

    def __init__(self, book: Path, path: list[Path]) -> None:
        self.base = book.parent
        self.dirs = [book.parent / "roles", *path]
        self._cache: dict[str, tuple[Path | None, Behaviour, list[str], str]] = {}

    def find(self, name: str) -> Path | None:
        if "/" in name:  # a role given by its path, relative to the playbook
            path = self.base / name
            return path if path.is_dir() else None
        if "." in name:  # a collection's role (analyse: only from tracked collections)
            return None
        for d in self.dirs:
            if (d / name / "tasks").is_dir() or (d / name / "meta").is_dir():
                return d / name
        return None

    def read(self, name: str) -> tuple[Path | None, Behaviour, list[str], str]:
        """(directory, behaviour, dependencies, code text) of one role."""
        if name in self._cache:
            return self._cache[name]
        where = self.find(name)
        result: tuple[Path | None, Behaviour, list[str], str] = (None, Behaviour(), [], "")
        if where is not None:
            deps: list[str] = []
            meta = _load_yaml(where / "meta" / "main.yml")
            for dep in (meta or {}).get("dependencies") or [] if isinstance(meta, Mapping) else []:
                dep_name = dep.get("role") or dep.get("name") if isinstance(dep, Mapping) else dep
                if isinstance(dep_name, str):
                    deps.append(dep_name)
            found = Behaviour()
            texts: list[str] = []
            for f in rehearsal.files_under(where):
                try:
                    text = f.read_text(encoding="utf-8")
                except (OSError, UnicodeDecodeError):
                    continue
                texts.append(text)
                data = _load_yaml(f) if f.suffix in (".yml", ".yaml") else None
                found = found | behaviour(data, text)
            result = (where, found, deps, "\n".join(texts))
        self._cache[name] = result
        return result

    def closure(self, name: str) -> list[str]:
        """The role, its dependencies and the roles it imports, each once, depth first."""
        seen: list[str] = []

        def visit(n: str) -> None:
            if n in seen:
                return
            seen.append(n)
            _where, beh, deps, _text = self.read(n)
            for d in [*deps, *sorted(beh.roles)]:
                visit(d)

        visit(name)
        return seen


def _role_name(entry: Any) -> str | None:
    if isinstance(entry, str):
        return entry
    if isinstance(entry, Mapping):
        name = entry.get("role") or entry.get("name")
        return name if isinstance(name, str) else None
    return None


def _files_digest(files: Iterable[Path]) -> dict[str, str]:
    return {str(f): _yaml_digest(f) for f in files}


def _secret_digest(key: bytes, scenario: Scenario) -> str:
    """A keyed hash of the secret extra vars: a changed secret changes the shared digest, and
    without the run's key the hash says nothing about the secret."""
    if scenario.provision is None:
        return ""
    extra = scenario.provision.extra_vars
    secret_paths = rehearsal._secret_names(extra)
    if not secret_paths:
        return ""
    blob = json.dumps(extra, sort_keys=True, default=str).encode()
    return hmac.new(key, blob, hashlib.sha256).hexdigest()


def run_key(run_dir: Path) -> bytes:
    """The run's own random key for `_secret_digest` (0600, gone with the run directory)."""
    path = run_dir / KEY_FILE
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(32))
    return path.read_bytes()


def ansible_version() -> str:
    try:
        from ansible.release import __version__ as version
    except ImportError:
        return "unknown"
    return str(version)


def analyse(scenario: Scenario, *, inventory: Path | None, strategy: str, key: bytes) -> Units:
    """Cut the scenario's playbook into units and digest them and what they share."""
    assert scenario.provision is not None
    book = scenario.resolve(scenario.provision.playbook)
    roles = _Roles(book, playbook.roles_path(scenario))
    problems: list[str] = []
    book_text = book.read_text(encoding="utf-8") if book.is_file() else ""
    plays = _load_yaml(book)
    if not isinstance(plays, list):
        plays, problems = [], [f"{book.name} is not a list of plays Python's YAML reader can read"]
    if "playbook_dir" in book_text:
        problems.append(f"{book.name} uses playbook_dir")
    if "../" in book_text:
        problems.append(f"{book.name} names paths above its directory")
    units: list[Unit] = []
    owned: set[Path] = set()
    for p, play in enumerate(plays):
        if not isinstance(play, Mapping):
            problems.append(f"play {p + 1} is not a mapping")
            continue
        if any(k in play for k in ("import_playbook", "ansible.builtin.import_playbook")):
            problems.append(f"play {p + 1} imports another playbook")
            continue
        title = f"play {p + 1}" + (f" ({str(play['name'])[:40]})" if play.get("name") else "")
        parts: list[tuple[str, Any, list[str]]] = []
        if play.get("pre_tasks"):
            parts.append(("pre_tasks", play["pre_tasks"], []))
        role_entries = play.get("roles") or []
        if not isinstance(role_entries, list):
            problems.append(f"{title}: roles is not a list")
            role_entries = []
        for entry in role_entries:
            name = _role_name(entry)
            if name is None or "{{" in name:
                problems.append(f"{title}: a role entry without a fixed name")
                continue
            if "." in name and "/" not in name and scenario.provision.collections is None:
                problems.append(f"{title}: role {name} comes from a collection this scenario does not install")
            parts.append((f"role {name}", entry, roles.closure(name)))
        for section in ("tasks", "post_tasks"):
            if play.get(section):
                parts.append((section, play[section], []))
        for what, entry, closure in parts:
            beh = Behaviour() if closure else behaviour(entry)
            h = hashlib.sha256(json.dumps([p, what, entry], sort_keys=True, default=str).encode())
            texts = [json.dumps(entry, default=str)]
            for extra in sorted(beh.roles):  # roles a play's own tasks import
                closure = [*closure, *[r for r in roles.closure(extra) if r not in closure]]
            for name in closure:
                where, rbeh, _deps, text = roles.read(name)
                beh = beh | rbeh
                texts.append(text)
                h.update(name.encode())
                if where is not None:
                    files = rehearsal.files_under(where)
                    owned.update(f.resolve() for f in files)
                    for rel, dig in sorted(_files_digest(files).items()):
                        h.update(f"{os.path.relpath(rel, where)}={dig}".encode())
            if beh.dynamic_roles:
                problems.append(f"{title}: {what} includes a role whose name is built at run time")
            if beh.playbook_dir:
                problems.append(f"{title}: {what} uses playbook_dir")
            units.append(
                Unit(len(units), p, f"{title}: {what}", h.hexdigest()[:16], tuple(closure), beh, "\n".join(texts))
            )
    shared_files = _shared_files(scenario, owned, set(roles.dirs))
    shared = hashlib.sha256(
        json.dumps(
            {
                "files": shared_files,
                "inventory": _yaml_digest(inventory) if inventory is not None and inventory.is_file() else "",
                "extra_vars": redact(playbook.extra_vars(scenario)),
                "bundles": _bundle_digests(scenario),
                "secrets": _secret_digest(key, scenario),
                "harness": __version__,
                "ansible": ansible_version(),
                "strategy": strategy,
            },
            sort_keys=True,
            default=str,
        ).encode()
    ).hexdigest()[:16]
    return Units(tuple(units), shared, shared_files, tuple(problems))


def _shared_files(scenario: Scenario, owned: set[Path], role_dirs: set[Path]) -> dict[str, str]:
    """Every content file that no unit owns: the playbook's directory, the scenario, collections.
    The tests are not converge input, and roles that no unit reaches are never run."""
    tests = scenario.resolve(scenario.tests).resolve() if scenario.tests is not None else None
    role_roots = {d.resolve() for d in role_dirs if d.is_dir()}
    out: dict[str, str] = {}
    for source in rehearsal.content_sources(scenario):
        for f in rehearsal.files_under(source):
            real = f.resolve()
            if real in owned or (tests is not None and real.is_relative_to(tests)):
                continue
            if any(real.is_relative_to(root) for root in role_roots):
                continue  # a role no unit runs
            out.setdefault(os.path.relpath(f, scenario.base_dir), _yaml_digest(f))
    return dict(sorted(out.items()))


def _bundle_digests(scenario: Scenario) -> list[str]:
    """The checksum files of the bundles a converge installs from (offline apt, Kubernetes)."""
    roots = [offline.bundle_dir(scenario), k8s_bundle.bundle_dir(scenario)[0]]
    out = []
    for root in roots:
        sums = root / "SHA256SUMS" if root is not None else None
        out.append(_yaml_digest(sums) if sums is not None and sums.is_file() else "")
    return out


def tests_digest(scenario: Scenario) -> str:
    if scenario.tests is None:
        return ""
    files = rehearsal.files_under(scenario.resolve(scenario.tests))
    base = scenario.resolve(scenario.tests)
    h = hashlib.sha256()
    for f in files:
        h.update(f"{os.path.relpath(f, base)}={_yaml_digest(f)}\n".encode())
    return h.hexdigest()[:16]


# --- the record kept beside checkpoint `converged` ---------------------------------------------------


@dataclass
class UnitsRecord:
    """What checkpoint `converged` holds, unit by unit, and what was proven on it."""

    content: str  # the content digest (short) the checkpoint carries
    shared: str
    shared_files: dict[str, str]
    units: list[tuple[str, str]]  # (label, digest) in order
    idempotent: bool = False
    verified: dict[str, Any] | None = None  # {"tests": digest, "detail": counts, "run": report dir}

    @classmethod
    def of(cls, units: Units, content: str) -> UnitsRecord:
        return cls(content, units.shared, dict(units.shared_files), [(u.label, u.digest) for u in units.units])

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "content": self.content,
            "shared": self.shared,
            "shared_files": self.shared_files,
            "units": [list(u) for u in self.units],
            "idempotent": self.idempotent,
            "verified": self.verified,
        }


def record_path(run_dir: Path) -> Path:
    return run_dir / RECORD_FILE


def save_record(run_dir: Path, record: UnitsRecord) -> None:
    tmp = record_path(run_dir).with_suffix(".tmp")
    tmp.write_text(json.dumps(record.to_dict(), indent=1, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(record_path(run_dir))


def load_record(run_dir: Path) -> UnitsRecord | None:
    try:
        data = json.loads(record_path(run_dir).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        return None
    try:
        return UnitsRecord(
            str(data["content"]),
            str(data["shared"]),
            {str(k): str(v) for k, v in dict(data.get("shared_files") or {}).items()},
            [(str(a), str(b)) for a, b in data["units"]],
            bool(data.get("idempotent")),
            data.get("verified") if isinstance(data.get("verified"), dict) else None,
        )
    except (KeyError, TypeError, ValueError):
        return None


def forget_record(run_dir: Path) -> None:
    record_path(run_dir).unlink(missing_ok=True)


# --- plans --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """Which units one converge runs. `run` holds unit indices; `why` says why, for people."""

    total: int
    run: tuple[int, ...]
    why: str
    labels: tuple[str, ...] = ()

    @property
    def full(self) -> bool:
        return len(self.run) == self.total

    @property
    def skipped(self) -> tuple[int, ...]:
        return tuple(i for i in range(self.total) if i not in self.run)

    def describe(self) -> str:
        if self.full:
            return f"all {self.total} units ({self.why})"
        if not self.run:
            return f"no unit ({self.why})"
        names = [self.labels[i] for i in self.run] if self.labels else [str(i) for i in self.run]
        return f"{len(self.run)} of {self.total} units, from {names[0]} to {names[-1]} ({self.why})"

    def to_dict(self) -> dict[str, Any]:
        label = (lambda i: self.labels[i]) if self.labels else str
        return {
            "ran": [label(i) for i in self.run],
            "skipped": [label(i) for i in self.skipped],
            "why": self.why,
        }


def _everything(units: Units, why: str) -> Plan:
    return Plan(len(units.units), tuple(range(len(units.units))), why, tuple(u.label for u in units.units))


def _runtime_links(units: Units, skipped: list[int], ran: list[int]) -> str | None:
    """Why a unit that runs could depend at run time on one that is skipped; None when none can."""
    by = units.units
    sets = {name for i in skipped for name in by[i].behaviour.sets}
    for i in skipped:
        if by[i].behaviour.runtime_state:
            return f"skipped {by[i].label} uses {', '.join(by[i].behaviour.runtime_state)}"
    for j in ran:
        read = by[j].reads(sets)
        if read:
            return f"{by[j].label} reads {', '.join(read[:3])}, set by a unit that would be skipped"
    for i in skipped:
        for j in ran:
            common = set(by[i].roles) & set(by[j].roles)
            if by[i].play == by[j].play and common:
                return f"role {sorted(common)[0]} is in both {by[i].label} and {by[j].label}"
    return None


def plan_first(units: Units, record: UnitsRecord | None) -> Plan:
    """The first converge on top of `converged`: from the first unit whose digest changed."""
    if units.problems:
        return _everything(units, "cannot run this playbook in part: " + "; ".join(units.problems[:3]))
    if record is None:
        return _everything(units, "no record of what checkpoint 'converged' holds")
    if not record.idempotent:
        return _everything(units, "checkpoint 'converged' was not proven idempotent")
    if record.shared != units.shared:
        changed = sorted(
            p
            for p in record.shared_files.keys() | units.shared_files.keys()
            if record.shared_files.get(p) != units.shared_files.get(p)
        )
        what = ", ".join(changed[:3]) if changed else "variables, inventory, versions or strategy"
        return _everything(units, f"shared input changed: {what}")
    if [label for label, _ in record.units] != [u.label for u in units.units]:
        return _everything(units, "the playbook's units changed")
    changed_at = [u.index for u, (_l, d) in zip(units.units, record.units, strict=True) if u.digest != d]
    labels = tuple(u.label for u in units.units)
    if not changed_at:
        return Plan(len(labels), (), "no unit changed since checkpoint 'converged'", labels)
    first = changed_at[0]
    skipped, ran = list(range(first)), list(range(first, len(labels)))
    link = _runtime_links(units, skipped, ran)
    if link is not None:
        return _everything(units, link)
    why = f"{labels[first]} changed" + ("; units before it were proven unchanged" if first else "")
    return Plan(len(labels), tuple(ran), why, labels)


def changed_units(units: Units, changes: Iterable[TaskChange]) -> set[int] | None:
    """The units whose tasks (or handlers) changed something; None when a change cannot be placed."""
    found: set[int] = set()
    for change in changes:
        role = change.role
        if not role:
            return None  # a play's own task: placed conservatively by the caller
        owners = [u.index for u in units.units if role in u.roles or role.rsplit(".", 1)[-1] in u.roles]
        if not owners:
            return None
        found.add(max(owners))
    return found


def plan_second(units: Units, changed: set[int] | None) -> Plan:
    """The idempotence converge: from the start up to the last unit the first converge changed."""
    labels = tuple(u.label for u in units.units)
    if units.problems:
        return _everything(units, "cannot run this playbook in part: " + "; ".join(units.problems[:3]))
    if changed is None:
        return _everything(units, "a change of the first converge is not in a role")
    if not changed:
        return Plan(len(labels), (), "the first converge changed nothing", labels)
    last = max(changed)
    ran, skipped = list(range(last + 1)), list(range(last + 1, len(labels)))
    if not skipped:
        return _everything(units, f"{labels[last]} changed")
    link = _runtime_links(units, skipped, ran)
    if link is not None:
        return _everything(units, link)
    return Plan(len(labels), tuple(ran), f"{labels[last]} was the last unit that changed something", labels)


# --- the playbook that runs a plan --------------------------------------------------------------------


def _tagged(entry: Any) -> Any:
    if isinstance(entry, str):
        return {"role": entry, "tags": [SKIP_TAG]}
    out = dict(entry)
    tags = out.get("tags") or []
    tags = [t.strip() for t in tags.split(",")] if isinstance(tags, str) else list(tags)
    out["tags"] = [*tags, SKIP_TAG]
    return out


def scoped_playbook(scenario: Scenario, plan: Plan, out_dir: Path) -> Path:
    """A copy of the playbook with the plan's skipped units tagged SKIP_TAG, in `out_dir` beside
    links to everything else in the playbook's directory (relative paths resolve as before)."""
    assert scenario.provision is not None
    book = scenario.resolve(scenario.provision.playbook)
    plays = yaml.safe_load(book.read_text(encoding="utf-8"))
    skip = set(plan.skipped)
    index = 0
    for play in plays:
        for section in ("pre_tasks", "roles", "tasks", "post_tasks"):
            if not play.get(section):
                continue
            if section == "roles":
                entries = []
                for entry in play["roles"]:
                    entries.append(_tagged(entry) if index in skip else entry)
                    index += 1
                play["roles"] = entries
            else:
                if index in skip:
                    play[section] = [
                        {"name": f"{section} (not run: {SKIP_TAG})", "block": play[section], "tags": [SKIP_TAG]}
                    ]
                index += 1
    out_dir.mkdir(parents=True, exist_ok=True)
    for entry in book.parent.iterdir():
        link = out_dir / entry.name
        if entry.name == book.name or link.exists() or link.is_symlink():
            continue
        link.symlink_to(entry.resolve())
    target = out_dir / book.name
    target.write_text(
        f"# {book} with the units the inner loop skips tagged {SKIP_TAG} (harness.scope)\n"
        + yaml.safe_dump(plays, sort_keys=False, default_flow_style=False),
        encoding="utf-8",
    )
    return target


@dataclass
class ScopeState:
    """What one `--reuse --from converged` run learns about its scope, step by step."""

    units: Units
    record: UnitsRecord | None
    first: Plan | None = None
    second: Plan | None = None
    first_changed: set[int] | None = None
    cutoff: bool = False  # the first converge changed nothing: the cluster is in the checkpoint's state
