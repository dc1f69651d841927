"""Run the `harness` CLI as a user would (a subprocess), against the test session's runs directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def harness(
    runs_dir: Path, *args: str, timeout: float = 3600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "HARNESS_RUNS_DIR": str(runs_dir), "NO_COLOR": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "harness", *args], env=full, capture_output=True, text=True, timeout=timeout
    )
