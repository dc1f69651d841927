"""Verify: the scenario's tests under pytest + testinfra, against the run's inventory and ssh_config.
pytest runs as a subprocess; its JUnit XML is read back as data.

Tests marked `disturbing` (reboots, daemon restarts, faults) run in a pass of their own, after the
others: the first pass (`-m "not disturbing"`) is the quick verdict, both passes the full one. With
`quick` only the first pass runs, and the verdict says it is partial. A tests directory whose
Python files never name the marker runs in one pass.

The tests not marked disturbing run side by side, one test file per pytest-xdist worker
(`--dist loadfile`: a file's tests stay in order in one process, files are independent); the
disturbing ones run one after another, in one process."""

from __future__ import annotations

import contextlib
import importlib.util
import re
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from harness import proc, site_ssh
from harness.report import Failure, NotRun

DISTURBING = "disturbing"  # the marker (registered by harness.pytest_plugin)
COLLECTED_OPTION = "--harness-collected"  # the plugin writes the node ids it runs to this file
LEFT_FOR_FULL_VERDICT = f"{DISTURBING}: left for the full verdict"
JUNIT_FILE = "verify-junit.xml"  # the one JUnit file of a verify (both passes), that reports read
# Test files side by side at most: the tests mostly wait on SSH, but each worker is a Python process
# and its SSH connections, on a host whose VMs already want its cores.
MAX_WORKERS = 4


@dataclass(frozen=True)
class VerifyResult:
    rc: int
    passed: int
    failed: int
    skipped: int
    failures: list[Failure] = field(default_factory=list)
    junit: Path | None = None
    log_path: Path | None = None
    seconds: float = 0.0
    # Two passes: the first one's own result (the tests not marked disturbing): the quick verdict.
    quick: VerifyResult | None = None
    # Node ids of the tests marked disturbing (those -k selects), in collection order.
    disturbing: list[str] = field(default_factory=list)
    # Only the quick pass ran: `disturbing` were left for the full verdict.
    partial: bool = False

    @property
    def ok(self) -> bool:
        return self.rc == 0

    @property
    def counts(self) -> str:
        """`36 passed, 1 failed, 0 skipped`: the detail line of a verify phase."""
        return f"{self.passed} passed, {self.failed} failed, {self.skipped} skipped"

    @property
    def detail(self) -> str:
        """The counts; after two passes the quick verdict's as well; when partial, what was left out."""
        if self.partial:
            left = len(self.disturbing)
            return f"quick verdict (partial): {self.counts}; left for the full verdict: {left} disturbing test(s)"
        if self.quick is not None:
            return f"{self.counts} (quick verdict first: {self.quick.counts})"
        return self.counts

    @property
    def not_run(self) -> list[NotRun]:
        """The tests left out, and why: when partial, the disturbing ones."""
        return [NotRun(t, LEFT_FOR_FULL_VERDICT) for t in self.disturbing] if self.partial else []


