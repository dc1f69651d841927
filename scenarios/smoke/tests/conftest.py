"""Fixtures for the smoke scenario's tests (service checks come from the harness plugin: `service_ok`)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from harness.paths import ROLES_DIR

# The role the smoke scenario converges (its roles_path is empty: the harness's own roles/).
COMMON_DEFAULTS = ROLES_DIR / "common" / "defaults" / "main.yml"


@pytest.fixture(scope="session")
def common_defaults() -> dict[str, Any]:
    """roles/common's defaults as the role ships them, less the Jinja-templated ones (Ansible
    renders those per host: the tests cannot compare against their text)."""
    defaults: dict[str, Any] = yaml.safe_load(COMMON_DEFAULTS.read_text(encoding="utf-8"))
    return {k: v for k, v in defaults.items() if not (isinstance(v, str) and ("{{" in v or "{%" in v))}


@pytest.fixture
def role_vars(cluster: Any, node_name: str, common_defaults: dict[str, Any]) -> dict[str, Any]:
    """roles/common's settings for this node: the role defaults, overridden by inventory vars."""
    inventory = cluster.vars(node_name)
    return {k: inventory.get(k, v) for k, v in common_defaults.items()}
