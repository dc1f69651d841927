"""What a cluster installed: the Debian packages on its nodes beyond the box's own, recorded so an
offline bundle (`harness bundle build`, harness.apt_bundle_build) can be made after the VMs are gone.

- At `up` (a new cluster, before any role ran) every node's installed packages are the box's own
  set: saved in the run directory as BASELINE_FILE.
- At the end of a green converge and verify, each node is asked again (dpkg's installed packages,
  with the URI and SHA-256 apt knows for each from its lists); what is not in the baseline (a new
  package, or another version of a box package) is the run's record, RECORD_FILE, in the run
  directory and copied into its report directory. One record per run: the union over the nodes,
  and each node's own list.

Both come from one small Python script run on the node with its own python3-apt (the box has it):
dpkg-query lists what is installed; apt's lists say where each version came from.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness import proc, rehearsal
from harness.errors import HarnessError, ProviderError, UsageError
from harness.paths import runs_root
from harness.rundir import RunState

log = logging.getLogger(__name__)

SCHEMA = 1
BASELINE_FILE = "packages-booted.json"
RECORD_FILE = "packages.json"

# Run on a node (stdin of `python3 -`): one JSON list on the last line of stdout, one entry per
# installed package: package, version, architecture, and where apt's lists place that version
# (uri, sha256, size), absent for a version no list knows (the box's own after a boot: no lists).
NODE_SCRIPT = r"""
import json, subprocess
fmt = "${Package}\t${Architecture}\t${Version}\t${db:Status-Status}\n"
status = subprocess.run(["dpkg-query", "-W", "-f", fmt], capture_output=True, text=True, check=True).stdout
installed = [line.split("\t") for line in status.splitlines() if line.endswith("\tinstalled")]
try:
    import apt_pkg
    from apt.progress.base import OpProgress
    apt_pkg.init()
    cache = apt_pkg.Cache(OpProgress())
    records = apt_pkg.PackageRecords(cache)
    sources = apt_pkg.SourceList()
    sources.read_main_list()
except Exception:
    cache = None
out = []
for name, arch, version, _state in installed:
    entry = {"package": name, "version": version, "architecture": arch}
    try:
        pkg = cache[name] if arch == "all" else cache[(name, arch)]
    except (KeyError, TypeError):
        pkg = None
    ver = pkg.current_ver if pkg is not None else None
    if ver is not None and ver.ver_str == version:
        for pkgfile, index in ver.file_list:
            found = sources.find_index(pkgfile)
            if found is None:
                continue
            records.lookup((pkgfile, index))
            sha = records.hashes.find("SHA256")
            entry.update(uri=found.archive_uri(records.filename), sha256=sha.hashvalue if sha else "", size=ver.size)
            break
    out.append(entry)
print(json.dumps(out))
"""


@dataclass(frozen=True)
class Installed:
    """One installed package version on a node, with where apt got it (uri empty: unknown)."""

    package: str
    version: str
    architecture: str
    uri: str = ""
    sha256: str = ""
    size: int = 0

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.package, self.version, self.architecture)

    def to_dict(self) -> dict[str, Any]:
        return {
            "package": self.package,
            "version": self.version,
            "architecture": self.architecture,
            "uri": self.uri,
            "sha256": self.sha256,
            "size": self.size,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Installed:
        return cls(
            package=str(data["package"]),
            version=str(data["version"]),
            architecture=str(data["architecture"]),
            uri=str(data.get("uri") or ""),
            sha256=str(data.get("sha256") or ""),
            size=int(data.get("size") or 0),
        )


def parse_node_output(node: str, stdout: str) -> list[Installed]:
    """The node script's output (its last line) as Installed entries; ProviderError if it is none."""
    lines = stdout.strip().splitlines()
    try:
        data = json.loads(lines[-1]) if lines else None
        if not isinstance(data, list):
            raise ValueError("not a JSON list")
        return [Installed.from_dict(d) for d in data]
    except (ValueError, KeyError, TypeError) as exc:
        raise ProviderError(f"{node}: cannot read the installed packages from the node's answer ({exc})") from exc


def scan_nodes(run: RunState, timeout: float = 300) -> dict[str, list[Installed]]:
    """Every node's installed packages (the nodes asked in parallel over the run's ssh_config)."""

    def ask(node: str) -> proc.CommandResult:
        argv = ["ssh", "-F", str(run.ssh_config), node, "python3 -"]
        return proc.run(argv, input_text=NODE_SCRIPT, timeout=timeout)

    with ThreadPoolExecutor(max_workers=max(1, len(run.nodes))) as pool:
        results = dict(zip(run.nodes, pool.map(ask, run.nodes), strict=True))
    failed = [f"{node}: {res.describe()}" for node, res in results.items() if not res.ok]
    if failed:
        raise ProviderError("cannot list the installed packages: " + "; ".join(failed))
    return {node: parse_node_output(node, res.stdout) for node, res in results.items()}


def beyond(installed: Iterable[Installed], baseline: Iterable[Installed]) -> list[Installed]:
    """What `installed` has that `baseline` has not (another version of a package counts), sorted."""
    known = {p.key for p in baseline}
    return sorted((p for p in installed if p.key not in known), key=lambda p: p.key)


