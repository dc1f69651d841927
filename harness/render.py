"""Rendering the Vagrantfile: a fully resolved view model in, text out. The template only loops."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from harness import __version__, pci
from harness.accelerator import Accelerator
from harness.errors import HostError
from harness.paths import TEMPLATES_DIR
from harness.provider import libvirt as lv
from harness.spec import Node, Scenario

# Vagrant's wait for a booting node's SSH on a quiet host; `up` stretches it with the host's load
# (reach.connect_timeout): 14 TCG VMs booting on 2 cores took longer than 10 minutes.
BOOT_TIMEOUT_S = 600
MAX_BOOT_TIMEOUT_S = 2400


@dataclass(frozen=True)
class PciFunction:
    domain: str  # 4 hex digits
    bus: str  # 2 hex digits
    slot: str  # 2 hex digits
    function: str  # 1 hex digit

    @classmethod
    def from_address(cls, address: str) -> PciFunction:
        return cls(*pci.PciAddress.parse(address).fields)


@dataclass(frozen=True)
class NodeView:
    name: str
    groups: tuple[str, ...]
    cpus: int
    memory: int
    disk: int
    private_ip: str
    hostdevs: tuple[PciFunction, ...] = ()
    viommu: bool = False
    emulated_devices: tuple[str, ...] = ()
    # A box of the node's own (`nodes[*].box`) where it is not the run's; None: the run's box.
    box: str | None = None
    box_version: str | None = None

    @property
    def q35(self) -> bool:
        return bool(self.hostdevs) or self.viommu

    @property
    def emulated_device_args(self) -> tuple[str, ...]:
        """`-device` values with fixed slots at the top of the root bus: QEMU creates these before
        libvirt's own devices, so an automatic address would take a slot libvirt has planned for."""
        bus = "pcie.0" if self.q35 else "pci.0"
        return tuple(f"{model},bus={bus},addr={0x1D - i:#04x}" for i, model in enumerate(self.emulated_devices))


@dataclass(frozen=True)
class RunView:
    run_id: str
    prefix: str
    scenario: str
    source: str
    box: str
    # The version a box recipe builds now; Vagrant would otherwise take the highest version number,
    # and recipe versions come from content hashes, not from build order.
    box_version: str | None
    driver: str
    cpu_mode: str
    cpu_model: str | None
    accel_reason: str
    tb_cache_mib: int | None
    mgmt_network: str
    mgmt_subnet: str
    private_network: str
    private_subnet: str
    run_dir: str
    pool: str = lv.POOL
    uri: str = lv.URI
    synced_folders: bool = False
    boot_timeout: int = 600  # Vagrant's wait for a node's SSH (BOOT_TIMEOUT_S, stretched with the host's load)
    harness_version: str = __version__

    @property
    def private_netmask(self) -> str:
        return str(ipaddress.IPv4Network(self.private_subnet).netmask)

    @property
    def description(self) -> str:
        return f"harness run {self.run_id}"


@dataclass(frozen=True)
class VagrantfileView:
    run: RunView
    nodes: tuple[NodeView, ...] = field(default_factory=tuple)


def private_ips(subnet: ipaddress.IPv4Network, nodes: Sequence[Node]) -> dict[str, str]:
    """Node addresses on the private network: .1 is the host, nodes from .11 (or .2 on small nets)."""
    hosts = list(subnet.hosts())
    start = 10 if len(hosts) > 10 + len(nodes) else 1
    return {n.name: str(hosts[start + i]) for i, n in enumerate(nodes)}


def build_view(
    scenario: Scenario,
    *,
    run_id: str,
    prefix: str,
    run_dir: Path,
    accel: Accelerator,
    mgmt_subnet: ipaddress.IPv4Network,
    private_subnet: ipaddress.IPv4Network,
    hostdevs: Mapping[str, Sequence[str]] | None = None,
    box_versions: Mapping[str, str | None] | None = None,
    boot_timeout: int = BOOT_TIMEOUT_S,
) -> VagrantfileView:
    """`box_versions`: box name → the version its recipe builds now (None: a box from elsewhere),
    for every box the scenario's nodes use (preflight.check_box)."""
    nodes = scenario.expanded_nodes()
    versions = box_versions or {}
    ips = private_ips(private_subnet, nodes)
    devs = hostdevs or {}
    run = RunView(
        run_id=run_id,
        prefix=prefix,
        scenario=scenario.name,
        source=str(scenario.source),
        box=scenario.box,
        box_version=versions.get(scenario.box),
        driver=accel.driver,
        cpu_mode=accel.cpu_mode,
        cpu_model=accel.cpu_model,
        accel_reason=accel.reason,
        tb_cache_mib=accel.tb_cache_mib if accel.is_tcg else None,
        mgmt_network=f"{prefix}-mgmt",
        mgmt_subnet=str(mgmt_subnet),
        private_network=f"{prefix}-priv",
        private_subnet=str(private_subnet),
        run_dir=str(run_dir),
        synced_folders=scenario.synced_folders,
        boot_timeout=boot_timeout,
    )
    views = tuple(
        NodeView(
            name=n.name,
            groups=n.groups,
            cpus=n.cpus,
            memory=n.memory,
            disk=n.disk,
            private_ip=ips[n.name],
            hostdevs=tuple(PciFunction.from_address(a) for a in devs.get(n.name, ())),
            viommu=n.viommu,
            emulated_devices=n.emulated_devices,
            box=None if n.box == scenario.box else n.box,
            box_version=None if n.box == scenario.box else versions.get(n.box),
        )
        for n in nodes
    )
    return VagrantfileView(run=run, nodes=views)


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )


def render_vagrantfile(view: VagrantfileView) -> str:
    try:
        template = _environment().get_template("Vagrantfile.j2")
    except jinja2.TemplateNotFound as exc:
        raise HostError(
            f"the Vagrantfile template {exc.name} is not in {TEMPLATES_DIR}: the harness is installed without "
            "its package data; reinstall it (`pip install -e .` in a checkout, or the wheel)"
        ) from exc
    return template.render(run=view.run, nodes=view.nodes)
