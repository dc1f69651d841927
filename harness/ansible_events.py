"""What an ansible-runner run says, from its events: per-host recap counts, failed and changed
tasks with their diffs, task durations, live progress, and why a run stopped without a failed task.

The events come live from run_playbook (harness.provision) or read back from a finished run's
`<private_data_dir>/artifacts/<ident>/job_events/`; secrets in messages and diffs are masked and
`no_log` results stay censored.
"""

from __future__ import annotations

import difflib
import json
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

from harness.report import mask_secrets

Event = Mapping[str, Any]
_DONE_EVENTS = {"runner_on_ok", "runner_on_failed", "runner_on_unreachable", "runner_on_skipped"}
TASK_START = {"playbook_on_task_start", "playbook_on_handler_task_start"}
_DIFF_LINES = 40
_MESSAGE_LINES = 20
_LOG_TAIL_LINES = 15
# How ansible-playbook starts a fatal error: `ERROR! ...` (ansible-core < 2.19), `[ERROR]: ...` after,
# and its command-line parser's `ansible-playbook: error: ...`.
_ERROR_LINE = re.compile(r"^(?:ERROR!|\[ERROR\]:?|ansible-playbook: error:)\s*(?P<text>.*)")
# Causes worth naming shorter than Ansible's sentence (the role's search path stays in the log).
_KNOWN_CAUSES = (re.compile(r"couldn't resolve module/action '[^']+'"), re.compile(r"the role '[^']+' was not found"))
_ERROR_WHERE = re.compile(r"The error appears to be in '(?P<file>[^']+)': line (?P<line>\d+)|^Origin: (?P<origin>\S+)")


@dataclass(frozen=True)
class HostStats:
    ok: int = 0
    changed: int = 0
    failures: int = 0
    unreachable: int = 0
    skipped: int = 0
    ignored: int = 0
    rescued: int = 0


@dataclass(frozen=True)
class TaskFailure:
    host: str
    task: str
    role: str | None
    action: str
    message: str
    path_to_log: Path
    # Where the task is defined, as Ansible gives it: `/x/roles/lmod/tasks/main.yml:12`.
    task_path: str | None = None


@dataclass(frozen=True)
class TaskChange:
    host: str
    task: str
    role: str | None
    diff: str | None
    task_path: str | None = None


class TaskDuration(NamedTuple):
    task: str
    host: str
    seconds: float


@dataclass
class PlayRun:
    """A play as the events saw it start: the hosts that started a task in it, and those that failed."""

    name: str
    pattern: str
    uuid: str = ""
    hosts: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class MissedPlay:
    """A play of the playbook that never started: the run ended before it. `hosts`: the hosts it
    would have run on (those that had failed already left out); None when only a run works them out."""

    name: str
    pattern: str
    hosts: list[str] | None


@dataclass
class ProvisionResult:
    rc: int
    status: str
    stats: dict[str, HostStats]
    failures: list[TaskFailure] = field(default_factory=list)
    changed: list[TaskChange] = field(default_factory=list)
    task_durations: list[TaskDuration] = field(default_factory=list)
    log_path: Path = Path("stdout")
    # The end of the log (secrets masked), kept when the run failed without naming a failed task
    # or stopped without a recap.
    log_tail: list[str] = field(default_factory=list)
    # The plays that started, in order; the playbook's plays that never did (set by run_playbook).
    plays: list[PlayRun] = field(default_factory=list)
    missed: list[MissedPlay] = field(default_factory=list)

    @property
    def unreachable_hosts(self) -> list[str]:
        """Hosts Ansible could not reach (in the recap or in an unreachable event)."""
        lost = {h for h, s in self.stats.items() if s.unreachable}
        lost |= {f.host for f in self.failures if f.message.startswith("unreachable:")}
        return sorted(lost)

    @property
    def aborted(self) -> bool:
        """ansible-playbook stopped without its recap (a module or role an include names does not
        resolve, say), whether or not tasks had failed before."""
        return not self.ok and not self.stats

    @property
    def ok(self) -> bool:
        bad = any(s.failures or s.unreachable for s in self.stats.values())
        return self.rc == 0 and self.status == "successful" and not self.failures and not bad


