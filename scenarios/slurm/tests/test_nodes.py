"""Each node (testinfra `host`, once per node): its services, ports, munge key, mounts, Lmod.

Tests that apply to some groups only carry `@pytest.mark.groups(...)`: they are collected for
those nodes alone, so nothing here is ever skipped."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from conftest import PORTS, SERVICES, TEST_UID, TEST_USER, WATCHED_PORTS


def _listening_ports(host: Any) -> set[int]:
    with host.sudo():
        out = host.check_output("ss -Hltn")
    ports = set()
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 4:
            ports.add(int(fields[3].rsplit(":", 1)[1]))
    return ports


def test_services_active_and_enabled(node_groups: list[str], service_ok: Callable[[str], None]) -> None:
    for group in node_groups:
        for unit in SERVICES[group]:
            service_ok(unit)


def test_ports_listen_only_where_they_should(host: Any, node_groups: list[str], node_name: str) -> None:
    expected = set().union(*(PORTS[g] for g in node_groups))
    listening = _listening_ports(host) & WATCHED_PORTS
    assert listening == expected, (
        f"{node_name} ({', '.join(node_groups)}): listening on {sorted(listening)}, expected {sorted(expected)}"
    )


def test_munge_key(host: Any) -> None:
    with host.sudo():
        key = host.file("/etc/munge/munge.key")
        assert key.is_file
        assert key.user == "munge" and key.group == "munge"
        assert key.mode == 0o400, f"munge.key mode {oct(key.mode)}"
        assert key.size >= 32


@pytest.mark.groups("login", "gpu")
def test_nfs_mounts(host: Any, cluster: Any) -> None:
    server = cluster.private_ip(cluster.group("mgmt")[0])
    for path in ("/home", "/shared"):
        mount = host.mount_point(path)
        assert mount.exists, f"{path} is not mounted"
        assert mount.filesystem == "nfs4", f"{path} is {mount.filesystem}"
        assert mount.device == f"{server}:{path}"
        assert "hard" in mount.options, f"{path} options {mount.options}"
        fstab = [line.split() for line in host.file("/etc/fstab").content_string.splitlines() if line.strip()]
        entry = [f for f in fstab if len(f) > 3 and f[1] == path and not f[0].startswith("#")]
        assert entry and "_netdev" in entry[0][3].split(","), f"/etc/fstab lacks _netdev for {path}: {entry}"


@pytest.mark.groups("mgmt")
def test_nfs_exports_only_to_private_subnet(host: Any, cluster: Any) -> None:
    subnet = cluster.inventory["all"]["vars"]["harness_private_subnet"]
    with host.sudo():
        exports = host.check_output("exportfs -s")
    table: dict[str, set[str]] = {}
    for line in exports.splitlines():
        if line.strip():
            path, client = line.split()[:2]
            table.setdefault(path, set()).add(client.split("(")[0])
    assert table == {"/home": {subnet}, "/shared": {subnet}}, f"exports: {exports}"


def test_test_user(host: Any) -> None:
    user = host.user(TEST_USER)
    assert user.exists and user.uid == TEST_UID and user.home == f"/home/{TEST_USER}"


@pytest.mark.groups("mgmt", "gpu")
def test_slurm_dirs_owned_by_slurm(host: Any, node_groups: list[str]) -> None:
    dirs = {"mgmt": "/var/lib/slurm/slurmctld", "gpu": "/var/lib/slurm/slurmd"}
    wanted = [dirs[g] for g in node_groups if g in dirs]
    for path in wanted:
        d = host.file(path)
        assert d.is_directory and d.user == "slurm", f"{path}: owner {d.user}"


@pytest.mark.groups("login", "gpu")
def test_lmod_module_command(host: Any) -> None:
    out = host.run("bash -lc 'type module >/dev/null && echo MODULEPATH=$MODULEPATH'")
    assert out.rc == 0, f"no module command in a login shell: {out.stderr}"
    assert "/shared/modules" in out.stdout.split("MODULEPATH=", 1)[1].split(":")
