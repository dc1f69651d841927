"""Pieces of harness.provider.libvirt that need no libvirtd: host memory of a domain's QEMU."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from harness.provider import libvirt as lv


def _fake(tmp_path: Path, pid_text: str, status: str | None) -> tuple[Path, Path]:
    pid_dir, proc = tmp_path / "qemu", tmp_path / "proc"
    pid_dir.mkdir()
    (pid_dir / "hx-run-node.pid").write_text(pid_text)
    if status is not None:
        (proc / "4242").mkdir(parents=True)
        (proc / "4242" / "status").write_text(status)
    return pid_dir, proc


def test_rss_comes_from_the_qemu_process_of_the_domain(tmp_path: Path) -> None:
    pid_dir, proc = _fake(tmp_path, "4242\n", "Name:\tqemu-system-x86\nVmPeak:\t 9999999 kB\nVmRSS:\t 1572864 kB\n")
    assert lv.qemu_rss_mib("hx-run-node", pid_dir, proc) == 1536


def test_rss_is_none_when_the_domain_has_no_running_process(tmp_path: Path) -> None:
    pid_dir, proc = _fake(tmp_path, "4242", None)
    assert lv.qemu_rss_mib("hx-run-node", pid_dir, proc) is None
    assert lv.qemu_rss_mib("hx-run-other", pid_dir, proc) is None


def test_rss_is_none_for_a_garbled_pid_file(tmp_path: Path) -> None:
    pid_dir, proc = _fake(tmp_path, "garbage", "VmRSS: 1024 kB\n")
    assert lv.qemu_rss_mib("hx-run-node", pid_dir, proc) is None


def test_tb_cache_read_from_domain_xml() -> None:
    def xml(features: str) -> str:
        return f"<domain type='qemu'><name>d</name><features>{features}</features></domain>"

    assert lv.tb_cache_mib(xml("<acpi/><tcg><tb-cache unit='MiB'>256</tb-cache></tcg><pae/>")) == 256
    assert lv.tb_cache_mib(xml("<tcg><tb-cache unit='KiB'>131072</tb-cache></tcg>")) == 128
    assert lv.tb_cache_mib(xml("<tcg><tb-cache>262144</tb-cache></tcg>")) == 256  # libvirt's unit: KiB
    assert lv.tb_cache_mib(xml("<acpi/><apic/><pae/>")) is None


# Counts libvirt.registerErrorHandler's calls around importing the provider and connecting twice.
_HANDLER_PROBE = """
import libvirt
calls = []
libvirt.registerErrorHandler = lambda f, ctx: calls.append(f)
from harness.provider import libvirt as lv
at_import = len(calls)
class Conn:
    def close(self): pass
libvirt.open = lambda uri: Conn()
for _ in range(2):
    with lv.connect():
        pass
print(at_import, len(calls))
"""


def test_libvirts_error_handler_is_set_on_the_first_connection_not_at_import() -> None:
    out = subprocess.run([sys.executable, "-c", _HANDLER_PROBE], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["0", "1"], out.stdout + out.stderr
