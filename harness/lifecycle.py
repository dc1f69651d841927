"""The lifecycle, as one sequence of named steps:

    validate → up → provision → quick → idempotence → verify → destroy

`SEQUENCE` below is that list. Each step names the module that owns its work, the error (and so
the exit code) its failure stands for, and when it runs; reports list the phases in this order,
exit codes come from the first step that failed, and teardown (`destroy`) runs in `finally`
unless the user keeps the cluster. Validation (the scenario file, then the playbook's roles and
modules) happens before anything exists, so bad input costs seconds, not a boot.

`quick` is the quick verdict, as early as it can be: the tests not marked disturbing, on the
first converge's state, before the idempotence converge. When that converge then changes nothing,
the state they saw is the state it proved stable, so verify runs only the disturbing tests and its
verdict is both passes; when it changed anything (or did not run), verify runs every test again.
Either way verify's verdict is the one a run in the plain order would give, and the quick step
never decides the exit code itself (a failure there is verify's too).

Molecule's `side_effect` playbooks (provision.side_effect) run inside verify, after idempotence and
before the tests, which then judge the state they leave: no quick step then, and a failed side
effect is verify's failure. Its `cleanup` playbooks run inside destroy, before the teardown, also
after a failed step (not after an interrupt, and not with --keep: Molecule cleans up only when it
destroys); a failed cleanup fails destroy, whose exit code counts only when nothing failed before.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness import (
    __version__,
    checkpoints,
    k8s_bundle,
    node_packages,
    nodes,
    offline,
    phases,
    playbook,
    rehearsal,
    report,
    rundir,
    scope,
    verify,
)
from harness.errors import (
    DestroyError,
    HarnessError,
    IdempotenceError,
    Interrupted,
    ProviderError,
    ProvisionError,
    SpecError,
    UnreachableError,
    VerifyError,
)
from harness.rundir import RunState
from harness.spec import Scenario

log = logging.getLogger(__name__)

ProgressFn = Callable[[str, str], None]  # (node or phase, message)


def _noop(_a: str, _b: str) -> None:
    pass


@dataclass
class RunContext:
    """What the steps of one `harness run` share: the scenario, the options, the live run."""

    scenario: Scenario
    on_progress: ProgressFn = _noop
    keep: bool = False
    idempotence: bool | None = None  # None: the scenario decides
    select: str | None = None
    reuse_from: str | None = None  # a checkpoint of a kept cluster to start from instead of `up`
    quick: bool = False  # verify: the quick verdict only (tests not marked disturbing), partial
    full: bool = False  # on `converged`: converge every unit and run every test (no inner-loop scope)
    run: RunState | None = None
    results: dict[str, report.PhaseResult] = field(default_factory=dict)
    reset_to: str | None = None  # the checkpoint `up` reset the kept cluster to
    scope: scope.ScopeState | None = None  # the inner loop's plan on top of `converged`
    quick_pass: verify.VerifyResult | None = None  # what the quick step ran, for verify to complete

    def passed(self, name: str) -> bool:
        return name in self.results and self.results[name].status == "passed"

    def live_run(self) -> RunState:
        assert self.run is not None, "a step after up needs the run up brought"
        return self.run


@dataclass(frozen=True)
class Step:
    name: str
    owner: str  # the module that does the work
    error: type[HarnessError]  # a failure of this step exits with this error's code
    applies: Callable[[RunContext], bool]  # False: reported as skipped
    work: Callable[[RunContext], report.PhaseResult]
    verdict: bool = True  # False: reported, but never the exit code (a later step carries its failures)


def _timed(name: str, fn: Callable[[], object]) -> report.PhaseResult:
    started = time.monotonic()
    try:
        fn()
    except Interrupted:
        raise
    except HarnessError as exc:
        failure = [report.Failure(name, str(exc))]
        if isinstance(exc, UnreachableError):  # infrastructure, not a verdict: its own status
            return report.PhaseResult(name, "unreachable", time.monotonic() - started, failure)
        return report.PhaseResult(name, "failed", time.monotonic() - started, failure)
    return report.PhaseResult(name, "passed", time.monotonic() - started)


def _up(ctx: RunContext) -> report.PhaseResult:
    if ctx.reuse_from is not None:
        kept = reusable_run(ctx.scenario)
        if kept is not None:
            return _reset(ctx, kept, ctx.reuse_from)
        ctx.on_progress("up", "no kept cluster of this scenario and topology to reuse: bringing one up")

    def bring_up() -> None:
        ctx.run = nodes.up(ctx.scenario, ctx.on_progress, keep=ctx.keep, bundle_checked=True)
        # The box's own packages, before any role: what a package record is measured against.
        node_packages.baseline_after_up(ctx.run, _say(ctx, "up"))

    return _timed("up", bring_up)


def reusable_run(scenario: Scenario) -> RunState | None:
    """The kept cluster of this scenario, if its nodes are the scenario's nodes."""
    run = rundir.active_run(scenario)
    if run is None or run.state != "up" or run.nodes != [n.name for n in scenario.expanded_nodes()]:
        return None
    return run


