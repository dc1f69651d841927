"""Disruptive checks, run last: slurmd stops and comes back, the NFS server restarts."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from conftest import TEST_USER, poll

from harness.pytest_plugin import journal

LOGIN = "login01"


def _state(cluster: Any, node: str) -> str:
    res = cluster.run(LOGIN, f"sinfo -h -N -n {node} -o %t")
    return res.stdout.strip() if res.ok else ""


def test_stopped_slurmd_marks_the_node_down_and_back(cluster: Any) -> None:
    node = cluster.group("gpu")[-1]
    cluster.check(node, "sudo systemctl stop slurmd")
    try:
        ok, _ = poll(lambda: _state(cluster, node).startswith("down"), 120)
        assert ok, f"{node} still {_state(cluster, node)!r} 120 s after slurmd stopped"
    finally:
        cluster.check(node, "sudo systemctl start slurmd")
    ok, _ = poll(lambda: _state(cluster, node) == "idle", 90)
    if not ok:
        # ReturnToService=2 should have done it; resume by hand, as an admin would.
        cluster.check(LOGIN, f"sudo scontrol update nodename={node} state=resume")
        ok, _ = poll(lambda: _state(cluster, node) == "idle", 60)
    if not ok:
        pytest.fail(
            f"{node} is {_state(cluster, node)!r}, not idle\n" + journal(cluster.host(node), "slurmd"), pytrace=False
        )


def test_nfs_mount_survives_a_server_restart(cluster: Any) -> None:
    mgmt = cluster.group("mgmt")[0]
    client = cluster.group("gpu")[0]
    cluster.check(mgmt, "sudo systemctl restart nfs-server")
    name = f"/home/{TEST_USER}/after-restart-{uuid.uuid4().hex[:8]}"
    cluster.check(client, f"sudo -u {TEST_USER} sh -c 'echo survived > {name}'", timeout=240)
    ok, content = poll(lambda: cluster.run(LOGIN, f"sudo cat {name}").stdout.strip(), 120)
    assert ok and content == "survived"
    assert cluster.check(client, "findmnt -n -o FSTYPE /home").strip() == "nfs4"