def pytest_argv(
    tests_dir: Path,
    nodes: list[str],
    ssh_config: Path | None,
    junit: Path | None,
    select: str | None,
    inventory: Path | None = None,
    *,
    marker: str | None = None,
    collected: Path | None = None,
    collect_only: bool = False,
    workers: int = 1,
) -> list[str]:
    """pytest over plain SSH with the run's ssh_config; without one (real hosts, `harness promote`),
    over testinfra's `ansible://` backend, which connects as the inventory says. `marker` is a
    `-m` expression, and-ed with `select` (`-k`) by pytest itself. With `workers` > 1 the test
    files run side by side, each file whole in one worker."""
    if ssh_config is not None:
        hosts = [f"--hosts={','.join('ssh://' + n for n in nodes)}", f"--ssh-config={ssh_config}"]
        if inventory is not None:  # bare names (a module's testinfra_hosts) connect as the inventory says
            hosts += ["--connection=ansible", f"--ansible-inventory={inventory}"]
    else:
        assert inventory is not None, "without an ssh_config the hosts come from the inventory"
        hosts = [f"--hosts={','.join('ansible://' + n for n in nodes)}", f"--ansible-inventory={inventory}"]
    argv = [
        sys.executable,
        "-m",
        "pytest",
        str(tests_dir),
        "-p",
        "harness.pytest_plugin",
        "-p",
        "no:cacheprovider",
        "--rootdir",
        str(tests_dir),
        *hosts,
    ]
    if junit is not None:
        argv += [f"--junitxml={junit}", "-o", "junit_family=xunit2"]
    if collected is not None:
        argv.append(f"{COLLECTED_OPTION}={collected}")
    argv += ["--collect-only", "-q"] if collect_only else ["-v", "--tb=short", "-ra"]
    if workers > 1 and not collect_only:
        argv += ["-n", str(workers), "--dist", "loadfile"]
    if marker:
        argv += ["-m", marker]
    if select:
        argv += ["-k", select]
    return argv


def failure_text(message: str, text: str) -> str:
    """pytest's failure message and traceback text, each fact once: the message only where the
    text does not say it already (pytest repeats an assertion's message in the `E` lines, and a
    `pytest.fail` message after `Failed: `)."""
    said = {line.strip().removeprefix("E").strip() for line in text.splitlines()}

    def known(line: str) -> bool:
        line = line.strip()
        return not line or line in said or line.partition(": ")[2].strip() in said

    if text.strip() and all(known(line) for line in message.splitlines()):
        return text.strip()
    return f"{message}\n{text}".strip()


def read_junit(path: Path) -> tuple[int, int, int, list[Failure]]:
    """(passed, failed, skipped, failures) from a pytest JUnit XML file."""
    root = ET.parse(path).getroot()
    passed = failed = skipped = 0
    failures: list[Failure] = []
    for case in root.iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}".strip(":")
        bad = case.find("failure")
        if bad is None:
            bad = case.find("error")
        if bad is not None:
            failed += 1
            failures.append(Failure(name, failure_text(bad.get("message") or "", bad.text or "")[-2000:]))
        elif case.find("skipped") is not None:
            skipped += 1
        else:
            passed += 1
    return passed, failed, skipped, failures


_UNREACHABLE = re.compile(r"UNREACHABLE: (.+?) did not answer SSH")


def unreachable_nodes(failures: list[Failure]) -> list[str]:
    """Nodes named by failures that the harness pytest plugin marked as unreachable."""
    nodes: set[str] = set()
    for f in failures:
        for m in _UNREACHABLE.finditer(f.message):
            nodes.update(n.strip() for n in m.group(1).split(","))
    return sorted(nodes)


def only_unreachable(failures: list[Failure]) -> bool:
    return bool(failures) and all(_UNREACHABLE.search(f.message) for f in failures)


def names_disturbing(tests_dir: Path) -> bool:
    """Whether a Python file under tests_dir names the `disturbing` marker at all: read before any
    pytest run, so a directory without such tests costs no more than one pytest process."""
    return any(DISTURBING in f.read_text(encoding="utf-8", errors="replace") for f in sorted(tests_dir.rglob("*.py")))


def side_by_side(tests_dir: Path, limit: int = MAX_WORKERS) -> int:
    """How many pytest-xdist workers the undisturbing tests get: one per test file (pytest's
    default `test_*.py` / `*_test.py`), at most `limit`; 1 (no xdist at all) for a single file or
    where pytest-xdist is not installed."""
    files = {*tests_dir.rglob("test_*.py"), *tests_dir.rglob("*_test.py")}
    if len(files) < 2 or importlib.util.find_spec("xdist") is None:
        return 1
    return min(len(files), limit)


