"""The `harness` command. The one place that prints, sets up logging and turns errors into exit codes."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.live import Live
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table

from harness import __version__, lifecycle, nodes, sweep
from harness.cli_bundle import bundle_group
from harness.cli_checkpoints import reset, snapshot
from harness.cli_gpus import gpus
from harness.cli_host import box_group, doctor, host_group
from harness.cli_promote import promote_cmd
from harness.errors import EXIT_CODES, HarnessError, Interrupted, SpecError, UsageError
from harness.paths import scenario_search_dirs
from harness.rundir import RunState
from harness.spec import DEFAULT_BOX, Scenario, load_scenario

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

# The exit-code table of `harness --help`, made from harness.errors (the one source of the codes).
# `\b` keeps click from rewrapping its lines.
EXIT_CODES_HELP = "\n".join(
    ["\b", "Exit codes:", *(f"  {code:>3}  {meaning}" for code, meaning in sorted(EXIT_CODES.items()))]
)


QUICK_HELP = (
    "Stop at the quick verdict, without the tests marked `disturbing` (reboots, restarts, faults): "
    "a partial verdict, never a green rehearsal; the report names the tests left out."
)


def _sigterm(_signum: int, _frame: object) -> NoReturn:
    raise KeyboardInterrupt


class HarnessGroup(click.Group):
    """Maps HarnessError subclasses to exit codes, in one place."""

    def invoke(self, ctx: click.Context) -> Any:
        signal.signal(signal.SIGTERM, _sigterm)
        # Ctrl-C and SIGINT tear the run down even where the harness was started with SIGINT
        # ignored (a background job of a non-interactive shell, as CI runners start jobs).
        signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            return super().invoke(ctx)
        except SpecError as exc:
            err.print(f"[bold red]error:[/] {escape(exc.source)}:", highlight=False, markup=True)
            for p in exc.problems:
                err.print(f"  - {p}", highlight=False, markup=False)
            ctx.exit(exc.exit_code)
        except Interrupted as exc:
            err.print(f"[yellow]{escape(str(exc))}[/]", highlight=False)
            ctx.exit(exc.exit_code)
        except HarnessError as exc:
            err.print("[bold red]error:[/] ", end="", highlight=False)
            err.print(str(exc), highlight=False, markup=False)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            err.print("[yellow]interrupted[/]")
            ctx.exit(130)


def _load(ref: str) -> Scenario:
    return load_scenario(ref, scenario_search_dirs())


@click.group(cls=HarnessGroup, epilog=EXIT_CODES_HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="harness")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def main(verbose: int) -> None:
    """Rehearse GPU-cluster provisioning on a virtual copy: scenario → VMs → Ansible → tests.

    SCENARIO arguments take a path to a YAML file or a name under scenarios/.
    """
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(message)s", handlers=[RichHandler(console=err, show_path=False)])


@main.command()
@click.argument("scenario")
@click.option("--no-playbook", is_flag=True, help="Check the scenario file only, not its playbook.")
def validate(scenario: str, no_playbook: bool) -> None:
    """Check a scenario file and its playbook, before any VM exists (exit 2 on any problem).

    The scenario: every problem with its key path. The playbook: `ansible-playbook --syntax-check`
    with the run's roles and collections, so a missing role or a module from an absent collection
    shows up in seconds. Role names defined in several places are listed with the one used."""
    sc = _load(scenario)
    nodes = sc.expanded_nodes()
    if sc.provision is not None and sc.provision.collections is not None:  # its entries, before any "ok"
        from harness import galaxy

        galaxy.read_requirements(sc.resolve(sc.provision.collections))
    out.print(f"{sc.source}: ok — scenario {sc.name!r}, {len(nodes)} node(s): {', '.join(n.name for n in nodes)}")
    if sc.boxes() != [DEFAULT_BOX]:  # which node boots which box (the default box goes unsaid)
        for name in sc.boxes():
            out.print(f"  box {name}: {', '.join(n.name for n in nodes if n.box == name)}", highlight=False)
    from harness import molecule

    if molecule.is_molecule(sc):  # what was mapped from what, and what the harness does not honour
        for note in molecule.translate(sc.source).notes:
            out.print(f"  molecule: {note}", highlight=False, markup=False)
    if sc.offline is not None:  # the apt bundle it installs from
        from harness import apt_bundle

        checked = apt_bundle.check_bundle(sc.resolve(sc.offline.bundle))
        out.print(f"{checked.root}: ok — {checked.summary()}", highlight=False)
    if sc.provision is None or no_playbook:
        return
    from harness import playbook

    check = playbook.syntax_check(sc)
    for shadow in check.shadows:
        hidden = ", ".join(str(p) for p in shadow.hidden)
        out.print(f"role {shadow.name!r}: using {shadow.used} (also defined in {hidden}, not used)", highlight=False)
    for cshadow in check.collection_shadows:
        out.print(cshadow.describe(), highlight=False)
    if not check.ok:
        raise SpecError(str(sc.source), check.problems)
    book = sc.resolve(sc.provision.playbook)
    included = f", {check.included} include(s) checked too" if check.included else ""
    if not check.unchecked:
        out.print(f"{book}: ok — every role and module resolves{included} ({check.seconds:.1f}s)")
        return
    out.print(f"{book}: ok — the roles and modules it names resolve{included} ({check.seconds:.1f}s)", highlight=False)
    out.print("not checked (a run builds these names):", highlight=False)
    for what in check.unchecked:
        out.print(f"  - {what}", highlight=False, markup=False)


@main.command()
@click.argument("scenario")
def render(scenario: str) -> None:
    """Print the Vagrantfile a run of SCENARIO gets (with placeholder run id and subnets)."""
    click.echo(nodes.rendered(_load(scenario)), nl=False)


class _UpProgress:
    """Per-node progress: a live table on a terminal, timestamped lines otherwise."""

    def __init__(self, nodes: list[str]) -> None:
        self.started = time.monotonic()
        self.nodes = {n: "waiting" for n in nodes}
        self.live: Live | None = None

    def _table(self) -> Table:
        t = Table(title=f"up — {time.monotonic() - self.started:.0f}s", show_edge=False)
        t.add_column("node")
        t.add_column("progress", overflow="ellipsis", no_wrap=True, max_width=90)
        for n, msg in self.nodes.items():
            t.add_row(n, msg)
        return t

    def __call__(self, who: str, msg: str) -> None:
        if who in self.nodes and self.live is None and msg.lstrip().startswith("-- "):
            return  # vagrant-libvirt's domain settings dump: in the log, not on screen
        if who in self.nodes:
            self.nodes[who] = msg
            if self.live is not None:
                self.live.update(self._table())
                return
        err.print(f"[dim]{time.monotonic() - self.started:6.1f}s[/] [bold]{who}[/] {msg}", highlight=False, markup=True)

    @contextmanager
    def shown(self) -> Iterator[_UpProgress]:
        if err.is_terminal:
            with Live(self._table(), console=err, refresh_per_second=4) as live:
                self.live = live
                yield self
                self.live = None
        else:
            yield self


def _bring_up(sc: Scenario) -> RunState:
    progress = _UpProgress([n.name for n in sc.expanded_nodes()])
    with progress.shown():
        run = nodes.up(sc, progress)
    err.print(
        f"[green]up[/] {sc.name}: {len(run.nodes)} node(s) in {time.monotonic() - progress.started:.0f}s; "
        f"run dir {run.path}"
    )
    return run


@main.command()
@click.argument("scenario")
def up(scenario: str) -> None:
    """Bring SCENARIO's cluster up (nodes boot in parallel) and leave it running."""
    sc = _load(scenario)
    run = _bring_up(sc)
    out.print(f"ssh to a node: harness ssh {scenario} {run.nodes[0]}    tear down: harness destroy {scenario}")


