"""Verify: the scenario's tests under pytest + testinfra, against the run's inventory and ssh_config.
pytest runs as a subprocess; its JUnit XML is read back as data."""

from __future__ import annotations

import re
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from harness import proc
from harness.report import Failure


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

    @property
    def ok(self) -> bool:
        return self.rc == 0

    @property
    def counts(self) -> str:
        """`36 passed, 1 failed, 0 skipped`: the detail line of a verify phase."""
        return f"{self.passed} passed, {self.failed} failed, {self.skipped} skipped"


def pytest_argv(
    tests_dir: Path,
    nodes: list[str],
    ssh_config: Path | None,
    junit: Path,
    select: str | None,
    inventory: Path | None = None,
) -> list[str]:
    """pytest over plain SSH with the run's ssh_config; without one (real hosts, `harness promote`),
    over testinfra's `ansible://` backend, which connects as the inventory says."""
    if ssh_config is not None:
        hosts = [f"--hosts={','.join('ssh://' + n for n in nodes)}", f"--ssh-config={ssh_config}"]
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
        f"--junitxml={junit}",
        "-o",
        "junit_family=xunit2",
        "-v",
        "--tb=short",
        "-ra",
    ]
    if select:
        argv += ["-k", select]
    return argv


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
            text = (bad.get("message") or "") + "\n" + (bad.text or "")
            failures.append(Failure(name, text.strip()[-2000:]))
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


def run_tests(
    tests_dir: Path,
    *,
    nodes: list[str],
    inventory: Path,
    ssh_config: Path | None,
    out_dir: Path,
    select: str | None = None,
) -> VerifyResult:
    out_dir.mkdir(parents=True, exist_ok=True)
    junit = out_dir / "verify-junit.xml"
    junit.unlink(missing_ok=True)
    log_path = out_dir / "logs" / "verify.log"
    # An empty HARNESS_SSH_CONFIG (not one inherited from the caller's shell): the inventory's own settings.
    env = {
        "HARNESS_INVENTORY": str(inventory),
        "HARNESS_SSH_CONFIG": "" if ssh_config is None else str(ssh_config),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    argv = pytest_argv(tests_dir, nodes, ssh_config, junit, select, inventory)
    result = proc.run_logged(argv, log_path, env=env, cwd=tests_dir)
    if not junit.exists():
        return VerifyResult(
            result.rc,
            0,
            0,
            0,
            [Failure("pytest", f"pytest did not run (exit {result.rc}); see {log_path}")],
            None,
            log_path,
            result.duration,
        )
    passed, failed, skipped, failures = read_junit(junit)
    if result.rc == 5:
        failures.append(
            Failure("pytest", f"no test was collected from {tests_dir}" + (f" with -k {select!r}" if select else ""))
        )
    return VerifyResult(result.rc, passed, failed, skipped, failures, junit, log_path, result.duration)
