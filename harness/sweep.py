"""Removing a run's libvirt objects so that they stay removed: the sweep that ends a teardown, and
`harness gc` for what dead runs left behind.

A call that a killed client had started (define a domain, create a volume) can still complete after
a first removal, and a Vagrant left running by a harness killed with SIGKILL would go on making
things: a sweep repeats until libvirt lists nothing of the run several times in a row, and gc ends a
dead run's processes (proc.RUN_ENV) before it sweeps.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import libvirt

from harness import offline, passthrough, proc, rundir
from harness.errors import DestroyError, ProviderError, UsageError
from harness.provider import libvirt as lv

log = logging.getLogger(__name__)

# A sweep is done when libvirt shows nothing of the run this many times in a row, this far apart.
QUIET_LISTINGS = 2
QUIET_INTERVAL_S = 3.0
SWEEP_DEADLINE_S = 90.0


def sweep(
    conn: libvirt.virConnect,
    prefix: str,
    *,
    deadline_s: float = SWEEP_DEADLINE_S,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> lv.RunObjects:
    """Remove everything named `prefix-*` until libvirt lists nothing of it QUIET_LISTINGS times in
    a row, QUIET_INTERVAL_S apart: a call that a killed client had started (define a domain, create
    a volume) can still complete after a first sweep. Returns what is left at the deadline."""
    started, quiet = clock(), 0
    while True:
        left = lv.remove_run(conn, prefix)
        quiet = quiet + 1 if left.empty() else 0
        if quiet >= QUIET_LISTINGS:
            return left
        if clock() - started >= deadline_s:
            return lv.run_objects(conn, prefix)
        sleep(QUIET_INTERVAL_S)


# How long teardown waits for libvirtd to answer again (a restart: its QEMU domains carry on).
LIBVIRT_WAIT_S = 60.0


def sweep_when_libvirt_answers(
    prefix: str, wait_s: float = LIBVIRT_WAIT_S, sleep: Callable[[float], None] = time.sleep
) -> lv.RunObjects:
    """`sweep`, retried while libvirtd does not answer (restarting) for up to `wait_s`; ProviderError
    after that, saying that libvirt is gone and `harness gc` removes the rest once it is back."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            with lv.connect() as conn:
                return sweep(conn, prefix)
        except (ProviderError, libvirt.libvirtError) as exc:
            if time.monotonic() >= deadline:
                raise ProviderError(
                    f"libvirt did not answer for {wait_s:.0f}s while removing {prefix}-*: {exc}; "
                    "once libvirtd runs again (`harness host setup` starts it), `harness gc` removes them"
                ) from exc
            log.info("libvirt does not answer (%s); trying again", exc)
            sleep(2.0)


def _claimed(run: rundir.RunState) -> bool:
    """Whether this gc now owns a dead run (rundir.claim_for_teardown); False when another process
    took it first (a `destroy` started at the same moment): that one removes it."""
    if run.state == "destroyed":  # only its registry entry is left (a teardown cut off before forget)
        return True
    try:
        rundir.claim_for_teardown(run)
    except UsageError:
        return False
    return True


@dataclass(frozen=True)
class GcResult:
    removed: dict[str, str]  # run id → what was removed
    kept: list[str]  # live runs left alone


def gc() -> GcResult:
    """Remove what dead runs left behind (only objects named hx-<run id>-...), never live runs'."""
    removed: dict[str, str] = {}
    kept: list[str] = []
    registry = rundir.registered_runs()
    with lv.connect() as conn:
        present = lv.run_ids_present(conn)
        for run_id in sorted(present | set(registry)):
            run = registry.get(run_id)
            if run is not None and (rundir.is_live(run) or not _claimed(run)):
                kept.append(run_id)
                continue
            # First end what the dead run still has running (a Vagrant that would create domains
            # after the sweep, ansible-playbook, pytest, SSH control masters), then sweep until
            # libvirt stays empty.
            strays = proc.processes_of_run(run_id)
            stuck = proc.end_processes(strays)
            objs = lv.run_objects(conn, f"hx-{run_id}")
            if not objs.empty() or strays:
                left = sweep(conn, f"hx-{run_id}")
                if not left.empty() or stuck:
                    stuck_text = f"; processes {', '.join(map(str, stuck))} do not end" if stuck else ""
                    raise DestroyError(f"gc: could not remove {left.describe()} of dead run {run_id}{stuck_text}")
                what = [objs.describe()] if not objs.empty() else []
                what += [f"{len(strays)} process(es) it had left running"] if strays else []
                removed[run_id] = "; ".join(what)
            if run is not None and run.state != "destroyed":
                run.state = "destroyed"
                rundir.save(run)
            rundir.forget(run_id)
    for run_id in offline.gc(set(kept)):
        removed[run_id] = (removed[run_id] + ", " if run_id in removed else "") + "served apt bundle"
    lockdir = passthrough.default_lockdir()
    for lock in passthrough.read_locks(lockdir):
        holder = registry.get(lock.run_id)
        if lock.run_id not in kept and not (holder is not None and rundir.is_live(holder)):
            passthrough.release_locks(lockdir, lock.run_id)
            removed.setdefault(lock.run_id, f"GPU lock {lock.address}")
    return GcResult(removed, kept)