@main.command()
@click.argument("scenario")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(scenario: str, as_json: bool) -> None:
    """Show SCENARIO's nodes and their state, straight from libvirt."""
    sc = _load(scenario)
    run, doms = nodes.status(sc)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "scenario": sc.name,
                    "run_id": run.run_id if run else None,
                    "state": run.state if run else "absent",
                    "nodes": [
                        {
                            "name": d.name,
                            "state": d.state,
                            "memory_mib": d.memory_mib,
                            "vcpus": d.vcpus,
                            "host_rss_mib": d.host_rss_mib,
                        }
                        for d in doms
                    ],
                    "host_rss_mib_total": sum(d.host_rss_mib or 0 for d in doms),
                },
                indent=2,
            )
        )
        return
    if run is None:
        out.print(f"{sc.name}: no cluster up")
        return
    t = Table(title=f"{sc.name} — run {run.run_id} ({run.state})")
    for col in ("node", "domain", "state", "private ip", "vcpus", "memory", "host RSS"):
        t.add_column(col)
    by_domain = {d.name: d for d in doms}
    for node in run.nodes:
        d = by_domain.get(f"{run.prefix}-{node}")
        t.add_row(
            node,
            d.name if d else "-",
            d.state if d else "missing",
            run.private_ips.get(node, "-"),
            str(d.vcpus) if d else "-",
            f"{d.memory_mib} MiB" if d else "-",
            f"{d.host_rss_mib} MiB" if d and d.host_rss_mib is not None else "-",
        )
    out.print(t)
    rss = [d.host_rss_mib for d in doms if d.host_rss_mib is not None]
    if rss:
        out.print(f"host memory used by the {len(rss)} running VM(s): {sum(rss)} MiB (QEMU resident set)")


