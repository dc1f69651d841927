from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from harness import tools
from harness.errors import ProviderError, SpecError
from harness.inventory import (
    HostConnection,
    build_inventory,
    hosts_in_group,
    load_inventory,
    parse_ssh_config,
    write_inventory,
)
from harness.spec import Node

SSH_CONFIG = """\
Host head
  HostName 192.168.121.10
  User vagrant
  Port 22
  UserKnownHostsFile /dev/null
  StrictHostKeyChecking no
  PasswordAuthentication no
  IdentityFile /runs/abc/.vagrant/machines/head/libvirt/private_key
  IdentitiesOnly yes
  LogLevel FATAL

Host gpu01
  HostName 192.168.121.11
  User vagrant
  Port 2222
  IdentityFile "/runs/my run/.vagrant/machines/gpu01/libvirt/private_key"
  IdentityFile /home/user/.vagrant.d/insecure_private_key
  IdentitiesOnly yes

Host gpu02
  HostName=192.168.121.12
  User = vagrant
  IdentityFile /runs/abc/.vagrant/machines/gpu02/libvirt/private_key
"""


def _nodes() -> list[Node]:
    return [
        Node(name="head", groups=("login", "mgmt"), cpus=2, memory=2048, disk=10, gpus=0),
        Node(name="gpu01", groups=("gpu", "compute"), cpus=8, memory=16384, disk=20, gpus=1),
        Node(name="gpu02", groups=("gpu", "compute"), cpus=8, memory=16384, disk=20, gpus=0),
    ]


def _inventory() -> dict[str, object]:
    return build_inventory(
        _nodes(),
        parse_ssh_config(SSH_CONFIG),
        private_ips={"head": "10.42.0.10", "gpu01": "10.42.0.11", "gpu02": "10.42.0.12"},
        gpus={"gpu01": ["0000:08:00.0"]},
        extra_groups={"slurm_controller": ["head"]},
        cluster_vars={"cluster_name": "tiny", "ansible_python_interpreter": "/opt/python"},
    )


def test_parse_ssh_config_reads_every_host_block() -> None:
    conns = parse_ssh_config(SSH_CONFIG)

    assert list(conns) == ["head", "gpu01", "gpu02"]
    assert conns["head"] == HostConnection(
        "head", "192.168.121.10", 22, "vagrant", Path("/runs/abc/.vagrant/machines/head/libvirt/private_key")
    )
    # Quoted path with a space; the first IdentityFile wins.
    assert conns["gpu01"].port == 2222
    assert conns["gpu01"].private_key == Path("/runs/my run/.vagrant/machines/gpu01/libvirt/private_key")
    # `Key=value` syntax and the default port.
    assert conns["gpu02"].host == "192.168.121.12"
    assert conns["gpu02"].user == "vagrant"
    assert conns["gpu02"].port == 22


def test_parse_ssh_config_defaults_hostname_to_alias() -> None:
    conns = parse_ssh_config("Host node1\n  User vagrant\n  IdentityFile /k\n")
    assert conns["node1"].host == "node1"


def test_parse_ssh_config_reports_every_incomplete_block() -> None:
    text = "Host a\n  HostName 1.2.3.4\n  User vagrant\nHost b\n  HostName 1.2.3.5\n  IdentityFile /k\n"
    with pytest.raises(ProviderError) as err:
        parse_ssh_config(text)
    assert "Host a: no identityfile" in str(err.value)
    assert "Host b: no user" in str(err.value)


def test_build_inventory_hosts_carry_connection_and_node_facts() -> None:
    hosts = _inventory()["all"]["hosts"]  # type: ignore[index]

    assert hosts["gpu01"] == {
        "ansible_host": "192.168.121.11",
        "ansible_port": 2222,
        "ansible_user": "vagrant",
        "ansible_ssh_private_key_file": "/runs/my run/.vagrant/machines/gpu01/libvirt/private_key",
        "harness_private_ip": "10.42.0.11",
        "harness_gpus": ["0000:08:00.0"],
        "harness_cpus": 8,
        "harness_memory_mib": 16384,
    }
    assert hosts["gpu02"]["harness_gpus"] == []
    assert hosts["head"]["harness_private_ip"] == "10.42.0.10"


