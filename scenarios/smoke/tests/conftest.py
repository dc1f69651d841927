"""Helpers for the smoke scenario's tests: service checks that show the unit's journal on failure."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

JOURNAL_LINES = 50


def journal(host: Any, unit: str, lines: int = JOURNAL_LINES) -> str:
    """The last `lines` journal lines of `unit` on `host` (read as root), or why they could not be read."""
    with host.sudo():
        out = host.run(f"journalctl -u {unit} -n {lines} --no-pager")
    return out.stdout if out.rc == 0 else f"(journalctl failed, rc={out.rc}: {out.stderr.strip()})"


def assert_service_ok(host: Any, unit: str) -> None:
    """Fail unless `unit` is running and enabled; the failure message carries its journal."""
    __tracebackhide__ = True
    service = host.service(unit)
    problems = []
    if not service.is_running:
        problems.append("not running")
    if not service.is_enabled:
        problems.append("not enabled")
    if problems:
        node = host.backend.get_hostname()
        pytest.fail(
            f"{unit} on {node}: {', '.join(problems)}\n"
            f"--- journalctl -u {unit} -n {JOURNAL_LINES} ---\n{journal(host, unit)}",
            pytrace=False,
        )


@pytest.fixture
def service_ok(host: Any) -> Callable[[str], None]:
    """`service_ok("chrony")`: assert_service_ok against this test's node."""

    def check(unit: str) -> None:
        __tracebackhide__ = True
        assert_service_ok(host, unit)

    return check


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
