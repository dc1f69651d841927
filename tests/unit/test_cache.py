"""The package cache and the air-gapped management network: what the nodes are told, what the host
runs, what the firewall admits, and that the management network keeps DHCP but loses NAT."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import socket
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import accelerator, cache, doctor, host, network, nodes, proc
from harness.errors import HostError, ProviderError
from harness.host import Check
from harness.paths import SCENARIOS_DIR
from harness.provider import libvirt as lv
from harness.rundir import RunState
from harness.spec import load_scenario

SUBNET = ipaddress.IPv4Network("10.213.7.0/24")


def _net(xml: str) -> ET.Element:
    return ET.fromstring(xml)


def test_the_management_network_has_dhcp_and_no_forwarding() -> None:
    root = _net(lv.network_xml("hx-pair-abcdef-mgmt", SUBNET, nat=False, dhcp=True))
    assert root.find("forward") is None, "an air-gapped management network must not forward (no NAT)"
    ip = root.find("ip")
    assert ip is not None and ip.get("address") == "10.213.7.1" and ip.get("netmask") == "255.255.255.0"
    rng = root.find("ip/dhcp/range")
    assert rng is not None and (rng.get("start"), rng.get("end")) == ("10.213.7.2", "10.213.7.254")


def test_nat_keeps_its_meaning_and_isolated_networks_stay_without_dhcp() -> None:
    nat = _net(lv.network_xml("n", SUBNET, nat=True))
    forward = nat.find("forward")
    assert forward is not None and forward.get("mode") == "nat" and nat.find("ip/dhcp") is not None
    private = _net(lv.network_xml("p", SUBNET, nat=False))
    assert private.find("forward") is None and private.find("ip/dhcp") is None


@contextlib.contextmanager
def _fake_connect() -> Iterator[object]:
    yield object()


def test_plan_run_makes_the_management_network_air_gapped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HARNESS_STATE_DIR", str(tmp_path / "state"))
    made: dict[str, dict[str, Any]] = {}

    def create_network(_conn: object, name: str, subnet: ipaddress.IPv4Network, **kw: Any) -> None:
        made[name.rsplit("-", 1)[1]] = {"subnet": subnet, **kw}

    monkeypatch.setattr(lv, "connect", _fake_connect)
    monkeypatch.setattr(lv, "libvirt_networks", lambda _conn: [])
    monkeypatch.setattr(lv, "create_network", create_network)
    monkeypatch.setattr(network, "host_networks", lambda: [])
    sc = load_scenario("pair", [SCENARIOS_DIR])
    run = RunState("pair-abcdef", "pair", str(sc.source), str(tmp_path), os.getpid(), "creating")
    accel = accelerator.Accelerator("qemu", "custom", "qemu64", "TCG")
    nodes.plan_run(sc, run, accel)
    assert made["mgmt"]["nat"] is False and made["mgmt"]["dhcp"] is True
    assert made["priv"]["nat"] is False and not made["priv"].get("dhcp")
    # Every node reaches the cache on-link, at the host's address on the management network.
    assert cache.proxy_url(run.mgmt_subnet) == f"http://{lv.gateway_address(made['mgmt']['subnet'])}:3142"


def test_the_nodes_apt_configuration_names_the_cache_for_http_and_https() -> None:
    url = cache.proxy_url("10.213.7.0/24")
    assert url == "http://10.213.7.1:3142"
    conf = cache.apt_proxy_conf(url)
    assert 'Acquire::http::Proxy "http://10.213.7.1:3142";\n' in conf
    assert 'Acquire::https::Proxy "http://10.213.7.1:3142";\n' in conf
    # apt.conf syntax: every line is a // comment or a statement ending in ';'.
    assert all(ln.startswith("//") or ln.endswith(";") for ln in conf.splitlines())
    assert cache.APT_PROXY_CONF == "/etc/apt/apt.conf.d/01harness-proxy"


def _run(tmp_path: Path) -> RunState:
    r = RunState("pair-abcdef", "pair", "/s.yml", str(tmp_path), 1, "creating", mgmt_subnet="10.213.7.0/24")
    r.nodes = ["mgmt01", "gpu01"]
    return r


def test_up_writes_the_proxy_file_on_every_node_with_sudo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[list[str], str | None]] = []

    def fake_run(argv: list[str], **kw: Any) -> proc.CommandResult:
        calls.append((argv, kw.get("input_text")))
        return proc.CommandResult(tuple(argv), 0, "", "", 0.0)

    monkeypatch.setattr(proc, "run", fake_run)
    run = _run(tmp_path)
    nodes.point_apt_at_cache(run)
    assert sorted(argv[3] for argv, _ in calls) == ["gpu01", "mgmt01"]
    for argv, text in calls:
        assert argv[:3] == ["ssh", "-F", str(run.ssh_config)]
        assert argv[4] == "sudo tee /etc/apt/apt.conf.d/01harness-proxy >/dev/null"
        assert text == cache.apt_proxy_conf("http://10.213.7.1:3142")


def test_a_node_that_refuses_the_proxy_file_fails_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_run(argv: list[str], **_kw: Any) -> proc.CommandResult:
        return proc.CommandResult(tuple(argv), 1 if argv[3] == "gpu01" else 0, "", "sudo: no tty", 0.0)

    monkeypatch.setattr(proc, "run", fake_run)
    with pytest.raises(ProviderError, match="gpu01") as exc:
        nodes.point_apt_at_cache(_run(tmp_path))
    assert "mgmt01" not in str(exc.value)


def test_the_firewall_admits_loopback_and_run_bridges_only() -> None:
    rules = cache.firewall_ruleset()
    lines = [ln.strip() for ln in rules.splitlines()]
    assert 'tcp dport 3142 iifname "lo" accept' in lines
    assert f'tcp dport 3142 iifname "virbr*" ip saddr {network.DEFAULT_POOL} accept' in lines
    assert lines.index("tcp dport 3142 drop") > lines.index('tcp dport 3142 iifname "lo" accept')
    # Reloading replaces the table atomically, and it is the only table the harness touches.
    assert lines[:2] == ["table inet harness_cache", "delete table inet harness_cache"]


def test_every_management_subnet_the_harness_chooses_is_admitted_by_the_firewall() -> None:
    used = [ipaddress.IPv4Network("10.213.0.0/24"), ipaddress.IPv4Network("192.168.122.0/24")]
    wanted = ipaddress.IPv4Network("172.30.5.0/24")  # the scenario may place the private network anywhere
    private, mgmt = network.choose_subnets(2, used, wanted=[wanted])
    assert private == wanted
    assert mgmt.subnet_of(network.DEFAULT_POOL) and not mgmt.overlaps(used[0])
    assert lv.gateway_address(mgmt) in network.DEFAULT_POOL


def _nft_can_check() -> bool:
    if shutil.which("nft") is None or os.geteuid() != 0:
        return False
    probe = subprocess.run(["nft", "-c", "-f", "-"], input="", text=True, capture_output=True, check=False)
    return probe.returncode == 0


@pytest.mark.skipif(not _nft_can_check(), reason="needs nft and root (nft -c checks against the kernel)")
def test_the_firewall_ruleset_is_valid_nft() -> None:
    res = subprocess.run(["nft", "-c", "-f", "-"], input=cache.firewall_ruleset(), text=True, capture_output=True)
    assert res.returncode == 0, res.stderr


def test_the_cache_fetches_debian_only_from_deb_debian_org() -> None:
    conf = cache.config_text()
    lines = [ln for ln in conf.splitlines() if ln and not ln.startswith("#")]
    settings = dict(ln.split(": ", 1) for ln in lines)
    assert settings["ForceManaged"] == "1" and settings["PassThroughPattern"] == "^$"
    assert settings["Port"] == "3142" and settings["BindAddress"] == "0.0.0.0" and settings["ForeGround"] == "0"
    assert settings["PidFile"] == str(cache.PID_FILE)
    remaps = {k: v for k, v in settings.items() if k.startswith("Remap-")}
    assert set(remaps) == {"Remap-harness-debian", "Remap-harness-security"}
    for value in remaps.values():
        prefixes, target = (part.split() for part in value.split(" ; "))
        assert target in (["deb.debian.org/debian"], ["deb.debian.org/debian-security"])
        assert all(p.split("/")[0] in ("deb.debian.org", "security.debian.org") for p in prefixes)


ACNGTOOL = Path("/usr/lib/apt-cacher-ng/acngtool")


@pytest.mark.skipif(not ACNGTOOL.exists(), reason="apt-cacher-ng is not installed")
def test_apt_cacher_ng_reads_the_configuration(tmp_path: Path) -> None:
    (tmp_path / "acng.conf").write_text(cache.config_text())
    res = subprocess.run([str(ACNGTOOL), "cfgdump", "-c", str(tmp_path)], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr
    dumped = dict(ln.split(" = ", 1) for ln in res.stdout.splitlines() if " = " in ln)
    assert dumped["BindAddress"] == "0.0.0.0" and dumped["ForceManaged"] == "1"
    assert "warning" not in res.stderr.lower(), res.stderr


def test_running_pid_needs_a_live_apt_cacher_ng(tmp_path: Path) -> None:
    pid_file, procfs = tmp_path / "pid", tmp_path / "proc"
    assert cache.running_pid(pid_file, procfs) is None
    pid_file.write_text("4242\n")
    assert cache.running_pid(pid_file, procfs) is None  # no such process
    (procfs / "4242").mkdir(parents=True)
    (procfs / "4242" / "comm").write_text("bash\n")
    assert cache.running_pid(pid_file, procfs) is None  # the pid was reused by something else
    (procfs / "4242" / "comm").write_text("apt-cacher-ng\n")
    assert cache.running_pid(pid_file, procfs) == 4242
    pid_file.write_text("garbage")
    assert cache.running_pid(pid_file, procfs) is None


def test_listening_is_a_real_connection() -> None:
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]
        assert cache.listening("127.0.0.1", port)
    assert not cache.listening("127.0.0.1", port, timeout=0.5)


@pytest.mark.parametrize(
    ("st", "ok", "words"),
    [
        (cache.CacheStatus(None, False, None), False, "not running"),
        (cache.CacheStatus(None, True, True), False, "taken by another program"),
        (cache.CacheStatus(7, False, True), False, "does not answer"),
        (cache.CacheStatus(7, True, False), False, "is missing"),
        (cache.CacheStatus(7, True, True), True, "only the loopback and run networks"),
        (cache.CacheStatus(7, True, None), True, "not checked"),
    ],
)
def test_doctor_has_a_package_cache_row(
    st: cache.CacheStatus, ok: bool, words: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cache, "status", lambda: st)
    checks: list[Check] = []
    doctor._cache_check(checks)
    [row] = checks
    assert (row.name, row.ok) == ("package cache", ok) and words in row.value
    assert ("harness host setup" in row.hint) is not ok


def test_up_refuses_to_start_without_the_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache, "status", lambda: cache.CacheStatus(None, False, None))
    with pytest.raises(HostError, match="harness host setup"):
        cache.require_running()


def test_starting_the_cache_needs_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(HostError, match="needs root"):
        cache.ensure_running()


def test_host_setup_installs_apt_cacher_ng() -> None:
    assert "apt-cacher-ng" in host.APT_PACKAGES and "nftables" in host.APT_PACKAGES
