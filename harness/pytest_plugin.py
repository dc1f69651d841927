"""pytest plugin loaded into a scenario's test run (`-p harness.pytest_plugin`).

Gives scenario tests a `cluster` fixture for cluster-level checks next to testinfra's `host`:
nodes by group, running a command on a node, reading a file from a node; `journal`, a unit's
journal for a failure message; and the `disturbing` marker, for tests that disturb the cluster
(reboots, daemon restarts, faults), which `harness verify` runs after the others. It reads the
run's inventory and ssh_config from HARNESS_INVENTORY and HARNESS_SSH_CONFIG, which `harness verify`
sets; the same inventory drives Ansible.

Without HARNESS_SSH_CONFIG (`harness promote`, real hosts) the inventory is read as Ansible resolves
it (any format, group vars merged) and nodes are reached with its own connection settings:
ansible_host, ansible_port, ansible_user, ansible_ssh_private_key_file, ansible_ssh_common_args and
ansible_ssh_extra_args; testinfra's `host` then comes from its `ansible://` backend.
"""

from __future__ import annotations

import os
import shlex
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import testinfra

from harness import proc, reach, ssh
from harness.inventory import hosts_in_group, known_groups, load_inventory, resolve_inventory
from harness.verify import COLLECTED_OPTION, DISTURBING

JOURNAL_LINES = 50


class Cluster:
    """The live cluster as scenario tests see it."""

    def __init__(self, inventory_path: Path, ssh_config: Path | None) -> None:
        self.inventory: dict[str, Any] = _read_inventory(inventory_path, ssh_config)
        self.inventory_path = inventory_path
        self.ssh_config = ssh_config
        self.hostvars: dict[str, dict[str, Any]] = self.inventory["all"]["hosts"]
        self.nodes: list[str] = list(self.hostvars)

    def group(self, name: str) -> list[str]:
        return hosts_in_group(self.inventory, name)

    def groups_of(self, node: str) -> list[str]:
        children = self.inventory["all"].get("children", {})
        return sorted(g for g in children if node in hosts_in_group(self.inventory, g))

    def vars(self, node: str) -> dict[str, Any]:
        """The node's inventory variables (group `all` vars overlaid with its host vars)."""
        return {**self.inventory["all"].get("vars", {}), **self.hostvars[node], "inventory_hostname": node}

    def private_ip(self, node: str) -> str:
        return str(self.hostvars[node]["harness_private_ip"])

    def run(self, node: str, command: str, *args: str, timeout: float = 300) -> proc.CommandResult:
        """Run a shell command line on node as the connecting user (prefix `sudo` for root). Like
        testinfra's `host.run`, `args` fill `command`'s `%s` shell-quoted: `run(node, "cat %s", path)`."""
        self._known(node)
        if args:
            command %= tuple(map(shlex.quote, args))
        return proc.run([*self.ssh_argv(node), command], timeout=timeout)

    def ssh_argv(self, node: str) -> list[str]:
        """ssh to node: through the run's ssh_config, or else with the inventory's connection vars
        (theirs first: the first value of an ssh option wins)."""
        if self.ssh_config is not None:
            return ["ssh", "-F", str(self.ssh_config), *ssh.args(ssh.TESTS_CONNECTION), node]
        hv = self.vars(node)
        argv = ["ssh"]
        for key in ("ansible_ssh_common_args", "ansible_ssh_extra_args"):
            argv += shlex.split(str(hv.get(key) or ""))
        port, user = hv.get("ansible_port"), hv.get("ansible_user") or hv.get("ansible_ssh_user")
        key_file = hv.get("ansible_ssh_private_key_file") or hv.get("ansible_private_key_file")
        argv += ["-p", str(port)] if port else []
        argv += ["-l", str(user)] if user else []
        argv += ["-i", os.path.expanduser(str(key_file))] if key_file else []
        return [*argv, *ssh.args(ssh.TESTS_CONNECTION), str(hv.get("ansible_host") or node)]

    def check(self, node: str, command: str, *args: str, timeout: float = 300) -> str:
        """Like run, but fails the test (with the command's output) unless it exits 0."""
        __tracebackhide__ = True
        res = self.run(node, command, *args, timeout=timeout)
        if not res.ok:
            pytest.fail(f"on {node}: {res.describe()}", pytrace=False)
        return res.stdout

    def read_file(self, node: str, path: str) -> str:
        return self.check(node, "sudo cat %s", path)

    def host(self, node: str) -> Any:
        """testinfra's `host` for any node, in a cluster-level test: `journal(cluster.host(node), unit)`."""
        self._known(node)
        if self.ssh_config is None:
            return testinfra.get_host(f"ansible://{node}", ansible_inventory=str(self.inventory_path))
        return testinfra.get_host(f"ssh://{node}", ssh_config=str(self.ssh_config))

    def _known(self, node: str) -> None:
        if node not in self.hostvars:
            raise KeyError(f"no node {node!r}; nodes: {', '.join(self.nodes)}")


