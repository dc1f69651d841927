"""Helpers for killing a harness run with SIGKILL at a given moment (tests/vm/test_pair.py): start
`harness run hold`, wait for up, provision or verify to be under way, kill it, and say what it
left (its processes, libvirt objects, checkpoints). Per-submission CI kills at up; the nightly
target (HARNESS_NIGHTLY=1) at provision and verify too."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from harness import passthrough, proc
from harness.provider import libvirt as lv
from tests.vm.conftest import NIGHTLY

HOLD = Path(__file__).parent.parent / "fixtures" / "vm" / "hold" / "scenario.yml"
SNAPSHOT_META = Path("/var/lib/libvirt/qemu/snapshot")
# Stand-ins for the GPU locks a run with passed-through GPUs holds (this host has no GPU): the
# lock files passthrough writes, one per run, at addresses no real device has.
FAKE_GPU = {"dead": "0000:ff:1f.6", "live": "0000:ff:1f.7"}


def descendants(pid: int) -> dict[int, int]:
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


def cmdlines(pids: dict[int, int]) -> list[str]:
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
    return any("vagrant" in c and " up" in c for c in cmdlines(pids))


def _converging(_pids: dict[int, int], run_dir: Path) -> bool:
    events = run_dir.glob("ansible/artifacts/*/job_events/*.json")
    return any("Hold the converge" in e.read_text() for e in events)


def _testing(pids: dict[int, int], _run_dir: Path) -> bool:
    return any("sleep 240" in c for c in cmdlines(pids))  # the scenario's test, over SSH on the node


MOMENTS: dict[str, Callable[[dict[int, int], Path], bool]] = {
    "up (Vagrant started, no domain yet)": _vagrant_started,
    "provision (a task running on the node)": _converging,
    "verify (a test running on the node)": _testing,
}
# Per-submission CI kills at up only (the CI budget); the nightly target at all three (the provision
# and verify moments boot and converge the node first: about 2 and 3 more minutes under TCG).
NIGHTLY_ONLY = ("provision (a task running on the node)", "verify (a test running on the node)")


def moments() -> list[str]:
    return [m for m in MOMENTS if NIGHTLY or m not in NIGHTLY_ONLY]


def objects(prefix: str) -> lv.RunObjects:
    with lv.connect() as conn:
        return lv.run_objects(conn, prefix)


def snapshots(prefix: str) -> dict[str, list[str]]:
    """Checkpoints per domain of a run, from libvirt and from its metadata directory."""
    out: dict[str, list[str]] = {}
    with lv.connect() as conn:
        for dom in conn.listAllDomains():
            if dom.name().startswith(prefix + "-"):
                out[dom.name()] = sorted(dom.snapshotListNames())
    for d in SNAPSHOT_META.glob(f"{prefix}-*"):
        out.setdefault(d.name, sorted(p.stem for p in d.glob("*.xml")))
    return out


def plant_gpu_lock(address: str, run_id: str, pid: int) -> Path:
    lockdir = passthrough.default_lockdir()
    lockdir.mkdir(parents=True, exist_ok=True)
    path = lockdir / f"{address}{passthrough.LOCK_SUFFIX}"
    path.write_text(json.dumps({"run_id": run_id, "pid": pid}))
    return path


def kill_at(runs_dir: Path, report_dir: Path, moment: str) -> tuple[str, dict[int, int]]:
    """Start `harness run hold`, SIGKILL it at the moment; its run id and the processes it had."""
    earlier = set(runs_dir.glob("hold-*"))
    env = {**os.environ, "HARNESS_RUNS_DIR": str(runs_dir), "NO_COLOR": "1"}
    argv = [sys.executable, "-m", "harness", "run", str(HOLD), "--report-dir", str(report_dir)]
    p = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline and p.poll() is None:
            run_dir = _run_dir(runs_dir, earlier)
            kids = descendants(p.pid)
            if run_dir is not None and MOMENTS[moment](kids, run_dir):
                break
            time.sleep(0.3)
        assert p.poll() is None, f"the run ended (exit {p.returncode}) before {moment}"
        assert run_dir is not None
        run_id = run_dir.name
        plant_gpu_lock(FAKE_GPU["dead"], run_id, p.pid)
        kids = descendants(p.pid)
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
        return run_id, kids
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
