"""The options the harness gives ssh, in one place: how nodes are trusted, and which connections
are shared (ControlMaster) by whom - Ansible's converges, the scenario tests' `cluster` fixture, and
the reachability probe that must never ride on a shared connection.

Each set is a mapping of option to value; `args` writes it as ssh's `-o` arguments and
`config_lines` as lines of an ssh_config host block.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from pathlib import Path

# The nodes are throwaway VMs: their host keys are neither checked nor remembered, and only the
# cluster key is offered. In the inventory (`ansible_ssh_common_args`) and the run's ssh_config.
NODE_TRUST: Mapping[str, str] = {
    "StrictHostKeyChecking": "no",
    "UserKnownHostsFile": "/dev/null",
    "IdentitiesOnly": "yes",
}
# The run's ssh_config (nodes.install_cluster_key) adds: no password prompts, no banner noise.
NODE_CONFIG: Mapping[str, str] = {**NODE_TRUST, "PasswordAuthentication": "no", "LogLevel": "ERROR"}

# Where shared connections live: Ansible's default ControlPath, and the scenario tests'.
ANSIBLE_CONTROL_PATH = str(Path.home() / ".ansible" / "cp" / "%C")
TESTS_CONTROL_PATH = "/tmp/hx-cm-%C"
CONTROL_PATHS = (ANSIBLE_CONTROL_PATH, TESTS_CONTROL_PATH)

# Converges (ANSIBLE_SSH_ARGS): shared connections, and keep-alives so that a node that stops
# answering mid-task (paused, overloaded) drops its connection after a minute, is reported
# unreachable and retried, instead of hanging the converge.
ANSIBLE_CONNECTION: Mapping[str, str] = {
    "ControlMaster": "auto",
    "ControlPersist": "60s",
    "ServerAliveInterval": "15",
    "ServerAliveCountMax": "4",
}
# The `cluster` fixture of scenario tests: one shared connection per node, kept for two minutes.
TESTS_CONNECTION: Mapping[str, str] = {
    "ControlMaster": "auto",
    "ControlPath": TESTS_CONTROL_PATH,
    "ControlPersist": "120",
}


def run_control_path(run_id: str) -> str:
    """The ControlPath in a run's ssh_config: testinfra's `host` (which asks for ControlMaster but
    gives no path) and `harness ssh` share one connection per node through it. Ansible, the
    `cluster` fixture and the reachability probe set their own."""
    return f"/tmp/hx-t-{run_id}-%n"


def probe_options(connect_timeout: float) -> dict[str, str]:
    """One fresh connection that asks nothing (reach.answers): a shared master could outlive the node."""
    return {
        "ConnectTimeout": str(int(connect_timeout)),
        "BatchMode": "yes",
        "ControlMaster": "no",
        "ControlPath": "none",
    }


def args(options: Mapping[str, str]) -> list[str]:
    """`-o Option=value` arguments for ssh."""
    return [arg for name, value in options.items() for arg in ("-o", f"{name}={value}")]


def command_line(options: Mapping[str, str]) -> str:
    """The same as one string (ANSIBLE_SSH_ARGS, `ansible_ssh_common_args`)."""
    return shlex.join(args(options))


def config_lines(options: Mapping[str, str], indent: str = "  ") -> list[str]:
    """The same as lines of an ssh_config host block."""
    return [f"{indent}{name} {value}" for name, value in options.items()]
