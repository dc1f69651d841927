from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import proc, vagrant
from harness.errors import HostError


def test_node_lines_become_progress() -> None:
    assert vagrant.parse_progress("==> gpu01: Creating domain...\n") == ("gpu01", "Creating domain...")
    assert vagrant.parse_progress("Bringing machine 'gpu01' up with 'libvirt' provider...") is None


@pytest.mark.parametrize(
    "line",
    [
        "==> compute01: Created volume larger than box defaults, will require manual resizing of filesystems "
        "to utilize.",
        "==> mgmt01:  Created volume larger than box defaults, will require manual resizing of filesystems to "
        "utilize.\n",
        # As vagrant-libvirt 0.11.2 really prints it: wrapped over two lines.
        "==> head01: Created volume larger than box defaults, will require manual resizing of",
        "==> head01: filesystems to utilize.",
    ],
)
def test_misleading_lines_are_not_progress(line: str) -> None:
    assert vagrant.parse_progress(line) is None


def test_importing_the_harness_does_not_import_python_vagrant() -> None:
    """python-vagrant logs "The Vagrant executable cannot be found" at import on a host without
    Vagrant; the CLI (--help, doctor) must not import it."""
    code = "import sys, harness.cli, harness.doctor, harness.lifecycle; print('vagrant' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_python_vagrant_import_says_nothing_without_vagrant_on_path() -> None:
    code = (
        "import logging; logging.basicConfig(level=logging.DEBUG)\n"
        "from harness import vagrant\n"
        "print(vagrant._python_vagrant().__name__)\n"
    )
    env = {"PATH": "/nonexistent"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert result.stdout.strip() == "vagrant"
    assert "cannot be found" not in result.stdout + result.stderr


def test_missing_vagrant_is_a_host_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    env = vagrant.VagrantEnvironment(tmp_path, tmp_path / "vagrant.log")
    with pytest.raises(HostError, match="harness host setup"):
        env.up()
    assert env.destroy() is False


def test_a_failed_vagrant_says_its_error_not_rubys_backtrace(tmp_path: Path) -> None:
    log = tmp_path / "vagrant.log"
    error = "/usr/lib/ruby/vendor_ruby/fog/libvirt/requests/compute/vm_action.rb:7:in `create': Call to virDomainCreateWithFlags failed: End of file while reading data (Libvirt::Error)"  # noqa: E501
    frames = [
        f"\tfrom /usr/share/rubygems-integration/all/gems/vagrant-2.3.4/lib/vagrant/x{i}.rb:{i}:in `call'"
        for i in range(30)
    ]
    log.write_text("\n".join(["==> node01: Starting domain.", error, error, *frames]) + "\n")
    tail = vagrant.VagrantEnvironment(tmp_path, log)._tail()
    assert error in tail and tail.count(error) == 1 and "Starting domain" in tail
    assert "rubygems-integration" not in tail


FIX = Path(__file__).parent.parent / "fixtures" / "vagrant"


def test_nodes_vagrant_gave_up_on_are_named_from_its_log(tmp_path: Path) -> None:
    """Recorded: slurm's up beside 10 other TCG VMs on 2 cores; login01 booted, the rest timed out."""
    log = tmp_path / "vagrant.log"
    log.write_text((FIX / "boot-timeout.log").read_text())
    env = vagrant.VagrantEnvironment(tmp_path, log)
    assert env.not_booted(["login01", "mgmt01", "gpu01", "gpu02"]) == ["mgmt01", "gpu01", "gpu02"]
    log.write_text("==> mgmt01: Machine booted and ready!\nAn error occurred while executing the action\n")
    assert env.not_booted(["mgmt01", "gpu01"]) == []  # another failure: not a boot timeout


def test_a_boot_timeout_names_the_nodes_the_load_and_what_their_consoles_said(tmp_path: Path) -> None:
    from harness import nodes
    from harness.rundir import RunState

    run = RunState("slurm-abcdef", "slurm", "/s.yml", str(tmp_path), 1, "creating")
    (tmp_path / "console-gpu01.log").write_bytes((FIX / "console-boot-timeout.log").read_bytes())
    message = nodes.boot_timeout_message(run, ["gpu01", "gpu02"], 600)
    first = message.splitlines()[0]
    assert first.startswith("gpu01, gpu02 did not answer SSH within Vagrant's boot timeout of 600 s (host load ")
    assert "infrastructure" in first
    console = message.splitlines()[1]
    assert console.startswith("  gpu01 console (")
    assert "Timed out waiting for device" in console and "Failed to start ssh.servic" in console
    assert "\x1b" not in message and len(message.splitlines()) == 2  # gpu02 left no console


def test_vagrant_gets_the_runs_mark_in_its_environment_and_os_environ_stays_as_it_was(tmp_path: Path) -> None:
    """gc finds a Vagrant left running by a killed harness by its mark (proc.RUN_ENV)."""
    proc.mark_children("unit-hhhhhh")
    try:
        env = vagrant.VagrantEnvironment(tmp_path, tmp_path / "vagrant.log")._env
        assert env[proc.RUN_ENV] == "unit-hhhhhh" and proc.RUN_ENV not in os.environ
    finally:
        proc.unmark_children("unit-hhhhhh")
    assert proc.RUN_ENV not in vagrant.VagrantEnvironment(tmp_path, tmp_path / "vagrant.log")._env
