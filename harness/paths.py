"""Where things live: the project's data (templates, box recipes, roles, scenarios), the per-user
cache, the host-wide run registry and the per-project run directories."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TEMPLATES_DIR = PROJECT_ROOT / "vagrant"
BOX_RECIPES_DIR = PROJECT_ROOT / "vagrant" / "boxes"
ROLES_DIR = PROJECT_ROOT / "roles"
SCENARIOS_DIR = PROJECT_ROOT / "scenarios"


def scenario_search_dirs() -> list[Path]:
    """`scenarios/` in the working directory first, then the project's own."""
    dirs = [Path.cwd() / "scenarios", SCENARIOS_DIR]
    return list(dict.fromkeys(d.resolve() for d in dirs))


def cache_dir() -> Path:
    base = os.environ.get("HARNESS_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "harness"
    )
    return Path(base)


def probe_kernel_path() -> Path:
    """A Linux kernel (the box's) that the KVM probe boots; written by `harness box build`."""
    return cache_dir() / "probe" / "vmlinuz"


def state_dir() -> Path:
    """Host-wide state shared by every harness process of this user: run registry, GPU locks."""
    base = os.environ.get("HARNESS_STATE_DIR") or os.path.join(
        os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state"), "harness"
    )
    return Path(base)


def runs_root() -> Path:
    """Run directories: `.harness/runs/` under the working directory (HARNESS_RUNS_DIR overrides)."""
    return Path(os.environ.get("HARNESS_RUNS_DIR") or (Path.cwd() / ".harness" / "runs"))