def test_build_inventory_groups_from_spec_user_groups_and_extra_groups() -> None:
    inv = _inventory()
    children = inv["all"]["children"]  # type: ignore[index]

    assert set(children) == {"login", "mgmt", "gpu", "compute", "slurm_controller"}
    assert hosts_in_group(inv, "gpu") == ["gpu01", "gpu02"]
    assert hosts_in_group(inv, "compute") == ["gpu01", "gpu02"]
    assert hosts_in_group(inv, "mgmt") == ["head"]
    assert hosts_in_group(inv, "slurm_controller") == ["head"]
    assert hosts_in_group(inv, "all") == ["head", "gpu01", "gpu02"]
    assert hosts_in_group(inv, "nonexistent") == []


def test_build_inventory_builtin_groups_exist_even_when_empty() -> None:
    node = Node(name="solo", groups=(), cpus=1, memory=1024, disk=8, gpus=0)
    conn = HostConnection("solo", "192.168.121.5", 22, "vagrant", Path("/k"))
    inv = build_inventory([node], {"solo": conn}, {"solo": "10.0.0.5"}, {}, None, {})

    assert {g: hosts_in_group(inv, g) for g in ("login", "mgmt", "gpu")} == {"login": [], "mgmt": [], "gpu": []}


def test_build_inventory_all_vars_merge_cluster_vars_under_fixed_ssh_settings() -> None:
    all_vars = _inventory()["all"]["vars"]  # type: ignore[index]

    assert all_vars["cluster_name"] == "tiny"
    assert all_vars["ansible_python_interpreter"] == "/usr/bin/python3"
    assert "StrictHostKeyChecking=no" in all_vars["ansible_ssh_common_args"]
    assert "IdentitiesOnly=yes" in all_vars["ansible_ssh_common_args"]


def test_build_inventory_refuses_nodes_without_connection_or_ip() -> None:
    conns = parse_ssh_config(SSH_CONFIG)
    del conns["gpu02"]
    with pytest.raises(ProviderError) as err:
        build_inventory(_nodes(), conns, {"head": "10.0.0.1", "gpu01": "10.0.0.2"}, {}, None, {})
    assert "no SSH details for gpu02" in str(err.value)
    assert "no private IP for gpu02" in str(err.value)


def test_build_inventory_rejects_extra_groups_naming_unknown_nodes() -> None:
    with pytest.raises(SpecError) as err:
        build_inventory(
            _nodes(),
            parse_ssh_config(SSH_CONFIG),
            {"head": "10.0.0.1", "gpu01": "10.0.0.2", "gpu02": "10.0.0.3"},
            {},
            {"storage": ["nfs01"]},
            {},
        )
    assert "unknown node(s) nfs01" in str(err.value)


def test_write_and_load_round_trip(tmp_path: Path) -> None:
    inv = _inventory()
    path = write_inventory(inv, tmp_path / "run" / "inventory.yml")

    assert path == tmp_path / "run" / "inventory.yml"
    assert load_inventory(path) == inv
    assert [p.name for p in path.parent.iterdir()] == ["inventory.yml"]


def test_hosts_in_group_follows_nested_children() -> None:
    inv = {"all": {"children": {"hpc": {"children": {"gpu": {"hosts": {"g1": {}}}}, "hosts": {"h1": {}}}}}}
    assert hosts_in_group(inv, "hpc") == ["h1", "g1"]
    assert hosts_in_group(inv, "gpu") == ["g1"]


def test_load_inventory_rejects_other_yaml(tmp_path: Path) -> None:
    path = tmp_path / "inv.yml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(SpecError):
        load_inventory(path)


def test_ansible_reads_the_written_inventory(tmp_path: Path) -> None:
    # ansible-core is a dependency: found in the harness's own environment, PATH or not.
    path = write_inventory(_inventory(), tmp_path / "inventory.yml")
    out = subprocess.run(
        [tools.find("ansible-inventory"), "-i", str(path), "--list"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    listed = json.loads(out.stdout)

    assert sorted(listed["gpu"]["hosts"]) == ["gpu01", "gpu02"]
    assert listed["slurm_controller"]["hosts"] == ["head"]
    gpu01 = listed["_meta"]["hostvars"]["gpu01"]
    assert gpu01["ansible_port"] == 2222
    assert gpu01["harness_gpus"] == ["0000:08:00.0"]
    assert gpu01["cluster_name"] == "tiny"
    assert "[WARNING]" not in out.stderr
