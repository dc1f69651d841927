"""libvirt: the networks, domains and volumes of a run, found by the run's name prefix.

Everything here works from libvirt directly (no Vagrant), so status is fast and cleanup works
even when Vagrant's own state is lost or half-written.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import libvirt

from harness import pci
from harness.errors import ProviderError

log = logging.getLogger(__name__)

URI = "qemu:///system"
POOL = "default"
# Where libvirtd's QEMU driver writes each running domain's pid (system instance).
QEMU_PID_DIR = Path("/run/libvirt/qemu")
RUN_PREFIX = re.compile(r"^hx-([a-z][a-z0-9-]*-[0-9a-f]{6})-")
_STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: "nostate",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "blocked",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutting-down",
    libvirt.VIR_DOMAIN_SHUTOFF: "shutoff",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "suspended",
}


def _quiet(_ctx: object, _err: object) -> None:
    """libvirt prints every error to stderr by default; we report them ourselves."""


@functools.cache
def _quiet_libvirt() -> None:
    """Install `_quiet` as libvirt's error handler, once, when the harness first opens a connection:
    never at import (importing the harness changes nothing in the process)."""
    libvirt.registerErrorHandler(_quiet, None)


@dataclass
class RunObjects:
    domains: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    networks: list[str] = field(default_factory=list)

    def empty(self) -> bool:
        return not (self.domains or self.volumes or self.networks)

    def describe(self) -> str:
        parts = [
            f"{k}: {', '.join(v)}"
            for k, v in (("domains", self.domains), ("volumes", self.volumes), ("networks", self.networks))
            if v
        ]
        return "; ".join(parts) or "nothing"


@dataclass(frozen=True)
class DomainStatus:
    name: str
    state: str
    memory_mib: int
    vcpus: int
    # Resident memory of the domain's QEMU process on the host (guest RAM plus emulator overhead:
    # under TCG the translation cache is most of it). None when not running or unreadable.
    host_rss_mib: int | None = None


@contextmanager
def connect(uri: str = URI) -> Iterator[libvirt.virConnect]:
    _quiet_libvirt()
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError as exc:
        raise ProviderError(
            f"cannot connect to libvirt at {uri}: {exc.get_error_message()}. "
            "Is libvirtd running? `harness host setup` starts it."
        ) from exc
    try:
        yield conn
    finally:
        conn.close()


def answers(uri: str = URI) -> bool:
    """Whether libvirtd takes a new connection and answers a call on it now."""
    try:
        with connect(uri) as conn:
            conn.getLibVersion()
    except (ProviderError, libvirt.libvirtError):
        return False
    return True


def gateway_address(subnet: ipaddress.IPv4Network) -> ipaddress.IPv4Address:
    """The host's own address on a run network (its bridge): the subnet's first host address."""
    return next(subnet.hosts())


def network_xml(
    name: str,
    subnet: ipaddress.IPv4Network,
    *,
    nat: bool,
    dhcp: bool | None = None,
    names: Mapping[str, str] | None = None,
) -> str:
    """A run network. `nat`: VMs reach beyond the host through NAT. Without it the network is
    isolated: VMs reach each other and the host's bridge address, nothing else, and libvirt's DHCP
    hands out no default route. `dhcp` (default: the same as `nat`) serves addresses from the
    subnet; vagrant-libvirt finds its VMs by their DHCP leases on the management network.

    `names` (node name -> address) become the network's DNS host entries: libvirt's dnsmasq on the
    bridge answers them forward and reverse, from the moment the network starts, as a site's DNS
    answers its inventory names. libvirt gives that dnsmasq `no-resolv` and no `server=` line
    unless the XML names a forwarder, and this XML names none: it answers only these names (and
    its DHCP clients'), refuses every other one and asks no outside resolver."""
    hosts = list(subnet.hosts())
    net = ET.Element("network")
    ET.SubElement(net, "name").text = name
    if nat:
        ET.SubElement(net, "forward", mode="nat")
    ET.SubElement(net, "bridge", stp="on", delay="0")
    if names:
        dns = ET.SubElement(net, "dns")
        for node, address in names.items():
            entry = ET.SubElement(dns, "host", ip=address)
            ET.SubElement(entry, "hostname").text = node
    ip = ET.SubElement(net, "ip", address=str(gateway_address(subnet)), netmask=str(subnet.netmask))
    if dhcp if dhcp is not None else nat:
        leases = ET.SubElement(ip, "dhcp")
        ET.SubElement(leases, "range", start=str(hosts[1]), end=str(hosts[-1]))
    return ET.tostring(net, encoding="unicode")


def libvirt_networks(conn: libvirt.virConnect) -> list[ipaddress.IPv4Network]:
    """The IPv4 subnets of every libvirt network, active or not."""
    out = []
    for net in conn.listAllNetworks():
        root = ET.fromstring(net.XMLDesc())
        for ip in root.findall("ip"):
            addr = ip.get("address")
            if not addr or ":" in addr:
                continue
            mask = ip.get("netmask") or ip.get("prefix") or "24"
            out.append(ipaddress.IPv4Network(f"{addr}/{mask}", strict=False))
    return out


def create_network(
    conn: libvirt.virConnect,
    name: str,
    subnet: ipaddress.IPv4Network,
    *,
    nat: bool,
    dhcp: bool | None = None,
    names: Mapping[str, str] | None = None,
) -> None:
    try:
        net = conn.networkDefineXML(network_xml(name, subnet, nat=nat, dhcp=dhcp, names=names))
        net.create()
    except libvirt.libvirtError as exc:
        raise ProviderError(f"cannot create libvirt network {name} ({subnet}): {exc.get_error_message()}") from exc


def run_objects(conn: libvirt.virConnect, prefix: str) -> RunObjects:
    """Every domain, volume (in the default pool) and network whose name starts with `prefix-`."""
    p = prefix + "-"
    objs = RunObjects()
    objs.domains = sorted(d.name() for d in conn.listAllDomains() if d.name().startswith(p))
    objs.networks = sorted(n.name() for n in conn.listAllNetworks() if n.name().startswith(p))
    try:
        pool = conn.storagePoolLookupByName(POOL)
        pool.refresh(0)
        objs.volumes = sorted(v.name() for v in pool.listAllVolumes() if v.name().startswith(p))
    except libvirt.libvirtError:
        objs.volumes = []
    return objs


def run_ids_present(conn: libvirt.virConnect) -> set[str]:
    """Run ids named by any harness-made libvirt object on this host."""
    names = [d.name() for d in conn.listAllDomains()] + [n.name() for n in conn.listAllNetworks()]
    try:
        pool = conn.storagePoolLookupByName(POOL)
        pool.refresh(0)
        names += [v.name() for v in pool.listAllVolumes()]
    except libvirt.libvirtError:
        pass
    return {m.group(1) for n in names if (m := RUN_PREFIX.match(n))}


def domain_statuses(conn: libvirt.virConnect, prefix: str) -> list[DomainStatus]:
    out = []
    for dom in conn.listAllDomains():
        if dom.name().startswith(prefix + "-"):
            state, maxmem, _mem, vcpus, _cpu = dom.info()
            out.append(
                DomainStatus(
                    dom.name(), _STATES.get(state, str(state)), maxmem // 1024, vcpus, qemu_rss_mib(dom.name())
                )
            )
    return sorted(out, key=lambda d: d.name)


def qemu_rss_mib(domain: str, pid_dir: Path = QEMU_PID_DIR, proc_root: Path = Path("/proc")) -> int | None:
    """Host resident memory (MiB) of a running domain's QEMU process, from its pid file and /proc."""
    try:
        pid = int((pid_dir / f"{domain}.pid").read_text().strip())
        status = (proc_root / str(pid) / "status").read_text()
    except (OSError, ValueError):
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024
    return None


def tb_cache_mib(domain_xml: str) -> int | None:
    """The TCG translation cache a domain was given (<features><tcg><tb-cache>), in MiB, or None."""
    node = ET.fromstring(domain_xml).find("./features/tcg/tb-cache")
    if node is None or not (node.text or "").strip().isdigit():
        return None
    scale = {"KiB": 1 / 1024, "k": 1 / 1024, "MiB": 1, "M": 1, "GiB": 1024, "G": 1024}
    return int(int(node.text.strip()) * scale.get(node.get("unit", "KiB"), 1 / 1024))  # type: ignore[union-attr]


def tb_caches(conn: libvirt.virConnect, prefix: str) -> dict[str, int | None]:
    """Domain name → its TCG translation cache in MiB (None: QEMU's default) for every domain of a run."""
    return {d.name(): tb_cache_mib(d.XMLDesc(0)) for d in conn.listAllDomains() if d.name().startswith(prefix + "-")}


def hostdevs_in_use(conn: libvirt.virConnect) -> dict[str, str]:
    """PCI address → running domain that holds it as a hostdev."""
    held: dict[str, str] = {}
    for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
        for address in pci.hostdev_addresses(dom.XMLDesc()):
            held[address] = dom.name()
    return held


def remove_run(conn: libvirt.virConnect, prefix: str) -> RunObjects:
    """Destroy and undefine everything of a run. Returns what is still there afterwards."""
    objs = run_objects(conn, prefix)
    for name in objs.domains:
        try:
            dom = conn.lookupByName(name)
            if dom.isActive():
                dom.destroy()
            flags = (
                libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
            )
            dom.undefineFlags(flags)
        except libvirt.libvirtError as exc:
            log.warning("could not remove domain %s: %s", name, exc.get_error_message())
    if objs.volumes:
        try:
            pool = conn.storagePoolLookupByName(POOL)
            for name in objs.volumes:
                try:
                    pool.storageVolLookupByName(name).delete(0)
                except libvirt.libvirtError as exc:
                    log.warning("could not delete volume %s: %s", name, exc.get_error_message())
        except libvirt.libvirtError as exc:
            log.warning("storage pool %s: %s", POOL, exc.get_error_message())
    for name in objs.networks:
        try:
            net = conn.networkLookupByName(name)
            if net.isActive():
                net.destroy()
            net.undefine()
        except libvirt.libvirtError as exc:
            log.warning("could not remove network %s: %s", name, exc.get_error_message())
    return run_objects(conn, prefix)


def remove_box_volumes(conn: libvirt.virConnect, box_name: str) -> list[str]:
    """Delete the pool volumes vagrant-libvirt made from a box (every version)."""
    stem = box_name.replace("/", "-VAGRANTSLASH-") + "_vagrant_box_image_"
    removed = []
    try:
        pool = conn.storagePoolLookupByName(POOL)
        pool.refresh(0)
        for vol in pool.listAllVolumes():
            if vol.name().startswith(stem):
                vol.delete(0)
                removed.append(vol.name())
    except libvirt.libvirtError as exc:
        raise ProviderError(f"cannot remove the box's volumes from pool {POOL}: {exc.get_error_message()}") from exc
    return removed
