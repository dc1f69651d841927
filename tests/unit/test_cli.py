from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner

from harness import lifecycle
from harness.cli import main
from harness.report import PhaseResult

FIX = Path(__file__).parent.parent / "fixtures" / "scenarios"


def test_validate_ok() -> None:
    res = CliRunner().invoke(main, ["validate", str(FIX / "valid" / "full.yml")])
    assert res.exit_code == 0 and "4 node(s)" in res.output


def test_validate_reports_all_problems_with_exit_2_and_no_traceback() -> None:
    res = CliRunner().invoke(main, ["validate", str(FIX / "invalid" / "many_errors.yml")])
    assert res.exit_code == 2
    assert "Traceback" not in res.output
    for key in ("nodes[0].memory", "nodes[1].cpus", "nodes[2].colour", "network.subnet"):
        assert key in res.output


def test_unknown_scenario_name_is_exit_2() -> None:
    res = CliRunner().invoke(main, ["validate", "no-such-scenario"])
    assert res.exit_code == 2 and "known names" in res.output


def test_every_command_has_help() -> None:
    runner = CliRunner()
    for cmd in (
        ["--help"],
        ["up", "--help"],
        ["run", "--help"],
        ["box", "build", "--help"],
        ["host", "setup", "--help"],
        ["gc", "--help"],
        ["doctor", "--help"],
        ["ssh", "--help"],
        ["verify", "--help"],
        ["gpus", "--help"],
    ):
        res = runner.invoke(main, cmd)
        assert res.exit_code == 0 and "Usage:" in res.output, cmd


def test_quick_reaches_verify_and_its_partial_verdict_is_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    for cmd in ("run", "verify"):
        res = CliRunner().invoke(main, [cmd, "--help"])
        assert "--quick" in res.output and "partial" in " ".join(res.output.split()), cmd
    seen: dict[str, Any] = {}

    def verify_kept(sc: Any, select: str | None, quick: bool, on_progress: Any) -> tuple[PhaseResult, Any]:
        seen.update(select=select, quick=quick)
        detail = (
            "quick verdict (partial): 2 passed, 0 failed, 0 skipped; left for the full verdict: 4 disturbing test(s)"
        )
        return PhaseResult("verify", "passed", 1.0, detail=detail, partial=True), SimpleNamespace(log_dir=Path("logs"))

    monkeypatch.setattr(lifecycle, "verify_kept", verify_kept)
    res = CliRunner().invoke(main, ["verify", str(FIX / "valid" / "full.yml"), "--quick", "-k", "munge"])
    assert res.exit_code == 0, res.output
    assert seen == {"select": "munge", "quick": True}
    assert "left for the full verdict: 4 disturbing test(s)" in res.output