@main.command(context_settings={"ignore_unknown_options": True})
@click.argument("scenario")
@click.argument("node")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def ssh(scenario: str, node: str, command: tuple[str, ...]) -> None:
    """Open a shell on NODE, or run COMMAND there (`harness ssh smoke mgmt01 -- uptime`)."""
    argv = nodes.ssh_argv(_load(scenario), node, list(command))
    sys.stdout.flush()
    os.execvp(argv[0], argv)


# Lines of one failure's message on the console, after its first.
CONSOLE_LINES = 45


def _print_phase(ph: object) -> None:
    from harness.report import PhaseResult

    assert isinstance(ph, PhaseResult)
    colour = {"passed": "green", "failed": "red", "skipped": "yellow", "unreachable": "magenta"}[ph.status]
    detail = f"  {escape(ph.detail)}" if ph.detail else ""
    err.print(f"[{colour}]{ph.status:>7}[/] {ph.name:<12} {ph.seconds:7.1f}s{detail}", highlight=False)
    for r in ph.retries:
        err.print(f"          retried: {r}", highlight=False, markup=False)
    for f in ph.failures[:20]:
        first, *rest = f.message.splitlines() or [""]
        if len(rest) > CONSOLE_LINES:  # the reports and logs keep every line
            rest = [*rest[: CONSOLE_LINES - 1], f"... ({len(rest) - CONSOLE_LINES + 1} more lines in the reports)"]
        err.print(f"          - {f.name}: {first}", highlight=False, markup=False)
        for line in rest:
            err.print(f"            {line}", highlight=False, markup=False)


def _exit_for(ph: object) -> None:
    """Raise the error a failed or unreachable phase stands for (exit codes in one place)."""
    from harness.report import RunReport

    failure = lifecycle.first_failure(RunReport("", "", [ph], order=lifecycle.PHASES))  # type: ignore[list-item]
    if failure is not None:  # its failures are printed above: say it in one line
        raise type(failure)(f"{str(failure).splitlines()[0].rstrip(':')}; see above")


