"""Promotion: the rehearsed content applied to real hosts, and only content a green rehearsal proved.

    gate → check (converge in check mode: what would change, per host)
    gate → provision (converge) → verify (the scenario's tests) → reports

The gate (`require_rehearsal`) takes the content manifest as the files are now and looks for a
green rehearsal of exactly that content in the ledger (or in one record file, from another host's
nightly run, say). Without one it raises PromotionRefused saying what differs from the newest green
rehearsal (which files changed, were added or removed, which extra vars changed), so the user knows
what to rehearse.

Everything runs against the user's inventory with its own connection settings: no harness
ssh_config, Ansible's host key checking as the site has it, and the tests reach the hosts through
testinfra's `ansible://` backend and the `cluster` fixture's inventory-driven ssh.
"""

from __future__ import annotations

import logging
import platform
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness import __version__, ansible_events, converge, inventory, phases, playbook, provision, rehearsal
from harness.errors import HarnessError, PromotionRefused, ProvisionError, UnreachableError
from harness.rehearsal import Manifest, Rehearsal
from harness.report import Failure, PhaseResult, RunReport
from harness.spec import Scenario

log = logging.getLogger(__name__)

ProgressFn = Callable[[str, str], None]
PHASES = ("provision", "verify")
# The host of a testinfra test id: `test_mounts[ansible://dgx01]`.
_TEST_HOST = re.compile(r"\[(?:ansible|ssh|paramiko)://([^\]]+)\]")


def _noop(_a: str, _b: str) -> None:
    pass


def require_rehearsal(
    scenario: Scenario, content: Manifest, *, record: Path | None = None, ledger: Path | None = None
) -> Rehearsal:
    """The newest green rehearsal of `scenario` whose content is `content`, from the ledger or from
    the one `record` file; PromotionRefused otherwise, naming what differs from the newest green one."""
    if record is not None:
        records = [rec for rec in [rehearsal.load_record(record)] if rec.scenario == scenario.name]
        where = str(record)
        if not records:
            raise PromotionRefused(f"{record} is a rehearsal of another scenario, not {scenario.name!r}")
    else:
        records = rehearsal.read_ledger(ledger, scenario.name)
        where = f"the ledger {ledger or rehearsal.ledger_path()}"
    match = rehearsal.newest(records, green=True, digest=content.digest)
    if match is not None:
        return match
    rehearse = f"Rehearse this content first: harness run {scenario.source}"
    same = rehearsal.newest(records, digest=content.digest)
    if same is not None:  # this very content was rehearsed, and not green
        raise PromotionRefused(
            f"the newest rehearsal of this content ({content.short}) in {where} is {same.verdict}: "
            f"{same.describe()}.\n{rehearse}"
        )
    green = rehearsal.newest(records, green=True)
    if green is None:
        tried = f"{len(records)} record(s) of {scenario.name!r}, none green" if records else "no record"
        raise PromotionRefused(f"no green rehearsal of {scenario.name!r} in {where} ({tried}).\n{rehearse}")
    diff = rehearsal.compare(green.content, content)
    lines = "\n".join(f"  - {line}" for line in diff.lines())
    raise PromotionRefused(
        f"no green rehearsal of this content ({content.short}) in {where}; the newest green one, "
        f"{green.describe()}, differs:\n{lines}\n{rehearse}"
    )


def target_hosts(inventory_path: Path, limit: str | None = None) -> list[str]:
    """The inventory's hosts (those `limit` selects, as Ansible's --limit); SpecError when none."""
    return list(inventory.resolve_inventory(inventory_path, limit)["all"]["hosts"])


def converge_options(
    scenario: Scenario, inventory_path: Path, work_dir: Path, *, check: bool = False, limit: str | None = None
) -> provision.ProvisionOptions:
    """The rehearsed converge (harness.converge: the same options a rehearsal builds) against the
    user's inventory, with its own connection settings; `check` for `--check --diff`."""
    site = converge.Target(inventory=inventory_path, work_dir=work_dir)
    return converge.options(scenario, site, "check" if check else "promote", check=check, limit=limit)


@dataclass(frozen=True)
class HostPreview:
    """What check mode says about one host: the tasks that would change it (with their diffs), the
    tasks that failed, whether it was reached."""

    host: str
    changes: list[ansible_events.TaskChange] = field(default_factory=list)
    failures: list[ansible_events.TaskFailure] = field(default_factory=list)
    unreachable: bool = False


@dataclass(frozen=True)
class Preview:
    result: ansible_events.ProvisionResult
    hosts: list[HostPreview]

    def failure(self) -> HarnessError | None:
        """UnreachableError when hosts did not answer, ProvisionError when tasks failed in check mode."""
        lost = [h.host for h in self.hosts if h.unreachable]
        if lost:
            return UnreachableError(f"check mode could not reach {', '.join(lost)}; log: {self.result.log_path}")
        if self.result.failures:
            failed = sorted({f.host for f in self.result.failures})
            return ProvisionError(f"tasks failed in check mode on {', '.join(failed)}; log: {self.result.log_path}")
        if not self.result.ok:
            return ProvisionError(ansible_events.abort_cause(self.result))
        return None


def preview_of(result: ansible_events.ProvisionResult) -> Preview:
    hosts = sorted(set(result.stats) | {c.host for c in result.changed} | {f.host for f in result.failures})
    lost = set(result.unreachable_hosts)
    return Preview(
        result,
        [
            HostPreview(
                h,
                [c for c in result.changed if c.host == h],
                [f for f in result.failures if f.host == h and not f.message.startswith("unreachable:")],
                h in lost,
            )
            for h in hosts
        ],
    )


