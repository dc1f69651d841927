"""roles/common on every node (testinfra `host`, once per node) and across nodes (`cluster`)."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest

from harness import ssh

CHRONY_CONF = "/etc/chrony/chrony.conf"
PUBLIC_POOL_WORDS = ("pool ", "debian.pool.ntp.org")


def _key_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _chrony_sources(output: str) -> list[str]:
    """Addresses from `chronyc -n sources` (lines like `^* 10.0.0.1  10 6 377 ...`)."""
    return [line.split()[1] for line in output.splitlines() if line[:1] in "^=#" and len(line.split()) > 1]


def _time_servers(cluster: Any, group: str) -> list[str]:
    return [cluster.private_ip(n) for n in cluster.group(group)]


# --- admin user -------------------------------------------------------------------------------


def test_admin_user_exists_with_locked_password(host: Any, role_vars: dict[str, Any]) -> None:
    admin = role_vars["common_admin_user"]
    user = host.user(admin)
    assert user.exists, f"user {admin} is missing"
    assert user.shell == role_vars["common_admin_shell"]
    with host.sudo():
        status = host.check_output(f"passwd -S {admin}").split()
    assert status[1] == "L", f"{admin}'s password is not locked: passwd -S says {status}"


def test_admin_user_has_the_cluster_key(host: Any, role_vars: dict[str, Any]) -> None:
    admin = role_vars["common_admin_user"]
    keys = host.file(f"/home/{admin}/.ssh/authorized_keys")
    with host.sudo():
        assert keys.exists and keys.user == admin and keys.mode == 0o600
        admin_keys = set(_key_lines(keys.content_string))
    connecting = _key_lines(host.file(f"{host.user().home}/.ssh/authorized_keys").content_string)
    missing = [k for k in connecting if k not in admin_keys]
    assert connecting and not missing, f"{admin} lacks the connecting user's keys: {missing}"


def test_admin_user_can_sudo_without_password(host: Any, role_vars: dict[str, Any]) -> None:
    admin = role_vars["common_admin_user"]
    out = host.run(f"sudo -n -u {admin} sudo -n id -u")
    assert out.rc == 0 and out.stdout.strip() == "0", f"{admin} cannot sudo without a password: {out.stderr}"
    with host.sudo():
        sudoers = host.file(f"/etc/sudoers.d/{admin}")
        assert sudoers.mode == 0o440 and sudoers.user == "root"


def test_admin_user_logs_in_over_ssh_with_the_cluster_key(
    cluster: Any, node_name: str, role_vars: dict[str, Any]
) -> None:
    """End to end from this machine: ssh as the admin user with the inventory's key, then sudo."""
    hv = cluster.vars(node_name)
    key = hv.get("ansible_ssh_private_key_file") or hv.get("ansible_private_key_file")
    if not key or not os.path.isfile(str(key)):
        pytest.skip("the inventory names no private key file for this node")
    argv = [
        "ssh", "-i", str(key), "-p", str(hv.get("ansible_port", 22)),
        *ssh.args({**ssh.NODE_CONFIG, "BatchMode": "yes", "ConnectTimeout": "30"}),
        f"{role_vars['common_admin_user']}@{hv.get('ansible_host', hv['inventory_hostname'])}",
        "sudo -n true",
    ]  # fmt: skip
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, f"ssh as the admin user failed (rc={out.returncode}): {out.stderr.strip()}"


# --- names --------------------------------------------------------------------------------------


def test_hostname_is_the_node_name(host: Any, node_name: str) -> None:
    assert host.check_output("hostname") == node_name


def test_hosts_resolve_every_node_to_its_private_ip(host: Any, cluster: Any) -> None:
    wrong = {}
    for node in cluster.nodes:
        out = host.run(f"getent hosts {node}")
        got = out.stdout.split()[0] if out.rc == 0 and out.stdout.split() else None
        if got != cluster.private_ip(node):
            wrong[node] = f"{got} (want {cluster.private_ip(node)})"
    assert not wrong, f"/etc/hosts on {host.backend.get_hostname()} resolves wrongly: {wrong}"


def test_every_node_pings_the_others_by_name(cluster: Any) -> None:
    failed = []
    for src in cluster.nodes:
        for dst in cluster.nodes:
            if src != dst:
                out = cluster.run(src, f"ping -c 1 -W 5 {dst}")
                if out.rc != 0:
                    failed.append(f"{src} -> {dst}: rc={out.rc} {out.stdout.strip()} {out.stderr.strip()}")
    assert not failed, "ping by name failed:\n" + "\n".join(failed)


