"""Teardown's sweep and gc (harness.sweep): nothing of a run may appear after it is said to be gone;
a libvirtd restart told from other failures of up (harness.nodes)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from harness import host, k8s_bundle, nodes, offline, passthrough, preflight, proc, rundir, sweep
from harness.errors import ProviderError, UsageError
from harness.provider import libvirt as lv
from harness.spec import parse_scenario
from harness.vagrant import VagrantEnvironment


class _Libvirt:
    """Domains that a killed client's calls keep creating for a while after the first sweep."""

    def __init__(self, late: list[list[str]]) -> None:
        self.late = late  # what appears before each listing
        self.present: list[str] = ["hx-r-a"]
        self.removed: list[str] = []

    def remove_run(self, _conn: Any, prefix: str) -> lv.RunObjects:
        self.removed += self.present
        self.present = self.late.pop(0) if self.late else []
        return lv.RunObjects(domains=list(self.present))

    def run_objects(self, _conn: Any, prefix: str) -> lv.RunObjects:
        return lv.RunObjects(domains=list(self.present))


def _sweep(monkeypatch: pytest.MonkeyPatch, fake: _Libvirt, deadline: float = 90.0) -> lv.RunObjects:
    monkeypatch.setattr(lv, "remove_run", fake.remove_run)
    monkeypatch.setattr(lv, "run_objects", fake.run_objects)
    clock = [0.0]

    def sleep(s: float) -> None:
        clock[0] += s

    return sweep.sweep(None, "hx-r", deadline_s=deadline, clock=lambda: clock[0], sleep=sleep)


