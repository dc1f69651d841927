"""Provisioning with ansible-runner: run a playbook, follow its event stream, judge the result.

Every decision (did it converge? is it idempotent?) is taken from ansible-runner's events and the
final `playbook_on_stats` counts (read by harness.ansible_events), never from the text Ansible
prints. The full log of a run stays at `<private_data_dir>/artifacts/<ident>/stdout`, its events
under `job_events/`.
"""

from __future__ import annotations

import json
import logging
import shlex
import signal
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import ansible_runner

from harness import inventory, playbook, playbook_reach, proc, reach, ssh, tools
from harness.ansible_events import (
    TASK_START,
    Event,
    MissedPlay,
    Progress,
    ProgressTracker,
    ProvisionResult,
    abort_cause,
    missed_lines,
    missed_plays,
    result_from_events,
    stop_reason,
    task_label,
)
from harness.errors import HarnessError, Interrupted, ProvisionError
from harness.report import Failure, redact, secret_values

log = logging.getLogger(__name__)


@dataclass
class ProvisionOptions:
    private_data_dir: Path
    playbook: Path
    inventory: Path
    roles_path: list[Path]
    extra_vars: Mapping[str, Any]
    ident: str
    ssh_config: Path | None = None
    strategy: str = "linear"
    collections_path: Path | None = None
    # Ansible's check mode with diffs (`--check --diff`): what would change, changing nothing.
    check: bool = False
    # Ansible's `--limit`: only the hosts this pattern selects.
    limit: str | None = None
    # Ansible's `--skip-tags` (the inner loop's skipped units, harness.scope).
    skip_tags: str | None = None
    # More environment for ansible-playbook (Molecule's environment, the scenario's provision.env).
    env: Mapping[str, str] = field(default_factory=dict)


def new_ident(phase: str) -> str:
    """A unique ansible-runner ident, e.g. `provision-20250101T120000-1a2b3c`."""
    return f"{phase}-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"


def mitogen_strategy_dir() -> Path:
    """Where the mitogen package keeps its Ansible strategy plugins; ProvisionError without it."""
    try:
        import ansible_mitogen
    except ImportError as exc:
        raise ProvisionError(
            "provision.strategy mitogen_* needs the mitogen package (`pip install mitogen`, a harness "
            "dependency), or set provision.strategy: linear in the scenario"
        ) from exc
    return Path(ansible_mitogen.__file__).parent / "plugins" / "strategy"


ANSIBLE_CONNECT_TIMEOUT_S = 60


def _envvars(opts: ProvisionOptions) -> dict[str, str]:
    ssh_args = ssh.command_line(ssh.ANSIBLE_CONNECTION) + (
        f" -F {shlex.quote(str(opts.ssh_config))}" if opts.ssh_config else ""
    )
    env = {
        # ansible-playbook and the ssh it runs, found without an activated virtualenv.
        "PATH": tools.search_path(),
        **proc.run_marker(),  # gc finds ansible-playbook by the run's mark
        "ANSIBLE_ROLES_PATH": ":".join(str(p.resolve()) for p in opts.roles_path),
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_NOCOLOR": "True",
        "ANSIBLE_PIPELINING": "True",
        "ANSIBLE_SSH_ARGS": ssh_args,
        "ANSIBLE_STRATEGY": opts.strategy,
        # Changed tasks carry their diff, so an idempotence failure shows what changed (no_log
        # tasks stay censored: Ansible drops their diff).
        "ANSIBLE_DIFF_ALWAYS": "True",
        # Gather each node's facts once per converge, not again in every play of the playbook.
        "ANSIBLE_GATHERING": "smart",
        # Connection timeout. Ansible's 10 s default is too short for a VM under TCG that is busy
        # (mitogen's whole bootstrap - ssh plus starting its Python - has to fit in it): 60 s on a
        # quiet host, stretched with the host's load when the converge starts (reach.connect_timeout).
        "ANSIBLE_TIMEOUT": str(reach.connect_timeout(ANSIBLE_CONNECT_TIMEOUT_S)),
        "ANSIBLE_SSH_RETRIES": "3",
    }
    if opts.ssh_config is not None:
        # The run's throwaway VMs; without a harness ssh_config (real hosts), Ansible checks host keys.
        env["ANSIBLE_HOST_KEY_CHECKING"] = "False"
    if opts.collections_path is not None:
        env["ANSIBLE_COLLECTIONS_PATH"] = playbook.collections_search_path(opts.collections_path)
    if opts.strategy.startswith("mitogen"):
        env["ANSIBLE_STRATEGY_PLUGINS"] = str(mitogen_strategy_dir())
    return {**opts.env, **env}


