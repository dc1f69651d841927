"""Run directories (`.harness/runs/<id>/`) and the host-wide registry that lets `gc` tell live runs
from dead ones. A run directory holds everything needed to understand a run afterwards."""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness import flock
from harness.errors import UsageError
from harness.paths import runs_root, state_dir
from harness.proc import same_process, start_time
from harness.spec import Scenario

ACTIVE_STATES = ("creating", "up")
# A run in one of these states belongs to the process recorded in it (pid, pid_start) while that
# process runs: `up` creating it, or `destroy`, a run's own teardown or `gc` removing it.
OWNED_STATES = ("creating", "destroying")
# Held while a process makes itself a run's owner (claim), so two never both do.
OWNER_LOCK = "owner.lock"


@dataclass
class RunState:
    run_id: str
    scenario: str
    scenario_file: str
    run_dir: str
    pid: int
    state: str  # creating | up | destroying | destroyed | failed
    created: float = field(default_factory=time.time)
    accel: str = ""
    mgmt_subnet: str = ""
    private_subnet: str = ""
    private_ips: dict[str, str] = field(default_factory=dict)
    nodes: list[str] = field(default_factory=list)
    # Once up, whether the cluster outlives the process that made it (`harness up`, `run --keep`):
    # a kept cluster is the user's until `destroy`; one that is not dies with its process (`gc`).
    # True for state files written before the field existed, which only knew kept clusters.
    keep: bool = True
    pid_start: int = 0  # the start time of `pid` (proc.start_time): a reused pid is not the run's

    @property
    def prefix(self) -> str:
        return f"hx-{self.run_id}"

    @property
    def path(self) -> Path:
        return Path(self.run_dir)

    @property
    def ssh_config(self) -> Path:
        return self.path / "ssh_config"

    @property
    def log_dir(self) -> Path:
        return self.path / "logs"


def _registry() -> Path:
    return state_dir() / "runs"


def save(run: RunState) -> None:
    run.path.mkdir(parents=True, exist_ok=True)
    tmp = run.path / "state.json.tmp"
    tmp.write_text(json.dumps(asdict(run), indent=2))
    tmp.replace(run.path / "state.json")
    reg = _registry()
    reg.mkdir(parents=True, exist_ok=True)
    (reg / f"{run.run_id}.json").write_text(json.dumps({"run_dir": run.run_dir}))


def load(run_dir: Path) -> RunState:
    return RunState(**json.loads((run_dir / "state.json").read_text()))


def new_run_id(scenario: Scenario) -> str:
    return f"{scenario.name}-{secrets.token_hex(3)}"


def new_run(scenario: Scenario, run_id: str) -> RunState:
    run_dir = (runs_root() / run_id).resolve()
    run = RunState(
        run_id=run_id,
        scenario=scenario.name,
        scenario_file=str(scenario.source),
        run_dir=str(run_dir),
        pid=os.getpid(),
        state="creating",
        nodes=[n.name for n in scenario.expanded_nodes()],
        keep=False,
        pid_start=start_time(os.getpid()) or 0,
    )
    run.log_dir.mkdir(parents=True, exist_ok=True)
    save(run)
    return run


def is_live(run: RunState) -> bool:
    """A kept cluster (`up`, keep) is live; any other run is live while its process runs (another
    process than this one: a harness killed with SIGKILL leaves a dead run whatever its state)."""
    if run.state == "up":
        return run.keep or same_process(run.pid, run.pid_start)
    return owned_elsewhere(run)


def owned_elsewhere(run: RunState) -> bool:
    """Another process that still runs is creating or destroying the run (OWNED_STATES)."""
    return run.state in OWNED_STATES and run.pid != os.getpid() and same_process(run.pid, run.pid_start)


def claim_for_teardown(run: RunState) -> None:
    """Make this process the owner of `run` before it removes anything: state `destroying` with this
    process's pid and start time, saved, so `gc` in another process leaves the run alone (is_live)
    and another `destroy` refuses. UsageError, with nothing changed, when another live process owns
    the run (creating or destroying it) or has destroyed it already."""
    me = os.getpid()
    with flock.exclusive(run.path / OWNER_LOCK):
        try:
            now = load(run.path)
        except (OSError, ValueError, TypeError):
            now = run
        if owned_elsewhere(now):
            doing = "destroying" if now.state == "destroying" else "still creating"
            raise UsageError(
                f"run {run.run_id} is not this process's to remove: another harness process (pid {now.pid}) "
                f"is {doing} it. Nothing was done; wait for that process to end, or stop it (Ctrl-C or "
                "`kill`): what it leaves is removed by `harness destroy` or `harness gc`."
            )
        if now.state == "destroyed" and now.pid != me:
            raise UsageError(f"run {run.run_id} was destroyed already, by another harness process (pid {now.pid}).")
        run.pid, run.pid_start, run.state = me, start_time(me) or 0, "destroying"
        save(run)


def registered_runs() -> dict[str, RunState | None]:
    """Every run the registry knows: run id → its state (None when its run directory is gone)."""
    out: dict[str, RunState | None] = {}
    reg = _registry()
    if not reg.is_dir():
        return out
    for entry in reg.glob("*.json"):
        try:
            run_dir = Path(json.loads(entry.read_text())["run_dir"])
            out[entry.stem] = load(run_dir)
        except (OSError, ValueError, KeyError, TypeError):
            out[entry.stem] = None
    return out


def forget(run_id: str) -> None:
    (_registry() / f"{run_id}.json").unlink(missing_ok=True)


def active_run(scenario: Scenario, states: tuple[str, ...] = ACTIVE_STATES) -> RunState | None:
    """The newest run of this scenario file (by source path) in one of `states` (creating or up)."""
    found = [
        r
        for r in registered_runs().values()
        if r is not None and r.scenario_file == str(scenario.source) and r.state in states
    ]
    return max(found, key=lambda r: r.created) if found else None


def require_active_run(scenario: Scenario) -> RunState:
    run = active_run(scenario)
    if run is None:
        raise UsageError(
            f"no cluster of scenario {scenario.name!r} is up: start one with `harness up {scenario.name}`."
        )
    return run