# --- time ---------------------------------------------------------------------------------------


def test_chrony_runs(service_ok: Callable[[str], None]) -> None:
    service_ok("chrony")


def test_chrony_sources(host: Any, cluster: Any, node_name: str, role_vars: dict[str, Any]) -> None:
    group = role_vars["common_time_server_group"]
    conf = host.file(CHRONY_CONF).content_string
    directives = [line.split()[0] for line in _key_lines(conf)]
    sources = _chrony_sources(host.check_output("chronyc -n sources"))
    if node_name in cluster.group(group):
        assert "allow" in directives, f"{CHRONY_CONF} on the time server has no allow line"
        assert "local" in directives, f"{CHRONY_CONF} on the time server has no 'local stratum'"
        assert not any(w in conf for w in PUBLIC_POOL_WORDS), f"{CHRONY_CONF} still names a public pool"
        assert set(sources) <= set(role_vars["common_ntp_upstream"]), f"unexpected sources: {sources}"
    else:
        assert sources == _time_servers(cluster, group), f"chrony sources {sources}, want only the time server"
        assert "allow" not in directives and "pool" not in directives


def test_clients_get_replies_from_the_time_server(cluster: Any) -> None:
    """Every non-server node's chrony reaches the time server (Reach register non-zero)."""
    clients = [n for n in cluster.nodes if n not in cluster.group("mgmt")]
    if not clients:
        pytest.skip("no node besides the time server")
    deadline = time.monotonic() + 120
    pending = set(clients)
    last: dict[str, str] = {}
    while pending and time.monotonic() < deadline:
        for node in sorted(pending):
            out = cluster.run(node, "chronyc -n sources")
            last[node] = out.stdout
            rows = [line.split() for line in out.stdout.splitlines() if line[:1] == "^" and len(line.split()) > 4]
            if any(row[4] != "0" for row in rows):
                pending.discard(node)
        if pending:
            time.sleep(5)
    assert not pending, "no reply from the time server:\n" + "\n".join(f"{n}:\n{last[n]}" for n in sorted(pending))


# --- sshd, swap, packages ---------------------------------------------------------------------


def test_sshd_keepalive(host: Any, role_vars: dict[str, Any], service_ok: Callable[[str], None]) -> None:
    service_ok("ssh")
    with host.sudo():
        effective = set(host.check_output("sshd -T").splitlines())
    assert f"clientaliveinterval {role_vars['common_sshd_client_alive_interval']}" in effective
    assert f"clientalivecountmax {role_vars['common_sshd_client_alive_count_max']}" in effective


def test_swap_is_off(host: Any) -> None:
    assert host.check_output("/usr/sbin/swapon --show") == ""
    active = [f.split() for f in _key_lines(host.file("/etc/fstab").content_string)]
    assert not [f for f in active if len(f) > 2 and f[2] == "swap"], "/etc/fstab still has an active swap line"


def test_unattended_upgrades_is_not_installed(host: Any) -> None:
    assert not host.package("unattended-upgrades").is_installed


def test_apt_updates_are_stamped(host: Any) -> None:
    """The box has no stamp; the converge's update of the lists (after the role's hook) made it. Without
    it Ansible's apt module judges `cache_valid_time` by the lists directory, which an update that
    finds nothing new leaves old: every later apt task then updated again."""
    assert host.file("/var/lib/apt/periodic/update-success-stamp").is_file
    conf = host.check_output("apt-config dump APT::Update::Post-Invoke-Success")
    assert "/var/lib/apt/periodic/update-success-stamp" in conf, conf


# --- locale and timezone ----------------------------------------------------------------------


def test_timezone(host: Any, role_vars: dict[str, Any]) -> None:
    tz = role_vars["common_timezone"]
    assert host.check_output("readlink /etc/localtime") == f"/usr/share/zoneinfo/{tz}"
    assert host.file("/etc/timezone").content_string.strip() == tz


def test_locale(host: Any, role_vars: dict[str, Any]) -> None:
    locale = role_vars["common_locale"]
    assert f"LANG={locale}" in _key_lines(host.file("/etc/default/locale").content_string)
    available = {name.lower().replace("-", "") for name in host.check_output("locale -a").split()}
    assert locale.lower().replace("-", "") in available, f"{locale} is not available: {sorted(available)}"
