"""The phases after `up`: inventory, provision (converge), idempotence (second converge), verify.
Each returns data; the lifecycle decides what a failure means."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness import (
    ansible_events,
    checkpoints,
    molecule,
    offline,
    provision,
    reach,
    rehearsal,
    run_inventory,  # `converge` here is the retrying converge below
    scope,
    verify,
)
from harness import converge as converge_mod
from harness.errors import UsageError
from harness.report import Failure, PhaseResult, Status
from harness.rundir import RunState
from harness.spec import Scenario

log = logging.getLogger(__name__)
ProgressFn = Callable[[str, str], None]
# A converge whose nodes were unreachable is run again at most this often, after they answer SSH.
RETRIES = 2
RETRY_PAUSE_S = 10.0
# At most one "hosts done" progress line per task this often (new tasks and failures always show).
PROGRESS_INTERVAL = 2.0


def target(run: RunState, scenario: Scenario, *, converging: bool = False) -> converge_mod.Target:
    """The run's VMs as a target: its inventory, ssh_config and nodes, Molecule's environment; when
    `converging`, an offline scenario's bundle served for this run (where roles/common finds it)."""
    inv = run_inventory.path(run)
    return converge_mod.Target(
        inventory=inv,
        work_dir=run.path,
        ssh_config=run.ssh_config,
        hosts=tuple(run.nodes),
        extra_vars=offline.serve(run, scenario) if converging else {},
        env=molecule.environment(scenario, run, inv),
    )


def _options(
    run: RunState, scenario: Scenario, phase: str, plan: scope.Plan | None = None, other: Path | None = None
) -> provision.ProvisionOptions:
    """A converge's options (harness.converge); with `other`, a run of that playbook (prepare, verify) instead."""
    return converge_mod.options(scenario, target(run, scenario, converging=True), phase, book=other, plan=plan)


def progress_line(p: ansible_events.Progress) -> str:
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

    def __call__(self, p: ansible_events.Progress) -> None:
        if not p.task:
            return
        task = (p.tasks_started, p.task)  # a task name can come round again (a role applied twice)
        done = p.hosts_done != self._done and p.elapsed - self._at >= self._interval
        if task != self._task or p.hosts_failed != self._failed or done:
            self._task, self._at, self._done, self._failed = task, p.elapsed, p.hosts_done, p.hosts_failed
            self._on_progress(self._phase, progress_line(p))


def _converge_once(
    run: RunState, scenario: Scenario, phase: str, on_progress: ProgressFn, plan: scope.Plan | None = None
) -> ansible_events.ProvisionResult:
    result = provision.run_playbook(_options(run, scenario, phase, plan), ThrottledProgress(phase, on_progress))
    slowest = sorted(result.task_durations, key=lambda d: d.seconds, reverse=True)
    lines = [f"{d.seconds:8.1f}s  {d.host:<12} {d.task}" for d in slowest]
    (run.log_dir / f"{phase}-task-durations.txt").write_text("\n".join(lines) + "\n")
    return result


@dataclass
class Converge:
    """The converge whose result counts, and the retries it took to get one with every node reached."""

    result: ansible_events.ProvisionResult
    retries: list[str] = field(default_factory=list)

    @property
    def unreachable(self) -> list[str]:
        return self.result.unreachable_hosts


def _first_unreachable_message(result: ansible_events.ProvisionResult) -> str:
    for f in result.failures:
        if f.message.startswith("unreachable:"):
            return f.message.splitlines()[0].removeprefix("unreachable:").strip()[:160]
    return "no answer"


