"""The lifecycle as data: the sequence with fake steps (no VM)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from harness import lifecycle, node_packages, nodes, playbook, report
from harness.errors import DestroyError, IdempotenceError, Interrupted, ProviderError, ProvisionError, VerifyError
from harness.rundir import RunState
from harness.spec import parse_scenario
from tests.unit.test_rehearsal import make_scenario

SCENARIO = "name: t\nnodes:\n  - name: a\nprovision:\n  playbook: site.yml\ntests: tests\n"


def _ctx(tmp_path: Path, **kw: Any) -> lifecycle.RunContext:
    (tmp_path / "site.yml").write_text("- hosts: all\n  tasks: []\n")
    (tmp_path / "tests").mkdir(exist_ok=True)
    return lifecycle.RunContext(parse_scenario(SCENARIO, tmp_path / "s.yml"), **kw)


def _steps(outcomes: dict[str, str], ran: list[str], interrupt: str | None = None) -> tuple[lifecycle.Step, ...]:
    """The real sequence's names, errors and conditions, with work that only records itself."""

    def work(name: str) -> Any:
        def do(ctx: lifecycle.RunContext) -> report.PhaseResult:
            ran.append(name)
            if name == "up":
                ctx.run = RunState("t-000001", "t", "s.yml", "/nonexistent", 1, "up")
            if name == interrupt:
                raise Interrupted("interrupted")
            status = outcomes.get(name, "passed")
            failures = [report.Failure(name, f"{name} went wrong")] if status != "passed" else []
            return report.PhaseResult(name, status, 1.0, failures)  # type: ignore[arg-type]

        return do

    return tuple(
        lifecycle.Step(s.name, s.owner, s.error, s.applies, work(s.name), s.verdict) for s in lifecycle.SEQUENCE
    )


def test_the_sequence_is_one_list_in_lifecycle_order() -> None:
    assert lifecycle.PHASES == ("up", "provision", "quick", "idempotence", "verify", "destroy")
    assert [s.error for s in lifecycle.SEQUENCE] == [
        ProviderError, ProvisionError, VerifyError, IdempotenceError, VerifyError, DestroyError
    ]  # fmt: skip
    # The quick verdict is reported, never the exit code: verify carries its failures.
    assert [s.name for s in lifecycle.SEQUENCE if not s.verdict] == ["quick"]


@pytest.mark.parametrize(
    ("failing", "exit_code", "ran_after"),
    [
        ("up", 10, ["destroy"]),
        ("provision", 11, ["destroy"]),
        # A cluster that converged but not idempotently is still verified: worth knowing either way.
        ("idempotence", 12, ["verify", "destroy"]),
        ("verify", 13, ["destroy"]),
        ("destroy", 14, []),
    ],
)
def test_a_failing_step_gives_its_exit_code_dependent_steps_skip_teardown_runs(
    tmp_path: Path, failing: str, exit_code: int, ran_after: list[str]
) -> None:
    ran: list[str] = []
    rep = lifecycle.execute(_steps({failing: "failed"}, ran), _ctx(tmp_path))
    names = list(lifecycle.PHASES)
    assert ran == [*names[: names.index(failing) + 1], *ran_after]
    statuses = {p.name: p.status for p in rep.all_phases()}
    assert statuses[failing] == "failed"
    for later in names[names.index(failing) + 1 : -1]:
        assert statuses[later] == ("passed" if later in ran_after else "skipped")
    err = lifecycle.first_failure(rep)
    assert err is not None and err.exit_code == exit_code and f"{failing} went wrong" in str(err)


def test_a_failed_quick_verdict_never_decides_the_exit_code_the_steps_after_it_do(tmp_path: Path) -> None:
    """The quick verdict comes before the idempotence converge, but a run with failing tests and a
    non-idempotent converge exits as the plain order would: idempotence first."""
    ran: list[str] = []
    rep = lifecycle.execute(
        _steps({"quick": "failed", "idempotence": "failed", "verify": "failed"}, ran), _ctx(tmp_path)
    )
    assert ran == ["up", "provision", "quick", "idempotence", "verify", "destroy"]
    err = lifecycle.first_failure(rep)
    assert err is not None and err.exit_code == 12
    ran.clear()
    rep = lifecycle.execute(_steps({"quick": "failed"}, ran), _ctx(tmp_path))
    assert rep.phase("quick").status == "failed" and lifecycle.first_failure(rep) is None


def test_unreachable_is_its_own_exit_code_and_stops_the_sequence(tmp_path: Path) -> None:
    ran: list[str] = []
    rep = lifecycle.execute(_steps({"provision": "unreachable"}, ran), _ctx(tmp_path))
    assert ran == ["up", "provision", "destroy"]
    err = lifecycle.first_failure(rep)
    assert err is not None and err.exit_code == 15