@dataclass(frozen=True)
class PackageRecord:
    """RECORD_FILE: what a run's roles installed, per node and in all."""

    scenario: str
    run_id: str
    time: str
    content_digest: str
    nodes: dict[str, list[Installed]]
    has_baseline: bool = True
    packages: list[Installed] = field(default_factory=list)  # the union over nodes, sorted

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "scenario": self.scenario,
            "run_id": self.run_id,
            "time": self.time,
            "content_digest": self.content_digest,
            "has_baseline": self.has_baseline,
            "packages": [p.to_dict() for p in self.packages],
            "nodes": {n: [f"{p.package}={p.version}" for p in ps] for n, ps in sorted(self.nodes.items())},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PackageRecord:
        packages = [Installed.from_dict(p) for p in data.get("packages") or []]
        return cls(
            scenario=str(data["scenario"]),
            run_id=str(data.get("run_id") or ""),
            time=str(data.get("time") or ""),
            content_digest=str(data.get("content_digest") or ""),
            nodes={},
            has_baseline=bool(data.get("has_baseline", True)),
            packages=packages,
        )


def make_record(
    scenario: str,
    run_id: str,
    content_digest: str,
    nodes: Mapping[str, list[Installed]],
    baseline: list[Installed] | None,
) -> PackageRecord:
    """The record of a run: per node what is beyond the baseline (everything without one), and the union."""
    per_node = {n: beyond(ps, baseline or []) for n, ps in nodes.items()}
    union = {p.key: p for ps in per_node.values() for p in ps}
    return PackageRecord(
        scenario=scenario,
        run_id=run_id,
        time=datetime.now(UTC).isoformat(timespec="seconds"),
        content_digest=content_digest,
        nodes=per_node,
        has_baseline=baseline is not None,
        packages=[union[k] for k in sorted(union)],
    )


def _write_json(path: Path, data: Any) -> Path:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def save_baseline(run: RunState) -> Path:
    """The box's own packages (the union over the nodes of a cluster that just came up)."""
    nodes = scan_nodes(run)
    union = {p.key: p for ps in nodes.values() for p in ps}
    return _write_json(run.path / BASELINE_FILE, [union[k].to_dict() for k in sorted(union)])


def load_baseline(run_dir: Path) -> list[Installed] | None:
    try:
        data = json.loads((run_dir / BASELINE_FILE).read_text(encoding="utf-8"))
        return [Installed.from_dict(d) for d in data]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save_record(run: RunState, scenario: str, content_digest: str) -> PackageRecord:
    """Ask the nodes what is installed now and write RECORD_FILE into the run directory."""
    record = make_record(scenario, run.run_id, content_digest, scan_nodes(run), load_baseline(run.path))
    _write_json(run.path / RECORD_FILE, record.to_dict())
    return record


def copy_record(run_dir: Path, report_dir: Path) -> Path | None:
    """The run's RECORD_FILE copied into its report directory (when it has one and they differ)."""
    src = run_dir / RECORD_FILE
    if not src.is_file():
        return None
    dest = report_dir / RECORD_FILE
    if src.resolve() != dest.resolve():
        report_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
    return dest


def load_record(path: Path) -> PackageRecord:
    try:
        return PackageRecord.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the package record: {exc.strerror}") from exc
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UsageError(f"{path}: not a package record ({RECORD_FILE} of a green `harness run`): {exc}") from exc


def find_green_record(scenario: str, report_dir: Path | None = None) -> tuple[PackageRecord, Path]:
    """The package record a bundle is built from, and where it is.

    With `report_dir`: its RECORD_FILE, which must belong to a green run (its rehearsal.json, or
    the ledger). Without: the newest green run of `scenario` in the ledger whose run directory
    (under HARNESS_RUNS_DIR, default .harness/runs) holds one."""
    ledger = rehearsal.read_ledger(scenario=scenario)
    green = {r.run_id for r in ledger if r.green}
    if report_dir is not None:
        path = report_dir / RECORD_FILE
        if not path.is_file():
            raise UsageError(f"{report_dir} holds no {RECORD_FILE}: name the report directory of a green `harness run`")
        record = load_record(path)
        record_file = report_dir / rehearsal.RECORD_FILE
        ok = rehearsal.load_record(record_file).green if record_file.is_file() else record.run_id in green
        if not ok:
            raise UsageError(f"{path} is from run {record.run_id or '?'}, which was not green: bundle only what passed")
        return record, path
    for rec in reversed(ledger):
        path = runs_root() / rec.run_id / RECORD_FILE
        if rec.green and path.is_file():
            return load_record(path), path
    raise UsageError(
        f"no green run of {scenario!r} with a package record under {runs_root()}: run `harness run {scenario}` "
        f"first (a green run records what its nodes installed in {RECORD_FILE}), or name its report directory "
        "with --report DIR"
    )


def record_after_green(
    run: RunState, scenario: str, content_digest: str, say: Callable[[str], None]
) -> PackageRecord | None:
    """save_record for the lifecycle: a failure is logged and said, never a failed run."""
    started = time.monotonic()
    try:
        record = save_record(run, scenario, content_digest)
    except (HarnessError, OSError) as exc:
        log.warning("no package record for run %s: %s", run.run_id, exc)
        say(f"could not record the installed packages ({exc}); `harness bundle build` needs a run that did")
        return None
    seconds = time.monotonic() - started
    say(f"recorded {len(record.packages)} package(s) installed beyond the box in {RECORD_FILE} ({seconds:.1f}s)")
    return record


def baseline_after_up(run: RunState, say: Callable[[str], None]) -> None:
    """save_baseline for the lifecycle: a failure is logged and said (a record then lists everything)."""
    try:
        save_baseline(run)
    except (HarnessError, OSError) as exc:
        log.warning("no package baseline for run %s: %s", run.run_id, exc)
        say(f"could not list the box's packages ({exc}); a package record will list every installed package")
