"""The Vagrant CLI, driven through python-vagrant, with output streamed to the run's log."""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from harness import proc
from harness.errors import HostError, ProviderError

if TYPE_CHECKING:
    import vagrant as python_vagrant

log = logging.getLogger(__name__)

# What Vagrant says when a node did not answer SSH within config.vm.boot_timeout, and for each node
# that did.
BOOT_TIMED_OUT = "Timed out while waiting for the machine to boot"
_BOOTED = re.compile(r"^(?:==> )?\s*([A-Za-z0-9_.-]+): Machine booted and ready!", re.M)

_NODE_LINE = re.compile(r"^==> (?P<node>[\w.-]+): (?P<msg>.*)$")
# Lines that are true for Vagrant in general but wrong for the harness's boxes: kept in the log,
# never shown as progress. Each entry is matched against the start of a node's message.
MISLEADING_LINES = (
    # The box grows its root partition and filesystem at boot (harness-growroot.service).
    # (vagrant-libvirt wraps it over two lines)
    "Created volume larger than box defaults",
    "filesystems to utilize.",
)
# `        from /usr/share/.../warden.rb:48:in `call'`: where Ruby was, not what went wrong.
_BACKTRACE_LINE = re.compile(r"^\s+from \S+:\d+:in ")
VAGRANT_ENV = {
    "VAGRANT_DEFAULT_PROVIDER": "libvirt",
    "VAGRANT_CHECKPOINT_DISABLE": "1",
    "VAGRANT_NO_COLOR": "1",
    "VAGRANT_BOX_UPDATE_CHECK_DISABLE": "1",
}


def parse_progress(line: str) -> tuple[str, str] | None:
    """`==> gpu01: Creating domain...` → ("gpu01", "Creating domain..."); None for other lines and
    for MISLEADING_LINES."""
    m = _NODE_LINE.match(line.strip())
    if m is None or m.group("msg").lstrip().startswith(MISLEADING_LINES):
        return None
    return (m.group("node"), m.group("msg"))


def _python_vagrant() -> ModuleType:
    """python-vagrant, imported on first use: at import it logs "The Vagrant executable cannot be
    found..." through its own logger when vagrant is not on PATH, which would show in every command
    (`harness --help`, `harness doctor`); the harness says so itself, with what to do."""
    logger = logging.getLogger("vagrant")
    was_disabled = logger.disabled
    logger.disabled = True
    try:
        import vagrant
    finally:
        logger.disabled = was_disabled
    return vagrant


class VagrantEnvironment:
    """One run directory holding a Vagrantfile; every command's output goes to logs/vagrant.log."""

    def __init__(self, root: Path, log_path: Path) -> None:
        self.root = root
        self.log_path = log_path
        self._env = {**os.environ, **proc.run_marker(), **VAGRANT_ENV}  # gc finds Vagrant by the mark

    def _client(self) -> python_vagrant.Vagrant:
        if shutil.which("vagrant", path=self._env.get("PATH")) is None:
            raise HostError("Vagrant is not installed (no `vagrant` on PATH): run `harness host setup`.")

        def err_cm() -> object:
            return self.log_path.open("a")

        client: python_vagrant.Vagrant = _python_vagrant().Vagrant(
            root=str(self.root), env=self._env, err_cm=err_cm, out_cm=err_cm
        )
        return client

    def up(self, on_progress: Callable[[str, str], None] | None = None) -> None:
        """`vagrant up` (nodes in parallel); every output line to the log, node lines to on_progress."""
        client = self._client()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("a") as fh:
            fh.write("$ vagrant up --provider=libvirt\n")
            try:
                for line in client.up(provider="libvirt", stream_output=True):
                    fh.write(line)
                    fh.flush()
                    hit = parse_progress(line)
                    if hit and on_progress:
                        on_progress(*hit)
            except subprocess.CalledProcessError as exc:
                raise ProviderError(
                    f"`vagrant up` failed (exit {exc.returncode}): {self._tail()}\nFull log: {self.log_path}"
                ) from exc

    def ssh_config(self) -> str:
        try:
            return str(self._client().ssh_config())
        except subprocess.CalledProcessError as exc:
            raise ProviderError(f"`vagrant ssh-config` failed: {self._tail()}\nFull log: {self.log_path}") from exc

    def destroy(self) -> bool:
        try:
            self._client().destroy()
        except (subprocess.CalledProcessError, HostError):
            log.warning("`vagrant destroy` failed; removing the run's libvirt objects directly (see %s)", self.log_path)
            return False
        return True

    def not_booted(self, nodes: list[str]) -> list[str]:
        """After a failed `up`: the nodes Vagrant gave up waiting for (its boot timeout), or [] when
        the failure was something else."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return []
        if BOOT_TIMED_OUT not in text:
            return []
        booted = {m.group(1) for m in _BOOTED.finditer(text)}
        return [n for n in nodes if n not in booted]

    def _tail(self, lines: int = 12) -> str:
        """The end of the log: the error itself, without Ruby's backtrace lines or repeats."""
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        kept: list[str] = []
        for line in text:
            if not _BACKTRACE_LINE.match(line) and (not kept or kept[-1] != line):
                kept.append(line)
        return "\n    " + "\n    ".join(kept[-lines:])
