"""Running external commands: argv lists in, CommandResult out. The caller decides what is an error."""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness import tools

log = logging.getLogger(__name__)


def child_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a child process: ours, with PATH finding the harness's own tools first
    (a fresh root shell has no virtualenv on PATH), the run's mark (`run_marker`), then `env` on top."""
    return {**os.environ, "PATH": tools.search_path(), **run_marker(), **(env or {})}


def _end(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else "..." + text[-limit:]


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    rc: int
    stdout: str
    stderr: str
    duration: float

    @property
    def ok(self) -> bool:
        return self.rc == 0

    def __repr__(self) -> str:
        """Short, as a test failure shows it (pytest's assertion explanation): the program and the
        last two arguments (an ssh command's node and remote command), the code, the output's ends."""
        argv = list(self.argv)
        shown = shlex.join(argv) if len(argv) <= 4 else f"{shlex.join(argv[:1])} ... {shlex.join(argv[-2:])}"
        return (
            f"CommandResult(rc={self.rc}, argv={shown!r}, stdout={_end(self.stdout)!r}, stderr={_end(self.stderr)!r})"
        )

    def describe(self) -> str:
        """One paragraph for an error message: the command, its code and the tail of stderr."""
        tail = (self.stderr or self.stdout).strip().splitlines()[-15:]
        joined = "\n    ".join(tail)
        return f"`{' '.join(self.argv)}` exited {self.rc}" + (f":\n    {joined}" if tail else "")


def run(
    argv: Sequence[str],
    *,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    input_text: str | None = None,
) -> CommandResult:
    """Run argv to completion and capture its output. Never raises for a non-zero exit."""
    full_env = child_env(env)
    started = time.monotonic()
    log.debug("run: %s", " ".join(argv))
    try:
        cp = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=full_env,
            cwd=cwd,
            input=input_text,
            stdin=None if input_text is not None else subprocess.DEVNULL,
            check=False,
        )
    except FileNotFoundError:
        return CommandResult(tuple(argv), 127, "", f"{argv[0]}: command not found", 0.0)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        return CommandResult(tuple(argv), 124, out, err + f"\ntimed out after {timeout}s", time.monotonic() - started)
    return CommandResult(tuple(argv), cp.returncode, cp.stdout, cp.stderr, time.monotonic() - started)


def run_logged(
    argv: Sequence[str],
    logfile: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    on_line: Callable[[str], None] | None = None,
) -> CommandResult:
    """Run argv, appending its combined output to logfile line by line (and to on_line)."""
    full_env = child_env(env)
    started = time.monotonic()
    tail: list[str] = []
    logfile.parent.mkdir(parents=True, exist_ok=True)
    with logfile.open("a", encoding="utf-8") as fh:
        fh.write(f"$ {' '.join(argv)}\n")
        fh.flush()
        try:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env=full_env,
                cwd=cwd,
            )
        except FileNotFoundError:
            return CommandResult(tuple(argv), 127, "", f"{argv[0]}: command not found", 0.0)
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                fh.write(line)
                fh.flush()
                tail.append(line)
                del tail[:-200]
                if on_line is not None:
                    on_line(line.rstrip("\n"))
            rc = proc.wait()
        except BaseException:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
    text = "".join(tail)
    return CommandResult(tuple(argv), rc, text, text if rc else "", time.monotonic() - started)


