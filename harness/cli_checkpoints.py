"""`harness snapshot` and `harness reset`: save and restore checkpoints of a kept cluster."""

from __future__ import annotations

import time

import click
from rich.console import Console
from rich.table import Table

from harness.paths import scenario_search_dirs
from harness.spec import load_scenario

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


@click.command()
@click.argument("scenario")
@click.argument("name", required=False)
@click.option("--list", "as_list", is_flag=True, help="List the checkpoints of the kept cluster.")
def snapshot(scenario: str, name: str | None, as_list: bool) -> None:
    """Save every node of SCENARIO's kept cluster (disk and memory, all at once) as checkpoint NAME.

    `up` saves `booted` and a green converge saves `converged` by themselves; `harness reset`
    goes back to one. Nodes with passed-through GPUs cannot be checkpointed."""
    from harness import checkpoints, rundir

    run = rundir.require_active_run(load_scenario(scenario, scenario_search_dirs()))
    if as_list or name is None:
        t = Table(title=f"checkpoints of run {run.run_id}")
        for col in ("name", "saved", "content"):
            t.add_column(col)
        for cp in checkpoints.list_checkpoints(run):
            t.add_row(cp.name, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(cp.created)), cp.digest or "-")
        out.print(t)
        return
    started = time.monotonic()
    cp = checkpoints.save(run, name)
    err.print(f"[green]saved[/] checkpoint {cp.name!r} of {len(cp.nodes)} node(s) in {time.monotonic() - started:.1f}s")


@click.command()
@click.argument("scenario")
@click.argument("name", default="booted")
def reset(scenario: str, name: str) -> None:
    """Bring every node of SCENARIO's kept cluster back to checkpoint NAME (default: booted), with
    clocks stepped to the host's and fresh SSH connections."""
    from harness import checkpoints, rundir

    run = rundir.require_active_run(load_scenario(scenario, scenario_search_dirs()))
    result = checkpoints.reset(run, name, lambda msg: err.print(msg, highlight=False))
    skew = max(result.clock_skew_s.values(), default=0.0)
    err.print(
        f"[green]reset[/] run {run.run_id} to {name!r} in {result.seconds:.1f}s; clocks within {skew:.1f}s of the host"
    )