def run_playbook(opts: ProvisionOptions, on_progress: Callable[[Progress], None] | None = None) -> ProvisionResult:
    """Run opts.playbook with ansible-runner and return what happened. A failed play is a result,
    not an exception; converge_verdict / idempotence_verdict judge it. Raises ProvisionError
    when the run cannot start, Interrupted when it was cancelled (Ctrl-C, SIGTERM)."""
    playbook = opts.playbook.resolve()
    private = opts.private_data_dir.resolve()
    if not playbook.is_file():
        raise ProvisionError(f"playbook {playbook} does not exist; check provision.playbook in the scenario")
    artifact_dir = private / "artifacts" / opts.ident
    if artifact_dir.exists():
        raise ProvisionError(
            f"{artifact_dir} already exists; every ansible-runner run needs a new ident (see new_ident)"
        )
    private.mkdir(parents=True, exist_ok=True)
    # ansible-runner writes env/* once and keeps stale copies; rewrite them so each run gets its
    # own values and the extra vars never land on the command line (artifacts/<ident>/command).
    for name in ("envvars", "extravars", "settings", "cmdline"):
        (private / "env" / name).unlink(missing_ok=True)
    log_path = artifact_dir / "stdout"
    secrets = secret_values(opts.extra_vars)
    log.info("running %s (ident %s), log: %s", playbook.name, opts.ident, log_path)
    envvars = _envvars(opts)
    log.info("connection timeout %s s (host load %.1f per core)", envvars["ANSIBLE_TIMEOUT"], reach.load_factor())
    log.debug("extra vars (secrets dropped): %s", json.dumps(redact(opts.extra_vars), default=str))

    tools.find("ansible-playbook")  # HostError saying what installs it; envvars' PATH finds it
    events: list[Event] = []
    tracker = ProgressTracker()

    def handle(event: dict[str, Any]) -> bool:
        events.append(event)
        if tracker.feed(event):
            if event.get("event") in TASK_START:
                log.debug("task: %s", tracker.current_task)
            if on_progress is not None:
                try:
                    on_progress(tracker.snapshot())
                except Exception:  # a broken progress display must not break provisioning
                    log.exception("progress callback failed")
        return True  # keep the event in job_events/

    # ansible-runner swaps in its own SIGINT/SIGTERM handlers (to cancel the run) and never puts ours back.
    main = threading.current_thread() is threading.main_thread()
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)} if main else {}
    try:
        runner = ansible_runner.run(
            private_data_dir=str(private),
            playbook=str(playbook),
            inventory=str(opts.inventory.resolve()),
            ident=opts.ident,
            extravars=dict(opts.extra_vars),
            envvars=envvars,
            cmdline="--check --diff" if opts.check else None,
            limit=opts.limit,
            skip_tags=opts.skip_tags,
            event_handler=handle,
            quiet=True,
            settings={"suppress_ansible_output": True},
        )
    except Exception as exc:
        raise ProvisionError(f"ansible-runner could not run {playbook}: {exc}") from exc
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        # The extra vars (secrets too) as ansible-playbook read them at its start: gone with the
        # run, so the run directory (logs, artifacts, reports) holds no secret afterwards.
        (private / "env" / "extravars").unlink(missing_ok=True)
    if runner.status == "canceled":
        raise Interrupted(f"provisioning was interrupted; partial log: {log_path}")
    result = result_from_events(events, runner.rc if runner.rc is not None else -1, runner.status, log_path, secrets)
    if not result.ok:
        result.missed = _missed(result, playbook, opts)
    log.info("%s finished: %s (rc %s) in %.1fs", playbook.name, result.status, result.rc, tracker.elapsed)
    return result


