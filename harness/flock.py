"""One exclusive advisory lock (flock(2)) on a file, held for a `with` block: how harness processes
side by side take turns (choosing subnets, GPU locks, the box volume, the rehearsal ledger, a run's
owner)."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def exclusive(path: Path, mode: str = "a", encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """Open `path` (its directory made if missing; "a" creates the file and truncates nothing),
    wait for its exclusive lock and yield the open file; unlocked and closed when the block ends,
    however it ends. The lock is the kernel's: a process killed while holding it frees it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open(mode, encoding=None if "b" in mode else encoding) as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield fh
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
