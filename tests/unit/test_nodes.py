"""Teardown's sweep: nothing of the run may appear after it says the run is gone."""

from __future__ import annotations

from typing import Any

import pytest

from harness import nodes
from harness.provider import libvirt as lv


class _Libvirt:
    """Domains that a killed client's calls keep creating for a while after the first sweep."""

    def __init__(self, late: list[list[str]]) -> None:
        self.late = late  # what appears before each listing
        self.present: list[str] = ["hx-r-a"]
        self.removed: list[str] = []

    def remove_run(self, _conn: Any, prefix: str) -> lv.RunObjects:
        self.removed += self.present
        self.present = self.late.pop(0) if self.late else []
        return lv.RunObjects(domains=list(self.present))

    def run_objects(self, _conn: Any, prefix: str) -> lv.RunObjects:
        return lv.RunObjects(domains=list(self.present))


def _sweep(monkeypatch: pytest.MonkeyPatch, fake: _Libvirt, deadline: float = 90.0) -> lv.RunObjects:
    monkeypatch.setattr(lv, "remove_run", fake.remove_run)
    monkeypatch.setattr(lv, "run_objects", fake.run_objects)
    clock = [0.0]

    def sleep(s: float) -> None:
        clock[0] += s

    return nodes.sweep(None, "hx-r", deadline_s=deadline, clock=lambda: clock[0], sleep=sleep)


def test_a_domain_defined_after_the_first_sweep_is_swept_too(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _Libvirt(late=[["hx-r-b"], [], []])
    left = _sweep(monkeypatch, fake)
    assert left.empty()
    assert fake.removed == ["hx-r-a", "hx-r-b"]


def test_the_sweep_needs_several_empty_listings_in_a_row(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _Libvirt(late=[[], ["hx-r-c"], [], []])
    assert _sweep(monkeypatch, fake).empty()
    assert "hx-r-c" in fake.removed


def test_what_keeps_coming_back_is_reported_at_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _Libvirt(late=[["hx-r-z"]] * 100)
    left = _sweep(monkeypatch, fake, deadline=10.0)
    assert left.domains == ["hx-r-z"]