def _reset(ctx: RunContext, run: RunState, name: str) -> report.PhaseResult:
    """`up` for --reuse: reset the kept cluster to a checkpoint instead of booting a new one."""
    started = time.monotonic()
    try:
        result = checkpoints.reset(run, name, lambda msg: ctx.on_progress("up", msg))
    except HarnessError as exc:
        return report.PhaseResult("up", "failed", time.monotonic() - started, [report.Failure("up", str(exc))])
    ctx.run, ctx.reset_to = run, name
    skew = max(result.clock_skew_s.values(), default=0.0)
    detail = f"reused run {run.run_id}: reset to checkpoint {name!r} (clocks within {skew:.1f}s of the host)"
    ctx.on_progress("up", detail)
    return report.PhaseResult("up", "passed", time.monotonic() - started, detail=detail)


def _scoped(ctx: RunContext) -> scope.ScopeState | None:
    """On a reset to `converged` (and without --full): what the inner loop may leave out."""
    if ctx.reset_to != checkpoints.CONVERGED or ctx.full:
        return None
    run = ctx.live_run()
    units = phases.analyse_units(run, ctx.scenario)
    record = scope.load_record(run.path)
    return scope.ScopeState(units, record, first=scope.plan_first(units, record))


def _provision(ctx: RunContext) -> report.PhaseResult:
    ctx.scope = _scoped(ctx)
    plan = ctx.scope.first if ctx.scope is not None else None
    if plan is not None and ctx.scope is not None and ctx.scope.record is not None and not plan.run:
        # No unit changed and nothing they share: the checkpoint's converge holds as it is.
        ctx.scope.cutoff = True
        phases.record_unchanged_state(ctx.live_run(), ctx.scenario, ctx.scope.record)
        detail = f"nothing to converge: {plan.why} (proven idempotent there)"
        ctx.on_progress("provision", detail)
        why = "unchanged since checkpoint 'converged', where it was proven to change nothing"
        return report.PhaseResult("provision", "passed", 0.0, detail=detail, partial=True, not_run=_units(plan, why))
    if ctx.scope is None:  # a new cluster (not the inner loop's checkpoint): its prepare playbooks first
        failed = phases.prepare_phase(ctx.live_run(), ctx.scenario, ctx.on_progress)
        if failed is not None:
            return failed
    ctx.on_progress("provision", f"converging {plan.describe()}" if plan is not None else "converging")
    result = phases.provision_phase(ctx.live_run(), ctx.scenario, ctx.on_progress, ctx.scope)
    if plan is not None and not plan.full:
        result.partial = True
        result.not_run = _units(plan, "before the first changed unit: proven to change nothing on this state")
    return result


def _units(plan: scope.Plan, why: str) -> list[report.NotRun]:
    return [report.NotRun(plan.labels[i] if plan.labels else str(i), why) for i in plan.skipped]


def _idempotence(ctx: RunContext) -> report.PhaseResult:
    state = ctx.scope
    if state is not None and state.cutoff:
        detail = "not run: the first converge changed nothing on the checkpoint's proven-idempotent state"
        if not state.first or not state.first.run:
            detail = "not run: nothing was converged on the checkpoint's proven-idempotent state"
        ctx.on_progress("idempotence", detail)
        return report.PhaseResult("idempotence", "passed", 0.0, detail=detail, partial=True)
    plan = scope.plan_second(state.units, state.first_changed) if state is not None else None
    if state is not None and plan is not None:
        state.second = plan
        ctx.on_progress("idempotence", f"converging again, {plan.describe()}: nothing may change")
    else:
        ctx.on_progress("idempotence", "converging again: nothing may change")
    result = phases.idempotence_phase(ctx.live_run(), ctx.scenario, ctx.on_progress, plan)
    if plan is not None and not plan.full:
        result.partial = True
        result.not_run = _units(plan, "after the last unit that changed: it changed nothing on the final state")
    return result


