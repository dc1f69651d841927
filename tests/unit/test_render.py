from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from harness.accelerator import TCG_TB_CACHE_MIB, Accelerator, tb_cache_setting
from harness.errors import UsageError
from harness.render import build_view, private_ips, render_vagrantfile
from harness.spec import parse_scenario

FIX = Path(__file__).parent.parent / "fixtures"
TCG = Accelerator("qemu", "custom", "qemu64", "TCG (software emulation, slow): test", TCG_TB_CACHE_MIB)
KVM = Accelerator("kvm", "host-passthrough", None, "KVM", tb_cache_mib=512)  # never rendered under KVM


def render(
    name: str,
    accel: Accelerator,
    hostdevs: dict[str, list[str]] | None = None,
    box_versions: dict[str, str | None] | None = None,
) -> str:
    path = FIX / "scenarios" / "valid" / f"{name}.yml"
    sc = parse_scenario(path.read_text(), path)
    sc = sc.model_copy(update={"source": Path(f"/scenarios/{name}.yml")})
    view = build_view(
        sc,
        run_id=f"{name}-abc123",
        prefix=f"hx-{name}-abc123",
        run_dir=Path(f"/runs/{name}-abc123"),
        accel=accel,
        mgmt_subnet=ipaddress.IPv4Network("10.213.7.0/24"),
        private_subnet=sc.network.subnet or ipaddress.IPv4Network("10.213.8.0/24"),
        hostdevs=hostdevs,
        box_versions=box_versions,
    )
    return render_vagrantfile(view)


CASES = {
    "full-tcg": lambda: render("full", TCG),
    "minimal-kvm": lambda: render("minimal", KVM),
    "mixed-boxes-kvm": lambda: render(
        "mixed-boxes",
        KVM,
        box_versions={
            "harness/debian12": "1.0.1",
            "harness/debian13": "1.0.13",
            "harness/ubuntu2204": "1.0.2204",
            "example/rocky9": None,
        },
    ),
    "vfio-rehearsal-tcg": lambda: render("vfio-rehearsal", TCG),
    "passthrough-kvm": lambda: render(
        "passthrough", KVM, {"gpu01": ["0000:08:00.0", "0000:08:00.1"], "gpu02": ["0000:af:00.0"]}
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case: str, update_golden: bool) -> None:
    golden = FIX / "golden" / f"Vagrantfile.{case}"
    text = CASES[case]()
    if update_golden:
        golden.write_text(text)
    assert text == golden.read_text(), f"output differs from {golden}; rerun with --update-golden if intended"


def test_every_node_defined_once_with_unique_run_names() -> None:
    text = render("full", TCG)
    for node in ("login01", "mgmt01", "gpu01", "gpu02"):
        assert text.count(f'config.vm.define "{node}"') == 1
    assert 'libvirt.default_prefix = "hx-full-abc123-"' in text
    assert 'management_network_name = "hx-full-abc123-mgmt"' in text
    assert text.count('libvirt__network_name: "hx-full-abc123-priv"') == 4
    assert 'libvirt.driver = "qemu"' in text and 'cpu_model = "qemu64"' in text
    assert 'synced_folder ".", "/vagrant", disabled: true' in text


def test_kvm_uses_host_cpu_and_passthrough_gets_q35_and_pci() -> None:
    text = render("passthrough", KVM, {"gpu01": ["0000:08:00.0", "0000:08:00.1"]})
    assert 'libvirt.driver = "kvm"' in text and 'cpu_mode = "host-passthrough"' in text and "cpu_model" not in text
    assert text.count('v.machine_type = "q35"') == 1
    assert ':bus => "0x08", :slot => "0x00", :function => "0x1"' in text


def test_private_ips_leave_room_for_the_host() -> None:
    path = FIX / "scenarios" / "valid" / "full.yml"
    nodes = parse_scenario(path.read_text(), path).expanded_nodes()
    ips = private_ips(ipaddress.IPv4Network("10.1.2.0/24"), nodes)
    assert ips == {"login01": "10.1.2.11", "mgmt01": "10.1.2.12", "gpu01": "10.1.2.13", "gpu02": "10.1.2.14"}
    small = private_ips(ipaddress.IPv4Network("10.1.2.0/28"), nodes)
    assert small["login01"] == "10.1.2.2"


TB_CACHE_LINE = "tcg><tb-cache unit='MiB'>{}</tb-cache></tcg><pae"


def test_tcg_caps_the_translation_cache_and_kvm_never_does() -> None:
    assert TB_CACHE_LINE.format(TCG_TB_CACHE_MIB) in render("full", TCG)
    default = render("full", Accelerator("qemu", "custom", "qemu64", "TCG", None))
    assert "tb-cache" not in default and "libvirt.features" not in default
    assert "tb-cache" not in render("minimal", KVM)


def test_tb_cache_setting() -> None:
    assert tb_cache_setting(None) == TCG_TB_CACHE_MIB
    assert tb_cache_setting(" ") == TCG_TB_CACHE_MIB
    assert tb_cache_setting("128") == 128
    assert tb_cache_setting("0") is None  # QEMU's own default
    for bad in ("-1", "8", "lots", "1.5"):
        with pytest.raises(UsageError, match="HARNESS_TCG_TB_CACHE"):
            tb_cache_setting(bad)