@dataclass(frozen=True)
class Progress:
    """A snapshot for a progress display: the running task and how far the hosts got."""

    play: str | None
    task: str | None
    hosts_done: int
    hosts_failed: int
    tasks_started: int
    elapsed: float
    finished: bool
    # Hosts seen in the current play so far (the events never list a play's hosts up front).
    hosts_total: int = 0


def task_label(task: str, role: str | None) -> str:
    """`role : task`, as Ansible prints it."""
    return f"{role} : {task}" if role else task


class ProgressTracker:
    """Consumes ansible-runner events and keeps the current task and per-host counts.

    hosts_done counts hosts that finished the current task; hosts_failed counts hosts that failed
    (ignore_errors excluded) or were unreachable anywhere in the run; hosts_total counts the hosts
    seen so far in the current play (the events name a play's hosts only as they start tasks).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._started = clock()
        self.play: str | None = None
        self.current_task: str | None = None
        self.tasks_started = 0
        self.finished = False
        self._done: set[str] = set()
        self._failed: set[str] = set()
        self._play_hosts: set[str] = set()

    @property
    def hosts_done(self) -> int:
        return len(self._done)

    @property
    def hosts_total(self) -> int:
        return len(self._play_hosts)

    @property
    def hosts_failed(self) -> int:
        return len(self._failed)

    @property
    def elapsed(self) -> float:
        return self._clock() - self._started

    def feed(self, event: Event) -> bool:
        """Take one event; True when the progress changed (worth redrawing)."""
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        if kind == "playbook_on_play_start":
            self.play = data.get("play") or data.get("name")
            self._play_hosts.clear()
            return True
        if kind in TASK_START:
            self.current_task = task_label(data.get("task") or data.get("name") or "", data.get("role"))
            self.tasks_started += 1
            self._done.clear()
            return True
        if kind == "runner_on_start" and data.get("host"):
            new = data["host"] not in self._play_hosts
            self._play_hosts.add(data["host"])
            return new
        if kind in _DONE_EVENTS and data.get("host"):
            self._play_hosts.add(data["host"])
            self._done.add(data["host"])
            if kind == "runner_on_unreachable" or (kind == "runner_on_failed" and not data.get("ignore_errors")):
                self._failed.add(data["host"])
            return True
        if kind == "playbook_on_stats":
            self.finished = True
            return True
        return False

    def snapshot(self) -> Progress:
        done, failed, total = self.hosts_done, self.hosts_failed, self.hosts_total
        started, elapsed = self.tasks_started, self.elapsed
        return Progress(self.play, self.current_task, done, failed, started, elapsed, self.finished, total)


def _tail(text: str, lines: int = _MESSAGE_LINES) -> str:
    rows = text.rstrip().splitlines()
    if len(rows) <= lines:
        return "\n".join(rows)
    return f"... ({len(rows) - lines} earlier lines)\n" + "\n".join(rows[-lines:])


def _res_message(res: Mapping[str, Any]) -> str:
    """msg, then stderr/stdout (or the module's raw output when it crashed); censored stays censored."""
    if "censored" in res:
        return str(res["censored"])
    parts = [str(res["msg"]).strip()] if str(res.get("msg") or "").strip() else []
    for key in ("stderr", "module_stderr", "stdout", "module_stdout"):
        value = str(res.get(key) or "").strip()
        if value and value not in parts:
            parts.append(f"{key}:\n{_tail(value)}")
            if key in ("stderr", "module_stderr"):
                break
    for item in res.get("results") or []:
        if isinstance(item, Mapping) and item.get("failed"):
            label = item.get("_ansible_item_label", item.get("item", "?"))
            parts.append(f"item {json.dumps(label, default=str)}: {_res_message(item)}")
    return "\n".join(parts) or "(the module gave no message)"


def _render_side(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return value.splitlines(keepends=True)
    if isinstance(value, Mapping):
        return [f"{k}: {json.dumps(v, default=str)}\n" for k, v in sorted(value.items())]
    return [json.dumps(value, default=str) + "\n"]


def render_diff(diff: Any, limit: int = _DIFF_LINES) -> str | None:
    """Ansible's `diff` result (one dict or a list) as a short unified diff; None when empty."""
    items = diff if isinstance(diff, list) else [diff]
    chunks: list[str] = []
    for item in items:
        if not isinstance(item, Mapping):
            continue
        if item.get("prepared"):
            chunks.append(str(item["prepared"]).rstrip("\n"))
            continue
        before, after = _render_side(item.get("before")), _render_side(item.get("after"))
        fromfile = str(item.get("before_header") or "before")
        tofile = str(item.get("after_header") or "after")
        lines = list(difflib.unified_diff(before, after, fromfile=fromfile, tofile=tofile))
        if lines:
            chunks.append("".join(line if line.endswith("\n") else line + "\n" for line in lines).rstrip("\n"))
    if not chunks:
        return None
    rows = "\n".join(chunks).splitlines()
    if len(rows) > limit:
        rows = [*rows[:limit], f"... ({len(rows) - limit} more lines)"]
    return "\n".join(rows)


def _duration(data: Mapping[str, Any]) -> float | None:
    if isinstance(data.get("duration"), (int, float)):
        return float(data["duration"])
    try:
        start = datetime.fromisoformat(str(data["start"]))
        end = datetime.fromisoformat(str(data["end"]))
    except (KeyError, ValueError):
        return None
    return (end - start).total_seconds()


def _stats(data: Mapping[str, Any]) -> dict[str, HostStats]:
    fields = {"ok": "ok", "changed": "changed", "failures": "failures", "dark": "unreachable",
              "skipped": "skipped", "ignored": "ignored", "rescued": "rescued"}  # fmt: skip
    hosts: set[str] = set()
    for key in (*fields, "processed"):
        hosts.update((data.get(key) or {}).keys())
    return {
        h: HostStats(**{ours: int((data.get(theirs) or {}).get(h, 0)) for theirs, ours in fields.items()})
        for h in sorted(hosts)
    }


def _censored(res: Mapping[str, Any]) -> bool:
    """A result of a `no_log` task: Ansible hides it, and so must every message built from it."""
    return "censored" in res or bool(res.get("_ansible_no_log"))


def _change_diff(res: Mapping[str, Any]) -> str | None:
    """The rendered diff of a changed task (or of its loop items); never one of a `no_log` result."""
    if _censored(res):
        return None
    diff = render_diff(res.get("diff")) if "diff" in res else None
    if diff is None:
        items = [i for i in res.get("results") or [] if isinstance(i, Mapping) and not _censored(i)]
        diff = "\n".join(d for d in (render_diff(i.get("diff")) for i in items) if d) or None
    return diff


def _meaningful(line: str) -> bool:
    """Not blank, and not only the `****` padding Ansible puts after PLAY/TASK headers."""
    return bool(line.strip().strip("*").strip())


def _log_tail(log_path: Path, secrets: Iterable[str], lines: int = _LOG_TAIL_LINES) -> list[str]:
    """The last meaningful lines of a run's stdout log, secrets masked; Ansible's ERROR lines from
    before that window come first. [] when the log cannot be read."""
    try:
        text = log_path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    rows = [r.rstrip() for r in mask_secrets(text, secrets).replace("\r", "").splitlines() if _meaningful(r)]
    if len(rows) <= lines:
        return rows
    errors = [r for r in rows[:-lines] if _ERROR_LINE.match(r)][-5:]
    skipped = len(rows) - lines - len(errors)
    return [*errors, f"... ({skipped} lines left out)", *rows[-lines:]]


def result_from_events(
    events: Iterable[Event], rc: int, status: str, log_path: Path, secrets: Iterable[str] = ()
) -> ProvisionResult:
    """Build a ProvisionResult from ansible-runner events (live or read back from job_events).
    When the run failed without a failed task, the end of its log is kept (see abort_cause)."""
    secrets = list(secrets)
    stats: dict[str, HostStats] = {}
    failures: list[TaskFailure] = []
    changed: list[TaskChange] = []
    durations: list[TaskDuration] = []
    plays: list[PlayRun] = []
    for event in sorted(events, key=lambda e: int(e.get("counter", 0))):
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        if kind == "playbook_on_stats":
            stats = _stats(data)
            continue
        _follow_play(plays, kind, data)
        if kind not in _DONE_EVENTS:
            continue
        host, task, role = str(data.get("host", "?")), str(data.get("task", "?")), data.get("role")
        task_path = str(data["task_path"]) if data.get("task_path") else None
        raw = data.get("res")
        res: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
        seconds = _duration(data)
        if seconds is not None:
            durations.append(TaskDuration(task_label(task, role), host, seconds))
        if kind in ("runner_on_failed", "runner_on_unreachable") and not data.get("ignore_errors"):
            message = mask_secrets(_res_message(res), secrets)
            if kind == "runner_on_unreachable":
                message = f"unreachable: {message}"
            action = str(data.get("task_action") or data.get("resolved_action") or "?")
            failures.append(TaskFailure(host, task, role, action, message, log_path, task_path))
        elif kind == "runner_on_ok" and _changed(res, event):
            diff = _change_diff(res)
            changed.append(TaskChange(host, task, role, mask_secrets(diff, secrets) if diff else None, task_path))
    if stats:
        # A failure inside a block that a `rescue` handled leaves the host with zero failures.
        failures = [f for f in failures if stats.get(f.host, HostStats(failures=1)).failures
                    or stats.get(f.host, HostStats()).unreachable]  # fmt: skip
    result = ProvisionResult(int(rc), str(status), stats, failures, changed, durations, log_path, plays=plays)
    if not result.ok and (not result.failures or result.aborted):
        # Nothing names the cause (a play that aborted before any task, or after a task failed on
        # another host): keep the log's end.
        result.log_tail = _log_tail(log_path, secrets)
    return result


def _changed(res: Mapping[str, Any], event: Event) -> bool:
    """Whether the task changed the host. A censored result (no_log) says so itself up to
    ansible-core 2.18; from 2.19 it holds only the censor's note, and the event's own display line
    (`changed: [node1]`) still says it."""
    if "changed" in res or "censored" not in res:
        return bool(res.get("changed"))
    return _COLOUR.sub("", str(event.get("stdout") or "")).lstrip().startswith("changed:")


_COLOUR = re.compile(r"\x1b\[[0-9;]*m")


def _follow_play(plays: list[PlayRun], kind: str, data: Mapping[str, Any]) -> None:
    """Keep the plays that started (once each: a `serial` play starts once per batch) and their hosts."""
    if kind == "playbook_on_play_start":
        uuid = str(data.get("play_uuid") or data.get("uuid") or "")
        if not plays or not uuid or plays[-1].uuid != uuid:
            plays.append(PlayRun(str(data.get("play") or data.get("name") or ""), str(data.get("pattern") or ""), uuid))
        return
    host = data.get("host")
    if not plays or not host or not (kind == "runner_on_start" or kind in _DONE_EVENTS):
        return
    play = plays[-1]
    if host not in play.hosts:
        play.hosts.append(host)
    bad = kind == "runner_on_unreachable" or (kind == "runner_on_failed" and not data.get("ignore_errors"))
    if bad and host not in play.failed:
        play.failed.append(host)


def missed_plays(
    started: list[PlayRun], book: list[tuple[str, str]], hosts_of: Callable[[str], list[str] | None]
) -> list[MissedPlay]:
    """The plays of the playbook (`book`: name and host pattern of each, in order) after those that
    started, with the hosts each would have run on: `hosts_of(pattern)` less the hosts that failed
    already (Ansible leaves them out of later plays anyway, and they are reported as failed). A
    play that would have run on no host missed nothing. [] when the started plays are not the
    playbook's first ones (the events and the playbook disagree)."""
    if len(started) >= len(book):
        return []
    for run, (name, pattern) in zip(started, book, strict=False):
        if run.name != name and "{{" not in name + pattern:
            return []
    failed = {h for run in started for h in run.failed}
    missed = []
    for name, pattern in book[len(started) :]:
        hosts = hosts_of(pattern)
        left = None if hosts is None else [h for h in hosts if h not in failed]
        if left != []:
            missed.append(MissedPlay(name, pattern, left))
    return missed


def stop_reason(result: ProvisionResult) -> str:
    """Why the playbook ended before its last play, in a few words."""
    if result.aborted:
        cause = _cause(result.log_tail)
        return (
            f"ansible-playbook stopped: {cause}"
            if cause
            else f"ansible-playbook stopped without a recap (rc {result.rc})"
        )
    last = result.plays[-1] if result.plays else None
    if last is None:
        return f"ansible-playbook ended before any play (rc {result.rc})"
    if last.hosts and set(last.hosts) <= set(last.failed):
        return f"every host of play {last.name!r} failed ({', '.join(last.failed)}), which ends the playbook"
    failed = f" ({', '.join(last.failed)} failed there)" if last.failed else ""
    return f"ansible-playbook ended after play {last.name!r}{failed}"


def missed_lines(result: ProvisionResult) -> list[str]:
    """`play 'Compute' (hosts: compute) never ran on: n02, n03`, one line per missed play."""
    lines = []
    for play in result.missed:
        named = f"play {play.name!r}" + (f" (hosts: {play.pattern})" if play.pattern != play.name else "")
        on = ", ".join(play.hosts) if play.hosts is not None else "the hosts its pattern selects at run time"
        lines.append(f"{named} never ran on: {on}")
    return lines


def load_events(artifact_dir: Path) -> list[dict[str, Any]]:
    """Read back the events of a finished run from `<artifact_dir>/job_events/*.json`."""
    events = [json.loads(p.read_text(encoding="utf-8")) for p in (artifact_dir / "job_events").glob("*.json")]
    return sorted(events, key=lambda e: int(e.get("counter", 0)))


def _indent(text: str, prefix: str = "      ") -> str:
    return "\n".join(prefix + line for line in text.splitlines())


def _cause(lines: list[str]) -> str | None:
    """One line saying why ansible-playbook stopped, from its last ERROR line (ansible-core 2.19
    also writes one per failed task before the fatal one) and the location after it; None without one."""
    errors = [(i, m) for i, m in enumerate(map(_ERROR_LINE.match, lines)) if m]
    if not errors:
        return None
    at, error = errors[-1]
    text = error["text"].strip()
    known = next((m for m in (p.search(text) for p in _KNOWN_CAUSES) if m), None)
    cause = known.group(0) if known else text.split(". ")[0].rstrip(".")
    where = next((m for m in map(_ERROR_WHERE.search, lines[at:]) if m), None)
    if where:
        cause += f" at {where['file']}:{where['line']}" if where["file"] else f" at {where['origin']}"
    return cause if len(cause) <= 300 else cause[:297] + "..."


def abort_cause(result: ProvisionResult) -> str:
    """Why a run failed without naming a failed task (a missing collection or role, a syntax
    error): a first line with the cause where Ansible's ERROR line gives one, then the end of the
    log with secrets masked (ProvisionResult.log_tail)."""
    cause = _cause(result.log_tail)
    if cause:
        head = f"ansible-playbook stopped: {cause} (status {result.status}, rc {result.rc})"
    else:
        head = f"ansible-playbook ended with status {result.status}, rc {result.rc}, without a failed task"
    tail = "\n".join(result.log_tail) if result.log_tail else f"(nothing readable in {result.log_path})"
    return f"{head}\n  the end of the log says:\n{_indent(tail, '    ')}"
