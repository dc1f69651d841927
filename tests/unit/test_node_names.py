"""Node names resolve as at a site with DNS, without any role: each run network's dnsmasq answers
every node's inventory name with its private address (forward and reverse), and nothing else, and
no /etc/hosts line maps a node's own name to the loopback (`up` sets the hostnames itself, not
Vagrant's hostname step)."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import accelerator, network, nodes, proc
from harness.errors import ProviderError
from harness.paths import SCENARIOS_DIR
from harness.provider import libvirt as lv
from harness.rundir import RunState
from harness.spec import load_scenario

SUBNET = ipaddress.IPv4Network("10.213.7.0/24")


class _FakeLibvirt:
    """A libvirt connection with no networks that keeps the XML of each network defined on it."""

    def __init__(self) -> None:
        self.defined: dict[str, str] = {}

    def listAllNetworks(self) -> list[object]:
        return []

    def networkDefineXML(self, xml: str) -> _FakeLibvirt:
        self.defined[str(ET.fromstring(xml).findtext("name"))] = xml
        return self

    def create(self) -> None:
        pass


def _dns_entries(xml: str) -> dict[str, str]:
    """name -> address of a network's <dns><host> entries; every entry holds exactly one name."""
    root = ET.fromstring(xml)
    out: dict[str, str] = {}
    for host in root.findall("dns/host"):
        names = [h.text for h in host.findall("hostname")]
        assert len(names) == 1 and names[0], ET.tostring(host, encoding="unicode")
        out[str(names[0])] = str(host.get("ip"))
    return out


def _planned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[RunState, dict[str, str]]:
    """plan_run for `pair` against a fake libvirt: the run and each network's XML (by name suffix)."""
    monkeypatch.setenv("HARNESS_STATE_DIR", str(tmp_path / "state"))
    conn = _FakeLibvirt()

    @contextlib.contextmanager
    def connect(uri: str = lv.URI) -> Iterator[_FakeLibvirt]:
        yield conn

    monkeypatch.setattr(lv, "connect", connect)
    monkeypatch.setattr(network, "host_networks", list)
    sc = load_scenario("pair", [SCENARIOS_DIR])
    run = RunState("pair-abcdef", "pair", str(sc.source), str(tmp_path), os.getpid(), "creating")
    nodes.plan_run(sc, run, accelerator.Accelerator("qemu", "custom", "qemu64", "TCG"))
    return run, {name.rsplit("-", 1)[1]: xml for name, xml in conn.defined.items()}


def _vagrantfile_private_networks(text: str) -> dict[str, list[str]]:
    """node -> the options of its :private_network, as rendered."""
    out: dict[str, list[str]] = {}
    for node, body in re.findall(r'config\.vm\.define "([^"]+)" do \|node\|\n(.*?)\n  end\n', text, re.S):
        block = re.search(r"node\.vm\.network :private_network,\n((?:      .*\n)+)", body + "\n")
        assert block is not None, body
        out[node] = [opt.strip().rstrip(",") for opt in block.group(1).splitlines()]
    return out


def test_both_run_networks_resolve_every_node_name_to_the_address_the_roles_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run, made = _planned(tmp_path, monkeypatch)
    private = ipaddress.IPv4Network(run.private_subnet)
    # run.private_ips is what the inventory gives the roles as harness_private_ip (what
    # roles/common wrote into /etc/hosts) and what the Vagrantfile puts on each node's eth1.
    assert set(run.private_ips) == {"mgmt01", "gpu01"}
    assert all(ipaddress.IPv4Address(ip) in private for ip in run.private_ips.values())
    for net in ("mgmt", "priv"):
        assert _dns_entries(made[net]) == run.private_ips, net
    text = (run.path / "Vagrantfile").read_text()
    vagrant = _vagrantfile_private_networks(text)
    assert {node: opts[0] for node, opts in vagrant.items()} == {n: f'ip: "{ip}"' for n, ip in run.private_ips.items()}
    # No Vagrant hostname step: it would map each node's own name to 127.0.X.1 in /etc/hosts.
    assert "vm.hostname" not in text and not any("hostname" in opt for opts in vagrant.values() for opt in opts)


def test_up_names_each_node_after_its_inventory_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = RunState("pair-abcdef", "pair", "/s.yml", str(tmp_path), 1, "creating")
    run.nodes = ["mgmt01", "gpu01"]
    commands: dict[str, str] = {}

    def fake_run(argv: list[str], **_kw: object) -> proc.CommandResult:
        commands[argv[-2]] = argv[-1]
        return proc.CommandResult(tuple(argv), 0, "", "", 0.1)

    monkeypatch.setattr(proc, "run", fake_run)
    nodes.name_nodes(run)
    assert commands == {
        node: f"echo {node} | sudo tee /etc/hostname >/dev/null && sudo hostname {node}" for node in run.nodes
    }

    def gpu01_fails(argv: list[str], **_kw: object) -> proc.CommandResult:
        return proc.CommandResult(tuple(argv), 255 if argv[-2] == "gpu01" else 0, "", "Connection refused", 0.1)

    monkeypatch.setattr(proc, "run", gpu01_fails)
    with pytest.raises(ProviderError, match=r"(?s)cannot set the hostname on every node: gpu01: .*Connection refused"):
        nodes.name_nodes(run)


def test_the_network_dns_answers_only_for_the_cluster() -> None:
    names = {"login01": "10.213.8.11", "gpu01": "10.213.8.12"}
    for nat, dhcp in ((False, True), (False, False)):
        root = ET.fromstring(lv.network_xml("hx-pair-abcdef-mgmt", SUBNET, nat=nat, dhcp=dhcp, names=names))
        assert _dns_entries(ET.tostring(root, encoding="unicode")) == names
        # No forwarder and no forward mode: libvirt then writes `no-resolv` and no `server=`, so
        # the dnsmasq asks no outside resolver and refuses names it does not hold.
        assert root.find("dns/forwarder") is None and root.find("forward") is None
        assert root.find("dns").get("enable") in (None, "yes")  # type: ignore[union-attr]
    assert ET.fromstring(lv.network_xml("n", SUBNET, nat=False)).find("dns") is None