def _say(ctx: RunContext, phase: str) -> Callable[[str], None]:
    return lambda msg: ctx.on_progress(phase, msg)


def _carried_verify(ctx: RunContext) -> report.PhaseResult | None:
    """After an early cutoff, the verify of checkpoint `converged`'s state, when the tests are the same."""
    state = ctx.scope
    if state is None or not state.cutoff or state.record is None or ctx.select is not None:
        return None
    verified = state.record.verified
    if not verified or verified.get("tests") != scope.tests_digest(ctx.scenario):
        return None
    detail = (
        f"carried over: {verified.get('detail', 'passed')} on checkpoint 'converged''s state, which the "
        "cluster is still in (the converge changed nothing), with the same tests"
    )
    ctx.on_progress("verify", detail)
    return report.PhaseResult("verify", "passed", 0.0, detail=detail, partial=True)


def _quick(ctx: RunContext) -> report.PhaseResult:
    """The tests not marked disturbing, on the first converge's state: the quick verdict, said and
    recorded before the idempotence converge. Never partial itself (verify completes it) and never
    the exit code (verify carries its failures)."""
    ctx.on_progress("quick", "running the tests not marked disturbing, before the idempotence converge")

    def said(_phase: str, msg: str) -> None:
        ctx.on_progress("quick", msg)

    phase, result = phases.verify_phase(ctx.live_run(), ctx.scenario, ctx.select, said, quick=True)
    ctx.quick_pass = result if result is not None and result.junit is not None else None
    if result is None:
        return report.PhaseResult("quick", phase.status, phase.seconds, phase.failures, phase.detail)
    left = len(result.disturbing) if result.partial else 0
    detail = f"quick verdict: {result.counts}" + (f"; {left} disturbing test(s) left for verify" if left else "")
    detail = phases.retried(detail, phase.retries)
    return report.PhaseResult("quick", phase.status, phase.seconds, phase.failures, detail, retries=phase.retries)


def _books(ctx: RunContext, kind: str) -> list[Path]:
    """The scenario's side_effect or cleanup playbooks (Molecule's), or none."""
    return list(getattr(ctx.scenario.provision, kind)) if ctx.scenario.provision is not None else []


def _on_run(ctx: RunContext, phase: str, books: list[Path]) -> list[report.Failure]:
    """Playbooks besides the converge on the run's VMs, judged from their events: their failures."""
    run = ctx.live_run()
    return phases.run_playbooks(
        phases.target(run, ctx.scenario, converging=True), ctx.scenario, phase, books, ctx.on_progress
    )


def _verify(ctx: RunContext) -> report.PhaseResult:
    side_effect = _books(ctx, "side_effect")
    if side_effect:  # Molecule's side_effect: after idempotence, before the tests that judge what it leaves
        started = time.monotonic()
        failed = _on_run(ctx, "verify", side_effect)
        if failed:
            return report.PhaseResult("verify", "failed", time.monotonic() - started, failed, "side_effect failed")
        took = time.monotonic() - started
        result = _tests(ctx)
        if result.status == "skipped":  # no tests: the side effect passing is verify's verdict
            return report.PhaseResult("verify", "passed", took, detail="side_effect passed")
        result.seconds += took
        result.detail = f"after side_effect: {result.detail}" if result.detail else "after side_effect"
        return result
    return _carried_verify(ctx) or _tests(ctx)


def _tests(ctx: RunContext) -> report.PhaseResult:
    """Verify's tests (and Molecule's verify playbook); a green full verify is recorded."""
    # The quick verdict holds where the idempotence converge changed nothing after it.
    after = ctx.quick_pass if ctx.passed("idempotence") else None
    if ctx.quick_pass is not None and after is None:
        ctx.on_progress("verify", "the idempotence converge did not pass: every test runs again on the final state")
    ctx.on_progress("verify", "running the scenario's tests")
    result = phases.verify_phase(ctx.live_run(), ctx.scenario, ctx.select, ctx.on_progress, ctx.quick, after)[0]
    if result.status == "passed" and ctx.select is None and ctx.scenario.provision is not None and not ctx.quick:
        # Only the converged state itself (no side effect on it) counts as verified on the checkpoint.
        if not _books(ctx, "side_effect") and (
            ctx.passed("idempotence") or (ctx.scope is not None and ctx.scope.cutoff)
        ):
            phases.mark_verified(ctx.live_run(), ctx.scenario, result.detail)
        # A green converge and verify: what the nodes installed, for `harness bundle build`.
        digest = rehearsal.content_manifest(ctx.scenario).digest
        node_packages.record_after_green(ctx.live_run(), ctx.scenario.name, digest, _say(ctx, "verify"))
    return result


