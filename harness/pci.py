"""PCI addresses (`domain:bus:slot.function`, e.g. `0000:08:00.0`): read from what a user writes or
from libvirt's domain XML, and written back in the one form the harness uses everywhere (lowercase,
four-digit domain) - the form sysfs names devices by."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

_ADDRESS = re.compile(
    r"^(?:(?P<domain>[0-9a-fA-F]{4}):)?(?P<bus>[0-9a-fA-F]{2}):(?P<slot>[0-1][0-9a-fA-F])\.(?P<fn>[0-7])$"
)


@dataclass(frozen=True)
class PciAddress:
    domain: int
    bus: int
    slot: int
    function: int

    @classmethod
    def parse(cls, value: str) -> PciAddress:
        """`0000:08:00.0` or `08:00.0` (domain 0000); ValueError for anything that is not a PCI address."""
        m = _ADDRESS.match(value.strip())
        if not m:
            raise ValueError(f"{value!r} is not a PCI address like 0000:08:00.0")
        domain, bus, slot, fn = (int(m.group(k) or "0", 16) for k in ("domain", "bus", "slot", "fn"))
        return cls(domain, bus, slot, fn)

    @property
    def fields(self) -> tuple[str, str, str, str]:
        """(domain, bus, slot, function) in hex without `0x`: ("0000", "08", "00", "0")."""
        return f"{self.domain:04x}", f"{self.bus:02x}", f"{self.slot:02x}", f"{self.function:x}"

    def __str__(self) -> str:
        domain, bus, slot, function = self.fields
        return f"{domain}:{bus}:{slot}.{function}"


def normalize_address(value: str) -> str:
    """`08:00.0` → `0000:08:00.0`; raises ValueError for anything that is not a PCI address."""
    return str(PciAddress.parse(value))


def hostdev_addresses(domain_xml: str) -> list[str]:
    """The PCI addresses of the `<hostdev type='pci'>` devices in a libvirt domain's XML (`virsh dumpxml`)."""
    out = []
    for src in ET.fromstring(domain_xml).iterfind("./devices/hostdev[@type='pci']/source/address"):
        dom, bus, slot, fn = (int(src.get(k, "0"), 16) for k in ("domain", "bus", "slot", "function"))
        out.append(str(PciAddress(dom, bus, slot, fn)))
    return out
