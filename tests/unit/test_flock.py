"""harness.flock: the one lock idiom that the network, GPU, box volume, ledger and run-owner locks share."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness import flock

# Exit 0 when the lock on argv[1] could be taken at once, 1 when another process holds it.
_TRY = """
import fcntl, sys
with open(sys.argv[1], "a") as fh:
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        sys.exit(1)
"""


def _free(path: Path) -> bool:
    return subprocess.run([sys.executable, "-c", _TRY, str(path)], check=False).returncode == 0


def test_the_lock_is_held_for_the_block_only_even_when_it_raises(tmp_path: Path) -> None:
    path = tmp_path / "made" / "here.lock"
    with flock.exclusive(path) as fh:
        assert not _free(path), "another process took a held lock"
        fh.write("written under the lock\n")
    assert _free(path)
    with pytest.raises(RuntimeError), flock.exclusive(path):
        raise RuntimeError("boom")
    assert _free(path)
    assert path.read_text() == "written under the lock\n"  # "a" appends, never truncates


def test_a_file_is_locked_as_it_is_opened_for_reading(tmp_path: Path) -> None:
    image = tmp_path / "box.img"
    image.write_bytes(b"\0disk")
    with flock.exclusive(image, "rb") as fh:
        assert fh.read() == b"\0disk"
        assert not _free(image)
    assert image.read_bytes() == b"\0disk"
