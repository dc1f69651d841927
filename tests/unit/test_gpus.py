from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path
from types import ModuleType

import pytest

from harness.gpus import Discovery, PciDevice, discover

SYSFS = Path(__file__).resolve().parents[1] / "fixtures" / "sysfs"
DGX1_GPUS = [
    "0000:06:00.0", "0000:07:00.0", "0000:0a:00.0", "0000:0b:00.0",
    "0000:85:00.0", "0000:86:00.0", "0000:89:00.0", "0000:8a:00.0",
]  # fmt: skip


def tree(name: str) -> Discovery:
    return discover(SYSFS / name)


def dev(d: Discovery, address: str) -> PciDevice:
    found = d.device(address)
    assert found is not None, f"{address} not discovered"
    return found


def _load_make_trees() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_trees", SYSFS / "make_trees.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _snapshot(root: Path) -> dict[str, str]:
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = "-> " + os.readlink(path)
        elif path.is_file():
            out[rel] = path.read_text()
    return out


@pytest.mark.parametrize("name", ["dgx1", "dgx2", "consumer", "iommu_off", "shared_group"])
def test_committed_trees_match_the_generator(name: str, tmp_path: Path) -> None:
    make_trees = _load_make_trees()
    make_trees.build_tree(tmp_path / name, make_trees.TREES[name])
    assert _snapshot(SYSFS / name) == _snapshot(tmp_path / name), "run tests/fixtures/sysfs/make_trees.py"


def test_trees_are_relocatable(tmp_path: Path) -> None:
    shutil.copytree(SYSFS / "consumer", tmp_path / "moved", symlinks=True)
    assert discover(tmp_path / "moved").to_json() == tree("consumer").to_json()


def test_dgx1_lists_eight_ready_v100s_and_filters_other_vendors() -> None:
    d = tree("dgx1")
    assert [x.address for x in d.devices] == DGX1_GPUS
    assert all(x.kind == "gpu" and x.ids == "10de:1db1" and x.driver == "vfio-pci" for x in d.devices)
    assert all(x.passthrough_ready and x.problems == () for x in d.devices)
    assert [x.numa_node for x in d.devices] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert len({x.iommu_group for x in d.devices}) == 8
    assert dev(d, "0000:06:00.0").iommu_group_devices == ("0000:06:00.0",)
    assert d.iommu_enabled
    assert d.vfio_ids == ("10de:1db1",)
    assert len(d.gpus) == 8


def test_dgx2_has_nvswitches_all_on_vfio() -> None:
    d = tree("dgx2")
    kinds = [x.kind for x in d.devices]
    assert kinds.count("gpu") == 16
    assert kinds.count("nvswitch") == 12
    assert {x.ids for x in d.devices if x.kind == "nvswitch"} == {"10de:1ac1"}
    assert all(x.passthrough_ready for x in d.devices)
    assert d.vfio_ids == ("10de:1ac1", "10de:1db1")
    assert len(d.gpus) == 16


def test_consumer_card_functions_share_a_group() -> None:
    d = tree("consumer")
    assert [x.address for x in d.devices] == ["0000:01:00.0", "0000:01:00.1", "0000:02:00.0", "0000:02:00.1"]
    assert dev(d, "0000:01:00.1").kind == "audio"
    assert dev(d, "0000:01:00.0").iommu_group_devices == ("0000:01:00.0", "0000:01:00.1")
    assert dev(d, "0000:01:00.0").passthrough_ready
    assert dev(d, "0000:01:00.1").passthrough_ready
    assert dev(d, "0000:01:00.0").numa_node is None
    assert d.vfio_ids == ("10de:0fb1", "10de:15fc")


def test_consumer_gpu_on_nvidia_gets_vfio_advice_and_names_its_audio_mate() -> None:
    gpu = dev(tree("consumer"), "0000:02:00.0")
    assert gpu.driver == "nvidia"
    assert not gpu.passthrough_ready
    bound, mate = gpu.problems
    assert "0000:02:00.0" in bound and "bound to nvidia" in bound
    assert "options vfio-pci ids=10de:0fb1,10de:15fc" in bound
    assert "/etc/modprobe.d/vfio.conf" in bound and "softdep nvidia pre: vfio-pci" in bound
    assert "initramfs" in bound and "roles/vfio_host" in bound
    assert "0000:02:00.1" in mate and "snd_hda_intel" in mate and "IOMMU group 14" in mate