def converge(
    run: RunState,
    scenario: Scenario,
    phase: str,
    on_progress: ProgressFn,
    *,
    settle: bool = False,
    plan: scope.Plan | None = None,
) -> Converge:
    """Converge; when nodes were unreachable, wait until they answer SSH again (bounded), close the
    shared connections and converge again, at most RETRIES times with a growing pause. An attempt
    with unreachable nodes is no verdict: its failures and changes do not count. With `settle`
    (idempotence), an attempt that changed something before a node dropped out is followed by one
    converge that may change things, so the judged converge starts from a converged cluster."""
    out = Converge(_converge_once(run, scenario, phase, on_progress, plan))
    for attempt in range(1, RETRIES + 1):
        lost = out.unreachable
        if not lost:
            break
        why = f"attempt {attempt}: {', '.join(lost)} unreachable ({_first_unreachable_message(out.result)})"
        on_progress(phase, f"{why}; waiting for SSH")
        waited = reach.wait_for_ssh(
            run.ssh_config, lost, reach.ssh_wait_seconds(), on_wait=lambda msg: on_progress(phase, msg)
        )
        if waited.silent:
            out.retries.append(f"{why}; {', '.join(waited.silent)} still silent after {waited.seconds:.0f}s: gave up")
            log.warning("%s", out.retries[-1])
            break
        closed = reach.reset_connections(run.ssh_config, lost)
        pause = RETRY_PAUSE_S * attempt
        line = (
            f"{why}; all answered SSH after {waited.seconds:.0f}s; closed {closed} shared connection(s); "
            f"converging again in {pause:.0f}s"
        )
        changed = bool(out.result.changed) or any(st.changed for st in out.result.stats.values())
        if settle and changed:
            line += " (once to settle what the cut-off attempt changed, then the one that is judged)"
        out.retries.append(line)
        log.warning("%s: %s", phase, line)
        on_progress(phase, line)
        time.sleep(pause)
        if settle and changed:
            _converge_once(run, scenario, phase, on_progress, plan)
        out.result = _converge_once(run, scenario, phase, on_progress, plan)
    return out


def converge_detail(result: ansible_events.ProvisionResult) -> str:
    """Task counts summed over hosts, as Ansible's recap names them; without a recap, what is known;
    then how many plays never ran, if any."""
    missed = f"; {len(result.missed)} play(s) never ran" if result.missed else ""
    if not result.stats and not result.ok:
        if not (result.task_durations or result.failures or result.changed):
            return f"play aborted before any task ran (rc {result.rc}){missed}"
        return f"no recap from ansible-playbook (status {result.status}, rc {result.rc}){missed}"
    totals = {k: sum(getattr(st, k) for st in result.stats.values()) for k in ("ok", "changed", "failures")}
    detail = f"{len(result.stats)} hosts: ok={totals['ok']} changed={totals['changed']} failed={totals['failures']}"
    return detail + missed


def unreachable_phase(phase: str, conv: Converge, seconds: float) -> PhaseResult:
    """Nodes that never answered again: an infrastructure failure naming them and what was tried."""
    tried = "; ".join(conv.retries) or "no retry"
    failures = [
        Failure(
            f"{host}: unreachable",
            f"{host} did not answer SSH, so the {phase} converge could not judge the roles on it. Tried: {tried}.\n"
            f"Check the host's load and the VM (`harness status`); full log: {conv.result.log_path}",
        )
        for host in conv.unreachable
    ]
    detail = retried(f"unreachable: {', '.join(conv.unreachable)}", conv.retries)
    return PhaseResult(phase, "unreachable", seconds, failures, detail, retries=conv.retries)


def retried(detail: str, retries: list[str]) -> str:
    """The detail line, saying how many retries it took (none: unchanged)."""
    if not retries:
        return detail
    return f"{detail} (after {len(retries)} retr{'y' if len(retries) == 1 else 'ies'})"


def analyse_units(run: RunState, scenario: Scenario) -> scope.Units:
    """The scenario's playbook as units (harness.scope), with what they share on this run."""
    return scope.analyse(
        scenario,
        inventory=run_inventory.path(run),
        strategy=converge_mod.strategy(scenario),
        key=scope.run_key(run.path),
    )


def _checkpoint_converged(run: RunState, scenario: Scenario, on_progress: ProgressFn) -> None:
    """A green converge is saved as checkpoint `converged`, with a digest of what was converged and,
    beside the run, what each unit of the playbook was (not yet proven idempotent)."""
    scope.forget_record(run.path)
    try:
        cp = checkpoints.save(run, checkpoints.CONVERGED, rehearsal.content_manifest(scenario).short)
    except UsageError as exc:  # nodes with passed-through GPUs
        log.info("no converged checkpoint: %s", exc)
        return
    scope.save_record(run.path, scope.UnitsRecord.of(analyse_units(run, scenario), cp.digest))
    on_progress("provision", f"checkpoint {cp.name!r} saved (content {cp.digest})")


def record_unchanged_state(run: RunState, scenario: Scenario, record: scope.UnitsRecord) -> None:
    """The converge changed nothing: checkpoint `converged` still holds the cluster's state, now
    reached by this content; what was proven on it (idempotence, the tests) stays proven."""
    units = analyse_units(run, scenario)
    renewed = scope.UnitsRecord.of(units, rehearsal.content_manifest(scenario).short)
    renewed.idempotent, renewed.verified = record.idempotent, record.verified
    scope.save_record(run.path, renewed)


