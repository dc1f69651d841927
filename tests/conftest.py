from __future__ import annotations

from collections.abc import Callable

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true", help="Rewrite golden files from the current output.")


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))


FIGURE_PREFIX = "figure: "


@pytest.fixture
def figure(record_property: Callable[[str, object], None]) -> Callable[[str, str], None]:
    """`figure("slurm up", "215 s")`: a measured figure, listed at the end of the run (and in JUnit).
    It travels as a property of the test's report, so figures measured in pytest-xdist workers (the
    VM test lanes of ci/test.sh) reach the summary too."""

    def add(name: str, value: str) -> None:
        record_property(f"{FIGURE_PREFIX}{name}", value)

    return add


class _Figures:
    """Every test's figures, in the process that reports (the xdist controller, or the only one)."""

    def __init__(self) -> None:
        self.figures: list[tuple[str, str]] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "teardown":  # the teardown report carries every property recorded, once
            return
        for key, value in report.user_properties:
            if isinstance(key, str) and key.startswith(FIGURE_PREFIX):
                self.figures.append((key.removeprefix(FIGURE_PREFIX), str(value)))

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if self.figures:
            terminalreporter.section("measured figures")
            width = max(len(name) for name, _ in self.figures)
            for name, value in self.figures:
                terminalreporter.write_line(f"{name:<{width}}  {value}")


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(_Figures(), "harness-figures")