def _missed(result: ProvisionResult, book: Path, opts: ProvisionOptions) -> list[MissedPlay]:
    """The playbook's plays that never started, with the hosts (of the inventory, within --limit)
    each would have run on; [] when every play started."""
    plays = [(p.name, p.hosts) for p in playbook_reach.plays(book)]
    if len(result.plays) >= len(plays):
        return []
    try:
        inv = inventory.resolve_inventory(opts.inventory, opts.limit)
    except HarnessError as exc:
        log.warning("cannot tell which hosts the plays that never ran would have run on: %s", exc)
        return missed_plays(result.plays, plays, lambda _pattern: None)
    return missed_plays(result.plays, plays, lambda pattern: inventory.hosts_matching(inv, pattern))


def _from(task_path: str | None, prefix: str = "\n") -> str:
    """Where a task is defined, as one more line of a message; "" when the event did not say."""
    return f"{prefix}from {task_path}" if task_path else ""


def converge_verdict(result: ProvisionResult, phase: str = "provision") -> list[Failure]:
    """What failed in a converge, as report entries; empty when it converged. Each failed task
    names its host, module, message, role file and the log; a run that stopped without a failed
    task (a missing collection or role) says why, from the log."""
    if result.ok:
        return []
    entries = failures_for_report(result)
    if not entries or result.aborted:  # the cause of an abort is named beside the tasks that failed before it
        entries.append(Failure(phase, f"{abort_cause(result)}\nFull log: {result.log_path}"))
    if result.missed:
        entries.append(missed_for_report(result))
    return entries


def missed_for_report(result: ProvisionResult) -> Failure:
    """The plays that never ran (the playbook ended before them) and on which hosts, as one entry."""
    hosts = sorted({h for p in result.missed for h in p.hosts or []})
    name = f"{', '.join(hosts) or 'hosts'}: {len(result.missed)} play(s) never ran"
    lines = "\n".join(f"  {line}" for line in missed_lines(result))
    return Failure(name, f"because {stop_reason(result)}:\n{lines}\nFull log: {result.log_path}")


def idempotence_verdict(result: ProvisionResult, phase: str = "idempotence") -> list[Failure]:
    """Why a converge that should have changed nothing is not idempotent; empty when it is.
    A converge that failed outright gives its converge verdict."""
    failed = converge_verdict(result, phase)
    if failed:
        return failed
    entries = changes_for_report(result)
    named = {c.host for c in result.changed}
    for host, st in sorted(result.stats.items()):
        if st.changed and host not in named:
            entries.append(
                Failure(
                    f"{host}: {st.changed} changed task(s)",
                    f"counted in the recap, no event names them; see {result.log_path}",
                )
            )
    return entries


def failures_for_report(result: ProvisionResult) -> list[Failure]:
    """Failed tasks as report entries."""
    return [
        Failure(
            f"{f.host}: {task_label(f.task, f.role)}",
            f"{f.action}: {f.message}{_from(f.task_path)}\nFull log: {result.log_path}",
        )
        for f in result.failures
    ]


def changes_for_report(result: ProvisionResult) -> list[Failure]:
    """Tasks that changed on a converge that should have changed nothing, as report entries."""
    return [
        Failure(
            f"{c.host}: {task_label(c.task, c.role)}",
            ("changed" if c.diff else "changed (no diff given)")
            + _from(c.task_path, ", ")
            + (f"\n{c.diff}" if c.diff else "")
            + f"\nFull log: {result.log_path}",
        )
        for c in result.changed
    ]
