"""ci/bench.py, the helper of ci/bench.sh: its table from fake report directories (no VM boots),
and the scenario copy and its edits, which must never touch the checkout."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from harness.paths import ROLES_DIR

BENCH_PY = Path(__file__).resolve().parents[2] / "ci" / "bench.py"


def _load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ci_bench", BENCH_PY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


bench = _load_bench()


def _phase(seconds: float, status: str = "passed", **extra: Any) -> dict[str, Any]:
    return {"status": status, "seconds": seconds, "detail": "", "failures": [], "retries": [], **extra}


def _summary(reports: Path, loop: str, phases: dict[str, dict[str, Any]], partial: bool = False) -> None:
    status = "failed" if any(p["status"] == "failed" for p in phases.values()) else "passed"
    base = "a new cluster" if loop in ("naive", "kept") else "reused run r1: reset to checkpoint 'converged'"
    data = {
        "scenario": "slurm",
        "run_id": f"r-{loop}",
        "status": status,
        "partial": partial,
        "phases": phases,
        "metadata": {"host": "bench7", "accelerator": "tcg", "harness_version": "0.1", "base": base},
    }
    (reports / loop).mkdir(parents=True)
    (reports / loop / "summary.json").write_text(json.dumps(data))


def _runs(reports: Path, lines: list[tuple[str, str, str]]) -> None:
    """(loop, exit code or "-", note); each loop ran 100 s of wall time."""
    rows = [f"{loop}\t{rc}\t" + ("\t\t" if rc == "-" else "1000.0\t1100.0\t") + note for loop, rc, note in lines]
    (reports / "runs.tsv").write_text("\n".join(rows) + "\n")


def _table(text: str) -> dict[str, dict[str, str]]:
    """The markdown table's rows (one per loop, in the order of LOOPS) by loop name, cells by header."""
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[1:]]
    return {name: dict(zip(header, row, strict=True)) for name, row in zip(bench.LOOP_NAMES, rows, strict=True)}


FULL = {
    "up": _phase(300.0),
    "provision": _phase(850.0),
    "idempotence": _phase(160.0),
    "verify": _phase(320.0, quick_seconds=70.0),
}


def _slurm_reports(reports: Path) -> None:
    reports.mkdir()
    _summary(reports, "naive", {**FULL, "destroy": _phase(15.0)})
    _summary(reports, "kept", {**FULL, "destroy": _phase(0.0, "skipped")})
    unit_left = [{"name": "play 1: common", "why": "before the first changed unit"}]
    _summary(
        reports,
        "edit-first",
        {
            "up": _phase(26.0),
            "provision": _phase(120.0, detail="ok=90 changed=4; ran units 1-3 of 3", partial=True, not_run=unit_left),
            "idempotence": _phase(60.0, partial=True, not_run=[]),
            "verify": _phase(320.0, quick_seconds=70.0),
        },
        partial=True,
    )
    _summary(
        reports,
        "edit-late",
        {"up": _phase(26.0), "provision": _phase(90.0), "idempotence": _phase(50.0), "verify": _phase(40.0, "failed")},
    )
    nothing = "nothing to converge: no unit changed (proven idempotent there)"
    _summary(
        reports,
        "comment",
        {
            "up": _phase(26.0),
            "provision": _phase(0.0, detail=nothing, partial=True, not_run=unit_left),
            "idempotence": _phase(0.0, partial=True, not_run=[]),
            "verify": _phase(0.0, detail="carried over: 39 passed, 0 failed, 0 skipped", partial=True, not_run=[]),
        },
        partial=True,
    )
    _runs(
        reports,
        [
            ("naive", "0", ""),
            ("kept", "0", ""),
            ("reuse-booted", "-", "skipped (BENCH_SKIP)"),
            ("edit-first", "0", ""),
            ("edit-late", "1", ""),
            ("comment", "0", ""),
        ],
    )
    setup = {"scenario": "slurm", "late_role": "slurm", "edits": {"comment": {"file": "roles/common/tasks/main.yml"}}}
    (reports / "setup.json").write_text(json.dumps(setup))


def test_the_table_gives_full_and_quick_verdicts_their_ratios_and_whether_partial(tmp_path: Path) -> None:
    _slurm_reports(tmp_path / "R")
    text, ok = bench.render(tmp_path / "R")
    rows = _table(text)

    assert not ok  # edit-late failed
    assert list(rows) == list(bench.LOOP_NAMES)
    naive, first, late, comment = rows["naive"], rows["edit-first"], rows["edit-late"], rows["comment"]
    # The quick verdict: up + provision + idempotence + verify's first pass, against the naive full.
    assert (naive["full s"], naive["x naive"], naive["quick s"], naive["quick x naive"]) == (
        "1645.0",
        "1.00",
        "1380.0",
        "0.84",
    )
    assert naive["verify s"] == "320.0 (70.0)" and naive["partial"] == "no"
    assert (first["full s"], first["x naive"], first["quick s"], first["quick x naive"]) == (
        "526.0",
        "0.32",
        "276.0",
        "0.17",
    )
    assert first["partial"] == "yes" and first["verdict"] == "passed"
    # A failed loop: its ratios are marked, and the run fails.
    assert late["verdict"] == "failed (exit 1)" and late["x naive"].endswith("*") and late["verify s"] == "40.0 FAILED"
    assert late["loop"].startswith("one-task edit of roles/slurm (late role)")
    # Nothing to converge and verify carried over: the verdict is the reset's time, and partial.
    assert (comment["full s"], comment["quick s"], comment["quick x naive"], comment["partial"]) == (
        "26.0",
        "26.0",
        "0.02",
        "yes",
    )
    assert rows["reuse-booted"]["verdict"] == "skipped" and rows["reuse-booted"]["quick s"] == "-"
    assert (
        "- comment: partial provision: nothing to converge: no unit changed (proven idempotent there) (1 left out)"
        in (text)
    )
    assert "- comment: partial verify: carried over: 39 passed, 0 failed, 0 skipped" in text
    assert "- edit-first: partial provision: ok=90 changed=4; ran units 1-3 of 3 (1 left out)" in text
    assert "- comment: the edit, appended to the copy's `roles/common/tasks/main.yml`:" in text
    assert "WARNING" not in text


