"""Tests that reach a site's hosts through its inventory share one SSH connection per host, unless
the site decides that itself; nothing outlives the verify."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import proc, site_ssh, verify

pytestmark = pytest.mark.ansible  # ansible-inventory reads the site's inventory


def _inventory(tmp_path: Path, hostvars: dict[str, Any] | None = None) -> Path:
    path = tmp_path / "site.yml"
    path.write_text(yaml.safe_dump({"all": {"hosts": {"dgx01": hostvars or {"ansible_host": "192.0.2.7"}}}}))
    return path


@pytest.fixture(autouse=True)
def _no_callers_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(site_ssh.EXTRA_ARGS_ENV, raising=False)
    monkeypatch.delenv("ANSIBLE_CONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def test_a_site_that_sets_nothing_gets_a_private_control_path_removed_afterwards(tmp_path: Path) -> None:
    with site_ssh.shared_connections(_inventory(tmp_path), tmp_path, {}) as env:
        path = env[site_ssh.EXTRA_ARGS_ENV].removeprefix("-o ControlPath=")
        control_dir = Path(path).parent
        assert path.endswith("/%C") and control_dir.is_dir() and len(path) < 60
    assert not control_dir.exists()


@pytest.mark.parametrize(
    "where",
    ["environment", "config", "host"],
)
def test_the_sites_own_settings_win(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    hostvars = None
    if where == "environment":
        monkeypatch.setenv(site_ssh.EXTRA_ARGS_ENV, "-o ProxyJump=bastion")
    elif where == "config":
        (tmp_path / "ansible.cfg").write_text("[ssh_connection]\ncontrol_path = %(directory)s/%%h-%%r\n")
    else:
        hostvars = {"ansible_host": "192.0.2.7", "ansible_ssh_extra_args": "-o ProxyJump=bastion"}
    inv = _inventory(tmp_path, hostvars)
    assert site_ssh.site_sets_its_own(inv, tmp_path, {}) is not None
    with site_ssh.shared_connections(inv, tmp_path, {}) as env:
        assert env == {}


def test_every_master_is_asked_to_exit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[list[str]] = []
    monkeypatch.setattr(proc, "run", lambda argv, **kw: asked.append(list(argv)))
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "abc123"))
    (tmp_path / "not-a-socket").write_text("")
    try:
        assert site_ssh.close_masters(tmp_path) == 1
    finally:
        sock.close()
    assert asked == [["ssh", "-o", f"ControlPath={tmp_path / 'abc123'}", "-O", "exit", "harness-verify"]]


def test_the_tests_of_a_promotion_get_the_control_path_and_a_runs_tests_do_not(tmp_path: Path) -> None:
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "test_env.py").write_text(
        "import os\n\n\ndef test_env():\n"
        "    open(os.environ['SEEN'], 'w').write(os.environ.get('ANSIBLE_SSH_EXTRA_ARGS', '-'))\n"
    )
    seen = tmp_path / "seen"
    inv = _inventory(tmp_path)
    result = verify.run_tests(
        tests, nodes=["dgx01"], inventory=inv, ssh_config=None, out_dir=tmp_path / "out", env={"SEEN": str(seen)}
    )
    assert result.ok, result.failures
    assert seen.read_text().startswith("-o ControlPath=/")
    assert not Path(seen.read_text().removeprefix("-o ControlPath=")).parent.exists()
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text("Host dgx01\n  HostName 192.0.2.7\n")
    verify.run_tests(
        tests, nodes=["dgx01"], inventory=inv, ssh_config=ssh_config, out_dir=tmp_path / "run", env={"SEEN": str(seen)}
    )
    assert seen.read_text() == "-"


def test_an_inventory_ansible_cannot_read_adds_nothing_and_raises_nothing(tmp_path: Path) -> None:
    with site_ssh.shared_connections(tmp_path / "missing.yml", tmp_path, {}) as env:
        assert env == {}