def mark_idempotent(run: RunState) -> None:
    record = scope.load_record(run.path)
    if record is not None:
        record.idempotent = True
        scope.save_record(run.path, record)


def mark_verified(run: RunState, scenario: Scenario, detail: str) -> None:
    """A full green verify of the state checkpoint `converged` holds (proven idempotent)."""
    record = scope.load_record(run.path)
    if record is not None and record.idempotent:
        record.verified = {"tests": scope.tests_digest(scenario), "detail": detail, "time": time.time()}
        scope.save_record(run.path, record)


def _changed_anything(result: ansible_events.ProvisionResult) -> bool:
    return bool(result.changed) or any(st.changed for st in result.stats.values())


def prepare_phase(run: RunState, scenario: Scenario, on_progress: ProgressFn) -> PhaseResult | None:
    """The prepare playbooks on a new cluster, before the first converge: None when they passed."""
    started = time.monotonic()
    books = scenario.provision.prepare if scenario.provision is not None else []
    failed = run_playbooks(target(run, scenario, converging=True), scenario, "provision", books, on_progress)
    return PhaseResult("provision", "failed", time.monotonic() - started, failed, "prepare failed") if failed else None


def run_playbooks(
    on: converge_mod.Target, scenario: Scenario, phase: str, books: list[Path], on_progress: ProgressFn
) -> list[Failure]:
    """Playbooks besides the converge (prepare, Molecule's verify.yml), judged from their events."""
    for book in books:
        on_progress(phase, f"running {scenario.resolve(book).name}")
        opts = converge_mod.options(scenario, on, phase, book=book)
        failures = provision.converge_verdict(
            provision.run_playbook(opts, ThrottledProgress(phase, on_progress)), phase
        )
        if failures:
            return failures
    return []


def provision_phase(
    run: RunState, scenario: Scenario, on_progress: ProgressFn, state: scope.ScopeState | None = None
) -> PhaseResult:
    """The first converge; with `state` (the inner loop), only the units its plan runs, and what it
    changed is kept in `state` for the idempotence converge."""
    started = time.monotonic()
    plan = state.first if state is not None else None
    conv = converge(run, scenario, "provision", on_progress, plan=plan)
    result, seconds = conv.result, time.monotonic() - started
    if conv.unreachable:
        return unreachable_phase("provision", conv, seconds)
    detail = retried(converge_detail(result), conv.retries)
    if plan is not None and not plan.full:
        detail += f"; ran {plan.describe()}"
    failures = provision.converge_verdict(result, "provision")
    if failures:
        return PhaseResult("provision", "failed", seconds, failures, detail, retries=conv.retries)
    if state is not None and state.record is not None and state.record.idempotent and not _changed_anything(result):
        # Nothing changed on the checkpoint's state: it still holds, now reached by this content.
        state.cutoff = True
        record_unchanged_state(run, scenario, state.record)
        detail += "; changed nothing: the cluster is still in checkpoint 'converged''s state"
    else:
        if state is not None:
            named = {c.host for c in result.changed}
            unnamed = any(st.changed and h not in named for h, st in result.stats.items())
            state.first_changed = None if unnamed else scope.changed_units(state.units, result.changed)
        _checkpoint_converged(run, scenario, on_progress)
    return PhaseResult("provision", "passed", seconds, detail=detail, retries=conv.retries)


def idempotence_phase(
    run: RunState, scenario: Scenario, on_progress: ProgressFn, plan: scope.Plan | None = None
) -> PhaseResult:
    started = time.monotonic()
    conv = converge(run, scenario, "idempotence", on_progress, settle=True, plan=plan)
    result, seconds = conv.result, time.monotonic() - started
    if conv.unreachable:
        return unreachable_phase("idempotence", conv, seconds)
    detail = retried(converge_detail(result), conv.retries)
    if plan is not None and not plan.full:
        detail += f"; ran {plan.describe()}"
    failures = provision.idempotence_verdict(result, "idempotence")
    status: Status = "failed" if failures else "passed"
    if not failures and not conv.retries:  # a settled retry may have moved past the checkpoint's state
        mark_idempotent(run)
    return PhaseResult("idempotence", status, seconds, failures, detail, retries=conv.retries)


