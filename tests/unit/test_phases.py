from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness import lifecycle, phases, reach, report
from harness.ansible_events import Progress, ProvisionResult, result_from_events

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ansible"


def _fixture(case: str, log: Path) -> ProvisionResult:
    events = [json.loads(line) for line in (FIXTURES / case / "events.jsonl").read_text().splitlines()]
    meta = json.loads((FIXTURES / case / "result.json").read_text())
    return result_from_events(events, meta["rc"], meta["status"], log)


def _aborted() -> ProvisionResult:
    return _fixture("aborted_play", FIXTURES / "aborted_play" / "stdout")


# --- progress -----------------------------------------------------------------------------------


def _progress(task: str, elapsed: float, done: int, failed: int = 0, started: int = 1, total: int = 4) -> Progress:
    return Progress("site", task, done, failed, started, elapsed, False, total)


def test_progress_line_shows_hosts_done_of_the_hosts_seen() -> None:
    assert phases.progress_line(_progress("common : Install packages", 42.2, 2)) == (
        "[   42s] common : Install packages (2/4 hosts done, 0 failed)"
    )
    assert phases.progress_line(_progress("Gathering Facts", 0.0, 0, total=0)) == (
        "[    0s] Gathering Facts (0/? hosts done, 0 failed)"
    )


def test_progress_moves_as_hosts_finish_but_at_most_every_two_seconds() -> None:
    lines: list[str] = []
    progress = phases.ThrottledProgress("provision", lambda phase, line: lines.append(f"{phase} {line}"))
    for snap in [
        Progress("site", None, 0, 0, 0, 0.0, False, 0),  # play start: no task yet
        _progress("common : Install packages", 1.0, 0),  # new task: shown
        _progress("common : Install packages", 1.5, 1),  # 0.5 s later: held back
        _progress("common : Install packages", 3.5, 2),  # 2.5 s after the last line: shown
        _progress("common : Install packages", 4.0, 3, failed=1),  # a failure: always shown
        _progress("common : Install packages", 4.5, 4, failed=1),  # held back
        _progress("common : Install packages", 5.0, 4, failed=1),  # nothing moved: not shown
        _progress("common : Install packages", 9.0, 4, failed=1),  # the held-back count, later: shown
        _progress("common : Install packages", 9.2, 4, failed=1),  # nothing moved: not shown
        _progress("common : Install packages", 9.5, 0, failed=1, started=2),  # same name, next task: shown
    ]:
        progress(snap)

    assert lines == [
        "provision [    1s] common : Install packages (0/4 hosts done, 0 failed)",
        "provision [    4s] common : Install packages (2/4 hosts done, 0 failed)",
        "provision [    4s] common : Install packages (3/4 hosts done, 1 failed)",
        "provision [    9s] common : Install packages (4/4 hosts done, 1 failed)",
        "provision [   10s] common : Install packages (0/4 hosts done, 1 failed)",
    ]


# --- aborted plays ------------------------------------------------------------------------------


def test_converge_detail_never_claims_zero_hosts_for_an_aborted_play(tmp_path: Path) -> None:
    assert phases.converge_detail(_aborted()) == "play aborted before any task ran (rc 4)"
    clean = _fixture("converge_clean", tmp_path / "stdout")
    assert phases.converge_detail(clean) == "2 hosts: ok=10 changed=0 failed=0"
    killed = _fixture("converge_clean", tmp_path / "stdout")
    killed.stats, killed.rc, killed.status = {}, -9, "failed"
    assert phases.converge_detail(killed) == "no recap from ansible-playbook (status failed, rc -9)"


