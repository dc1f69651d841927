"""Reaching the nodes over SSH: whether each answers, waiting (bounded) until it does again, and
dropping the host's shared connections so the next converge starts fresh ones.

A node that does not answer is a fact about the infrastructure (a loaded host, a paused or dead
VM), not about the roles: the phases retry after waiting here, and report what is still
unreachable as such.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness import proc, ssh

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 15
# Connect timeouts are given for a quiet host and stretched with its load: under TCG a node's sshd
# (and mitogen's Python) get CPU only as often as the host's cores come round to its QEMU thread.
MAX_CONNECT_TIMEOUT_S = 300


def load_factor(load: float | None = None, cpus: int | None = None) -> float:
    """Runnable tasks per core over the last minute, at least 1 (a quiet host)."""
    load = os.getloadavg()[0] if load is None else load
    return max(1.0, load / (cpus or os.cpu_count() or 1))


def connect_timeout(
    quiet_s: float, load: float | None = None, cpus: int | None = None, cap: float = MAX_CONNECT_TIMEOUT_S
) -> int:
    """A timeout of `quiet_s` on a quiet host, stretched by the load factor, at most `cap`."""
    return int(min(cap, max(quiet_s, quiet_s * load_factor(load, cpus))))


def ssh_wait_seconds() -> float:
    """How long to wait for a node to answer again (HARNESS_SSH_WAIT overrides; default 300 s)."""
    try:
        return float(os.environ.get("HARNESS_SSH_WAIT", "300"))
    except ValueError:
        return 300.0


def answers(ssh_config: Path, node: str, timeout: float | None = None) -> bool:
    """One SSH round trip to `node` (a fresh connection, no shared master); the timeout defaults to
    CONNECT_TIMEOUT_S stretched by the host's load."""
    timeout = connect_timeout(CONNECT_TIMEOUT_S) if timeout is None else timeout
    argv = ["ssh", "-F", str(ssh_config), *ssh.args(ssh.probe_options(timeout)), node, "true"]
    return proc.run(argv, timeout=timeout + 15).ok


@dataclass(frozen=True)
class WaitResult:
    answered: list[str]
    silent: list[str]
    seconds: float


def wait_for_ssh(
    ssh_config: Path,
    nodes: list[str],
    deadline_s: float,
    on_wait: Callable[[str], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> WaitResult:
    """Poll each node until it answers or `deadline_s` passes."""
    started = clock()
    pending = list(nodes)
    answered: list[str] = []
    while pending:
        for node in list(pending):
            if answers(ssh_config, node):
                pending.remove(node)
                answered.append(node)
        if not pending or clock() - started >= deadline_s:
            break
        if on_wait is not None:
            on_wait(f"waiting for {', '.join(pending)} to answer SSH ({clock() - started:.0f}s of {deadline_s:.0f}s)")
        sleep(5)
    return WaitResult(answered, pending, clock() - started)


def reset_connections(ssh_config: Path, nodes: list[str], control_paths: tuple[str, ...] = ssh.CONTROL_PATHS) -> int:
    """Close the shared SSH connections (ControlMaster) to `nodes`, so that the next converge or
    test opens fresh ones instead of writing into a connection that died with a pause; how many
    were closed. mitogen's connections live in the ansible-playbook process and end with it."""
    closed = 0
    for node in nodes:
        for path in (*control_paths, ssh.run_control_path(ssh_config.parent.name)):
            argv = ["ssh", "-F", str(ssh_config), *ssh.args({"ControlPath": path}), "-O", "exit", node]
            closed += proc.run(argv, timeout=10).ok
    return closed