def merge_junit(parts: list[Path], into: Path) -> Path:
    """One JUnit file of every pass's testsuites, in pass order."""
    root = ET.Element("testsuites", name="pytest tests")
    for part in parts:
        src = ET.parse(part).getroot()
        root.extend([src] if src.tag == "testsuite" else src.findall("testsuite"))
    ET.ElementTree(root).write(into, encoding="utf-8", xml_declaration=True)
    return into


@dataclass(frozen=True)
class _Session:
    """What every pytest process of one verify shares: the tests, the nodes and how to reach them, -k, the log."""

    tests_dir: Path
    nodes: list[str]
    inventory: Path
    ssh_config: Path | None
    select: str | None
    log_path: Path
    env: Mapping[str, str]

    def run(
        self,
        junit: Path | None,
        marker: str | None,
        collected: Path | None = None,
        collect_only: bool = False,
        workers: int = 1,
    ) -> proc.CommandResult:
        argv = pytest_argv(
            self.tests_dir,
            self.nodes,
            self.ssh_config,
            junit,
            self.select,
            self.inventory,
            marker=marker,
            collected=collected,
            collect_only=collect_only,
            workers=workers,
        )
        # An empty HARNESS_SSH_CONFIG (not one inherited from the caller's shell): the inventory's own settings.
        env = {
            "HARNESS_INVENTORY": str(self.inventory),
            "HARNESS_SSH_CONFIG": "" if self.ssh_config is None else str(self.ssh_config),
            "PYTHONDONTWRITEBYTECODE": "1",
            **self.env,
        }
        return proc.run_logged(argv, self.log_path, env=env, cwd=self.tests_dir)

    def run_pass(self, junit: Path, marker: str | None, workers: int = 1) -> VerifyResult:
        """One pytest run of the tests `marker` selects (all without one), read back from its JUnit
        file; with `workers` > 1, their files side by side."""
        junit.unlink(missing_ok=True)
        result = self.run(junit, marker, workers=workers)
        if not junit.exists():
            why = Failure("pytest", f"pytest did not run (exit {result.rc}); see {self.log_path}")
            return VerifyResult(result.rc, 0, 0, 0, [why], None, self.log_path, result.duration)
        passed, failed, skipped, failures = read_junit(junit)
        return VerifyResult(result.rc, passed, failed, skipped, failures, junit, self.log_path, result.duration)

    def disturbing(self, listing: Path) -> tuple[list[str], float]:
        """The node ids of the disturbing tests (of those -k selects), from a run that only collects,
        and its seconds; none when collection fails (the one plain pass that follows says why)."""
        listing.unlink(missing_ok=True)
        result = self.run(None, DISTURBING, collected=listing, collect_only=True)
        if result.rc != 0 or not listing.exists():
            return [], result.duration
        return [line for line in listing.read_text(encoding="utf-8").splitlines() if line], result.duration


def _collected_any(result: VerifyResult, tests_dir: Path, select: str | None) -> VerifyResult:
    """The result, failed when pytest collected no test at all (exit 5)."""
    if result.rc != 5:
        return result
    where = f"no test was collected from {tests_dir}" + (f" with -k {select!r}" if select else "")
    return replace(result, failures=[*result.failures, Failure("pytest", where)])


def _both(first: VerifyResult, rest: VerifyResult, junit: Path, seconds: float) -> VerifyResult:
    """The full verdict of both passes: one JUnit file, the counts and failures of both; the exit
    code of the first pass that failed (a pass that collected nothing, exit 5, fails neither)."""
    codes = [r.rc for r in (first, rest) if r.rc != 5]
    rc = next((c for c in codes if c != 0), 0) if codes else 5
    merge_junit([r.junit for r in (first, rest) if r.junit is not None], junit)
    return VerifyResult(
        rc,
        first.passed + rest.passed,
        first.failed + rest.failed,
        first.skipped + rest.skipped,
        [*first.failures, *rest.failures],
        junit,
        first.log_path,
        seconds,
        quick=first,
        disturbing=first.disturbing,
    )