def verify_phase(
    run: RunState,
    scenario: Scenario,
    select: str | None = None,
    on_progress: ProgressFn | None = None,
    quick: bool = False,
    after: verify.VerifyResult | None = None,
) -> tuple[PhaseResult, verify.VerifyResult | None]:
    """The scenario's tests on the run's nodes (verify_on)."""
    return verify_on(target(run, scenario), scenario, select, on_progress, quick, after)


def verify_on(
    on: converge_mod.Target,
    scenario: Scenario,
    select: str | None = None,
    on_progress: ProgressFn | None = None,
    quick: bool = False,
    after: verify.VerifyResult | None = None,
) -> tuple[PhaseResult, verify.VerifyResult | None]:
    """The scenario's tests on the target's hosts (a run's VMs or a site's hosts): the quick
    verdict (tests not marked disturbing) first, said as soon as it is in, then the disturbing ones;
    with `quick` only the first, recorded as a partial verdict. `after`: that quick verdict, run
    earlier on the same state (`verify.run_tests`): only what it left out runs. On a run's VMs, when every failure
    is a node that did not answer SSH, wait for the nodes (bounded), close shared connections and
    run the tests once more; still unreachable is reported as such (an infrastructure failure),
    never as failed tests."""
    say = on_progress or (lambda _p, _m: None)
    book = scenario.provision.verify_playbook if scenario.provision is not None else None
    if book is not None:  # Molecule's ansible verifier: its playbook, before any tests
        started = time.monotonic()
        failed = run_playbooks(on, scenario, "verify", [book], say)
        if failed or scenario.tests is None:
            detail = f"{book.name}: " + ("failed" if failed else "passed")
            return PhaseResult(
                "verify", "failed" if failed else "passed", time.monotonic() - started, failed, detail
            ), None
    if scenario.tests is None:
        return PhaseResult("verify", "skipped", 0.0), None

    def said(first: verify.VerifyResult) -> None:
        left = f"{len(first.disturbing)} disturbing test(s) " + ("left for the full verdict" if quick else "next")
        say("verify", f"quick verdict: {first.counts} ({left})")

    def run_once() -> verify.VerifyResult:
        return verify.run_tests(
            scenario.resolve(scenario.tests),  # type: ignore[arg-type]
            nodes=list(on.hosts),
            inventory=on.inventory,
            ssh_config=on.ssh_config,
            out_dir=on.work_dir,
            env=on.env,
            select=select,
            quick=quick,
            on_quick=said,
            after=after,
        )

    if after is not None and after.partial and not quick:
        left = len(after.disturbing)
        say("verify", f"the quick verdict holds ({after.counts}): running the {left} disturbing test(s) it left")
    result = run_once()
    seconds = result.seconds
    retries: list[str] = []
    if on.ssh_config is not None and verify.only_unreachable(result.failures):
        ssh_config = on.ssh_config
        lost = verify.unreachable_nodes(result.failures)
        why = f"{result.failed} test(s) failed because {', '.join(lost)} did not answer SSH"
        say("verify", f"{why}; waiting for SSH")
        waited = reach.wait_for_ssh(ssh_config, lost, reach.ssh_wait_seconds(), on_wait=lambda m: say("verify", m))
        if waited.silent:
            retries.append(f"{why}; {', '.join(waited.silent)} still silent after {waited.seconds:.0f}s: gave up")
        else:
            reach.reset_connections(ssh_config, lost)
            retries.append(f"{why}; all answered after {waited.seconds:.0f}s; ran the tests again")
            say("verify", retries[-1])
            result = run_once()
            seconds += waited.seconds + result.seconds
        log.warning("verify: %s", retries[-1])
    detail = retried(result.detail, retries)
    status: Status = "passed" if result.ok else "unreachable" if verify.only_unreachable(result.failures) else "failed"
    failures = [] if result.ok else result.failures
    phase = PhaseResult(
        "verify", status, seconds, failures, detail, result.junit, retries, result.partial, result.not_run
    )
    if after is not None:  # the quick pass ran (and was timed) in its own step: only what ran here
        phase.seconds = max(0.0, seconds - after.seconds)
        phase.detail += "; the quick verdict's tests ran before the idempotence converge, which changed nothing"
    elif result.quick is not None and not result.partial:  # two passes: the first one's seconds
        phase.quick_seconds = result.quick.seconds
    return phase, result
