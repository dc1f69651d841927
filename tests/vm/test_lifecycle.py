"""Real VMs: an interrupted `up` leaves nothing; gc removes only dead runs' objects. (A 2-node cluster
coming up, answering over SSH and going away without a trace is checked in test_pair.py, on the
pair it boots.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import rundir, sweep
from harness.provider import libvirt as lv

pytestmark = pytest.mark.vm


def _wait_for_domain(prefix_start: str, timeout: float) -> str | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with lv.connect() as conn:
            names: list[str] = [d.name() for d in conn.listAllDomains() if d.name().startswith(prefix_start)]
        if names:
            return names[0]
        time.sleep(0.5)
    return None


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_interrupted_up_leaves_nothing(runs_dir: Path, sig: signal.Signals) -> None:
    env = {**os.environ, "HARNESS_RUNS_DIR": str(runs_dir)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness", "up", "pair"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        dom = _wait_for_domain("hx-pair-", timeout=240)
        assert dom is not None, "no domain appeared within 240s"
        run_id = lv.RUN_PREFIX.match(dom).group(1)  # type: ignore[union-attr]
        time.sleep(3)
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out
    assert "removed everything" in out
    with lv.connect() as conn:
        left = lv.run_objects(conn, f"hx-{run_id}")
    assert left.empty(), f"interrupted run left {left.describe()}"
    vagrants = subprocess.run(["pgrep", "-f", f"vagrant.*{run_id}"], capture_output=True, text=True).stdout
    assert not vagrants.strip(), f"vagrant processes left: {vagrants}"


def test_gc_removes_only_dead_runs_objects(runs_dir: Path) -> None:
    import ipaddress

    dead_prefix, live_prefix = "hx-gcdead-abcdef", "hx-gclive-fedcba"
    foreign = "harness-test-foreign-net"
    live = rundir.RunState(
        run_id="gclive-fedcba",
        scenario="gclive",
        scenario_file="/x",
        run_dir=str(runs_dir / "gclive"),
        pid=os.getpid(),
        state="up",
    )
    rundir.save(live)
    with lv.connect() as conn:
        lv.create_network(conn, f"{dead_prefix}-priv", ipaddress.IPv4Network("10.251.1.0/24"), nat=False)
        lv.create_network(conn, f"{live_prefix}-priv", ipaddress.IPv4Network("10.251.2.0/24"), nat=False)
        lv.create_network(conn, foreign, ipaddress.IPv4Network("10.251.3.0/24"), nat=False)
    try:
        result = sweep.gc()
        assert "gcdead-abcdef" in result.removed and "gclive-fedcba" in result.kept
        with lv.connect() as conn:
            names = {n.name() for n in conn.listAllNetworks()}
        assert f"{dead_prefix}-priv" not in names
        assert {f"{live_prefix}-priv", foreign} <= names
    finally:
        with lv.connect() as conn:
            for name in (f"{live_prefix}-priv", foreign, f"{dead_prefix}-priv"):
                try:
                    net = conn.networkLookupByName(name)
                    net.destroy()
                    net.undefine()
                except Exception:
                    pass
        rundir.forget(live.run_id)
