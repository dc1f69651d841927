"""harness.clock against a stand-in guest: a local loop speaking the same lines, whose clock is an
hour behind and which is slow to start (as a loaded TCG guest's SSH session and sudo are). The real
loop would set this host's clock, so it never runs here; only its text is checked."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from harness import clock
from harness.errors import ProviderError

# The stand-in: a simulated clock (the host's plus an offset), 1.5 s to start, 50 ms per answer.
FAKE_GUEST = """
import sys, time
offset = -3600.0
time.sleep(1.5)
print("ready", flush=True)
for line in sys.stdin:
    cmd, _, arg = line.strip().partition(" ")
    time.sleep(0.05)
    if cmd == "time":
        print(repr(time.time() + offset), flush=True)
    elif cmd == "step":
        offset += float(arg)
        print("ok", flush=True)
    else:
        break
"""


@pytest.fixture
def local(tmp_path: Path) -> list[str]:
    """An argv prefix standing in for `ssh NODE`: runs the command line here, with a `sudo` that
    only runs its arguments."""
    sudo = tmp_path / "sudo"
    sudo.write_text('#!/bin/sh\nexec "$@"\n')
    sudo.chmod(sudo.stat().st_mode | stat.S_IXUSR)
    return ["env", f"PATH={tmp_path}:{os.environ['PATH']}", "sh", "-c"]


def test_a_slow_guest_an_hour_behind_ends_within_a_tenth_of_a_second(local: list[str]) -> None:
    result = clock.sync(local, timeout=30, loop=FAKE_GUEST)
    assert result.before_s == pytest.approx(-3600, abs=0.2)
    # The slow start (1.5 s) does not count: only the round trips over the open session do.
    assert abs(result.after_s) < 0.1, result
    assert 0.05 <= result.rtt_s < 0.5


def test_a_guest_that_never_answers_is_an_error_in_time(local: list[str]) -> None:
    with pytest.raises(ProviderError, match="no answer in time"):
        clock.sync(local, timeout=1, loop="import time; time.sleep(30)")


def test_a_session_that_fails_says_why(local: list[str]) -> None:
    with pytest.raises(ProviderError, match=r"the session ended: .*boom"):
        clock.sync(local, timeout=10, loop="import sys; sys.exit('boom')")


def test_the_guest_loop_steps_the_realtime_clock_relative_to_its_own() -> None:
    assert "time.clock_settime(time.CLOCK_REALTIME, time.time() + float(arg))" in clock.GUEST_LOOP
    compile(clock.GUEST_LOOP, "guest-loop", "exec")