def test_teardown_runs_after_an_interrupt_and_the_interrupt_goes_on(tmp_path: Path) -> None:
    ran: list[str] = []
    with pytest.raises(Interrupted):
        lifecycle.execute(_steps({}, ran, interrupt="provision"), _ctx(tmp_path))
    assert ran == ["up", "provision", "destroy"]


def test_keep_skips_only_teardown(tmp_path: Path) -> None:
    ran: list[str] = []
    steps = _steps({}, ran)
    destroy = lifecycle.SEQUENCE[-1]
    steps = (*steps[:-1], lifecycle.Step("destroy", destroy.owner, destroy.error, destroy.applies, steps[-1].work))
    rep = lifecycle.execute(steps, _ctx(tmp_path, keep=True))
    assert ran == ["up", "provision", "quick", "idempotence", "verify"]
    assert rep.phase("destroy").status == "skipped" and lifecycle.first_failure(rep) is None


def test_no_teardown_when_up_never_made_a_run(tmp_path: Path) -> None:
    ran: list[str] = []
    steps = _steps({}, ran)
    failing_up = lifecycle.Step(
        "up", "harness.nodes", ProviderError, lambda ctx: True,
        lambda ctx: report.PhaseResult("up", "failed", 0.0, [report.Failure("up", "no box")]),
    )  # fmt: skip
    rep = lifecycle.execute((failing_up, *steps[1:]), _ctx(tmp_path))
    assert ran == [] and rep.run_id == ""
    assert [p.status for p in rep.all_phases()] == ["failed", "skipped", "skipped", "skipped", "skipped", "skipped"]


@pytest.mark.parametrize("keep", [False, True])
def test_up_is_told_whether_the_cluster_outlives_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keep: bool
) -> None:
    """A plain `run` holds its cluster (gc removes it once the harness is gone, even killed with
    SIGKILL); `run --keep` keeps it."""
    asked: list[bool] = []

    def up(scenario: Any, on_progress: Any, *, keep: bool, bundle_checked: bool) -> RunState:
        assert bundle_checked, "run_scenario checked the bundle before up"
        asked.append(keep)
        return RunState("t-000001", "t", "s.yml", "/nonexistent", 1, "up", keep=keep)

    monkeypatch.setattr(nodes, "up", up)
    lifecycle.SEQUENCE[0].work(_ctx(tmp_path, keep=keep))
    assert asked == [keep]


# --- the inner loop on top of `converged` (harness.scope), with fake converges and tests --------------


def _scoped_ctx(tmp_path: Path, **kw: Any) -> lifecycle.RunContext:
    ctx = _ctx(tmp_path, **kw)
    (tmp_path / "roles" / "r" / "tasks").mkdir(parents=True)
    (tmp_path / "roles" / "r" / "tasks" / "main.yml").write_text("- name: t\n  ansible.builtin.ping:\n")
    (tmp_path / "site.yml").write_text("- hosts: all\n  roles: [r]\n")
    (tmp_path / "tests" / "test_x.py").write_text("def test_x():\n    pass\n")
    run_dir = tmp_path / ".harness" / "runs" / "t-000001"  # never content (rehearsal._SKIP_DIRS)
    run_dir.mkdir(parents=True)
    ctx.run = RunState("t-000001", "t", "s.yml", str(run_dir), 1, "up")
    ctx.reset_to = "converged"
    return ctx


def _record(ctx: lifecycle.RunContext, *, idempotent: bool, verified_tests: str | None) -> None:
    from harness import phases, scope

    run = ctx.live_run()
    record = scope.UnitsRecord.of(phases.analyse_units(run, ctx.scenario), "c0ffee")
    record.idempotent = idempotent
    if verified_tests is not None:
        record.verified = {"tests": verified_tests, "detail": "7 passed, 0 failed, 0 skipped"}
    scope.save_record(run.path, record)


def _fake_phases(monkeypatch: pytest.MonkeyPatch, calls: list[str]) -> None:
    from harness import phases

    def provision_phase(run: Any, scenario: Any, on_progress: Any, state: Any = None) -> report.PhaseResult:
        calls.append(f"provision:{'full' if state is None or state.first.full else 'scoped'}")
        return report.PhaseResult("provision", "passed", 1.0)

    def idempotence_phase(run: Any, scenario: Any, on_progress: Any, plan: Any = None) -> report.PhaseResult:
        calls.append("idempotence")
        return report.PhaseResult("idempotence", "passed", 1.0)

    def verify_phase(
        run: Any, scenario: Any, select: Any = None, on_progress: Any = None, quick: bool = False, after: Any = None
    ) -> tuple[report.PhaseResult, None]:
        calls.append("verify:quick" if quick else "verify")
        return report.PhaseResult("verify", "passed", 1.0, detail="1 passed"), None

    monkeypatch.setattr(phases, "provision_phase", provision_phase)
    monkeypatch.setattr(phases, "idempotence_phase", idempotence_phase)
    monkeypatch.setattr(phases, "verify_phase", verify_phase)
    monkeypatch.setattr(node_packages, "record_after_green", lambda *a, **k: None)