def check(
    scenario: Scenario,
    inventory_path: Path,
    work_dir: Path,
    *,
    limit: str | None = None,
    on_progress: ProgressFn = _noop,
) -> Preview:
    """Converge in check mode with diffs against the user's hosts: what would change, per host."""
    opts = converge_options(scenario, inventory_path, work_dir, check=True, limit=limit)
    return preview_of(provision.run_playbook(opts, phases.ThrottledProgress("check", on_progress)))


def render_preview(preview: Preview) -> str:
    """The check as Markdown: per host, the tasks that would change with their diffs, and failures."""
    lines = ["# What a promotion would change (check mode)", ""]
    for h in preview.hosts:
        if h.unreachable:
            lines += [f"## {h.host}: unreachable", ""]
            continue
        what = f"{len(h.changes)} task(s) would change" if h.changes else "nothing would change"
        lines += [f"## {h.host}: {what}" + (f", {len(h.failures)} task(s) failed" if h.failures else ""), ""]
        for c in h.changes:
            lines.append(f"- {ansible_events.task_label(c.task, c.role)}" + ("" if c.diff else " (no diff given)"))
            if c.diff:
                lines += ["", "  ```diff", *(f"  {d}" for d in c.diff.splitlines()), "  ```", ""]
        for f in h.failures:
            lines.append(
                f"- FAILED {ansible_events.task_label(f.task, f.role)} ({f.action}): {f.message.splitlines()[0]}"
            )
        lines.append("")
    lines.append(f"Full log: {preview.result.log_path}")
    return "\n".join(lines) + "\n"


def _diverged(hosts: list[str]) -> str:
    return f"; diverged: {', '.join(hosts)}" if hosts else ""


def _provision_phase(opts: provision.ProvisionOptions, on_progress: ProgressFn) -> PhaseResult:
    started = time.monotonic()
    result = provision.run_playbook(opts, phases.ThrottledProgress("provision", on_progress))
    seconds = time.monotonic() - started
    lost = result.unreachable_hosts
    failed = sorted({f.host for f in result.failures} - set(lost))
    detail = phases.converge_detail(result) + _diverged(sorted({*lost, *failed}))
    if lost:
        failures = [Failure(f"{h}: unreachable", f"{h} did not answer; log: {result.log_path}") for h in lost]
        return PhaseResult("provision", "unreachable", seconds, failures, detail)
    failures = provision.converge_verdict(result)
    return PhaseResult("provision", "failed" if failures else "passed", seconds, failures, detail)


def failing_hosts(failures: list[Failure]) -> list[str]:
    """The hosts named by failed tests (testinfra ids); a cluster-level test names none."""
    return sorted({m.group(1) for f in failures for m in _TEST_HOST.finditer(f.name)})


def _verify_phase(scenario: Scenario, inventory_path: Path, hosts: list[str], report_dir: Path) -> PhaseResult:
    """The scenario's tests on the site's hosts (phases.verify_on, as a rehearsal runs them), naming
    the hosts that diverged from what was rehearsed."""
    site = converge.Target(inventory=inventory_path, work_dir=report_dir, hosts=tuple(hosts))
    phase, _ = phases.verify_on(site, scenario)
    if phase.failures:
        named = failing_hosts(phase.failures)
        cluster_level = any(not _TEST_HOST.search(f.name) for f in phase.failures)
        phase.detail += _diverged(named + (["(cluster-level tests)"] if cluster_level else []))
    return phase


def ansible_core_warning(proven_by: Rehearsal, site: str) -> str | None:
    """What to tell the user when the site's ansible-core (`site`, the one this promotion runs) is
    not the one the rehearsal converged with; None when they match or either is unknown. A warning,
    not a refusal: the content is what was proven, the Ansible that applies it is not."""
    rehearsed = proven_by.ansible_core
    if not rehearsed or not site or rehearsed == site:
        return None
    return (
        f"ansible-core differs: this promotion runs {site}, the rehearsal ({proven_by.run_id or '-'}) ran "
        f"{rehearsed}. Templating and module behaviour can differ between releases: rehearse with "
        f"ansible-core {site}, or promote from an environment with {rehearsed}."
    )


def promote(
    scenario: Scenario,
    inventory_path: Path,
    report_dir: Path,
    proven_by: Rehearsal,
    *,
    limit: str | None = None,
    on_progress: ProgressFn = _noop,
) -> RunReport:
    """Converge the user's hosts, then run the scenario's tests against them; the report (phases
    provision and verify, as a run's; `lifecycle.first_failure` gives its exit code). `proven_by` is
    the green rehearsal require_rehearsal found."""
    hosts = target_hosts(inventory_path, limit)
    rep = RunReport(scenario.name, f"promote-{time.strftime('%Y%m%dT%H%M%S')}", order=PHASES)
    rep.metadata = {
        "harness_version": __version__,
        "host": platform.node(),
        "inventory": str(inventory_path),
        "limit": limit or "",
        "hosts": ", ".join(hosts),
        "rehearsal": proven_by.describe(),
        "content": proven_by.content.digest,
        "ansible_core": playbook.ansible_core_version(),
        "rehearsal_ansible_core": proven_by.ansible_core,
    }
    warning = ansible_core_warning(proven_by, rep.metadata["ansible_core"])
    if warning is not None:
        rep.metadata["warnings"] = [warning]
    on_progress("provision", f"converging {len(hosts)} host(s): {', '.join(hosts)}")
    opts = converge_options(scenario, inventory_path, report_dir, limit=limit)
    converged = _provision_phase(opts, on_progress)
    rep.record(converged)
    if converged.status == "passed" and scenario.tests is not None:
        on_progress("verify", "running the scenario's tests against the hosts")
        rep.record(_verify_phase(scenario, inventory_path, hosts, report_dir))
    return rep
