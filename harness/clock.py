"""A guest's clock set to the host's, to well under a second, however slow the guest answers.

After a reset to a checkpoint a guest's clock is where it was when the checkpoint was taken
(minutes or days behind). Sending the host's time in a command line is not enough: on a loaded
host the SSH session, sudo and the shell take seconds to start (7.4 s seen on 4 TCG nodes), and
the clock is set that far behind. So one session runs a small Python loop on the node and the
host talks to it once it is up: a few round trips measure the offset (the guest's time against
the midpoint of each round trip, the shortest one kept), the loop steps the clock by it relative
to its own clock at that moment, and a last round trip measures what is left.
"""

from __future__ import annotations

import select
import shlex
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass

from harness import proc
from harness.errors import ProviderError

# Runs on the node as root (python3 is in every box: Ansible needs it). Lines in, lines out:
# "time" → the node's time; "step D" → clock moved by D seconds, "ok".
GUEST_LOOP = """
import sys, time
print("ready", flush=True)
for line in sys.stdin:
    cmd, _, arg = line.strip().partition(" ")
    if cmd == "time":
        print(repr(time.time()), flush=True)
    elif cmd == "step":
        time.clock_settime(time.CLOCK_REALTIME, time.time() + float(arg))
        print("ok", flush=True)
    else:
        break
"""
PROBES = 3


@dataclass(frozen=True)
class ClockSync:
    before_s: float  # the guest's offset from the host before the step (guest - host)
    after_s: float  # what is left after it
    rtt_s: float  # the shortest round trip: the measurement's uncertainty is half of it


class _Session:
    def __init__(self, argv: Sequence[str], timeout: float) -> None:
        self.deadline = time.monotonic() + timeout
        self.proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
            env=proc.child_env(),  # the run's mark: its teardown ends this session too
        )

    def line(self) -> str:
        assert self.proc.stdout is not None
        left = self.deadline - time.monotonic()
        if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
            raise ProviderError("no answer in time")
        got = self.proc.stdout.readline()
        if not got:
            raise ProviderError(f"the session ended: {self._stderr()}")
        return got.strip()

    def ask(self, request: str) -> str:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(request + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise ProviderError(f"the session ended: {self._stderr()}") from None
        return self.line()

    def offset(self) -> tuple[float, float]:
        """(guest - host, round trip) from the shortest of a few round trips."""
        best: tuple[float, float] | None = None
        for _ in range(PROBES):
            t0 = time.time()
            answer = self.ask("time")
            t1 = time.time()
            try:
                guest = float(answer)
            except ValueError:
                raise ProviderError(f"unexpected answer {answer!r}") from None
            if best is None or t1 - t0 < best[1]:
                best = (guest - (t0 + t1) / 2, t1 - t0)
        assert best is not None
        return best

    def _stderr(self) -> str:
        """What the ended session said. Its stdout closes a moment before it exits: wait for that."""
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return "(still running)"
        return (self.proc.stderr.read() if self.proc.stderr else "").strip()[-500:] or f"exit {self.proc.returncode}"

    def close(self) -> None:
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def sync(argv_prefix: Sequence[str], timeout: float = 120, loop: str = GUEST_LOOP) -> ClockSync:
    """Set the clock of the node that `argv_prefix` (ssh ... NODE) reaches to the host's. Raises
    ProviderError when the node does not answer in `timeout` seconds."""
    argv = [*argv_prefix, f"sudo python3 -u -c {shlex.quote(loop)}"]
    session = _Session(argv, timeout)
    try:
        if (first := session.line()) != "ready":
            raise ProviderError(f"unexpected answer {first!r}")
        before, _ = session.offset()
        if session.ask(f"step {-before:.6f}") != "ok":
            raise ProviderError("the step was refused")
        after, rtt = session.offset()
        return ClockSync(before, after, rtt)
    finally:
        session.close()
