"""The phases after `up`: inventory, provision (converge), idempotence (second converge), verify.
Each returns data; the lifecycle decides what a failure means."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import get_args

from harness import inventory, playbook, provision, verify
from harness.errors import SpecError
from harness.report import Failure, PhaseResult
from harness.rundir import RunState
from harness.spec import ProvisionSpec, Scenario

ProgressFn = Callable[[str, str], None]
# At most one "hosts done" progress line per task this often (new tasks and failures always show).
PROGRESS_INTERVAL = 2.0


def inventory_path(run: RunState) -> Path:
    return run.path / "inventory.yml"


def write_inventory(run: RunState, scenario: Scenario, gpus: dict[str, list[str]] | None = None) -> Path:
    """The one inventory of the run, read by Ansible and testinfra alike."""
    conns = inventory.parse_ssh_config(run.ssh_config.read_text())
    inv = inventory.build_inventory(
        scenario.expanded_nodes(),
        conns,
        run.private_ips,
        gpus or {},
        scenario.groups or None,
        {
            "harness_cluster_name": scenario.name,
            "harness_run_id": run.run_id,
            "harness_private_subnet": run.private_subnet,
        },
    )
    return inventory.write_inventory(inv, inventory_path(run))


def _options(run: RunState, scenario: Scenario, phase: str) -> provision.ProvisionOptions:
    if scenario.provision is None:
        raise SpecError(
            str(scenario.source), ["provision: this scenario has nothing to provision (add provision.playbook)"]
        )
    return provision.ProvisionOptions(
        private_data_dir=run.path / "ansible",
        playbook=scenario.resolve(scenario.provision.playbook),
        inventory=inventory_path(run),
        roles_path=playbook.roles_path(scenario),
        collections_path=playbook.collections_path(scenario),
        extra_vars=dict(scenario.provision.extra_vars),
        ident=provision.new_ident(phase),
        ssh_config=run.ssh_config,
        strategy=_strategy(scenario),
    )


def _strategy(scenario: Scenario) -> str:
    """provision.strategy, unless HARNESS_ANSIBLE_STRATEGY overrides it (to compare strategies)."""
    assert scenario.provision is not None
    forced = os.environ.get("HARNESS_ANSIBLE_STRATEGY")
    if not forced:
        return scenario.provision.strategy
    allowed = get_args(ProvisionSpec.model_fields["strategy"].annotation)
    if forced not in allowed:
        raise SpecError("HARNESS_ANSIBLE_STRATEGY", [f"{forced!r} is not one of: {', '.join(allowed)}"])
    return forced


def progress_line(p: provision.Progress) -> str:
    """`[  42s] common : Install packages (2/4 hosts done, 0 failed)`; `?` hosts until one started."""
    total = p.hosts_total or "?"
    return f"[{p.elapsed:5.0f}s] {p.task} ({p.hosts_done}/{total} hosts done, {p.hosts_failed} failed)"


class ThrottledProgress:
    """A progress callback for run_playbook that reports a line on every new task and every change
    of the failed count, and as hosts finish a task at most once per `interval` seconds."""

    def __init__(self, phase: str, on_progress: ProgressFn, interval: float = PROGRESS_INTERVAL) -> None:
        self._phase, self._on_progress, self._interval = phase, on_progress, interval
        self._task: tuple[int, str] | None = None
        self._at = 0.0
        self._done = self._failed = 0

    def __call__(self, p: provision.Progress) -> None:
        if not p.task:
            return
        task = (p.tasks_started, p.task)  # a task name can come round again (a role applied twice)
        done = p.hosts_done != self._done and p.elapsed - self._at >= self._interval
        if task != self._task or p.hosts_failed != self._failed or done:
            self._task, self._at, self._done, self._failed = task, p.elapsed, p.hosts_done, p.hosts_failed
            self._on_progress(self._phase, progress_line(p))


def converge(run: RunState, scenario: Scenario, phase: str, on_progress: ProgressFn) -> provision.ProvisionResult:
    result = provision.run_playbook(_options(run, scenario, phase), ThrottledProgress(phase, on_progress))
    slowest = sorted(result.task_durations, key=lambda d: d.seconds, reverse=True)
    lines = [f"{d.seconds:8.1f}s  {d.host:<12} {d.task}" for d in slowest]
    (run.log_dir / f"{phase}-task-durations.txt").write_text("\n".join(lines) + "\n")
    return result


def converge_detail(result: provision.ProvisionResult) -> str:
    """Task counts summed over hosts, as Ansible's recap names them; without a recap, what is known."""
    if not result.stats and not result.ok:
        if not (result.task_durations or result.failures or result.changed):
            return f"play aborted before any task ran (rc {result.rc})"
        return f"no recap from ansible-playbook (status {result.status}, rc {result.rc})"
    totals = {k: sum(getattr(st, k) for st in result.stats.values()) for k in ("ok", "changed", "failures")}
    return f"{len(result.stats)} hosts: ok={totals['ok']} changed={totals['changed']} failed={totals['failures']}"


def _aborted(phase: str, result: provision.ProvisionResult) -> Failure:
    """The one failure of a converge that failed without naming a failed task: why, from its log."""
    return Failure(phase, f"{provision.abort_cause(result)}\nFull log: {result.log_path}")


def provision_phase(run: RunState, scenario: Scenario, on_progress: ProgressFn) -> PhaseResult:
    started = time.monotonic()
    result = converge(run, scenario, "provision", on_progress)
    seconds = time.monotonic() - started
    if result.ok and not result.failures:
        return PhaseResult("provision", "passed", seconds, detail=converge_detail(result))
    failures = provision.failures_for_report(result) or [_aborted("provision", result)]
    return PhaseResult("provision", "failed", seconds, failures, converge_detail(result))


def idempotence_phase(run: RunState, scenario: Scenario, on_progress: ProgressFn) -> PhaseResult:
    started = time.monotonic()
    result = converge(run, scenario, "idempotence", on_progress)
    seconds = time.monotonic() - started
    if not result.ok or result.failures:
        failures = provision.failures_for_report(result) or [_aborted("idempotence", result)]
        return PhaseResult("idempotence", "failed", seconds, failures, converge_detail(result))
    changed = [h for h, st in result.stats.items() if st.changed]
    if changed or result.changed:
        return PhaseResult(
            "idempotence", "failed", seconds, provision.changes_for_report(result), converge_detail(result)
        )
    return PhaseResult("idempotence", "passed", seconds, detail=converge_detail(result))


def verify_phase(
    run: RunState, scenario: Scenario, select: str | None = None
) -> tuple[PhaseResult, verify.VerifyResult | None]:
    if scenario.tests is None:
        return PhaseResult("verify", "skipped", 0.0), None
    result = verify.run_tests(
        scenario.resolve(scenario.tests),
        nodes=run.nodes,
        inventory=inventory_path(run),
        ssh_config=run.ssh_config,
        out_dir=run.path,
        select=select,
    )
    detail = f"{result.passed} passed, {result.failed} failed, {result.skipped} skipped"
    if result.ok:
        return PhaseResult("verify", "passed", result.seconds, detail=detail, junit=result.junit), result
    return PhaseResult("verify", "failed", result.seconds, result.failures, detail, junit=result.junit), result
