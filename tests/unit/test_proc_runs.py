"""A run's processes found by their environment (proc.RUN_ENV) and ended: what `harness gc` does
for a harness killed with SIGKILL, whose Vagrant or ansible-playbook would otherwise run on."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from harness import proc


def _spawn(run_id: str) -> subprocess.Popen[bytes]:
    """A process of the run, as Vagrant would be: its environment marked, its own child too."""
    env = {**os.environ, proc.RUN_ENV: run_id}
    child = "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])"
    code = f"import subprocess, sys, time; {child}; time.sleep(60)"
    return subprocess.Popen([sys.executable, "-c", code], env=env)


def _wait_for(probe: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not probe() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.05)


def test_the_processes_of_a_run_and_their_children_are_found_and_ended() -> None:
    mine, other = _spawn("unit-aaaaaa"), _spawn("unit-bbbbbb")
    try:
        _wait_for(lambda: len(proc.processes_of_run("unit-aaaaaa")) == 2)
        found = proc.processes_of_run("unit-aaaaaa")
        assert mine.pid in found and len(found) == 2, found  # the child inherited the mark
        assert other.pid not in found and not set(found) & set(proc.processes_of_run("unit-bbbbbb"))
        assert proc.end_processes(found, timeout=5) == []
        mine.wait(timeout=5)
        assert proc.processes_of_run("unit-aaaaaa") == []
        assert other.poll() is None, "another run's process was ended"
    finally:
        for p in (mine, other):
            p.kill()
            p.wait()
        proc.end_processes(proc.processes_of_run("unit-bbbbbb"), timeout=5)


def test_this_process_and_its_ancestors_are_never_a_runs_leftovers() -> None:
    """A harness started from within a run's process tree (its environment marked too) never ends
    itself or what started it."""
    code = "from harness import proc; print(proc.processes_of_run('unit-cccccc'))"
    env = {**os.environ, proc.RUN_ENV: "unit-cccccc"}
    out = subprocess.run(["sh", "-c", f'"{sys.executable}" -c "{code}"; true'], env=env, capture_output=True,
                         text=True, check=True)  # fmt: skip
    assert out.stdout.strip() == "[]"


def test_marking_is_undone_for_the_run_that_set_it_only() -> None:
    proc.mark_children("unit-dddddd")
    try:
        proc.unmark_children("unit-eeeeee")
        assert proc.run_marker() == {proc.RUN_ENV: "unit-dddddd"}
    finally:
        proc.unmark_children("unit-dddddd")
    assert proc.run_marker() == {} and proc.RUN_ENV not in proc.child_env()


def test_the_mark_reaches_the_harnesss_children_through_their_env_never_os_environ() -> None:
    """Code beside the harness in this process (a test runner) starts its children unmarked."""
    before = dict(os.environ)
    proc.mark_children("unit-ffffff")
    try:
        assert dict(os.environ) == before
        seen = proc.run([sys.executable, "-c", f"import os; print(os.environ.get({proc.RUN_ENV!r}))"], timeout=30)
        assert seen.stdout.strip() == "unit-ffffff"
        beside = subprocess.run([sys.executable, "-c", f"import os; print(os.environ.get({proc.RUN_ENV!r}))"],
                                capture_output=True, text=True, check=True)  # fmt: skip
        assert beside.stdout.strip() == "None"
    finally:
        proc.unmark_children("unit-ffffff")
    assert dict(os.environ) == before


def test_a_runs_processes_are_ended_and_another_child_of_this_process_survives() -> None:
    """What teardown ends: the run's own processes, not every descendant of the calling process."""
    mine = _spawn("unit-gggggg")
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _wait_for(lambda: len(proc.processes_of_run("unit-gggggg")) == 2)
        assert proc.end_run_processes("unit-gggggg", timeout=5) == []
        assert mine.wait(timeout=5) is not None and proc.processes_of_run("unit-gggggg") == []
        assert bystander.poll() is None, "a child the harness did not start was ended"
    finally:
        for p in (mine, bystander):
            p.kill()
            p.wait()


def test_start_time_tells_a_reused_pid_from_the_process_that_had_it() -> None:
    started = proc.start_time(os.getpid())
    assert started is not None and started > 0
    assert proc.same_process(os.getpid(), started)
    assert proc.same_process(os.getpid(), 0)  # unknown start: the pid alone decides
    assert not proc.same_process(os.getpid(), started + 1)
    assert proc.start_time(999_999_999) is None and not proc.same_process(999_999_999, 0)
