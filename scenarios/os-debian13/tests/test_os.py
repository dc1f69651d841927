"""The node boots the box its scenario names (Debian 13), with its own machine-id and a converge."""

from __future__ import annotations

from typing import Any


def test_the_node_runs_debian_13(host: Any) -> None:
    release = host.file("/etc/os-release").content_string
    assert "VERSION_CODENAME=trixie" in release
    assert host.file("/etc/harness-os").content_string.startswith("Debian 13")


def test_the_box_got_a_machine_id_and_ssh_host_keys_of_its_own(host: Any) -> None:
    assert len(host.file("/etc/machine-id").content_string.strip()) == 32
    assert host.file("/etc/ssh/ssh_host_ed25519_key.pub").exists
    assert host.service("ssh").is_running