@main.command("run")
@click.argument("scenario")
@click.option("--keep", is_flag=True, help="Leave the cluster running afterwards (for `provision`/`verify` reruns).")
@click.option(
    "--report-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write summary.json, junit.xml and summary.md here (default: the run directory).",
)
@click.option("--skip-idempotence", is_flag=True, help="Do not converge a second time.")
@click.option("-k", "select", default=None, help="Only run scenario tests matching this pytest -k expression.")
@click.option(
    "--reuse",
    is_flag=True,
    help="Start from the kept cluster of this scenario, reset to a checkpoint, instead of a new one "
    "(kept afterwards). Without a kept cluster, like a plain run.",
)
@click.option(
    "--from",
    "from_checkpoint",
    default=None,
    metavar="CHECKPOINT",
    help="With --reuse: the checkpoint to start from (default booted; `converged`: the last green "
    "converge, to rehearse a change on top of the previous version as on the real cluster).",
)
@click.option("--quick", is_flag=True, help=QUICK_HELP)
@click.option(
    "--full",
    is_flag=True,
    help="With --reuse --from converged: converge every unit of the playbook twice and run every test, "
    "as a run from a new cluster would (by default only what the change can affect runs, and the "
    "verdict is labelled partial; `harness promote` needs a full one).",
)
def run_cmd(
    scenario: str,
    keep: bool,
    report_dir: Path | None,
    skip_idempotence: bool,
    select: str | None,
    reuse: bool,
    from_checkpoint: str | None,
    quick: bool,
    full: bool,
) -> None:
    """The whole lifecycle: validate → up → provision → quick → idempotence → verify → destroy.

    `quick` is the quick verdict (the tests not marked `disturbing`) on the first converge's state,
    before the idempotence converge; when that converge changes nothing, verify runs only the
    disturbing tests, else every test again.

    Destroys the cluster at the end, pass or fail, unless --keep. The exit code names the first
    failed phase (see `harness --help`)."""
    from harness import lifecycle, node_packages, rehearsal
    from harness.report import write_reports

    sc = _load(scenario)
    content = rehearsal.content_manifest(sc)  # what is rehearsed, as the files are before the run
    progress = _UpProgress([n.name for n in sc.expanded_nodes()])
    with progress.shown():
        if from_checkpoint is not None and not reuse:
            raise UsageError("--from needs --reuse (it names the checkpoint of the kept cluster to start from)")
        rep, run = lifecycle.run_scenario(
            sc,
            keep=keep,
            idempotence=False if skip_idempotence else None,
            select=select,
            reuse_from=(from_checkpoint or "booted") if reuse else None,
            on_progress=progress,
            quick=quick,
            full=full,
        )
    target = report_dir or (run.path if run else Path.cwd() / ".harness" / "reports" / sc.name)
    files = write_reports(rep, target)
    files.append(rehearsal.record_run(sc, rep, content, target, select))
    green = run is not None and select is None and not rep.partial and lifecycle.first_failure(rep) is None
    if green and run is not None and (packages := node_packages.copy_record(run.path, target)):
        files.append(packages)  # what the green run installed, for `harness bundle build`
    err.print(f"\n[bold]{sc.name}[/] run {rep.run_id or '-'}")
    for ph in rep.all_phases():
        _print_phase(ph)
    err.print(f"reports: {', '.join(str(f) for f in files)}", highlight=False)
    if keep and run is not None:
        err.print(
            f"kept: harness ssh {scenario} {run.nodes[0]} | harness verify {scenario} | harness destroy {scenario}"
        )
    failure = lifecycle.first_failure(rep)
    if failure is not None:  # its failures are printed above with their phase: say it in one line
        raise type(failure)(f"{sc.name}: {str(failure).splitlines()[0].rstrip(':')}; see the reports above")


@main.command()
@click.argument("scenario")
def provision(scenario: str) -> None:
    """Converge the scenario's playbook against its kept cluster (see `harness run --keep`)."""
    sc = _load(scenario)
    ph = lifecycle.provision_kept(sc, _UpProgress([]))
    _print_phase(ph)
    _exit_for(ph)


@main.command()
@click.argument("scenario")
@click.option("-k", "select", default=None, help="Only tests matching this pytest -k expression.")
@click.option("--quick", is_flag=True, help=QUICK_HELP)
def verify(scenario: str, select: str | None, quick: bool) -> None:
    """Run the scenario's tests against its kept cluster, without re-provisioning: the quick verdict
    first (tests not marked `disturbing`), then the disturbing ones (reboots, restarts, faults)."""
    sc = _load(scenario)
    ph, run = lifecycle.verify_kept(sc, select, quick, _UpProgress([]))
    _print_phase(ph)
    err.print(f"log: {run.log_dir / 'verify.log'}", highlight=False)
    _exit_for(ph)


@main.command()
@click.argument("scenario")
def destroy(scenario: str) -> None:
    """Tear down SCENARIO's cluster: domains, volumes and networks."""
    run = nodes.destroy(_load(scenario))
    err.print(f"[green]destroyed[/] run {run.run_id}")


@main.command()
def gc() -> None:
    """Remove libvirt objects left by dead harness runs (never a live run's, never anything else)."""
    result = sweep.gc()
    for run_id, what in result.removed.items():
        out.print(f"removed run {run_id}: {what}")
    if result.kept:
        out.print(f"left alone (live): {', '.join(result.kept)}")
    if not result.removed:
        out.print("nothing to collect")


main.add_command(doctor)
main.add_command(host_group)
main.add_command(box_group)
main.add_command(gpus)
main.add_command(promote_cmd)
main.add_command(bundle_group)
main.add_command(snapshot)
main.add_command(reset)


if __name__ == "__main__":  # pragma: no cover
    main()