def _read_inventory(path: Path, ssh_config: Path | None) -> dict[str, Any]:
    """The run's own inventory as written; without the run's ssh_config (real hosts) any inventory,
    as Ansible resolves it."""
    return load_inventory(path) if ssh_config is not None else resolve_inventory(path)


GROUPS_MARKER = "groups"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        COLLECTED_OPTION,
        metavar="PATH",
        default=None,
        help="write the node ids of the tests selected to run (after -k, -m and groups), one a line",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{GROUPS_MARKER}(*names): run this per-node (testinfra `host`) test only on nodes in one of these "
        "inventory groups; it is not collected for other nodes (deselected, never reported as skipped)",
    )
    config.addinivalue_line(
        "markers",
        f"{DISTURBING}: disturbs the cluster (reboots, daemon restarts, faults); `harness verify` runs "
        "it after the other tests (their quick verdict first), and `--quick` leaves it for the full verdict",
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_generate_tests(metafunc: pytest.Metafunc) -> Any:
    """A test module's own `testinfra_hosts` wins over `--hosts`, as under Molecule (whose testinfra
    files name their hosts from MOLECULE_INVENTORY_FILE): bare names then connect as the inventory
    says (`--connection=ansible`), so `host.ansible(...)` works there."""
    option = metafunc.config.option
    hosts = getattr(option, "hosts", None)
    own = hosts is not None and hasattr(metafunc.module, "testinfra_hosts")
    if own:
        option.hosts = None
    try:
        yield
    finally:
        if own:
            option.hosts = hosts


def pytest_collection_finish(session: pytest.Session) -> None:
    """With --harness-collected: the node ids this session runs, for `harness verify` to name."""
    path = session.config.getoption(COLLECTED_OPTION)
    if path:
        Path(path).write_text("".join(f"{item.nodeid}\n" for item in session.items), encoding="utf-8")


def _node_of(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    host = callspec.params.get("_testinfra_host") if callspec is not None else None
    return None if host is None else str(host.backend.hostname)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Drop per-node tests marked `@pytest.mark.groups(...)` for nodes outside those groups."""
    if not any(item.get_closest_marker(GROUPS_MARKER) for item in items):
        return
    inv = os.environ.get("HARNESS_INVENTORY")
    if not inv:
        raise pytest.UsageError("@pytest.mark.groups needs HARNESS_INVENTORY: run the tests through `harness verify`")
    cfg = os.environ.get("HARNESS_SSH_CONFIG")
    inventory = _read_inventory(Path(inv), Path(cfg) if cfg else None)
    defined = ["all", *known_groups(inventory)]
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        marker = item.get_closest_marker(GROUPS_MARKER)
        node = _node_of(item)
        if marker is None or node is None:
            keep.append(item)
        elif not marker.args or not set(map(str, marker.args)) <= set(defined):
            raise pytest.UsageError(
                f"{item.nodeid}: @pytest.mark.groups{marker.args} must name groups of the inventory; "
                f"it has: {', '.join(defined)}"
            )
        elif any(node in hosts_in_group(inventory, str(g)) for g in marker.args):
            keep.append(item)
        else:
            drop.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


UNREACHABLE = "UNREACHABLE:"
_REACH_TTL_S = 30.0
_reach_seen: dict[str, tuple[float, bool]] = {}


def _answers(ssh_config: Path, node: str) -> bool:
    """Whether node answers SSH now (remembered for a few seconds: a dead node fails many tests)."""
    now = time.monotonic()
    seen = _reach_seen.get(node)
    if seen is None or now - seen[0] > _REACH_TTL_S:
        seen = (now, reach.answers(ssh_config, node, timeout=10))
        _reach_seen[node] = seen
    return seen[1]


def silent_nodes(item: pytest.Item) -> list[str]:
    """The nodes of a failed test that do not answer SSH: its own node, or every node for a
    cluster-level test."""
    cfg, inv = os.environ.get("HARNESS_SSH_CONFIG"), os.environ.get("HARNESS_INVENTORY")
    if not cfg:
        return []
    node = _node_of(item)
    nodes = [node] if node else list(load_inventory(Path(inv))["all"]["hosts"]) if inv else []
    return [n for n in nodes if not _answers(Path(cfg), n)]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A test that failed while its node did not answer SSH says so first: the failure is about
    reaching the node, not about what the test checks (`harness verify` retries it)."""
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and call.when in ("setup", "call"):
        silent = silent_nodes(item)
        if silent:
            rep.longrepr = f"{UNREACHABLE} {', '.join(silent)} did not answer SSH\n{rep.longrepr}"


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    inv = os.environ.get("HARNESS_INVENTORY")
    cfg = os.environ.get("HARNESS_SSH_CONFIG")
    if not inv:
        pytest.fail(
            "the cluster fixture needs HARNESS_INVENTORY (and HARNESS_SSH_CONFIG for a harness run): "
            "run through `harness verify` or `harness promote`"
        )
    return Cluster(Path(inv), Path(cfg) if cfg else None)


@pytest.fixture
def node_name(host: Any) -> str:
    """The inventory name of the node testinfra's `host` is connected to."""
    return str(host.backend.hostname)


def journal(host: Any, unit: str, lines: int = JOURNAL_LINES) -> str:
    """The last `lines` journal lines of `unit` on testinfra's `host` (read as root), under a title
    line, for a failure message. In a cluster-level test: `journal(cluster.host(node), unit)`."""
    title = f"--- journalctl -u {unit} -n {lines} on {host.backend.get_hostname()} ---"
    try:
        with host.sudo():
            out = host.run("journalctl -u %s -n %s --no-pager", unit, str(lines))
    except RuntimeError as exc:  # testinfra's ssh backend when ssh itself fails (the node is gone)
        return f"{title}\n(cannot read the journal: {exc})"
    text = out.stdout if out.rc == 0 else f"(journalctl failed, rc={out.rc}: {out.stderr.strip()})"
    return f"{title}\n{text}"


def assert_service_ok(host: Any, unit: str) -> None:
    """Fail unless `unit` is running and enabled; the failure message carries its journal."""
    __tracebackhide__ = True
    service = host.service(unit)
    problems = [
        p for p, bad in (("not running", not service.is_running), ("not enabled", not service.is_enabled)) if bad
    ]
    if problems:
        where = host.backend.get_hostname()
        pytest.fail(f"{unit} on {where}: {', '.join(problems)}\n{journal(host, unit)}", pytrace=False)


@pytest.fixture
def service_ok(host: Any) -> Callable[[str], None]:
    """`service_ok("chrony")`: the unit runs and is enabled on this test's node (journal on failure)."""

    def check(unit: str) -> None:
        __tracebackhide__ = True
        assert_service_ok(host, unit)

    return check
