from __future__ import annotations

import pytest

from harness.pci import PciAddress, hostdev_addresses, normalize_address
from harness.render import PciFunction


@pytest.mark.parametrize(
    ("raw", "normal"),
    [("0000:AF:00.1", "0000:af:00.1"), ("08:00.0", "0000:08:00.0"), (" 0001:1f:1f.7 ", "0001:1f:1f.7")],
)
def test_addresses_are_normalized(raw: str, normal: str) -> None:
    assert normalize_address(raw) == normal


@pytest.mark.parametrize("raw", ["08:00", "0000:08:20.0", "0000:08:00.8", "000:08:00.0", "gpu0"])
def test_what_is_no_pci_address_is_refused(raw: str) -> None:
    with pytest.raises(ValueError, match="is not a PCI address"):
        normalize_address(raw)


def test_fields_are_hex_without_prefix() -> None:
    assert PciAddress.parse("8a:1d.3").fields == ("0000", "8a", "1d", "3")
    assert PciFunction.from_address("0000:8a:1d.3") == PciFunction("0000", "8a", "1d", "3")


def test_hostdevs_from_domain_xml() -> None:
    xml = """<domain type='kvm'><name>x</name><devices>
      <disk type='file'/>
      <hostdev mode='subsystem' type='pci' managed='yes'>
        <source><address domain='0x0000' bus='0x06' slot='0x00' function='0x0'/></source>
      </hostdev>
      <hostdev mode='subsystem' type='usb'><source><vendor id='0x1'/></source></hostdev>
    </devices></domain>"""
    assert hostdev_addresses(xml) == ["0000:06:00.0"]
