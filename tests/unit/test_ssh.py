from __future__ import annotations

from pathlib import Path

from harness import ssh


def test_option_sets_as_ssh_arguments_and_as_one_string() -> None:
    assert ssh.args(ssh.TESTS_CONNECTION) == [
        "-o", "ControlMaster=auto", "-o", "ControlPath=/tmp/hx-cm-%C", "-o", "ControlPersist=120",
    ]  # fmt: skip
    assert ssh.command_line(ssh.ANSIBLE_CONNECTION) == (
        "-o ControlMaster=auto -o ControlPersist=60s -o ServerAliveInterval=15 -o ServerAliveCountMax=4"
    )
    assert ssh.command_line(ssh.NODE_TRUST) == (
        "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o IdentitiesOnly=yes"
    )
    assert ssh.args(ssh.probe_options(10.7)) == [
        "-o", "ConnectTimeout=10", "-o", "BatchMode=yes", "-o", "ControlMaster=no", "-o", "ControlPath=none",
    ]  # fmt: skip


def test_node_config_as_ssh_config_lines() -> None:
    assert ssh.config_lines(ssh.NODE_CONFIG) == [
        "  StrictHostKeyChecking no",
        "  UserKnownHostsFile /dev/null",
        "  IdentitiesOnly yes",
        "  PasswordAuthentication no",
        "  LogLevel ERROR",
    ]


def test_the_connections_reset_after_a_pause_are_the_shared_ones() -> None:
    shared = {ssh.TESTS_CONNECTION["ControlPath"], str(Path.home() / ".ansible" / "cp" / "%C")}
    assert set(ssh.CONTROL_PATHS) == shared


def test_connect_timeouts_stretch_with_the_hosts_load() -> None:
    from harness.reach import MAX_CONNECT_TIMEOUT_S, connect_timeout, load_factor

    assert load_factor(0.3, 2) == 1.0  # a quiet host is never faster than quiet
    assert connect_timeout(60, load=1.5, cpus=2) == 60
    assert connect_timeout(60, load=8.0, cpus=2) == 240  # 7 TCG VMs on 2 cores: 4 runnable per core
    assert connect_timeout(60, load=40.0, cpus=2) == MAX_CONNECT_TIMEOUT_S
    assert connect_timeout(15, load=4.0, cpus=1) == 60
