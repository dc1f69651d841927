from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from harness.cli_gpus import gpus

SYSFS = Path(__file__).resolve().parents[1] / "fixtures" / "sysfs"


def run(*args: str) -> Result:
    return CliRunner().invoke(gpus, list(args), catch_exceptions=False)


@pytest.mark.parametrize(
    ("tree", "code"),
    [("dgx1", 0), ("dgx2", 0), ("consumer", 1), ("iommu_off", 1), ("shared_group", 1)],
)
def test_exit_code_says_whether_every_gpu_is_ready(tree: str, code: int) -> None:
    assert run("--sysfs-root", str(SYSFS / tree)).exit_code == code
    assert run("--sysfs-root", str(SYSFS / tree), "--json").exit_code == code


def test_no_gpu_is_exit_1(tmp_path: Path) -> None:
    result = run("--sysfs-root", str(tmp_path))
    assert result.exit_code == 1
    assert "no PCI device of vendor 10de" in result.output


def test_json_output(tmp_path: Path) -> None:
    result = run("--sysfs-root", str(SYSFS / "dgx2"), "--json")
    data = json.loads(result.output)
    assert data["vfio_ids"] == ["10de:1ac1", "10de:1db1"]
    assert len(data["devices"]) == 28
    first = data["devices"][0]
    assert list(first) == [
        "address", "vendor_id", "device_id", "kind", "driver", "iommu_group", "iommu_group_devices",
        "numa_node", "passthrough_ready", "problems",
    ]  # fmt: skip
    assert first["address"] == "0000:34:00.0" and first["kind"] == "gpu" and first["driver"] == "vfio-pci"


def test_table_lists_devices_and_problems() -> None:
    result = run("--sysfs-root", str(SYSFS / "consumer"))
    out = result.output
    for address in ("0000:01:00.0", "0000:01:00.1", "0000:02:00.0", "0000:02:00.1"):
        assert address in out
    assert "snd_hda_intel" in out and "audio" in out
    assert "[1] 0000:02:00.0 (10de:15fc) is bound to nvidia" in out
    assert "options vfio-pci ids=10de:0fb1,10de:15fc" in " ".join(out.split())
    assert "1 of 2 GPU(s) ready; IOMMU on" in " ".join(out.split())


def test_iommu_off_table() -> None:
    out = " ".join(run("--sysfs-root", str(SYSFS / "iommu_off")).output.split())
    assert "IOMMU off" in out and "intel_iommu=on iommu=pt" in out and "amd_iommu=on iommu=pt" in out


def test_vendor_option_lists_a_stand_in_device() -> None:
    result = run("--sysfs-root", str(SYSFS / "dgx1"), "--vendor", "0x8086", "--json")
    data = json.loads(result.output)
    assert [d["address"] for d in data["devices"]] == ["0000:00:11.4", "0000:81:00.0", "0000:81:00.1"]
    assert data["vfio_ids"] == ["8086:1528", "8086:8d02"]
    assert result.exit_code == 1, "the Intel devices are not on vfio-pci"
    both = json.loads(run("--sysfs-root", str(SYSFS / "dgx1"), "--vendor", "10de", "--vendor", "8086", "--json").output)
    assert len(both["devices"]) == 11


def test_bad_vendor_is_a_usage_error() -> None:
    result = CliRunner().invoke(gpus, ["--vendor", "nvidia"])
    assert result.exit_code == 2
    assert "is not a PCI vendor id" in result.output
