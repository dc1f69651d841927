"""Where things live: the package's data (Vagrantfile template, box recipes), the checkout's roles
and scenarios, the per-user cache, the host-wide run registry and the per-project run directories."""

from __future__ import annotations

import os
from pathlib import Path

# Shipped inside the package (wheel and sdist), so an installed harness renders and builds boxes
# outside the checkout; the checkout's top-level `vagrant/` is a link to DATA_DIR / "vagrant".
PACKAGE_DIR = Path(__file__).resolve().parent
DATA_DIR = PACKAGE_DIR / "data"
TEMPLATES_DIR = DATA_DIR / "vagrant"
BOX_RECIPES_DIR = TEMPLATES_DIR / "boxes"
# The checkout (editable install). Installed from a wheel these directories do not exist: roles
# come from the scenario's roles_path or the harness.cluster collection (docs/getting-started.md,
# "Installing from a wheel").
PROJECT_ROOT = PACKAGE_DIR.parent
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