def test_consumer_audio_on_snd_hda_intel_gets_a_softdep_for_it() -> None:
    audio = dev(tree("consumer"), "0000:02:00.1")
    assert audio.driver == "snd_hda_intel"
    assert "softdep snd_hda_intel pre: vfio-pci" in audio.problems[0]
    assert "0000:02:00.0" in audio.problems[1] and "nvidia" in audio.problems[1]


def test_iommu_off_names_both_kernel_options_and_the_driver() -> None:
    d = tree("iommu_off")
    assert not d.iommu_enabled
    (gpu,) = d.devices
    assert (gpu.address, gpu.kind, gpu.driver, gpu.iommu_group) == ("0000:01:00.0", "gpu", "nvidia", None)
    assert gpu.iommu_group_devices == ()
    iommu, bound = gpu.problems
    assert "0000:01:00.0" in iommu
    assert "intel_iommu=on iommu=pt" in iommu and "amd_iommu=on iommu=pt" in iommu
    assert "reboot" in iommu and "vfio_host" in iommu
    assert "bound to nvidia" in bound and "ids=10de:2204" in bound


def test_shared_group_blames_the_nic_but_not_the_bridge() -> None:
    d = tree("shared_group")
    assert [x.address for x in d.devices] == ["0000:00:1c.0", "0000:03:00.0", "0000:04:00.0"]
    gpu = dev(d, "0000:03:00.0")
    assert gpu.driver == "vfio-pci"
    assert gpu.iommu_group_devices == ("0000:00:1c.0", "0000:03:00.0", "0000:04:00.0")
    assert not gpu.passthrough_ready
    (problem,) = gpu.problems
    assert "0000:04:00.0" in problem and "e1000e" in problem and "0000:00:1c.0" not in problem
    bridge = dev(d, "0000:00:1c.0")
    assert bridge.is_bridge and bridge.driver == "pcieport" and bridge.problems == ()
    assert dev(d, "0000:04:00.0").kind == "other"
    assert d.vfio_ids == ("10de:1db1",), "group mates of another vendor are not vfio ids"


def test_other_vendor_can_be_asked_for() -> None:
    d = discover(SYSFS / "dgx1", frozenset({"8086"}))
    assert [x.address for x in d.devices] == ["0000:00:11.4", "0000:81:00.0", "0000:81:00.1"]
    assert d.vfio_ids == ("8086:1528", "8086:8d02")
    nic = dev(d, "0000:81:00.0")
    assert "ixgbe" in nic.problems[0] and "softdep ixgbe pre: vfio-pci" in nic.problems[0]
    assert "softdep nvidia" not in nic.problems[0]
    assert len(d.gpus) == 3, "a stand-in rehearsal may ask for any non-bridge device of the vendor"


def test_to_json_shape() -> None:
    data = tree("consumer").to_json()
    assert set(data) == {"devices", "vfio_ids"}
    assert data["vfio_ids"] == ["10de:0fb1", "10de:15fc"]
    devices = data["devices"]
    assert isinstance(devices, list)
    assert devices[0] == {
        "address": "0000:01:00.0",
        "vendor_id": "10de",
        "device_id": "15fc",
        "kind": "gpu",
        "driver": "vfio-pci",
        "iommu_group": 13,
        "iommu_group_devices": ["0000:01:00.0", "0000:01:00.1"],
        "numa_node": None,
        "passthrough_ready": True,
        "problems": [],
    }
    assert devices[2]["driver"] == "nvidia" and len(devices[2]["problems"]) == 2


def test_unbound_device_and_missing_sysfs(tmp_path: Path) -> None:
    make_trees = _load_make_trees()
    make_trees.build_tree(tmp_path / "t", "0000:01:00.0  10de:1db1  030200  -  3  0")
    (gpu,) = discover(tmp_path / "t").devices
    assert gpu.driver is None and not gpu.passthrough_ready
    assert "bound to no driver" in gpu.problems[0] and "options vfio-pci ids=10de:1db1" in gpu.problems[0]
    empty = discover(tmp_path / "nothing")
    assert empty.devices == () and not empty.iommu_enabled and empty.vfio_ids == ()