def _steps_after_up(ctx: lifecycle.RunContext) -> dict[str, report.PhaseResult]:
    ctx.results["up"] = report.PhaseResult("up", "passed")
    for step in lifecycle.SEQUENCE[1:5]:
        ctx.results[step.name] = step.work(ctx) if step.applies(ctx) else report.PhaseResult(step.name, "skipped")
    return ctx.results


def test_nothing_changed_is_answered_without_converge_or_tests_and_labelled_partial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness import scope

    calls: list[str] = []
    _fake_phases(monkeypatch, calls)
    ctx = _scoped_ctx(tmp_path)
    _record(ctx, idempotent=True, verified_tests=scope.tests_digest(ctx.scenario))
    (tmp_path / "roles" / "r" / "tasks" / "main.yml").write_text("# a comment\n- name: t\n  ansible.builtin.ping:\n")
    results = _steps_after_up(ctx)
    assert calls == []
    assert "nothing to converge" in results["provision"].detail and results["provision"].partial
    assert results["idempotence"].status == "passed" and results["idempotence"].partial
    assert "carried over: 7 passed" in results["verify"].detail and results["verify"].partial
    assert [n.name for n in results["provision"].not_run] == ["play 1: role r"]


def test_changed_tests_are_run_even_when_nothing_else_changed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    _fake_phases(monkeypatch, calls)
    ctx = _scoped_ctx(tmp_path)
    _record(ctx, idempotent=True, verified_tests="an-older-digest")
    results = _steps_after_up(ctx)
    assert calls == ["verify"]
    assert results["verify"].detail == "1 passed" and not results["verify"].partial


@pytest.mark.parametrize(("full", "idempotent"), [(True, True), (False, False)])
def test_full_or_an_unproven_checkpoint_converges_everything_twice_and_tests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, full: bool, idempotent: bool
) -> None:
    from harness import scope

    calls: list[str] = []
    _fake_phases(monkeypatch, calls)
    ctx = _scoped_ctx(tmp_path, full=full)
    _record(ctx, idempotent=idempotent, verified_tests=scope.tests_digest(ctx.scenario))
    results = _steps_after_up(ctx)
    assert calls == ["provision:full", "verify:quick", "idempotence", "verify"]
    assert not any(r.partial for r in results.values())


def test_the_report_names_the_ansible_core_the_run_converged_with(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lifecycle, "check_playbook", lambda sc, on_progress=None: None)
    monkeypatch.setattr(lifecycle, "execute", lambda steps, ctx: report.RunReport(ctx.scenario.name, "r-1"))
    monkeypatch.setattr(playbook, "ansible_core_version", lambda: "2.19.15")
    rep, _ = lifecycle.run_scenario(make_scenario(tmp_path))
    assert rep.metadata["ansible_core"] == "2.19.15"
    assert rep.to_dict()["metadata"]["ansible_core"] == "2.19.15"
    assert "Run `r-1`. ansible-core 2.19.15." in report.render_markdown(rep)


# --- Molecule's side_effect and cleanup playbooks, with fake converges, playbooks and tests -----------

MOLECULE_BOOKS = SCENARIO.replace("tests: tests\n", "  side_effect: [se.yml]\n  cleanup: [cu.yml]\ntests: tests\n")


def _books_ctx(tmp_path: Path, **kw: Any) -> lifecycle.RunContext:
    for book in ("site.yml", "se.yml", "cu.yml"):
        (tmp_path / book).write_text("- hosts: all\n  tasks: []\n")
    (tmp_path / "tests").mkdir(exist_ok=True)
    return lifecycle.RunContext(parse_scenario(MOLECULE_BOOKS, tmp_path / "s.yml"), **kw)


def _real_steps(calls: list[str], fail: set[str]) -> tuple[lifecycle.Step, ...]:
    """The real sequence, its `up` a fake that brings up nothing."""

    def up(ctx: lifecycle.RunContext) -> report.PhaseResult:
        ctx.run = RunState("t-000001", "t", "s.yml", "/nonexistent", 1, "up")
        calls.append("up")
        return report.PhaseResult("up", "failed" if "up" in fail else "passed", 1.0)

    first = lifecycle.SEQUENCE[0]
    return (lifecycle.Step("up", first.owner, first.error, first.applies, up), *lifecycle.SEQUENCE[1:])


