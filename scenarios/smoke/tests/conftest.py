"""Fixtures for the smoke scenario's tests (service checks come from the harness plugin: `service_ok`)."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
def role_vars(cluster: Any, node_name: str) -> dict[str, Any]:
    """roles/common's settings for this node: the role defaults, overridden by inventory vars."""
    defaults: dict[str, Any] = {
        "common_admin_user": "clusteradmin",
        "common_sshd_client_alive_interval": 60,
        "common_sshd_client_alive_count_max": 3,
        "common_time_server_group": "mgmt",
        "common_ntp_upstream": [],
        "common_locale": "C.UTF-8",
        "common_timezone": "Etc/UTC",
    }
    inventory = cluster.vars(node_name)
    return {k: inventory.get(k, v) for k, v in defaults.items()}
