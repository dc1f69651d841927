"""Checkpoints of a live cluster: every node's disk and memory saved together, and reset to them.

A checkpoint is an internal libvirt snapshot of each running domain (memory included), taken for
all nodes at once (one thread per node). They live inside the run's qcow2 volumes and libvirt's
metadata, so tearing the run down (`destroy`, `gc`) removes them with the domains. After a reset
the cluster is made really usable again: guest clocks stepped to the host's time, the host's
shared SSH connections closed, every node answering.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape, unescape

import libvirt

from harness import clock, reach
from harness.errors import ProviderError, UsageError
from harness.provider import libvirt as lv
from harness.rundir import RunState

log = logging.getLogger(__name__)

BOOTED = "booted"
CONVERGED = "converged"


@dataclass(frozen=True)
class Checkpoint:
    name: str
    created: float
    nodes: tuple[str, ...]
    digest: str = ""  # what was converged, for `converged`


def _domains(conn: libvirt.virConnect, run: RunState) -> dict[str, libvirt.virDomain]:
    found = {}
    for node in run.nodes:
        try:
            found[node] = conn.lookupByName(f"{run.prefix}-{node}")
        except libvirt.libvirtError as exc:
            raise ProviderError(f"node {node} of run {run.run_id} has no domain: {exc.get_error_message()}") from exc
    return found


def _refuse_passthrough(doms: dict[str, libvirt.virDomain]) -> None:
    with_gpus = [n for n, d in doms.items() if "<hostdev" in d.XMLDesc(0)]
    if with_gpus:
        raise UsageError(
            f"{', '.join(with_gpus)} pass through PCI devices (GPUs): QEMU cannot save a passed-through "
            "device's state, so these nodes cannot be checkpointed with their memory; use a full run instead"
        )


def _parallel(fn: Callable[[str], None], nodes: Iterable[str]) -> None:
    names = list(nodes)
    with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
        for future in [pool.submit(fn, n) for n in names]:
            future.result()


def save(run: RunState, name: str, digest: str = "") -> Checkpoint:
    """Checkpoint every node (disk and memory) in parallel; a checkpoint of the same name is replaced."""
    created = time.time()
    meta = escape(json.dumps({"created": created, "digest": digest, "nodes": run.nodes}))
    xml = f"<domainsnapshot><name>{escape(name)}</name><description>{meta}</description></domainsnapshot>"
    with lv.connect() as conn:
        _refuse_passthrough(_domains(conn, run))

    def one(node: str) -> None:
        with lv.connect() as conn:  # a connection per thread: the calls run side by side
            dom = conn.lookupByName(f"{run.prefix}-{node}")
            with contextlib.suppress(libvirt.libvirtError):  # none yet
                dom.snapshotLookupByName(name).delete(0)
            try:
                dom.snapshotCreateXML(xml, libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC)
            except libvirt.libvirtError as exc:
                raise ProviderError(f"cannot checkpoint {node}: {exc.get_error_message()}") from exc

    started = time.monotonic()
    _parallel(one, run.nodes)
    log.info(
        "checkpoint %s of run %s: %d node(s) in %.1fs", name, run.run_id, len(run.nodes), time.monotonic() - started
    )
    return Checkpoint(name, created, tuple(run.nodes), digest)


def _parse(snap: libvirt.virDomainSnapshot) -> Checkpoint:
    desc = snap.getXMLDesc(0)
    start, end = desc.find("<description>"), desc.find("</description>")
    meta: dict[str, Any] = {}
    if start >= 0 and end > start:
        try:
            meta = json.loads(unescape(desc[start + len("<description>") : end]))
        except ValueError:
            meta = {}
    nodes = meta.get("nodes") if isinstance(meta.get("nodes"), list) else []
    return Checkpoint(
        snap.getName(), float(meta.get("created") or 0), tuple(map(str, nodes or [])), str(meta.get("digest", ""))
    )


def list_checkpoints(run: RunState) -> list[Checkpoint]:
    """Checkpoints every node of the run has (a checkpoint missing on one node is not usable)."""
    with lv.connect() as conn:
        doms = _domains(conn, run)
        per_node = [{s.getName(): s for s in d.listAllSnapshots(0)} for d in doms.values()]
    if not per_node:
        return []
    common = set(per_node[0]).intersection(*per_node[1:])
    return sorted((_parse(per_node[0][n]) for n in common), key=lambda c: c.created)


def find(run: RunState, name: str) -> Checkpoint:
    for cp in list_checkpoints(run):
        if cp.name == name:
            return cp
    names = ", ".join(c.name for c in list_checkpoints(run)) or "none"
    raise UsageError(f"run {run.run_id} has no checkpoint {name!r} on every node (checkpoints: {names})")


@dataclass(frozen=True)
class ResetResult:
    checkpoint: Checkpoint
    seconds: float
    clock_skew_s: dict[str, float]


def _step_clock(run: RunState, node: str) -> float:
    """Set the node's clock to the host's (harness.clock); the remaining difference in seconds."""
    try:
        result = clock.sync(["ssh", "-F", str(run.ssh_config), node], timeout=120)
    except ProviderError as exc:
        raise ProviderError(f"cannot set the clock of {node} after the reset: {exc}") from exc
    log.debug(
        "%s: clock %+.3f s off, then %+.3f s (round trip %.3f s)",
        node,
        result.before_s,
        result.after_s,
        result.rtt_s,
    )
    return abs(result.after_s)


def reset(run: RunState, name: str, on_progress: Callable[[str], None] | None = None) -> ResetResult:
    """Bring every node back to checkpoint `name` (in parallel), then make the cluster usable:
    shared SSH connections closed, every node answering, guest clocks stepped to the host's."""
    say = on_progress or (lambda _m: None)
    cp = find(run, name)
    started = time.monotonic()

    def one(node: str) -> None:
        with lv.connect() as conn:
            dom = conn.lookupByName(f"{run.prefix}-{node}")
            try:
                dom.revertToSnapshot(dom.snapshotLookupByName(name), libvirt.VIR_DOMAIN_SNAPSHOT_REVERT_RUNNING)
            except libvirt.libvirtError as exc:
                raise ProviderError(f"cannot reset {node} to {name!r}: {exc.get_error_message()}") from exc

    _parallel(one, run.nodes)
    say(f"{len(run.nodes)} node(s) back at {name!r} in {time.monotonic() - started:.1f}s")
    reach.reset_connections(run.ssh_config, run.nodes)
    waited = reach.wait_for_ssh(run.ssh_config, run.nodes, reach.ssh_wait_seconds(), on_wait=say)
    if waited.silent:
        raise ProviderError(f"after the reset to {name!r}, {', '.join(waited.silent)} did not answer SSH")
    skew: dict[str, float] = {}

    def clock(node: str) -> None:
        skew[node] = _step_clock(run, node)

    _parallel(clock, run.nodes)
    return ResetResult(cp, time.monotonic() - started, skew)
