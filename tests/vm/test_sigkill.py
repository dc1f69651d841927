"""A harness killed with SIGKILL (no teardown of its own) during up, during provision and during
verify: `harness gc` removes every object of that run (domains, volumes, networks, checkpoints,
GPU locks, the registry entry), ends what the run had left running (Vagrant, ansible-playbook,
pytest, SSH control masters) so nothing of it comes back after the sweep, and touches nothing of a
kept cluster running beside it. One kept `pair` stands by through the kills. Per-submission CI
kills at up; the nightly target (HARNESS_NIGHTLY=1) at provision and verify too."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from harness import nodes, passthrough, proc, rundir
from harness.provider import libvirt as lv
from tests.vm.cli import harness

pytestmark = pytest.mark.vm
HOLD = Path(__file__).parent.parent / "fixtures" / "vm" / "hold" / "scenario.yml"
SNAPSHOT_META = Path("/var/lib/libvirt/qemu/snapshot")
# Stand-ins for the GPU locks a run with passed-through GPUs holds (this host has no GPU): the
# lock files passthrough writes, one per run, at addresses no real device has.
FAKE_GPU = {"dead": "0000:ff:1f.6", "live": "0000:ff:1f.7"}


def _descendants(pid: int) -> dict[int, int]:
    """Every process below pid: pid → start time (to tell it from a later process with its pid)."""
    parents: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(d.name))
    out, stack = {}, list(parents.get(pid, []))
    while stack:
        child = stack.pop()
        if (started := proc.start_time(child)) is not None:
            out[child] = started
        stack += parents.get(child, [])
    return out


def _cmdlines(pids: dict[int, int]) -> list[str]:
    lines = []
    for pid in pids:
        try:
            lines.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue
    return lines


def _run_dir(runs_dir: Path, earlier: set[Path]) -> Path | None:
    new = [d for d in runs_dir.glob("hold-*") if d not in earlier]
    return new[0] if new else None


def _vagrant_started(pids: dict[int, int], _run_dir: Path) -> bool:
    return any("vagrant" in c and " up" in c for c in _cmdlines(pids))


def _converging(_pids: dict[int, int], run_dir: Path) -> bool:
    events = run_dir.glob("ansible/artifacts/*/job_events/*.json")
    return any("Hold the converge" in e.read_text() for e in events)


def _testing(pids: dict[int, int], _run_dir: Path) -> bool:
    return any("sleep 240" in c for c in _cmdlines(pids))  # the scenario's test, over SSH on the node


MOMENTS: dict[str, Callable[[dict[int, int], Path], bool]] = {
    "up (Vagrant started, no domain yet)": _vagrant_started,
    "provision (a task running on the node)": _converging,
    "verify (a test running on the node)": _testing,
}
# Per-submission CI kills at up only (the CI budget); the nightly target at all three (the provision
# and verify moments boot and converge the node first: about 2 and 3 more minutes under TCG).
NIGHTLY_ONLY = ("provision (a task running on the node)", "verify (a test running on the node)")


def _moments() -> list[str]:
    nightly = os.environ.get("HARNESS_NIGHTLY") == "1"
    return [m for m in MOMENTS if nightly or m not in NIGHTLY_ONLY]


def _objects(prefix: str) -> lv.RunObjects:
    with lv.connect() as conn:
        return lv.run_objects(conn, prefix)


def _snapshots(prefix: str) -> dict[str, list[str]]:
    """Checkpoints per domain of a run, from libvirt and from its metadata directory."""
    out: dict[str, list[str]] = {}
    with lv.connect() as conn:
        for dom in conn.listAllDomains():
            if dom.name().startswith(prefix + "-"):
                out[dom.name()] = sorted(dom.snapshotListNames())
    for d in SNAPSHOT_META.glob(f"{prefix}-*"):
        out.setdefault(d.name, sorted(p.stem for p in d.glob("*.xml")))
    return out


def _plant_gpu_lock(address: str, run_id: str, pid: int) -> Path:
    lockdir = passthrough.default_lockdir()
    lockdir.mkdir(parents=True, exist_ok=True)
    path = lockdir / f"{address}{passthrough.LOCK_SUFFIX}"
    path.write_text(json.dumps({"run_id": run_id, "pid": pid}))
    return path


def _kill_at(runs_dir: Path, report_dir: Path, moment: str) -> tuple[str, dict[int, int]]:
    """Start `harness run hold`, SIGKILL it at the moment; its run id and the processes it had."""
    earlier = set(runs_dir.glob("hold-*"))
    env = {**os.environ, "HARNESS_RUNS_DIR": str(runs_dir), "NO_COLOR": "1"}
    argv = [sys.executable, "-m", "harness", "run", str(HOLD), "--report-dir", str(report_dir)]
    p = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline and p.poll() is None:
            run_dir = _run_dir(runs_dir, earlier)
            kids = _descendants(p.pid)
            if run_dir is not None and MOMENTS[moment](kids, run_dir):
                break
            time.sleep(0.3)
        assert p.poll() is None, f"the run ended (exit {p.returncode}) before {moment}"
        assert run_dir is not None
        run_id = run_dir.name
        _plant_gpu_lock(FAKE_GPU["dead"], run_id, p.pid)
        kids = _descendants(p.pid)
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
        return run_id, kids
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_gc_after_sigkill_at_up_provision_and_verify_removes_that_run_and_spares_a_kept_one(
    runs_dir: Path, tmp_path: Path, figure: Callable[[str, str], None]
) -> None:
    started = time.monotonic()
    kept = harness(runs_dir, "up", "pair", timeout=900)
    assert kept.returncode == 0, kept.stdout + kept.stderr
    live = rundir.load(max(runs_dir.glob("pair-*"), key=lambda d: d.stat().st_mtime))
    live_lock = _plant_gpu_lock(FAKE_GPU["live"], live.run_id, live.pid)  # its `harness up` has exited
    live_objects, live_snapshots = _objects(live.prefix), _snapshots(live.prefix)
    assert live_objects.domains and all(names == ["booted"] for names in live_snapshots.values()), live_snapshots
    try:
        for i, moment in enumerate(_moments()):
            t0 = time.monotonic()
            run_id, kids = _kill_at(runs_dir, tmp_path / str(i), moment)
            prefix = f"hx-{run_id}"
            assert kids, f"{moment}: the harness had no child processes to leave behind"
            if not moment.startswith("up"):  # after up: the run had saved its `booted` checkpoint
                assert _snapshots(prefix) and all("booted" in s for s in _snapshots(prefix).values())
            t1 = time.monotonic()
            gc = harness(runs_dir, "gc", timeout=600)
            figure(f"SIGKILL during {moment}: gc", f"{time.monotonic() - t1:.0f} s (run {t1 - t0:.0f} s to the kill)")
            assert gc.returncode == 0, gc.stdout + gc.stderr
            assert f"removed run {run_id}" in gc.stdout, gc.stdout
            assert live.run_id in gc.stdout.split("left alone (live):")[-1], gc.stdout

            alive = [pid for pid, st in kids.items() if proc.start_time(pid) == st]
            assert not alive, f"{moment}: processes of the killed run still run: {_cmdlines(dict.fromkeys(alive, 0))}"
            assert proc.processes_of_run(run_id) == []
            assert _objects(prefix).empty(), f"{moment}: {_objects(prefix).describe()}"
            assert _snapshots(prefix) == {}, f"{moment}: checkpoints left: {_snapshots(prefix)}"
            assert run_id not in rundir.registered_runs()
            assert not any(lock.run_id == run_id for lock in passthrough.read_locks(passthrough.default_lockdir()))
            time.sleep(10)  # a client the sweep missed would have made something again by now
            assert _objects(prefix).empty(), f"{moment}: came back after gc: {_objects(prefix).describe()}"

            assert _objects(live.prefix) == live_objects and _snapshots(live.prefix) == live_snapshots
            assert live.run_id in rundir.registered_runs() and live_lock.exists()
            with lv.connect() as conn:
                states = {d.name: d.state for d in lv.domain_statuses(conn, live.prefix)}
            assert set(states.values()) == {"running"}, states
        answer = nodes.run_on(live, "mgmt01", "true", timeout=120)
        assert answer.ok, answer.describe()
        figure(f"SIGKILL at {', '.join(m.split()[0] for m in _moments())} with a kept pair beside (wall)",
               f"{time.monotonic() - started:.0f} s")
    finally:
        live_lock.unlink(missing_ok=True)
        nodes.teardown(rundir.load(live.path))
    assert _objects(live.prefix).empty()
