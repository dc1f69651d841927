"""Real VMs: a 2-node cluster comes up, answers over SSH, talks on its private network, goes away
without a trace; an interrupted `up` leaves nothing; gc removes only dead runs' objects."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from harness import nodes, rundir, sweep
from harness.provider import libvirt as lv

from .conftest import assert_nothing_left, scenario

pytestmark = pytest.mark.vm


def test_pair_up_ssh_private_network_destroy(runs_dir: Path, figure: Callable[[str, str], None]) -> None:
    sc = scenario("pair")
    started = time.monotonic()
    run = nodes.up(sc)
    up_seconds = time.monotonic() - started
    try:
        figure("2-node up (pair)", f"{up_seconds:.0f} s")
        assert run.state == "up" and run.nodes == ["mgmt01", "gpu01"]
        t0 = time.monotonic()
        _, doms = nodes.status(sc)
        figure("status query (libvirt)", f"{time.monotonic() - t0:.3f} s")
        assert [(d.name, d.state) for d in doms] == [
            (f"{run.prefix}-gpu01", "running"),
            (f"{run.prefix}-mgmt01", "running"),
        ]
        ids = {}
        for node in run.nodes:
            res = nodes.run_on(
                run, node, "hostname; cat /etc/machine-id; ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub"
            )
            assert res.ok, res.describe()
            name, machine_id, hostkey = res.stdout.splitlines()
            assert name == node
            ids[node] = (machine_id, hostkey.split()[1])
        assert ids["mgmt01"][0] != ids["gpu01"][0], "nodes share a machine-id"
        assert ids["mgmt01"][1] != ids["gpu01"][1], "nodes share SSH host keys"
        for src, dst in (("mgmt01", "gpu01"), ("gpu01", "mgmt01")):
            res = nodes.run_on(run, src, f"ping -c2 -W5 {run.private_ips[dst]}")
            assert res.ok, f"{src} cannot reach {dst} on the private network: {res.describe()}"
        # The cluster key replaced Vagrant's keys: the run's ssh_config names it and nothing else.
        cfg = run.ssh_config.read_text()
        assert f"IdentityFile {run.path / 'ssh' / 'id_ed25519'}" in cfg and "insecure_private_key" not in cfg
        assert (run.path / "Vagrantfile").is_file() and (run.log_dir / "vagrant.log").is_file()
    finally:
        nodes.teardown(run)
    assert_nothing_left(run)
    assert rundir.load(run.path).state == "destroyed"


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