def _fake_books(monkeypatch: pytest.MonkeyPatch, calls: list[str], fail: set[str]) -> None:
    """Fake converges and tests (_fake_phases), playbooks that record themselves (failing when their
    name is in `fail`), a teardown that records itself."""
    from harness import phases

    _fake_phases(monkeypatch, calls)

    def run_playbooks(on: Any, scenario: Any, phase: str, books: list[Path], on_progress: Any) -> list[report.Failure]:
        calls.extend(f"{phase}:{b.name}" for b in books)
        return [report.Failure(b.name, f"{b.name} failed") for b in books if b.name in fail]

    def verify_phase(
        run: Any, scenario: Any, select: Any = None, on_progress: Any = None, quick: bool = False, after: Any = None
    ) -> tuple[report.PhaseResult, None]:
        calls.append("verify:quick" if quick else "verify")
        return report.PhaseResult("verify", "failed" if "tests" in fail else "passed", 1.0), None

    monkeypatch.setattr(phases, "prepare_phase", lambda run, scenario, on_progress: None)
    monkeypatch.setattr(phases, "run_playbooks", run_playbooks)
    monkeypatch.setattr(phases, "verify_phase", verify_phase)
    monkeypatch.setattr(phases, "target", lambda run, scenario, converging=False: None)
    monkeypatch.setattr(nodes, "teardown", lambda run: calls.append("teardown"))


def test_with_a_side_effect_there_is_no_quick_verdict_before_idempotence(tmp_path: Path) -> None:
    ctx = _books_ctx(tmp_path)
    ctx.results = {n: report.PhaseResult(n, "passed") for n in ("up", "provision")}
    assert not lifecycle._wants_quick(ctx)
    plain = _ctx(tmp_path)  # the same scenario without a side effect
    plain.results = dict(ctx.results)
    assert lifecycle._wants_quick(plain)


def test_side_effect_runs_after_idempotence_before_the_tests_and_cleanup_before_teardown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Molecule's order: converge, idempotence, side_effect, verify, cleanup, destroy."""
    calls: list[str] = []
    _fake_books(monkeypatch, calls, set())
    rep = lifecycle.execute(_real_steps(calls, set()), _books_ctx(tmp_path))
    assert calls == [
        "up", "provision:full", "idempotence", "verify:se.yml", "verify", "destroy:cu.yml", "teardown"
    ]  # fmt: skip
    assert rep.phase("quick").status == "skipped" and lifecycle.first_failure(rep) is None


def test_a_failed_side_effect_is_verifys_failure_and_the_tests_do_not_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    _fake_books(monkeypatch, calls, {"se.yml"})
    rep = lifecycle.execute(_real_steps(calls, set()), _books_ctx(tmp_path))
    assert "verify" not in calls and calls[-2:] == ["destroy:cu.yml", "teardown"]
    err = lifecycle.first_failure(rep)
    assert err is not None and err.exit_code == 13 and "se.yml failed" in str(err)


def test_cleanup_runs_after_a_failed_step_and_its_own_failure_never_hides_the_runs_verdict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    _fake_books(monkeypatch, calls, {"tests", "cu.yml"})
    rep = lifecycle.execute(_real_steps(calls, set()), _books_ctx(tmp_path))
    assert calls[-2:] == ["destroy:cu.yml", "teardown"]
    assert rep.phase("destroy").status == "failed" and "cleanup failed" in rep.phase("destroy").detail
    err = lifecycle.first_failure(rep)
    assert err is not None and err.exit_code == 13  # the tests' failure, not the cleanup's
    calls.clear()
    _fake_books(monkeypatch, calls, {"cu.yml"})
    rep = lifecycle.execute(_real_steps(calls, set()), _books_ctx(tmp_path))
    err = lifecycle.first_failure(rep)
    assert err is not None and err.exit_code == 14 and "cu.yml failed" in str(err)
    assert "teardown" in calls  # torn down all the same


def test_no_cleanup_with_keep_after_a_failed_up_or_after_an_interrupt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    _fake_books(monkeypatch, calls, set())
    lifecycle.execute(_real_steps(calls, set()), _books_ctx(tmp_path, keep=True))
    assert "destroy:cu.yml" not in calls and "teardown" not in calls
    calls.clear()
    lifecycle.execute(_real_steps(calls, {"up"}), _books_ctx(tmp_path))
    assert calls == ["up", "teardown"]
    calls.clear()
    steps = _real_steps(calls, set())

    def interrupted(ctx: lifecycle.RunContext) -> report.PhaseResult:
        raise Interrupted("interrupted")

    idem = steps[3]
    steps = (*steps[:3], lifecycle.Step(idem.name, idem.owner, idem.error, idem.applies, interrupted), *steps[4:])
    with pytest.raises(Interrupted):
        lifecycle.execute(steps, _books_ctx(tmp_path))
    assert calls == ["up", "provision:full", "teardown"]
