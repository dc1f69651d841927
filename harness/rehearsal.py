"""Rehearsal records: what a `harness run` rehearsed, file by file, and how it went.

The content of a run is one manifest: every file of the playbook's directory (the scenario file and
its tests with it), of every directory on the run's roles path, of the scenario's tests and of the
collections its requirements file installs, each with its sha256; the extra vars with secrets left
out (`report.redact`; secret values are never stored, not even hashed, so changing one alone does not
change the content); the harness version. Its digest is the one way content is named: the
`converged` checkpoint carries it too.

A record adds the verdict of each phase, the accelerator, the host and the time. `harness run`
writes it to its report directory (`rehearsal.json`) and appends it to the ledger, a JSON-lines file
under the state directory (`rehearsals.jsonl`), where `harness promote` looks for a green rehearsal
of exactly the content it is about to apply, and otherwise says which files changed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness import __version__, flock, galaxy, playbook
from harness.errors import SpecError
from harness.paths import state_dir
from harness.report import RunReport, is_secret_key, redact
from harness.spec import Scenario

log = logging.getLogger(__name__)

SCHEMA = 1
RECORD_FILE = "rehearsal.json"
LEDGER_FILE = "rehearsals.jsonl"
# Phases a rehearsal must have passed to count as green; every other phase passed or was skipped.
MUST_PASS = ("up", "provision", "verify")
# Never content: caches and run directories that appear beside playbooks and tests.
_SKIP_DIRS = frozenset({"__pycache__", ".git", ".harness", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".venv"})


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def files_under(base: Path) -> list[Path]:
    """Every file under `base` (or `base` itself), following links to directories once; caches left out."""
    if base.is_file():
        return [base]
    if not base.is_dir():
        return []
    found: list[Path] = []
    seen: set[str] = set()
    for root, dirs, names in os.walk(base, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:  # a link loop, or a directory reached twice
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS)
        found += [Path(root, n) for n in sorted(names) if not n.endswith(".pyc") and Path(root, n).is_file()]
    return found


def _secret_names(value: Any, prefix: str = "") -> list[str]:
    """Dotted names of the secret-like keys report.redact leaves out (their values are never kept)."""
    names: list[str] = []
    if isinstance(value, Mapping):
        for k, v in value.items():
            name = f"{prefix}{k}"
            names += [name] if is_secret_key(str(k)) else _secret_names(v, f"{name}.")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            names += _secret_names(v, f"{prefix}{i}.")
    return names


@dataclass(frozen=True)
class Manifest:
    """The content of a rehearsal: files (path relative to the scenario's directory → sha256),
    the extra vars without secrets, the names of the secret vars, the harness version."""

    files: dict[str, str]
    extra_vars: dict[str, Any] = field(default_factory=dict)
    secret_vars: tuple[str, ...] = ()
    harness_version: str = __version__

    def _canonical(self) -> str:
        data = {
            "files": dict(sorted(self.files.items())),
            "extra_vars": self.extra_vars,
            "secret_vars": sorted(self.secret_vars),
            "harness_version": self.harness_version,
        }
        return json.dumps(data, sort_keys=True, default=str, separators=(",", ":"))

    @property
    def digest(self) -> str:
        """sha256 of the whole manifest (hex); `short` is its first 16 digits, for people."""
        return hashlib.sha256(self._canonical().encode()).hexdigest()

    @property
    def short(self) -> str:
        return self.digest[:16]

    def to_dict(self) -> dict[str, Any]:
        return {
            "digest": self.digest,
            "harness_version": self.harness_version,
            "extra_vars": self.extra_vars,
            "secret_vars": sorted(self.secret_vars),
            "files": dict(sorted(self.files.items())),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Manifest:
        return cls(
            files={str(k): str(v) for k, v in dict(data.get("files") or {}).items()},
            extra_vars=dict(data.get("extra_vars") or {}),
            secret_vars=tuple(str(s) for s in data.get("secret_vars") or ()),
            harness_version=str(data.get("harness_version", "")),
        )


def content_sources(scenario: Scenario) -> list[Path]:
    """Where a scenario's content lives: its file, the playbook's directory, every directory of the
    roles path, the tests, the collections requirements and every local source they install from."""
    sources = [scenario.source]
    if scenario.provision is not None:
        sources += [scenario.resolve(scenario.provision.playbook).parent, *playbook.roles_path(scenario)]
        if scenario.provision.collections is not None:
            requirements = scenario.resolve(scenario.provision.collections)
            sources += [requirements, *galaxy.requirement_sources(requirements)]
    if scenario.tests is not None:
        sources.append(scenario.resolve(scenario.tests))
    return sources


def content_manifest(scenario: Scenario) -> Manifest:
    """The manifest of what a run of `scenario` applies and checks, as the files are now."""
    base = scenario.base_dir
    files: dict[str, str] = {}
    for source in content_sources(scenario):
        for f in files_under(source):
            files.setdefault(Path(os.path.relpath(f, base)).as_posix(), _sha256(f))
    extra = dict(scenario.provision.extra_vars) if scenario.provision is not None else {}
    return Manifest(files, redact(extra), tuple(sorted(_secret_names(extra))), __version__)


@dataclass(frozen=True)
class ContentDiff:
    """What differs from one manifest (`old`, a rehearsal's) to another (`new`, the current one)."""

    changed: list[str]
    added: list[str]
    removed: list[str]
    vars_changed: list[str]
    harness_version: tuple[str, str] | None = None

    @property
    def empty(self) -> bool:
        return not (self.changed or self.added or self.removed or self.vars_changed or self.harness_version)

    def lines(self, limit: int = 40) -> list[str]:
        """`changed: roles/slurm/tasks/main.yml`, one line per difference (at most `limit` per kind)."""
        out: list[str] = []
        for kind, paths in (("changed", self.changed), ("added", self.added), ("removed", self.removed)):
            out += [f"{kind}: {p}" for p in paths[:limit]]
            if len(paths) > limit:
                out.append(f"... and {len(paths) - limit} more {kind}")
        out += [f"extra var changed: {name}" for name in self.vars_changed]
        if self.harness_version:
            out.append(f"harness version: {self.harness_version[0]} -> {self.harness_version[1]}")
        return out


def compare(old: Manifest, new: Manifest) -> ContentDiff:
    changed = sorted(p for p in old.files.keys() & new.files.keys() if old.files[p] != new.files[p])
    names = old.extra_vars.keys() | new.extra_vars.keys()
    vars_changed = {n for n in names if old.extra_vars.get(n, ...) != new.extra_vars.get(n, ...)}
    vars_changed |= set(old.secret_vars) ^ set(new.secret_vars)
    version = (old.harness_version, new.harness_version) if old.harness_version != new.harness_version else None
    return ContentDiff(
        changed,
        sorted(new.files.keys() - old.files.keys()),
        sorted(old.files.keys() - new.files.keys()),
        sorted(vars_changed),
        version,
    )


@dataclass(frozen=True)
class Rehearsal:
    """One `harness run`: what it rehearsed (`content`) and how each phase went."""

    scenario: str
    run_id: str
    time: str  # ISO 8601, UTC
    host: str
    accelerator: str
    phases: dict[str, str]  # phase → passed / failed / skipped / unreachable, in sequence order
    content: Manifest
    select: str | None = None  # `-k`: only some tests ran
    base: str = "a new cluster"
    partial: tuple[str, ...] = ()  # phases that left part of their work out (`--quick`): never green
    ansible_core: str = ""  # the ansible-core version the run converged with ("" in older records)

    @property
    def green(self) -> bool:
        """up, provision and verify passed, every other phase passed or was skipped, all tests ran."""
        if self.select is not None or self.partial or any(self.phases.get(p) != "passed" for p in MUST_PASS):
            return False
        return all(status in ("passed", "skipped") for status in self.phases.values())

    @property
    def verdict(self) -> str:
        """`green`, or the phases that kept it from being green (`red: verify failed`)."""
        if self.green:
            return "green"
        bad = [f"{p} {s}" for p, s in self.phases.items() if s not in ("passed", "skipped")]
        bad += [f"{p} {self.phases.get(p, 'missing')}" for p in MUST_PASS if self.phases.get(p) in ("skipped", None)]
        if self.select is not None and not bad:
            bad.append(f"only tests matching -k {self.select!r} ran")
        if self.partial and not bad:
            bad.append(f"partial {', '.join(self.partial)} (part of it was left out, see the report)")
        return "red: " + ", ".join(bad or ["unknown"])

    def describe(self) -> str:
        """`run 1a2b3c of slurm on host7 (kvm) at 2025-01-01T12:00:00+00:00, content 0123456789abcdef`."""
        return (
            f"run {self.run_id or '-'} of {self.scenario} on {self.host or '?'} ({self.accelerator or '?'}) "
            f"at {self.time}, content {self.content.short}"
            + (f", ansible-core {self.ansible_core}" if self.ansible_core else "")
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "scenario": self.scenario,
            "run_id": self.run_id,
            "time": self.time,
            "host": self.host,
            "accelerator": self.accelerator,
            "green": self.green,
            "phases": dict(self.phases),
            "select": self.select,
            "base": self.base,
            "partial": list(self.partial),
            "ansible_core": self.ansible_core,
            "content": self.content.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Rehearsal:
        return cls(
            scenario=str(data["scenario"]),
            run_id=str(data.get("run_id") or ""),
            time=str(data.get("time") or ""),
            host=str(data.get("host") or ""),
            accelerator=str(data.get("accelerator") or ""),
            phases={str(k): str(v) for k, v in dict(data.get("phases") or {}).items()},
            content=Manifest.from_dict(data.get("content") or {}),
            select=data.get("select"),
            base=str(data.get("base") or ""),
            partial=tuple(str(p) for p in data.get("partial") or ()),
            ansible_core=str(data.get("ansible_core") or ""),
        )


def from_report(scenario: Scenario, rep: RunReport, content: Manifest, select: str | None = None) -> Rehearsal:
    """The record of a finished run; `content` is the manifest taken before the run started."""
    meta = rep.metadata
    return Rehearsal(
        scenario=scenario.name,
        run_id=rep.run_id,
        time=datetime.now(UTC).isoformat(timespec="seconds"),
        host=str(meta.get("host", "")),
        accelerator=str(meta.get("accelerator", "")),
        phases={p.name: p.status for p in rep.all_phases()},
        content=content,
        select=select,
        base=str(meta.get("base", "a new cluster")),
        partial=tuple(p.name for p in rep.all_phases() if p.partial),
        ansible_core=str(meta.get("ansible_core", "")),
    )


def ledger_path() -> Path:
    return state_dir() / LEDGER_FILE


def append_to_ledger(record: Rehearsal, ledger: Path | None = None) -> Path:
    """Append one line to the ledger (locked, so runs side by side never interleave their lines)."""
    path = ledger or ledger_path()
    line = json.dumps(record.to_dict(), sort_keys=True, default=str) + "\n"
    with flock.exclusive(path) as fh:
        fh.write(line)
    return path


def read_ledger(ledger: Path | None = None, scenario: str | None = None) -> list[Rehearsal]:
    """The ledger's records, oldest first (only `scenario`'s when given); unreadable lines are skipped."""
    path = ledger or ledger_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    records: list[Rehearsal] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = Rehearsal.from_dict(json.loads(line))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("%s:%d: not a rehearsal record, skipped (%s)", path, n, exc)
            continue
        if scenario is None or rec.scenario == scenario:
            records.append(rec)
    return records


def load_record(path: Path) -> Rehearsal:
    """A `rehearsal.json` (from a report directory, another host's nightly...); SpecError if it is none."""
    try:
        return Rehearsal.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except OSError as exc:
        raise SpecError(str(path), [f"cannot read: {exc.strerror}"]) from exc
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SpecError(str(path), [f"not a rehearsal record (rehearsal.json of a `harness run`): {exc}"]) from exc


def write_record(record: Rehearsal, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / RECORD_FILE
    path.write_text(json.dumps(record.to_dict(), indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    return path


def record_run(
    scenario: Scenario,
    rep: RunReport,
    content: Manifest,
    directory: Path,
    select: str | None = None,
    ledger: Path | None = None,
) -> Path:
    """Write `rehearsal.json` into the report directory and append the record to the ledger; the
    record's path. A ledger that cannot be written is logged, not fatal: the record file remains
    (`harness promote --rehearsal FILE`)."""
    record = from_report(scenario, rep, content, select)
    path = write_record(record, directory)
    try:
        append_to_ledger(record, ledger)
    except OSError as exc:
        log.warning("cannot append to the rehearsal ledger %s (%s); the record is in %s", ledger_path(), exc, path)
    return path


def newest(records: Iterable[Rehearsal], *, green: bool | None = None, digest: str | None = None) -> Rehearsal | None:
    """The last record (ledger order) that is green (or not) and of this content digest, if given."""
    found = None
    for rec in records:
        if (green is None or rec.green == green) and (digest is None or rec.content.digest == digest):
            found = rec
    return found
