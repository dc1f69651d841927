from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from harness import proc, rundir
from harness.provider.libvirt import RUN_PREFIX
from harness.spec import parse_scenario


@pytest.fixture(autouse=True)
def dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HARNESS_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("HARNESS_RUNS_DIR", str(tmp_path / "runs"))


def scenario(tmp_path: Path) -> object:
    f = tmp_path / "s.yml"
    f.write_text("name: demo-one\nnodes:\n  - name: gpu\n    count: 2\n")
    return parse_scenario(f.read_text(), f)


def test_run_ids_prefixes_and_directories(tmp_path: Path) -> None:
    sc = scenario(tmp_path)
    run_id = rundir.new_run_id(sc)  # type: ignore[arg-type]
    run = rundir.new_run(sc, run_id)  # type: ignore[arg-type]
    assert run.prefix == f"hx-{run_id}" and run.nodes == ["gpu01", "gpu02"]
    m = RUN_PREFIX.match(f"{run.prefix}-gpu01")
    assert m is not None and m.group(1) == run_id
    assert RUN_PREFIX.match("hx-notarun-gpu01") is None and RUN_PREFIX.match("default") is None
    assert run.path.parent == tmp_path / "runs" and (run.path / "state.json").is_file() and run.log_dir.is_dir()
    assert rundir.new_run_id(sc) != run_id  # type: ignore[arg-type]


def test_active_run_is_found_by_scenario_file_and_forgotten(tmp_path: Path) -> None:
    sc = scenario(tmp_path)
    run = rundir.new_run(sc, rundir.new_run_id(sc))  # type: ignore[arg-type]
    assert rundir.active_run(sc) == run  # type: ignore[arg-type]
    run.state = "destroyed"
    rundir.save(run)
    assert rundir.active_run(sc) is None  # type: ignore[arg-type]
    with pytest.raises(Exception, match="harness up demo-one"):
        rundir.require_active_run(sc)  # type: ignore[arg-type]
    rundir.forget(run.run_id)
    assert run.run_id not in rundir.registered_runs()


def test_liveness(tmp_path: Path) -> None:
    kept = rundir.RunState("x-000000", "x", "/x", str(tmp_path), pid=999_999_999, state="up")
    dead_creator = replace(kept, state="creating")
    other_creator = replace(kept, pid=os.getppid(), state="creating")
    destroyed = replace(kept, pid=os.getppid(), state="destroyed")
    assert rundir.is_live(kept)
    assert not rundir.is_live(dead_creator)
    assert rundir.is_live(other_creator)
    assert not rundir.is_live(destroyed)


def test_a_run_that_is_not_kept_dies_with_its_process(tmp_path: Path) -> None:
    """`harness run` without --keep killed with SIGKILL mid-provision leaves state `up`: dead all
    the same, so `gc` removes it; a kept cluster stays live whatever became of its process."""
    parent = proc.start_time(os.getppid()) or 0
    held = rundir.RunState("x-000000", "x", "/x", str(tmp_path), pid=os.getppid(), state="up", keep=False,
                           pid_start=parent)  # fmt: skip
    assert rundir.is_live(held)
    assert not rundir.is_live(replace(held, pid=999_999_999))  # its process was killed
    assert not rundir.is_live(replace(held, pid_start=parent + 1))  # its pid now names another process
    assert not rundir.is_live(replace(held, pid_start=parent + 1, state="destroying"))
    assert rundir.is_live(replace(held, pid=999_999_999, keep=True))


def test_a_state_file_from_before_keep_existed_is_a_kept_cluster(tmp_path: Path) -> None:
    """Older harnesses only left kept clusters in state `up`: gc must not take one for dead."""
    sc = scenario(tmp_path)
    run = rundir.new_run(sc, rundir.new_run_id(sc))  # type: ignore[arg-type]
    assert not run.keep and run.pid_start == proc.start_time(os.getpid())
    old = json.loads((run.path / "state.json").read_text())
    for key in ("keep", "pid_start"):
        del old[key]
    (run.path / "state.json").write_text(json.dumps({**old, "state": "up", "pid": 999_999_999}))
    assert rundir.is_live(rundir.load(run.path))


def test_registry_entry_whose_run_dir_is_gone_reads_as_none(tmp_path: Path) -> None:
    sc = scenario(tmp_path)
    run = rundir.new_run(sc, rundir.new_run_id(sc))  # type: ignore[arg-type]
    (run.path / "state.json").unlink()
    assert rundir.registered_runs()[run.run_id] is None
