"""debootstrap's output, parsed: which stage it is in and how many packages it got through,
as a few progress messages for the console while a box builds (the build log keeps every line)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

_DEBOOTSTRAP_PACKAGE = re.compile(
    r"^I: (?:(?P<fetch>Retrieving|Validating) (?P<fpkg>[a-z0-9][a-z0-9+.:-]*) \S+"
    r"|(?P<install>Extracting|Unpacking|Configuring) (?P<ipkg>[a-z0-9][a-z0-9+.:-]*)\.\.\.)\s*$"
)
_DEBOOTSTRAP_STAGE = re.compile(r"^I: (?P<what>(?:Extracting|Installing|Unpacking|Configuring) [^.]+?)\.\.\.\s*$")


@dataclass(frozen=True)
class DebootstrapLine:
    """One line of debootstrap's output that says how far it got."""

    stage: str  # "retrieving", "validating", "extracting", "unpacking", "configuring", or a phase heading
    package: str | None  # the package the line is about; None for a heading ("Unpacking the base system...")


def parse_debootstrap_line(line: str) -> DebootstrapLine | None:
    """`I: Unpacking libc6:amd64...` → ("unpacking", "libc6:amd64"); `I: Configuring the base system...` →
    ("configuring the base system", None); any other line → None."""
    line = line.strip()
    m = _DEBOOTSTRAP_PACKAGE.match(line)
    if m:
        verb = m.group("fetch") or m.group("install")
        return DebootstrapLine(verb.lower(), m.group("fpkg") or m.group("ipkg"))
    m = _DEBOOTSTRAP_STAGE.match(line)
    if m:
        return DebootstrapLine(m.group("what")[0].lower() + m.group("what")[1:], None)
    return None


class DebootstrapProgress:
    """Turns debootstrap's output lines into a few progress messages: stage, packages done, elapsed.

    A message goes out when a stage begins and then at most every `every` seconds, so the console
    gets a line every few seconds rather than one per package; the build log keeps every line."""

    def __init__(
        self, report: Callable[[str], None], *, every: float = 5.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.report = report
        self.every = every
        self.clock = clock
        self.started = clock()
        self.last_report = float("-inf")
        self.stage = ""
        self.done = 0  # packages through the current stage
        self.retrieved = 0  # packages downloaded and validated

    def __call__(self, line: str) -> None:
        parsed = parse_debootstrap_line(line)
        if parsed is None:
            return
        # "Retrieving X" then "Validating X" is one stage, and a package counts once validated.
        verb = "retrieving" if parsed.stage == "validating" else parsed.stage.split()[0]
        begins = parsed.package is None or verb != self.stage.split(" ", 1)[0]
        if begins:
            self.stage = parsed.stage if parsed.package is None else f"{verb} packages"
            self.done = 0
        if parsed.stage == "validating":
            self.retrieved += 1
        if parsed.package is not None and parsed.stage != "retrieving":
            self.done += 1
        now = self.clock()
        if begins or now - self.last_report >= self.every:
            self.last_report = now
            done = f", {self.done} done" if self.done else ""
            self.report(f"debootstrap: {self.stage}{done}, {now - self.started:.0f}s")

    def summary(self) -> str:
        return f"debootstrap done: {self.retrieved} packages in {self.clock() - self.started:.0f}s"
