from __future__ import annotations

from collections.abc import Callable

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true", help="Rewrite golden files from the current output.")


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))


FIGURES = pytest.StashKey[list[tuple[str, str]]]()


@pytest.fixture
def figure(
    request: pytest.FixtureRequest, record_property: Callable[[str, object], None]
) -> Callable[[str, str], None]:
    """`figure("slurm up", "215 s")`: a measured figure, listed at the end of the run (and in JUnit)."""

    def add(name: str, value: str) -> None:
        request.config.stash.setdefault(FIGURES, []).append((name, value))
        record_property(f"figure: {name}", value)

    return add


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    figures = config.stash.get(FIGURES, [])
    if figures:
        terminalreporter.section("measured figures")
        width = max(len(name) for name, _ in figures)
        for name, value in figures:
            terminalreporter.write_line(f"{name:<{width}}  {value}")
