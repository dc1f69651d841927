"""The harness pytest plugin's `groups` marker: per-node tests collected only for nodes of the named
groups. Runs a real inner pytest session with testinfra's ssh backend (hosts are never contacted:
collection alone decides). And the `cluster` fixture's commands, with ssh faked."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from harness import proc, ssh
from harness.pytest_plugin import Cluster, journal

pytest_plugins = ["pytester"]

INVENTORY = {
    "all": {
        "hosts": {"login01": {}, "mgmt01": {}, "gpu01": {}, "gpu02": {}},
        "children": {
            "login": {"hosts": {"login01": {}}},
            "mgmt": {"hosts": {"mgmt01": {}}},
            "gpu": {"hosts": {"gpu01": {}, "gpu02": {}}},
            "compute": {"children": {"gpu": {"hosts": {"gpu01": {}, "gpu02": {}}}}},
        },
    }
}
HOSTS = "--hosts=ssh://login01,ssh://mgmt01,ssh://gpu01,ssh://gpu02"


@pytest.fixture
def inner(pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    inv = tmp_path / "inventory.yml"
    inv.write_text(yaml.safe_dump(INVENTORY))
    monkeypatch.setenv("HARNESS_INVENTORY", str(inv))
    return pytester


def _collected(result: pytest.RunResult) -> list[str]:
    return sorted(line.strip() for line in result.outlines if "::" in line and "[ssh://" in line)


def test_marked_tests_are_collected_only_for_nodes_of_their_groups(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        test_x="""
        import pytest

        @pytest.mark.groups("mgmt")
        def test_exports(host): pass

        @pytest.mark.groups("login", "compute")
        def test_mounts(host): pass

        def test_everywhere(host): pass

        @pytest.mark.groups("gpu")
        def test_cluster_level(): pass
        """
    )
    result = inner.runpytest("-p", "harness.pytest_plugin", HOSTS, "--collect-only", "-q")
    ids = _collected(result)
    assert [i for i in ids if "test_exports" in i] == ["test_x.py::test_exports[ssh://mgmt01]"]
    assert sorted(i.split("[")[1] for i in ids if "test_mounts" in i) == [
        "ssh://gpu01]",
        "ssh://gpu02]",
        "ssh://login01]",
    ]
    assert len([i for i in ids if "test_everywhere" in i]) == 4
    # A test without a node (no `host`) is left alone by the marker.
    assert "test_x.py::test_cluster_level" in result.stdout.str()
    result.stdout.fnmatch_lines(["*9/13 tests collected (4 deselected)*"])


def test_an_unknown_group_is_a_usage_error_not_a_silent_deselection(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        test_y="""
        import pytest

        @pytest.mark.groups("gpus")
        def test_typo(host): pass
        """
    )
    result = inner.runpytest("-p", "harness.pytest_plugin", HOSTS, "--collect-only", "-q")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*must name groups of the inventory; it has: all, compute, gpu, login, mgmt*"])


@pytest.fixture
def ran(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    """The argv of every command the plugin runs; each one succeeds without running."""
    calls: list[tuple[str, ...]] = []

    def fake_run(argv: Sequence[str], *, timeout: float | None = None) -> proc.CommandResult:
        calls.append(tuple(argv))
        return proc.CommandResult(tuple(argv), 0, "out", "", 0.0)

    monkeypatch.setattr(proc, "run", fake_run)
    return calls


def _cluster(tmp_path: Path) -> Cluster:
    inv = tmp_path / "inventory.yml"
    inv.write_text(yaml.safe_dump(INVENTORY))
    return Cluster(inv, tmp_path / "ssh_config")


def test_cluster_run_quotes_its_args_into_the_command_like_testinfra(
    tmp_path: Path, ran: list[tuple[str, ...]]
) -> None:
    cluster = _cluster(tmp_path)
    cluster.run("gpu01", "cat %s %s", "/tmp/a b", "it's")
    cluster.check("gpu01", "test -d %s", "/x;rm -rf /", timeout=5)
    cluster.read_file("mgmt01", "/etc/my file")
    # Without args the command is passed as written, `%` and all (testinfra does the same).
    cluster.run("login01", "sinfo -o '%N %t'")
    prefix = ("ssh", "-F", str(tmp_path / "ssh_config"), *ssh.args(ssh.TESTS_CONNECTION))
    assert ran == [
        (*prefix, "gpu01", "cat '/tmp/a b' 'it'\"'\"'s'"),
        (*prefix, "gpu01", "test -d '/x;rm -rf /'"),
        (*prefix, "mgmt01", "sudo cat '/etc/my file'"),
        (*prefix, "login01", "sinfo -o '%N %t'"),
    ]


def test_cluster_run_refuses_a_node_that_is_not_in_the_inventory(tmp_path: Path, ran: list[tuple[str, ...]]) -> None:
    with pytest.raises(KeyError, match="no node 'gpu09'"):
        _cluster(tmp_path).run("gpu09", "true")
    assert ran == []


class _FakeHost:
    """testinfra's `host`, as much as `journal` uses: sudo(), run(command, *args), the backend's name."""

    def __init__(self, rc: int = 0, fails: bool = False) -> None:
        self.rc = rc
        self.fails = fails
        self.root = False
        self.commands: list[tuple[str, ...]] = []
        self.backend = self

    def get_hostname(self) -> str:
        return "gpu01"

    @contextmanager
    def sudo(self) -> Iterator[None]:
        self.root = True
        yield
        self.root = False

    def run(self, command: str, *args: str) -> SimpleNamespace:
        assert self.root, "the journal is read as root"
        self.commands.append((command, *args))
        if self.fails:
            raise RuntimeError("ssh: connect to host gpu01 port 22: No route to host")
        return SimpleNamespace(rc=self.rc, stdout="line 1\nline 2\n", stderr="no such unit\n")


def test_journal_has_a_title_and_reads_as_root() -> None:
    host = _FakeHost()
    assert journal(host, "slurmd", lines=20) == "--- journalctl -u slurmd -n 20 on gpu01 ---\nline 1\nline 2\n"
    assert host.commands == [("journalctl -u %s -n %s --no-pager", "slurmd", "20")]


def test_journal_says_why_it_has_no_lines() -> None:
    assert journal(_FakeHost(rc=1), "nope").endswith("\n(journalctl failed, rc=1: no such unit)")
    assert "(cannot read the journal: ssh: connect to host gpu01" in journal(_FakeHost(fails=True), "slurmd")


def test_cluster_host_is_testinfra_over_the_run_ssh_config(tmp_path: Path) -> None:
    host = _cluster(tmp_path).host("gpu01")
    assert host.backend.get_hostname() == "gpu01" and host.backend.ssh_config == str(tmp_path / "ssh_config")
    with pytest.raises(KeyError, match="no node 'gpu09'"):
        _cluster(tmp_path).host("gpu09")


SITE_INVENTORY = {
    "all": {
        "vars": {"ansible_user": "admin", "ansible_ssh_private_key_file": "~/.ssh/site"},
        "hosts": {"mgmt01": {"ansible_host": "mgmt01.example.org"}},
        "children": {
            "gpu": {
                "vars": {"ansible_port": 2222, "ansible_ssh_common_args": "-o 'ProxyJump=admin@bastion'"},
                "hosts": {"dgx01": {"ansible_host": "10.0.0.21"}, "dgx02": {}},
            }
        },
    }
}


def test_without_the_runs_ssh_config_nodes_are_reached_as_the_inventory_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inv = tmp_path / "site.yml"
    inv.write_text(yaml.safe_dump(SITE_INVENTORY))
    cluster = Cluster(inv, None)  # read as Ansible resolves it: group vars merged into each host
    assert cluster.nodes == ["mgmt01", "dgx01", "dgx02"] and cluster.group("gpu") == ["dgx01", "dgx02"]
    assert cluster.vars("dgx02")["ansible_port"] == 2222
    calls: list[tuple[str, ...]] = []
    monkeypatch.setattr(proc, "run", lambda argv, timeout=None: calls.append(tuple(argv)))
    cluster.run("dgx01", "cat %s", "/etc/a b")
    cluster.run("mgmt01", "true")
    key = os.path.expanduser("~/.ssh/site")
    ours = tuple(ssh.args(ssh.TESTS_CONNECTION))
    assert calls == [
        ("ssh", "-o", "ProxyJump=admin@bastion", "-p", "2222", "-l", "admin", "-i", key, *ours, "10.0.0.21",
         "cat '/etc/a b'"),
        ("ssh", "-l", "admin", "-i", key, *ours, "mgmt01.example.org", "true"),
    ]  # fmt: skip
    host = cluster.host("dgx02")
    assert host.backend.NAME == "ansible" and host.backend.ansible_inventory == str(inv)
    assert host.backend.get_hostname() == "dgx02"


def test_the_cluster_fixture_needs_no_ssh_config_on_real_hosts(
    inner: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HARNESS_SSH_CONFIG", "")  # as `harness promote` runs the tests
    inner.makepyfile(
        test_c="""
        def test_c(cluster):
            assert cluster.ssh_config is None and cluster.group("gpu") == ["gpu01", "gpu02"]
        """
    )
    inner.runpytest("-p", "harness.pytest_plugin").assert_outcomes(passed=1)


def test_the_disturbing_marker_is_registered_and_collected_ids_are_written(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        test_z="""
        import pytest

        def test_reads(host): pass

        @pytest.mark.disturbing
        def test_reboots(): pass
        """
    )
    ids = inner.path / "ids"
    args = ("-p", "harness.pytest_plugin", "--strict-markers", HOSTS, f"--harness-collected={ids}", "--collect-only")
    inner.runpytest(*args, "-m", "disturbing").assert_outcomes()
    assert ids.read_text().splitlines() == ["test_z.py::test_reboots"]
    inner.runpytest(*args, "-m", "not disturbing", "-k", "mgmt01 or gpu02")
    assert ids.read_text().splitlines() == [f"test_z.py::test_reads[ssh://{n}]" for n in ("gpu02", "mgmt01")]
    marker_help = inner.runpytest("-p", "harness.pytest_plugin", "--markers")
    marker_help.stdout.fnmatch_lines(["@pytest.mark.disturbing: disturbs the cluster*"])
