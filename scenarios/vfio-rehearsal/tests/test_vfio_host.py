"""roles/vfio_host on a VM with an emulated Intel IOMMU and a stand-in device (conftest.STANDIN_IDS):
the IOMMU is on, the device is bound to vfio-pci, and the harness's own discovery judges it ready."""

from __future__ import annotations

import json
from typing import Any

from conftest import NODE, STANDIN_IDS


def test_kernel_runs_with_the_iommu_parameters(host: Any) -> None:
    cmdline = host.file("/proc/cmdline").content_string.split()
    assert "intel_iommu=on" in cmdline, cmdline
    assert "iommu=pt" in cmdline, cmdline


def test_iommu_groups_exist(host: Any) -> None:
    groups = host.run("ls /sys/kernel/iommu_groups")
    assert groups.rc == 0, groups.stderr
    assert groups.stdout.split(), "/sys/kernel/iommu_groups is empty: the IOMMU is off"


def test_vfio_configuration_files(host: Any) -> None:
    modules = host.file("/etc/modules-load.d/vfio.conf").content_string.split()
    assert {"vfio", "vfio_iommu_type1", "vfio_pci"} <= set(modules)
    modprobe = host.file("/etc/modprobe.d/vfio.conf").content_string
    assert f"options vfio-pci ids={STANDIN_IDS}" in modprobe
    assert "softdep nvidia pre: vfio-pci" in modprobe
    assert "softdep snd_hda_intel pre: vfio-pci" in modprobe


def test_vfio_modules_are_loaded(host: Any) -> None:
    for module in ("vfio", "vfio_iommu_type1", "vfio_pci"):
        assert host.file(f"/sys/module/{module}").is_directory, f"module {module} is not loaded"


def test_standin_device_is_bound_to_vfio_pci(host: Any) -> None:
    # `lspci` is not in the box; sysfs says the same.
    out = host.run(
        "for d in /sys/bus/pci/devices/*; do "
        'echo "${d##*/} $(cat $d/vendor):$(cat $d/device) $(basename "$(readlink $d/driver)")"; done'
    ).stdout
    vendor, device = STANDIN_IDS.split(":")
    found = [line.split() for line in out.splitlines() if f"0x{vendor}:0x{device}" in line]
    assert found, f"no device {STANDIN_IDS} in the VM:\n{out}"
    assert all(fields[-1] == "vfio-pci" for fields in found), found
    assert host.file("/dev/vfio/vfio").exists


def test_harness_gpus_judges_the_standin_ready(vm_discovery: dict[str, Any]) -> None:
    """`harness gpus --vendor <stand-in vendor> --json`, run inside the VM: the stand-in is ready.
    (The vendor's other devices, the VM's disk and NICs, stay with their drivers and are not.)"""
    discovery = vm_discovery["discovery"]
    assert vm_discovery["iommu_enabled"], discovery
    found = [d for d in discovery["devices"] if f"{d['vendor_id']}:{d['device_id']}" == STANDIN_IDS]
    assert found, json.dumps(discovery, indent=2)
    dev = found[0]
    assert dev["driver"] == "vfio-pci", dev
    assert dev["kind"] == "other", dev
    assert dev["iommu_group"] is not None, dev
    assert dev["passthrough_ready"], f"{NODE}: {dev['problems']}"
    assert dev["address"] in vm_discovery["gpus"], f"{NODE}: {vm_discovery}"
    assert STANDIN_IDS in discovery["vfio_ids"]