def _cleanup(ctx: RunContext) -> list[report.Failure]:
    """Molecule's cleanup playbooks before the teardown, also after a failed step, as Molecule runs
    them; not on a cluster that never came up, nor after an interrupt (the teardown comes first then)."""
    books = _books(ctx, "cleanup")
    if not books or not ctx.passed("up") or any(s.name not in ctx.results for s in SEQUENCE[:-1]):
        return []
    ctx.on_progress("destroy", "running the cleanup playbooks before the teardown")
    try:
        return _on_run(ctx, "destroy", books)
    except Interrupted:
        raise
    except HarnessError as exc:
        return [report.Failure("cleanup", str(exc))]


def _destroy(ctx: RunContext) -> report.PhaseResult:
    """The teardown, after the cleanup playbooks. A failed cleanup fails this step (exit 14 only when
    no step before it failed: never hiding the run's own verdict); the cluster is torn down anyway."""
    run = ctx.live_run()
    cleanup: list[report.Failure] = []
    try:
        cleanup = _cleanup(ctx)
    finally:
        ctx.on_progress("destroy", f"tearing down run {run.run_id}")
        result = _timed("destroy", lambda: nodes.teardown(run))
    if cleanup:
        result.failures[:0] = cleanup
        result.detail = "cleanup failed; " + ("torn down" if result.status == "passed" else "teardown failed too")
        result.status = "failed" if result.status == "passed" else result.status
    return result


def _wants_provision(ctx: RunContext) -> bool:
    return ctx.scenario.provision is not None and ctx.passed("up")


def _wants_idempotence(ctx: RunContext) -> bool:
    if ctx.scenario.provision is None:
        return False
    wanted = ctx.scenario.provision.idempotence if ctx.idempotence is None else ctx.idempotence
    return wanted and ctx.passed("provision")


def _wants_quick(ctx: RunContext) -> bool:
    """Before an idempotence converge that will run, when there are tests (not a Molecule verify
    playbook, which runs with verify): otherwise verify itself gives the quick verdict first."""
    if ctx.scenario.provision is None or ctx.scenario.tests is None or ctx.scenario.provision.verify_playbook:
        return False
    if ctx.scenario.provision.side_effect:  # the tests judge the state the side effect leaves, after idempotence
        return False
    if ctx.scope is not None and ctx.scope.cutoff:
        return False
    return _wants_idempotence(ctx) and _wants_verify(ctx)


def _wants_verify(ctx: RunContext) -> bool:
    """The tests run on a converged cluster, also when the second converge changed something:
    whether the cluster works is worth knowing either way."""
    provisioned = ctx.scenario.provision is None or ctx.passed("provision")
    book = ctx.scenario.provision.verify_playbook if ctx.scenario.provision is not None else None
    judged = ctx.scenario.tests is not None or book is not None or bool(_books(ctx, "side_effect"))
    return judged and ctx.passed("up") and provisioned


# Each step's condition says what it needs from the steps before it; a step whose condition does
# not hold is reported as skipped.
SEQUENCE: tuple[Step, ...] = (
    Step("up", "harness.nodes", ProviderError, lambda ctx: True, _up),
    Step("provision", "harness.phases", ProvisionError, _wants_provision, _provision),
    Step("quick", "harness.verify", VerifyError, _wants_quick, _quick, verdict=False),
    Step("idempotence", "harness.phases", IdempotenceError, _wants_idempotence, _idempotence),
    Step("verify", "harness.phases", VerifyError, _wants_verify, _verify),
    Step("destroy", "harness.nodes", DestroyError, lambda ctx: not ctx.keep, _destroy),
)
PHASES = tuple(step.name for step in SEQUENCE)
_BY_NAME = {step.name: step for step in SEQUENCE}


