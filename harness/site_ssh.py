"""Shared SSH connections for tests that reach a site's hosts through its inventory.

Over testinfra's `ansible://` backend (`harness promote`, whose hosts are the site's, not a run's
VMs) every command the tests run is a new SSH connection: testinfra asks ssh for ControlMaster but
gives it a ControlPath only when the Ansible config names one, so nothing is shared. Here each
verify gets a private control directory and ANSIBLE_SSH_EXTRA_ARGS names a ControlPath in it, so
the commands to one host share one connection; the masters are closed and the directory removed
when the tests are done, so nothing outlives the verify.

The site's own settings always win: where the environment, the Ansible config the tests read, or
any host of the inventory already sets ssh extra args or a control path, nothing is added.
"""

from __future__ import annotations

import configparser
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from harness import inventory, proc
from harness.errors import SpecError

EXTRA_ARGS_ENV = "ANSIBLE_SSH_EXTRA_ARGS"


def ansible_config(cwd: Path, env: Mapping[str, str]) -> Path | None:
    """The Ansible config file the tests read, found as testinfra and Ansible find it."""
    named = env.get("ANSIBLE_CONFIG") or os.environ.get("ANSIBLE_CONFIG")
    if named:
        return Path(named)
    for candidate in (cwd / "ansible.cfg", Path.home() / ".ansible.cfg", Path("/etc/ansible/ansible.cfg")):
        if candidate.is_file():
            return candidate
    return None


def site_sets_its_own(inventory_path: Path, cwd: Path, env: Mapping[str, str]) -> str | None:
    """What already decides the ssh extra args or the control path, if anything; None when free."""
    if EXTRA_ARGS_ENV in env or EXTRA_ARGS_ENV in os.environ:
        return f"{EXTRA_ARGS_ENV} is set"
    cfg_path = ansible_config(cwd, env)
    if cfg_path is not None and cfg_path.is_file():
        cfg = configparser.RawConfigParser()
        try:
            cfg.read(cfg_path, encoding="utf-8")
        except configparser.Error:
            return f"{cfg_path} is not a config this check can read"
        for key in ("ssh_extra_args", "control_path"):
            if cfg.has_option("ssh_connection", key):
                return f"{cfg_path} sets ssh_connection.{key}"
    try:
        hosts = inventory.resolve_inventory(inventory_path)["all"]["hosts"]
    except SpecError:  # the tests will say what is wrong with it; nothing is added meanwhile
        return f"{inventory_path} cannot be read"
    for name, hostvars in hosts.items():
        if "ansible_ssh_extra_args" in hostvars:
            return f"host {name} sets ansible_ssh_extra_args"
    return None


def close_masters(control_dir: Path) -> int:
    """Ask every master in control_dir to exit; how many were asked."""
    asked = 0
    for sock in sorted(control_dir.iterdir()):
        if sock.is_socket():
            proc.run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "harness-verify"], timeout=30)
            asked += 1
    return asked


@contextmanager
def shared_connections(inventory_path: Path, cwd: Path, env: Mapping[str, str]) -> Iterator[dict[str, str]]:
    """The environment that makes the tests' commands to one host share a connection (empty where
    the site decides that itself); the masters are closed on the way out."""
    if site_sets_its_own(inventory_path, cwd, env) is not None:
        yield {}
        return
    # Short: a unix socket path has room for about 100 bytes, and %C alone is 40.
    control_dir = Path(tempfile.mkdtemp(prefix="hx-cp-"))
    try:
        yield {EXTRA_ARGS_ENV: f"-o ControlPath={control_dir}/%C"}
    finally:
        close_masters(control_dir)
        shutil.rmtree(control_dir, ignore_errors=True)