def test_a_domain_defined_after_the_first_sweep_is_swept_too(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _Libvirt(late=[["hx-r-b"], [], []])
    left = _sweep(monkeypatch, fake)
    assert left.empty()
    assert fake.removed == ["hx-r-a", "hx-r-b"]


def test_the_sweep_needs_several_empty_listings_in_a_row(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _Libvirt(late=[[], ["hx-r-c"], [], []])
    assert _sweep(monkeypatch, fake).empty()
    assert "hx-r-c" in fake.removed


def test_what_keeps_coming_back_is_reported_at_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _Libvirt(late=[["hx-r-z"]] * 100)
    left = _sweep(monkeypatch, fake, deadline=10.0)
    assert left.domains == ["hx-r-z"]


class _RecreatingLibvirt:
    """A dead run's Vagrant, still running after the harness was killed, defines its domain again
    whenever it is removed; a live run's domain sits beside it."""

    def __init__(self, vagrant: subprocess.Popen[bytes]) -> None:
        self.vagrant = vagrant
        self.present = {"hx-dead-abcdef-node01", "hx-live-fedcba-node01"}

    def _mine(self, prefix: str) -> list[str]:
        return sorted(n for n in self.present if n.startswith(prefix + "-"))

    def run_objects(self, _conn: Any, prefix: str) -> lv.RunObjects:
        return lv.RunObjects(domains=self._mine(prefix))

    def remove_run(self, _conn: Any, prefix: str) -> lv.RunObjects:
        self.present -= set(self._mine(prefix))
        if prefix == "hx-dead-abcdef" and self.vagrant.poll() is None:
            self.present.add("hx-dead-abcdef-node01")
        return self.run_objects(_conn, prefix)


def test_gc_ends_a_killed_runs_processes_then_sweeps_and_spares_the_live_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HARNESS_STATE_DIR", str(tmp_path / "state"))
    dead = rundir.RunState("dead-abcdef", "dead", "/d", str(tmp_path / "dead"), pid=999_999_999, state="up", keep=False)
    live = replace(dead, run_id="live-fedcba", run_dir=str(tmp_path / "live"), keep=True)
    for run in (dead, live):
        rundir.save(run)
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    strays = {r: subprocess.Popen(sleeper, env={**os.environ, proc.RUN_ENV: r}) for r in (dead.run_id, live.run_id)}
    fake = _RecreatingLibvirt(strays[dead.run_id])
    monkeypatch.setattr(lv, "run_objects", fake.run_objects)
    monkeypatch.setattr(lv, "remove_run", fake.remove_run)
    monkeypatch.setattr(lv, "run_ids_present", lambda _conn: {"dead-abcdef", "live-fedcba"})
    monkeypatch.setattr(lv, "connect", contextlib.nullcontext)
    monkeypatch.setattr(sweep, "QUIET_INTERVAL_S", 0.01)
    try:
        result = sweep.gc()
        assert strays[dead.run_id].wait(timeout=5) is not None
        assert fake.present == {"hx-live-fedcba-node01"}
        assert result.kept == ["live-fedcba"] and "1 process(es)" in result.removed["dead-abcdef"]
        assert set(rundir.registered_runs()) == {"live-fedcba"}
        assert strays[live.run_id].poll() is None, "gc ended a live run's process"
    finally:
        for p in strays.values():
            p.kill()
            p.wait()


def test_teardown_waits_for_a_restarting_libvirtd_then_sweeps(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = [ProviderError("cannot connect to libvirt"), ProviderError("cannot connect to libvirt"), None]

    @contextlib.contextmanager
    def connect() -> Iterator[None]:
        failure = answers.pop(0)
        if failure is not None:
            raise failure
        yield None

    monkeypatch.setattr(lv, "connect", connect)
    monkeypatch.setattr(sweep, "sweep", lambda _conn, prefix: lv.RunObjects())
    assert sweep.sweep_when_libvirt_answers("hx-r", wait_s=60, sleep=lambda _s: None).empty()
    assert answers == []


def test_teardown_says_what_to_do_when_libvirtd_stays_away(monkeypatch: pytest.MonkeyPatch) -> None:
    def connect() -> None:
        raise ProviderError("cannot connect to libvirt")

    monkeypatch.setattr(lv, "connect", connect)
    with pytest.raises(ProviderError, match="harness gc"):
        sweep.sweep_when_libvirt_answers("hx-r", wait_s=0, sleep=lambda _s: None)


@pytest.mark.parametrize(
    ("pids", "answers", "said"),
    [
        ([7], [True], None),  # the same libvirtd answers: the failure was something else
        ([7, 7, 9], [False, False], "pid 7 -> 9"),  # shutting down (no connection), then restarted
        ([7, None], [False], "pid 7 stopped"),
    ],
)
def test_a_libvirtd_restart_is_told_from_other_failures(
    monkeypatch: pytest.MonkeyPatch, pids: list[int | None], answers: list[bool], said: str | None
) -> None:
    monkeypatch.setattr(host, "libvirtd_pid", lambda: pids.pop(0))
    monkeypatch.setattr(lv, "answers", lambda: answers.pop(0))
    assert nodes.libvirtd_restart(7, sleep=lambda _s: None) == said


# What `harness gc` in another process decides about a run directory: live (left alone) or dead.
_GC_VIEW = (
    "import sys; from pathlib import Path; from harness import rundir; "
    "print(rundir.is_live(rundir.load(Path(sys.argv[1]))))"
)


def _sleeper(env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=env)


def _kept_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **fields: Any) -> rundir.RunState:
    """A kept cluster whose creator (`harness up`) is gone, with teardown's libvirt side faked."""
    monkeypatch.setenv("HARNESS_STATE_DIR", str(tmp_path / "state"))
    run = rundir.RunState("kept-abcdef", "kept", "/k.yml", str(tmp_path / "kept"), pid=999_999_999, state="up")
    run = replace(run, **fields)
    rundir.save(run)
    for made in ("Vagrantfile", ".vagrant"):
        (run.path / made).touch()
    monkeypatch.setattr(offline, "unserve", lambda _run_id: None)
    monkeypatch.setattr(passthrough, "release_locks", lambda _dir, _run_id: None)
    monkeypatch.setattr(sweep, "sweep_when_libvirt_answers", lambda _prefix: lv.RunObjects())
    return run


def test_a_run_being_destroyed_is_the_destroyers_and_gc_elsewhere_leaves_it_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """issue 27: during `destroy`, state.json named the dead creator, so a gc at that moment swept too."""
    run = _kept_cluster(tmp_path, monkeypatch)
    seen: list[tuple[int, str]] = []

    def vagrant_destroy(_self: object) -> bool:
        on_disk = rundir.load(run.path)
        assert on_disk.state == "destroying" and on_disk.pid_start == proc.start_time(os.getpid())
        gc_says = subprocess.run([sys.executable, "-c", _GC_VIEW, run.run_dir], capture_output=True, text=True,
                                 check=True)  # fmt: skip
        seen.append((on_disk.pid, gc_says.stdout.strip()))
        return True

    monkeypatch.setattr(VagrantEnvironment, "destroy", vagrant_destroy)
    nodes.teardown(run)
    assert seen == [(os.getpid(), "True")], "the run was not the destroyer's while it was destroyed"
    assert rundir.load(run.path).state == "destroyed"


def test_teardown_ends_the_runs_processes_and_no_other_child_of_the_caller(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """issue 26: teardown ended every descendant of the calling process, a test runner's included."""
    run = _kept_cluster(tmp_path, monkeypatch)
    monkeypatch.setattr(VagrantEnvironment, "destroy", lambda _self: True)
    bystander, leftover = _sleeper(), _sleeper({**os.environ, proc.RUN_ENV: run.run_id})
    try:
        nodes.teardown(run)
        assert leftover.wait(timeout=5) is not None, "a process of the run outlived its teardown"
        assert bystander.poll() is None, "teardown ended a child it had not started"
    finally:
        for p in (bystander, leftover):
            p.kill()
            p.wait()


def test_a_destroy_that_finds_another_live_destroyer_refuses_and_gc_leaves_the_run_to_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    destroyer = _sleeper()
    try:
        started = proc.start_time(destroyer.pid)
        assert started is not None
        run = _kept_cluster(tmp_path, monkeypatch, state="destroying", pid=destroyer.pid, pid_start=started)
        monkeypatch.setattr(VagrantEnvironment, "destroy", lambda _self: pytest.fail("raced the destroyer"))
        with pytest.raises(UsageError, match=f"pid {destroyer.pid}.*destroying"):
            nodes.teardown(run)
        assert rundir.load(run.path).pid == destroyer.pid
        monkeypatch.setattr(lv, "run_ids_present", lambda _conn: {run.run_id})
        monkeypatch.setattr(lv, "connect", contextlib.nullcontext)
        monkeypatch.setattr(lv, "remove_run", lambda _conn, _prefix: pytest.fail("gc swept a run being destroyed"))
        assert sweep.gc().kept == [run.run_id]
        destroyer.kill()
        destroyer.wait()
        # Its destroyer gone (killed mid-way), the run is the next `destroy`'s to finish.
        monkeypatch.setattr(VagrantEnvironment, "destroy", lambda _self: True)
        assert nodes.destroy(parse_scenario("name: kept\nnodes: [{name: n}]\n", Path("/k.yml"))).run_id == run.run_id
        assert rundir.load(run.path).state == "destroyed"
    finally:
        destroyer.kill()
        destroyer.wait()


def test_a_run_checks_a_kubernetes_bundle_once_harness_up_checks_it_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    """`harness run` checks the bundle before anything (lifecycle.check_playbook) and tells up so;
    `harness up` alone checks it in up."""
    checked: list[str] = []

    class Stop(Exception):
        pass

    def stop(_sc: Any) -> None:
        raise Stop

    monkeypatch.setattr(k8s_bundle, "preflight", lambda sc: checked.append(sc))
    monkeypatch.setattr(preflight, "check_box", stop)
    sc: Any = object()
    with pytest.raises(Stop):
        nodes.up(sc, bundle_checked=True)
    assert checked == []
    with pytest.raises(Stop):
        nodes.up(sc)
    assert checked == [sc]