def check_playbook(scenario: Scenario, on_progress: ProgressFn = _noop) -> None:
    """The playbook's roles and modules resolve (syntax check), before any VM boots; SpecError if not.
    A Kubernetes scenario's k3s bundle is there (HostError) and intact (SpecError) as well, and so
    is an offline scenario's apt bundle (SpecError)."""
    k8s_bundle.preflight(scenario)
    offline.preflight(scenario)
    if scenario.provision is None:
        return
    check = playbook.syntax_check(scenario)
    for shadow in check.shadows:
        on_progress("validate", f"role {shadow.name!r} from {shadow.used} (not {', '.join(map(str, shadow.hidden))})")
    for cshadow in check.collection_shadows:
        on_progress("validate", cshadow.describe())
    for what in check.unchecked:
        on_progress("validate", f"not checked (a run builds this name): {what}")
    if not check.ok:
        raise SpecError(str(scenario.source), check.problems)


def execute(steps: tuple[Step, ...], ctx: RunContext) -> report.RunReport:
    """Run the steps in order, each when its condition holds (else it is reported as skipped); the
    last step (teardown) runs in `finally` whenever a run exists, even after Ctrl-C."""
    rep = report.RunReport(ctx.scenario.name, "", order=tuple(s.name for s in steps))
    *main, last = steps
    try:
        for step in main:
            result = step.work(ctx) if step.applies(ctx) else report.PhaseResult(step.name, "skipped")
            ctx.results[step.name] = result
            rep.record(result)
            if ctx.run is not None:
                rep.run_id = ctx.run.run_id
    finally:
        if ctx.run is not None:
            result = last.work(ctx) if last.applies(ctx) else report.PhaseResult(last.name, "skipped")
            ctx.results[last.name] = result
            rep.record(result)
    return rep


def run_scenario(
    scenario: Scenario,
    *,
    keep: bool = False,
    idempotence: bool | None = None,
    select: str | None = None,
    reuse_from: str | None = None,
    on_progress: ProgressFn = _noop,
    quick: bool = False,
    full: bool = False,
) -> tuple[report.RunReport, RunState | None]:
    """validate, then SEQUENCE. Returns the report; `first_failure` turns it into an exit code.

    `reuse_from` (a checkpoint name): start from that checkpoint of the kept cluster of this
    scenario instead of a new one, and keep the cluster afterwards (the inner loop)."""
    check_playbook(scenario, on_progress)
    ctx = RunContext(
        scenario,
        on_progress,
        keep or reuse_from is not None,
        idempotence,
        select,
        reuse_from,
        quick=quick,
        full=full,
    )
    rep = execute(SEQUENCE, ctx)
    rep.metadata = {
        "harness_version": __version__,
        "ansible_core": playbook.ansible_core_version(),
        "host": platform.node(),
        "accelerator": ctx.run.accel if ctx.run is not None else "",
        "base": rep.phase("up").detail if reuse_from is not None and rep.phases else "a new cluster",
    }
    if ctx.scope is not None:
        rep.metadata["scope"] = {
            "first_converge": ctx.scope.first.to_dict() if ctx.scope.first else None,
            "second_converge": ctx.scope.second.to_dict() if ctx.scope.second else None,
            "cutoff": ctx.scope.cutoff,
        }
    return rep, ctx.run


def first_failure(rep: report.RunReport) -> HarnessError | None:
    """The error for the first failed phase in sequence order (its class carries the exit code)."""
    for ph in rep.all_phases():
        if ph.status not in ("failed", "unreachable") or (ph.name in _BY_NAME and not _BY_NAME[ph.name].verdict):
            continue
        detail = "\n".join(f"  - {f.name}: {f.message}" for f in ph.failures[:20])
        if ph.status == "unreachable":
            return UnreachableError(
                f"phase {ph.name}: nodes stopped answering (infrastructure, not a verdict about the roles):\n{detail}"
            )
        error = _BY_NAME[ph.name].error if ph.name in _BY_NAME else HarnessError
        return error(f"phase {ph.name} failed:\n{detail}")
    return None


def provision_kept(scenario: Scenario, on_progress: ProgressFn = _noop) -> report.PhaseResult:
    """The provision step on a kept cluster (`harness provision`)."""
    check_playbook(scenario, on_progress)
    run = rundir.require_active_run(scenario)
    return phases.provision_phase(run, scenario, on_progress)


def verify_kept(
    scenario: Scenario, select: str | None = None, quick: bool = False, on_progress: ProgressFn = _noop
) -> tuple[report.PhaseResult, RunState]:
    """The verify step on a kept cluster (`harness verify`)."""
    run = rundir.require_active_run(scenario)
    return phases.verify_phase(run, scenario, select, on_progress, quick)[0], run