def run_until(argv: Sequence[str], marker: str, timeout: float) -> CommandResult:
    """Run argv until `marker` shows on stdout (rc 0; the process is then stopped) or it exits or times out."""
    started = time.monotonic()
    try:
        p = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=child_env(),
        )
    except FileNotFoundError:
        return CommandResult(tuple(argv), 127, "", f"{argv[0]}: command not found", 0.0)
    sel = selectors.DefaultSelector()
    assert p.stdout is not None and p.stderr is not None
    sel.register(p.stdout, selectors.EVENT_READ, "out")
    sel.register(p.stderr, selectors.EVENT_READ, "err")
    buf = {"out": "", "err": ""}
    rc: int | None = None
    try:
        while sel.get_map():
            remaining = timeout - (time.monotonic() - started)
            if remaining <= 0:
                rc = 124
                break
            for key, _ in sel.select(remaining):
                chunk = os.read(key.fileobj.fileno(), 4096).decode(errors="replace")  # type: ignore[union-attr]
                if not chunk:
                    sel.unregister(key.fileobj)
                buf[key.data] += chunk
            if marker in buf["out"]:
                rc = 0
                break
    finally:
        if p.poll() is None:
            p.kill()
        p.wait()
        sel.close()
    if rc is None:
        rc = p.returncode
    return CommandResult(tuple(argv), rc, buf["out"], buf["err"], time.monotonic() - started)


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (owned by anyone)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def start_time(pid: int, proc_root: Path = Path("/proc")) -> int | None:
    """When the process started (clock ticks since boot, /proc/PID/stat field 22): with the pid, it
    names one process for good, since a pid is reused once its process is gone. None when gone."""
    try:
        return int((proc_root / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def same_process(pid: int, started: int) -> bool:
    """The process `pid` that started at `started` (0: unknown, the pid alone decides) still runs."""
    if not pid_alive(pid):
        return False
    return started == 0 or start_time(pid) in (started, None)


# Every process a harness run starts carries this in its environment, and so do theirs (Vagrant's
# ruby and ssh, ansible-playbook, pytest, SSH control masters): `processes_of_run` finds them after
# the harness itself was killed, so `harness gc` can end them before removing what they make.
RUN_ENV = "HARNESS_RUN_ID"


# The mark the harness's children get (RUN_ENV → run id), passed in each child's environment
# argument (child_env, run_marker), never written to os.environ: a test runner or any other code in
# this process starts its own children unmarked.
_MARK: dict[str, str] = {}


def mark_children(run_id: str) -> None:
    """From now on, the children the harness starts carry RUN_ENV=run_id (see RUN_ENV)."""
    _MARK[RUN_ENV] = run_id


def unmark_children(run_id: str) -> None:
    if _MARK.get(RUN_ENV) == run_id:
        del _MARK[RUN_ENV]


def run_marker() -> dict[str, str]:
    """What to add to the environment of a child that is not started through `child_env`
    (Vagrant's, ansible-runner's): {RUN_ENV: run id} while a run is marked, else {}."""
    return dict(_MARK)


def _ancestors(proc_root: Path) -> set[int]:
    """This process and the processes above it: never ended as a run's leftovers."""
    out, pid = set(), os.getpid()
    while pid > 1 and pid not in out:
        out.add(pid)
        try:
            pid = int((proc_root / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return out


def processes_of_run(run_id: str, proc_root: Path = Path("/proc")) -> list[int]:
    """Processes whose environment says they belong to run `run_id` (RUN_ENV), other than this one
    and its ancestors."""
    needle = f"{RUN_ENV}={run_id}".encode()
    skip = _ancestors(proc_root)
    found = []
    for d in proc_root.iterdir():
        if not d.name.isdigit() or int(d.name) in skip:
            continue
        try:
            env = (d / "environ").read_bytes()
        except OSError:
            continue
        if needle in env.split(b"\0"):
            found.append(int(d.name))
    return sorted(found)


def end_run_processes(run_id: str, timeout: float = 15.0) -> list[int]:
    """End the processes the harness started for run `run_id` (its mark, RUN_ENV: Vagrant and its
    ruby and ssh, ansible-playbook, pytest, SSH control masters), never another process, and wait
    until they are gone; returns the pids still running (see end_processes)."""
    return end_processes(processes_of_run(run_id), timeout)


def _running(pid: int) -> bool:
    """Alive and not a zombie (a zombie child of ours is reaped here)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    if state == "Z":
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        return False
    return True


def end_processes(pids: Sequence[int], timeout: float = 15.0) -> list[int]:
    """SIGTERM, then after `timeout` SIGKILL, each process; wait until they are gone. Returns the
    pids still running at the end (none unless a process is stuck in the kernel)."""
    pending = set(pids)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pending:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(_running(p) for p in pending):
            time.sleep(0.2)
        pending = {p for p in pending if _running(p)}
        if not pending:
            break
    return sorted(pending)
