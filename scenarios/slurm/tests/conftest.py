"""Helpers for the slurm scenario's tests: what each group runs, and polling (a unit's journal for a
failure message comes from the harness plugin: `journal(cluster.host(node), unit)`)."""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable
from typing import Any

import pytest

# What every node of a group runs: systemd units and TCP ports it listens on.
SERVICES = {
    "all": ["munge", "prometheus-node-exporter"],
    "mgmt": ["nfs-server", "slurmctld", "prometheus"],
    "login": [],
    "gpu": ["slurmd"],
}
PORTS = {"all": {9100}, "mgmt": {2049, 6817, 9090}, "login": set(), "gpu": {6818}}
# Ports whose presence is checked on every node: listening where expected, and nowhere else.
WATCHED_PORTS = {2049, 6817, 6818, 9090, 9100}

# The test user site.yml creates (home on NFS).
TEST_USER = "slurmtest"
TEST_UID = 2001


def as_user(command: str) -> str:
    """A command line run as the test user in a login shell (its NFS home as cwd)."""
    return f"sudo -iu {TEST_USER} bash -lc {shlex.quote(command)}"


def poll(probe: Callable[[], Any], timeout: float, interval: float = 5.0) -> tuple[bool, Any]:
    """Call `probe` until it returns a truthy value or `timeout` seconds pass: (ok, last value)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = probe()
        if last:
            return True, last
        if time.monotonic() >= deadline:
            return False, last
        time.sleep(interval)


@pytest.fixture
def node_groups(cluster: Any, node_name: str) -> list[str]:
    """The built-in groups (login, mgmt, gpu) of the node this test runs against, plus 'all'."""
    return ["all", *(g for g in cluster.groups_of(node_name) if g in SERVICES)]
