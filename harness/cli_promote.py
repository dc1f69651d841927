"""`harness promote`: apply a rehearsed scenario to real hosts (or preview it with --check)."""

from __future__ import annotations

import time
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape

from harness import lifecycle, playbook, promote, rehearsal
from harness.errors import UsageError
from harness.paths import scenario_search_dirs
from harness.report import write_reports
from harness.spec import load_scenario

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def _say(who: str, msg: str) -> None:
    err.print(f"[bold]{who}[/] {msg}", highlight=False, markup=True)


@click.command("promote")
@click.argument("scenario")
@click.option(
    "-i",
    "--inventory",
    "inventory_path",
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="The real hosts: an Ansible inventory (any format), with its own connection settings.",
)
@click.option("-l", "--limit", default=None, help="Only these hosts (an Ansible --limit pattern).")
@click.option("--check", is_flag=True, help="Change nothing: show per host what would change (--check --diff).")
@click.option(
    "--rehearsal",
    "record",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A rehearsal.json to trust instead of the local ledger (from another host's nightly run, say).",
)
@click.option(
    "--report-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where reports go (default .harness/promotions/<scenario>-<time>/).",
)
def promote_cmd(
    scenario: str, inventory_path: Path, limit: str | None, check: bool, record: Path | None, report_dir: Path | None
) -> None:
    """Apply SCENARIO's playbook to real hosts, then run its tests against them.

    Refused (exit 16) unless a green rehearsal (`harness run`: up, provision and verify passed, no
    phase failed) of exactly the current content exists: the playbook's directory, every role
    directory, the tests, the collections and the extra vars, file by file. A refusal lists what
    changed since the newest green rehearsal. With --check nothing changes: Ansible's check mode
    with diffs shows per host what a promotion would change."""
    sc = load_scenario(scenario, scenario_search_dirs())
    if sc.provision is None:
        raise UsageError(f"scenario {sc.name!r} has nothing to promote (no provision.playbook)")
    content = rehearsal.content_manifest(sc)
    proven = promote.require_rehearsal(sc, content, record=record)
    err.print(f"[green]rehearsed[/] {proven.describe()}", highlight=False)
    warning = promote.ansible_core_warning(proven, playbook.ansible_core_version())
    if warning is not None:
        err.print(f"[bold yellow]warning[/] {escape(warning)}", highlight=False)
    lifecycle.check_playbook(sc, _say)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    target = report_dir or Path.cwd() / ".harness" / "promotions" / f"{sc.name}-{'check-' if check else ''}{stamp}"
    if check:
        preview = promote.check(sc, inventory_path, target, limit=limit, on_progress=_say)
        text = promote.render_preview(preview)
        target.mkdir(parents=True, exist_ok=True)
        (target / "check.md").write_text(text, encoding="utf-8")
        out.print(text, highlight=False, markup=False)
        failure = preview.failure()
        if failure is not None:
            raise failure
        return
    rep = promote.promote(sc, inventory_path, target, proven, limit=limit, on_progress=_say)
    files = write_reports(rep, target)
    for ph in rep.all_phases():
        colour = {"passed": "green", "failed": "red", "skipped": "yellow", "unreachable": "magenta"}[ph.status]
        err.print(f"[{colour}]{ph.status:>7}[/] {ph.name:<12} {ph.seconds:7.1f}s  {escape(ph.detail)}", highlight=False)
        for f in ph.failures[:20]:
            err.print(f"          - {f.name}: {f.message}", highlight=False, markup=False)
    err.print(f"reports: {', '.join(str(f) for f in files)}", highlight=False)
    failure = lifecycle.first_failure(rep)
    if failure is not None:
        raise type(failure)(f"promotion of {sc.name}: {str(failure).splitlines()[0].rstrip(':')}; see above")
