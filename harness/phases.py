"""The phases after `up`: inventory, provision (converge), idempotence (second converge), verify.
Each returns data; the lifecycle decides what a failure means."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import get_args

from harness import inventory, provision, verify
from harness.errors import SpecError
from harness.paths import ROLES_DIR
from harness.report import Failure, PhaseResult
from harness.rundir import RunState
from harness.spec import ProvisionSpec, Scenario

ProgressFn = Callable[[str, str], None]


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
        roles_path=[ROLES_DIR, *(scenario.resolve(p) for p in scenario.provision.roles_path)],
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


def converge(run: RunState, scenario: Scenario, phase: str, on_progress: ProgressFn) -> provision.ProvisionResult:
    last = {"task": ""}

    def progress(p: provision.Progress) -> None:
        if p.task and p.task != last["task"]:
            last["task"] = p.task
            on_progress(phase, f"[{p.elapsed:5.0f}s] {p.task} (hosts done {p.hosts_done}, failed {p.hosts_failed})")

    result = provision.run_playbook(_options(run, scenario, phase), progress)
    slowest = sorted(result.task_durations, key=lambda d: d.seconds, reverse=True)
    lines = [f"{d.seconds:8.1f}s  {d.host:<12} {d.task}" for d in slowest]
    (run.log_dir / f"{phase}-task-durations.txt").write_text("\n".join(lines) + "\n")
    return result


def converge_detail(result: provision.ProvisionResult) -> str:
    """Task counts summed over hosts, as Ansible's recap names them."""
    totals = {k: sum(getattr(st, k) for st in result.stats.values()) for k in ("ok", "changed", "failures")}
    return f"{len(result.stats)} hosts: ok={totals['ok']} changed={totals['changed']} failed={totals['failures']}"


def provision_phase(run: RunState, scenario: Scenario, on_progress: ProgressFn) -> PhaseResult:
    started = time.monotonic()
    result = converge(run, scenario, "provision", on_progress)
    seconds = time.monotonic() - started
    if result.ok and not result.failures:
        return PhaseResult("provision", "passed", seconds, detail=converge_detail(result))
    failures = provision.failures_for_report(result) or [
        Failure("provision", f"ansible-runner {result.status} (rc {result.rc}); log {result.log_path}")
    ]
    return PhaseResult("provision", "failed", seconds, failures, converge_detail(result))


def idempotence_phase(run: RunState, scenario: Scenario, on_progress: ProgressFn) -> PhaseResult:
    started = time.monotonic()
    result = converge(run, scenario, "idempotence", on_progress)
    seconds = time.monotonic() - started
    if not result.ok or result.failures:
        return PhaseResult(
            "idempotence", "failed", seconds, provision.failures_for_report(result), converge_detail(result)
        )
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
        return PhaseResult("verify", "passed", result.seconds, detail=detail), result
    return PhaseResult("verify", "failed", result.seconds, result.failures, detail), result
