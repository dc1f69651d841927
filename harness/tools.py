"""The external programs the harness runs: where each one comes from and how it is found.

The harness's own Python environment (a virtualenv's `bin/`) comes first, so `ansible-playbook`
and friends installed with the harness are found without anyone activating the virtualenv or
editing PATH; then the caller's PATH; then the system directories a root shell may lack
(`/usr/sbin` holds `libvirtd`, `/sbin` holds `losetup`).
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HostError

SYSTEM_DIRS = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
HOST_SETUP = "run `harness host setup` (it installs the host packages)"
REINSTALL = "reinstall the harness into its environment: `.venv/bin/pip install -e .` (ci/bootstrap.sh does)"


@dataclass(frozen=True)
class Tool:
    name: str
    needed_for: str
    hint: str


TOOLS: tuple[Tool, ...] = (
    Tool("vagrant", "bringing VMs up", f"apt package vagrant: {HOST_SETUP}"),
    Tool("virsh", "libvirt queries and cleanup", f"apt package libvirt-clients: {HOST_SETUP}"),
    Tool("libvirtd", "running VMs", f"apt package libvirt-daemon-system: {HOST_SETUP}"),
    Tool("qemu-system-x86_64", "running VMs, the KVM probe", f"apt package qemu-system-x86: {HOST_SETUP}"),
    Tool("qemu-img", "building boxes", f"apt package qemu-utils: {HOST_SETUP}"),
    Tool("debootstrap", "building boxes", f"apt package debootstrap: {HOST_SETUP}"),
    Tool("extlinux", "building boxes", f"apt package extlinux: {HOST_SETUP}"),
    Tool("parted", "building boxes", f"apt package parted: {HOST_SETUP}"),
    Tool("mke2fs", "building boxes", f"apt package e2fsprogs: {HOST_SETUP}"),
    Tool("losetup", "building boxes", f"apt package mount: {HOST_SETUP}"),
    Tool("ssh", "reaching the VMs", f"apt package openssh-client: {HOST_SETUP}"),
    Tool("ssh-keygen", "per-cluster SSH keys", f"apt package openssh-client: {HOST_SETUP}"),
    Tool("apt-ftparchive", "building apt bundles", f"apt package apt-utils: {HOST_SETUP}"),
    Tool("gpg", "signing apt bundles", f"apt package gnupg: {HOST_SETUP}"),
    Tool("gpgv", "checking apt bundles", f"apt package gpgv: {HOST_SETUP}"),
    Tool("ansible-playbook", "provisioning", REINSTALL),
    Tool("ansible-galaxy", "installing a scenario's collections", REINSTALL),
)


def own_bin_dir() -> Path:
    """The bin directory of the Python environment running the harness (not resolved: a venv's
    `bin/python` is a symlink to the system interpreter, and the venv's scripts sit beside it)."""
    return Path(sys.executable).parent


def search_path(path: str | None = None) -> str:
    """PATH for finding and running tools: the harness's environment, then PATH, then system dirs."""
    given = (os.environ.get("PATH", "") if path is None else path).split(os.pathsep)
    dirs = [str(own_bin_dir()), *given, *SYSTEM_DIRS]
    return os.pathsep.join(dict.fromkeys(d for d in dirs if d))


def which(name: str) -> str | None:
    """Where a tool is, searching `search_path()`; None when it is nowhere."""
    return shutil.which(name, path=search_path())


def find(name: str) -> str:
    """The absolute path of a tool, or HostError saying what installs it."""
    found = which(name)
    if found is not None:
        return found
    known = {t.name: t for t in TOOLS}.get(name)
    hint = known.hint if known else "install it"
    raise HostError(f"{name} was not found (searched {search_path()}): {hint}.")


def missing() -> list[Tool]:
    """Every tool of TOOLS that cannot be found."""
    return [t for t in TOOLS if which(t.name) is None]