def test_a_loop_not_applicable_is_no_failure_and_without_naive_the_ratios_are_to_kept(tmp_path: Path) -> None:
    reports = tmp_path / "R"
    reports.mkdir()
    for loop in ("kept", "edit-first", "comment"):
        _summary(reports, loop, {"up": _phase(10.0), "provision": _phase(10.0), "verify": _phase(20.0)})
    _runs(
        reports,
        [
            ("naive", "-", "skipped (BENCH_SKIP)"),
            ("kept", "0", ""),
            ("reuse-booted", "-", "skipped (BENCH_SKIP)"),
            ("edit-first", "0", ""),
            ("edit-late", "-", "not applicable: the playbook's last play with roles runs 'common' last"),
            ("comment", "0", ""),
        ],
    )
    text, ok = bench.render(reports)
    rows = _table(text)

    assert ok
    assert rows["edit-late"]["verdict"] == "n/a" and rows["edit-late"]["loop"].startswith(
        "one-task edit of roles/<none>"
    )
    assert "- edit-late: not applicable: the playbook's last play with roles runs 'common' last" in text
    assert rows["kept"]["x naive"] == "1.00" and rows["kept"]["quick s"] == "40.0"  # one pass: verify is the quick one
    assert "ratios are to loop 2 (kept)" in text


def test_a_missing_kept_cluster_is_a_failure(tmp_path: Path) -> None:
    reports = tmp_path / "R"
    reports.mkdir()
    _runs(reports, [("kept", "1", ""), ("edit-first", "-", "no kept cluster after the loops before")])
    text, ok = bench.render(reports)

    assert not ok and _table(text)["edit-first"]["verdict"] == "not run"


def _checkout_roles() -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in ROLES_DIR.rglob("*") if p.is_file()}


def test_the_edits_change_the_copy_only(tmp_path: Path) -> None:
    before = _checkout_roles()
    work, reports = tmp_path / "work", tmp_path / "R"
    copy = bench.prepare("slurm", work, reports)
    assert copy.is_relative_to(work)
    setup = json.loads((reports / "setup.json").read_text())
    assert (setup["late_role"], setup["late_role_why"]) == ("slurm", "roles/slurm: the late role")

    first = bench.edit(work, reports, "edit-first")
    late = bench.edit(work, reports, "edit-late", "slurm")
    comment = bench.comment(work, reports, "comment")

    assert first == comment == work / "roles" / "common" / "tasks" / "main.yml"
    assert late == work / "roles" / "slurm" / "tasks" / "main.yml"
    assert "dest: /etc/harness-bench-slurm" in late.read_text() and 'mode: "0644"' in late.read_text()
    assert first.read_text().endswith('mode: "0644"\n# comment\n')
    edits = json.loads((reports / "setup.json").read_text())["edits"]
    assert {k: v["file"] for k, v in edits.items()} == {
        "edit-first": "roles/common/tasks/main.yml",
        "edit-late": "roles/slurm/tasks/main.yml",
        "comment": "roles/common/tasks/main.yml",
    }
    with pytest.raises(bench.BenchError, match="already edited"):
        bench.edit(work, reports, "edit-late", "slurm")
    assert _checkout_roles() == before


def test_smoke_has_no_late_role_apart_from_common(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bench.prepare("smoke", tmp_path / "work", tmp_path / "R")

    assert bench.main(["late-role", str(tmp_path / "R")]) == 3
    assert capsys.readouterr().out.startswith("not applicable: the playbook's last play with roles runs 'common'")


def test_the_quick_verdict_of_a_run_with_a_quick_step_is_up_provision_and_that_step() -> None:
    """Today's runs give the quick verdict before the idempotence converge, in a step of its own:
    idempotence and verify come after it and are not part of the wait."""
    phases = {
        "up": _phase(300.0),
        "provision": _phase(850.0),
        "quick": _phase(70.0),
        "idempotence": _phase(160.0),
        "verify": _phase(250.0),
    }
    assert bench._quick(phases) == (1220.0, 70.0)
    assert bench._quick({**phases, "quick": _phase(0.0, "skipped")}) == (300.0 + 850.0 + 160.0 + 250.0, None)