def run_tests(
    tests_dir: Path,
    *,
    nodes: list[str],
    inventory: Path,
    ssh_config: Path | None,
    out_dir: Path,
    select: str | None = None,
    quick: bool = False,
    on_quick: Callable[[VerifyResult], None] | None = None,
    env: Mapping[str, str] | None = None,
    after: VerifyResult | None = None,
) -> VerifyResult:
    """The scenario's tests. With tests marked disturbing: those not marked first (`on_quick` gets
    that quick verdict, its `disturbing` filled in, as soon as it is in), then the disturbing ones,
    unless `quick`: then the result is the quick verdict, marked partial. Either way one JUnit file,
    `verify-junit.xml`, and one log, `logs/verify.log`.

    `after`: a quick verdict (`quick=True`) run earlier on the same state; only what it left out
    runs now, and the result is both passes, as if they had run in one call."""
    if after is not None and (quick or not after.partial):
        return after  # nothing left to run: it was every test, or the quick verdict is all that is asked
    out_dir.mkdir(parents=True, exist_ok=True)
    log_path = out_dir / "logs" / "verify.log"
    # A run's VMs: its ssh_config shares the connections. A site's hosts: site_ssh does.
    sharing: contextlib.AbstractContextManager[dict[str, str]] = (
        contextlib.nullcontext({})
        if ssh_config is not None
        else site_ssh.shared_connections(inventory, tests_dir, env or {})
    )
    with sharing as extra:
        session = _Session(tests_dir, nodes, inventory, ssh_config, select, log_path, {**(env or {}), **extra})
        if after is not None:
            return _rest(session, out_dir, after)
        return _passes(session, out_dir, quick, on_quick)


def _rest(session: _Session, out_dir: Path, after: VerifyResult) -> VerifyResult:
    """The disturbing tests a partial quick verdict left out, then both passes as one verdict."""
    first = after.quick  # a partial quick verdict carries its pass (run_tests with quick=True)
    assert first is not None, "a partial quick verdict has its pass"
    rest = session.run_pass(out_dir / "verify-junit-disturbing.xml", DISTURBING)
    both = _both(first, rest, out_dir / JUNIT_FILE, after.seconds + rest.seconds)
    return _collected_any(both, session.tests_dir, session.select)


def _passes(
    session: _Session, out_dir: Path, quick: bool, on_quick: Callable[[VerifyResult], None] | None
) -> VerifyResult:
    """run_tests' passes: the quick one (or the only one), then the disturbing one unless `quick`."""
    tests_dir, select = session.tests_dir, session.select
    junit = out_dir / JUNIT_FILE
    junit.unlink(missing_ok=True)
    disturbing: list[str] = []
    listed_s = 0.0
    if names_disturbing(tests_dir):
        disturbing, listed_s = session.disturbing(out_dir / "verify-disturbing.txt")
    workers = side_by_side(tests_dir)
    if not disturbing:
        result = session.run_pass(junit, None, workers)
        return _collected_any(replace(result, seconds=result.seconds + listed_s), tests_dir, select)
    quick_pass = session.run_pass(out_dir / "verify-junit-quick.xml", f"not {DISTURBING}", workers)
    first = replace(quick_pass, disturbing=disturbing)
    if first.junit is None:  # pytest did not run: neither would the second pass
        return replace(first, seconds=listed_s + first.seconds)
    if on_quick is not None:
        on_quick(first)
    if quick:  # a quick pass that collected nothing (every test disturbing) is partial, not failed
        merge_junit([first.junit], junit)
        rc = 0 if first.rc == 5 else first.rc
        return replace(first, rc=rc, junit=junit, seconds=listed_s + first.seconds, quick=first, partial=True)
    rest = session.run_pass(out_dir / "verify-junit-disturbing.xml", DISTURBING)
    return _collected_any(_both(first, rest, junit, listed_s + first.seconds + rest.seconds), tests_dir, select)