@pytest.mark.parametrize("phase", ["provision", "idempotence"])
def test_aborted_converge_reports_its_cause(monkeypatch: pytest.MonkeyPatch, phase: str) -> None:
    monkeypatch.setattr(phases, "_converge_once", lambda *args: _aborted())
    run_phase = phases.provision_phase if phase == "provision" else phases.idempotence_phase
    run: Any = object()
    scenario: Any = object()

    result = run_phase(run, scenario, lambda phase, line: None)

    assert (result.name, result.status) == (phase, "failed")
    assert result.detail == "play aborted before any task ran (rc 4)"
    [failure] = result.failures
    assert failure.name == phase
    cause = "couldn't resolve module/action 'community.general.no_such_module'"
    assert failure.message.splitlines()[0].startswith(f"ansible-playbook stopped: {cause} at ")
    assert "^ here" in failure.message
    assert failure.message.endswith(f"Full log: {FIXTURES / 'aborted_play' / 'stdout'}")
    # The CLI prints the first failed phase's failures: the cause is in that error.
    rep = report.RunReport("s", "r1", [report.PhaseResult("up", "passed", 1.0), result])
    err = lifecycle.first_failure(rep)
    assert err is not None and cause in str(err)


# --- unreachable nodes: retry, then classify ------------------------------------------------------


class _Run:
    ssh_config = Path("/nonexistent/ssh_config")


def _sequence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *cases: str) -> list[str]:
    """Make each converge return the next recorded case; returns the list of converges run."""
    ran: list[str] = []
    results = iter(cases)

    def once(*_args: Any) -> ProvisionResult:
        case = next(results)
        ran.append(case)
        return _fixture(case, tmp_path / "stdout")

    monkeypatch.setattr(phases, "_converge_once", once)
    monkeypatch.setattr(phases, "_checkpoint_converged", lambda *_args: None)
    monkeypatch.setattr(phases, "RETRY_PAUSE_S", 0.0)
    monkeypatch.setattr(reach, "reset_connections", lambda cfg, nodes: len(nodes))
    return ran


def _ssh_answers(monkeypatch: pytest.MonkeyPatch, answers: bool) -> list[list[str]]:
    waited: list[list[str]] = []

    def wait(cfg: Path, nodes: list[str], deadline: float, on_wait: Any = None) -> reach.WaitResult:
        waited.append(list(nodes))
        return reach.WaitResult(nodes if answers else [], [] if answers else nodes, 42.0)

    monkeypatch.setattr(reach, "wait_for_ssh", wait)
    return waited


def test_a_node_that_comes_back_is_retried_and_the_phase_passes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ran = _sequence(monkeypatch, tmp_path, "unreachable_host", "converge_clean")
    waited = _ssh_answers(monkeypatch, True)
    lines: list[str] = []

    result = phases.provision_phase(_Run(), object(), lambda _p, line: lines.append(line))  # type: ignore[arg-type]

    assert ran == ["unreachable_host", "converge_clean"]
    assert result.status == "passed" and not result.failures
    [retry] = result.retries
    assert "unreachable" in retry and "answered SSH after 42s" in retry
    assert result.detail.endswith("(after 1 retry)")
    assert waited and any("converging again" in line for line in lines)


def test_a_node_that_stays_silent_is_an_infrastructure_failure_not_a_role_verdict(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _sequence(monkeypatch, tmp_path, "unreachable_host")
    waited = _ssh_answers(monkeypatch, False)

    result = phases.idempotence_phase(_Run(), object(), lambda _p, _l: None)  # type: ignore[arg-type]

    [lost] = waited
    assert result.status == "unreachable"
    assert [f.name for f in result.failures] == [f"{host}: unreachable" for host in lost]
    assert "gave up" in result.retries[0]
    err = lifecycle.first_failure(report.RunReport("s", "r", [result]))
    assert err is not None and err.exit_code == 15 and "not a verdict about the roles" in str(err)
    rep = report.RunReport("s", "r", [report.PhaseResult("up", "passed"), result])
    assert rep.status == "failed"


def test_idempotence_settles_what_a_cut_off_attempt_changed_before_judging(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ran = _sequence(monkeypatch, tmp_path, "unreachable_host", "converge_changed", "converge_clean")
    _ssh_answers(monkeypatch, True)
    first = _fixture("unreachable_host", tmp_path / "stdout")
    assert first.changed or any(s.changed for s in first.stats.values()), "fixture must change something"

    result = phases.idempotence_phase(_Run(), object(), lambda _p, _l: None)  # type: ignore[arg-type]

    assert ran == ["unreachable_host", "converge_changed", "converge_clean"]
    assert result.status == "passed" and "settle" in result.retries[0]
