from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from harness.cli import main

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
