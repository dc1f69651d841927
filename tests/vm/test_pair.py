"""A 2-node cluster (pair) on real VMs, brought up with `harness up pair` and kept, as a user keeps
one: it answers over SSH with its own identities, talks on its private network and goes away
without a trace. Air-gapped by default: a node has no route beyond the host, reaches Debian's
package host only through the host's package cache, and `apt-get update` works through it.
Beside it, a harness run killed with SIGKILL: `harness gc` removes every object of that run
(domains, volumes, networks, checkpoints, GPU locks, the registry entry), ends what the run had left
running (Vagrant, ansible-playbook, pytest, SSH control masters) so nothing of it comes back, and
touches nothing of the kept pair. (One boot for all three: each used to boot a pair of its own.)"""

from __future__ import annotations

import ipaddress
import json
import shlex
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness import cache, nodes, passthrough, proc, rundir
from harness.provider import libvirt as lv
from harness.rundir import RunState
from tests.vm import sigkill
from tests.vm.cli import harness

from .conftest import assert_nothing_left, scenario

pytestmark = pytest.mark.vm

RELEASE_PATH = "/debian/dists/bookworm/Release"


UP_SECONDS: dict[str, float] = {}


@pytest.fixture(scope="module")
def cluster(runs_dir: Path) -> Iterator[RunState]:
    """The kept pair: `harness up pair` has exited, its cluster stays (what gc must spare)."""
    started = time.monotonic()
    up = harness(runs_dir, "up", "pair", timeout=900)
    UP_SECONDS["pair"] = time.monotonic() - started
    made = sorted(runs_dir.glob("pair-*"), key=lambda d: d.stat().st_mtime)
    run = rundir.load(made[-1]) if made else None
    try:
        assert up.returncode == 0 and run is not None, up.stdout + up.stderr
        yield run
    finally:
        if run is not None:
            nodes.teardown(rundir.load(run.path))
            assert_nothing_left(run)
            assert rundir.load(run.path).state == "destroyed"


def test_pair_up_ssh_private_network(cluster: RunState, figure: Callable[[str, str], None]) -> None:
    run = cluster
    figure("2-node up (pair)", f"{UP_SECONDS['pair']:.0f} s")
    assert run.state == "up" and run.nodes == ["mgmt01", "gpu01"]
    t0 = time.monotonic()
    _, doms = nodes.status(scenario("pair"))
    figure("status query (libvirt)", f"{time.monotonic() - t0:.3f} s")
    assert [(d.name, d.state) for d in doms] == [
        (f"{run.prefix}-gpu01", "running"),
        (f"{run.prefix}-mgmt01", "running"),
    ]
    ids = {}
    for node in run.nodes:
        res = nodes.run_on(run, node, "hostname; cat /etc/machine-id; ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub")
        assert res.ok, res.describe()
        name, machine_id, hostkey = res.stdout.splitlines()
        assert name == node
        ids[node] = (machine_id, hostkey.split()[1])
    assert ids["mgmt01"][0] != ids["gpu01"][0], "nodes share a machine-id"
    assert ids["mgmt01"][1] != ids["gpu01"][1], "nodes share SSH host keys"
    for src, dst in (("mgmt01", "gpu01"), ("gpu01", "mgmt01")):
        res = nodes.run_on(run, src, f"ping -c2 -W5 {run.private_ips[dst]}")
        assert res.ok, f"{src} cannot reach {dst} on the private network: {res.describe()}"
    # The cluster key replaced Vagrant's keys: the run's ssh_config names it and nothing else.
    cfg = run.ssh_config.read_text()
    assert f"IdentityFile {run.path / 'ssh' / 'id_ed25519'}" in cfg and "insecure_private_key" not in cfg
    assert (run.path / "Vagrantfile").is_file() and (run.log_dir / "vagrant.log").is_file()


def _python(code: str) -> str:
    return f"python3 -c {shlex.quote(code)}"


def _on(run: RunState, node: str, command: str, timeout: float = 300) -> tuple[int, str]:
    res = nodes.run_on(run, node, command, timeout=timeout)
    return res.rc, (res.stdout + res.stderr).strip()


# On a node: each name through NSS (what `getent hosts` and every program see), its reverse, and a
# raw DNS query to each run network's dnsmasq (the address of the answer, or None when refused).
_RESOLVE = r"""
import json, socket, struct, sys
names, servers = json.loads(sys.argv[1]), json.loads(sys.argv[2])
def ask(server, name):
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(5)
    s.sendto(struct.pack(">HHHHHH", 7, 0x0100, 1, 0, 0, 0) + labels + b"\0\0\1\0\1", (server, 53))
    r = s.recv(512)
    return socket.inet_ntoa(r[-4:]) if r[3] & 15 == 0 and struct.unpack(">H", r[6:8])[0] == 1 else None
def nss(name):
    try:
        ip = socket.gethostbyname(name)
        return [ip, socket.gethostbyaddr(ip)[0]]
    except OSError:
        return None
print(json.dumps({n: {"nss": nss(n), **{k: ask(v, n) for k, v in servers.items()}} for n in names}))
"""


def test_every_node_name_resolves_from_the_runs_dns(cluster: RunState) -> None:
    """No role has run: every node resolves every inventory name (its own too) to that node's
    private address, and the address back to the name, as at a site with DNS; both run networks'
    dnsmasq answer the same, and refuse an outside name (they forward nothing)."""
    servers = {
        net: str(lv.gateway_address(ipaddress.IPv4Network(subnet)))
        for net, subnet in (("mgmt", cluster.mgmt_subnet), ("private", cluster.private_subnet))
    }
    want: dict[str, dict[str, list[str] | str | None]] = {
        n: {"nss": [ip, n], "mgmt": ip, "private": ip} for n, ip in cluster.private_ips.items()
    }
    want["deb.debian.org"] = {"nss": None, "mgmt": None, "private": None}
    for node in cluster.nodes:
        argv = [json.dumps(sorted(want)), json.dumps(servers)]
        rc, out = _on(cluster, node, f"python3 -c {shlex.quote(_RESOLVE)} {shlex.join(argv)}", timeout=120)
        assert rc == 0, f"{node}: {out}"
        assert json.loads(out) == want, f"{node} resolves: {out}"


def test_the_nodes_have_no_default_route(cluster: RunState) -> None:
    for node in cluster.nodes:
        rc, out = _on(cluster, node, "ip -4 route show default")
        assert rc == 0 and out == "", f"{node} has a default route: {out}"


def test_a_direct_request_to_debian_fails(cluster: RunState) -> None:
    # By name (the network's DNS does not resolve outside names) and by address (no route), so the
    # test does not pass for DNS reasons alone. The address is resolved on the host.
    address = socket.gethostbyname("deb.debian.org")
    for url in (f"http://deb.debian.org{RELEASE_PATH}", f"http://{address}{RELEASE_PATH}"):
        code = (
            "import urllib.request\n"
            "opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))\n"
            f"opener.open({url!r}, timeout=10)\n"
            "print('REACHED')"
        )
        rc, out = _on(cluster, "mgmt01", _python(code), timeout=120)
        assert rc != 0 and "REACHED" not in out, f"mgmt01 reached {url} without the cache: {out}"


def test_apt_without_the_cache_cannot_update(cluster: RunState) -> None:
    rc, out = _on(
        cluster,
        "gpu01",
        "sudo apt-get -o Acquire::http::Proxy=false -o Acquire::https::Proxy=false -o Acquire::Retries=0 "
        "update --error-on=any",
        timeout=300,
    )
    assert rc != 0, f"apt-get update succeeded without the cache:\n{out}"


def test_the_nodes_are_told_about_the_cache(cluster: RunState) -> None:
    url = cache.proxy_url(cluster.mgmt_subnet)
    assert url == f"http://{lv.gateway_address(ipaddress.IPv4Network(cluster.mgmt_subnet))}:3142"
    for node in cluster.nodes:
        rc, out = _on(cluster, node, "apt-config dump Acquire::http::Proxy")
        assert rc == 0 and f'Acquire::http::Proxy "{url}";' in out, f"{node}: {out}"


def test_apt_get_update_and_a_download_work_through_the_cache(cluster: RunState) -> None:
    for node in cluster.nodes:
        rc, out = _on(cluster, node, "sudo apt-get update --error-on=any", timeout=600)
        assert rc == 0, f"apt-get update through the cache failed on {node}:\n{out}"
        assert "deb.debian.org" in out
    rc, out = _on(cluster, "mgmt01", "cd /tmp && apt-get download hello && ls hello_*.deb", timeout=300)
    assert rc == 0 and "hello_" in out, out


def test_the_cache_refuses_what_is_not_debian(cluster: RunState) -> None:
    url = cache.proxy_url(cluster.mgmt_subnet)
    gateway = lv.gateway_address(ipaddress.IPv4Network(cluster.mgmt_subnet))
    # A URL on the host itself: refused by the cache (ForceManaged) without any connection.
    code = (
        "import urllib.error, urllib.request\n"
        f"opener = urllib.request.build_opener(urllib.request.ProxyHandler({{'http': {url!r}}}))\n"
        "try:\n"
        f"    opener.open('http://{gateway}:9/debian/dists/bookworm/Release', timeout=30)\n"
        "    print('SERVED')\n"
        "except urllib.error.HTTPError as exc:\n"
        "    print('HTTP', exc.code)\n"
    )
    rc, out = _on(cluster, "mgmt01", _python(code), timeout=120)
    assert rc == 0 and "HTTP 403" in out, out


def test_gc_after_sigkill_at_up_provision_and_verify_removes_that_run_and_spares_a_kept_one(
    cluster: RunState, runs_dir: Path, tmp_path: Path, figure: Callable[[str, str], None]
) -> None:
    """Last in the module: it kills beside the kept pair, which the air-gap tests above used."""
    started = time.monotonic()
    live = rundir.load(cluster.path)
    live_lock = sigkill.plant_gpu_lock(sigkill.FAKE_GPU["live"], live.run_id, live.pid)  # its `harness up` has exited
    live_objects, live_snapshots = sigkill.objects(live.prefix), sigkill.snapshots(live.prefix)
    assert live_objects.domains and all(names == ["booted"] for names in live_snapshots.values()), live_snapshots
    try:
        for i, moment in enumerate(sigkill.moments()):
            t0 = time.monotonic()
            run_id, kids = sigkill.kill_at(runs_dir, tmp_path / str(i), moment)
            prefix = f"hx-{run_id}"
            assert kids, f"{moment}: the harness had no child processes to leave behind"
            if not moment.startswith("up"):  # after up: the run had saved its `booted` checkpoint
                assert sigkill.snapshots(prefix) and all("booted" in s for s in sigkill.snapshots(prefix).values())
            t1 = time.monotonic()
            gc = harness(runs_dir, "gc", timeout=600)
            figure(f"SIGKILL during {moment}: gc", f"{time.monotonic() - t1:.0f} s (run {t1 - t0:.0f} s to the kill)")
            assert gc.returncode == 0, gc.stdout + gc.stderr
            assert f"removed run {run_id}" in gc.stdout, gc.stdout
            assert live.run_id in gc.stdout.split("left alone (live):")[-1], gc.stdout

            alive = [pid for pid, st in kids.items() if proc.start_time(pid) == st]
            assert not alive, (
                f"{moment}: processes of the killed run still run: {sigkill.cmdlines(dict.fromkeys(alive, 0))}"
            )
            assert proc.processes_of_run(run_id) == []
            assert sigkill.objects(prefix).empty(), f"{moment}: {sigkill.objects(prefix).describe()}"
            assert sigkill.snapshots(prefix) == {}, f"{moment}: checkpoints left: {sigkill.snapshots(prefix)}"
            assert run_id not in rundir.registered_runs()
            assert not any(lock.run_id == run_id for lock in passthrough.read_locks(passthrough.default_lockdir()))
            time.sleep(10)  # a client the sweep missed would have made something again by now
            assert sigkill.objects(prefix).empty(), (
                f"{moment}: came back after gc: {sigkill.objects(prefix).describe()}"
            )

            assert sigkill.objects(live.prefix) == live_objects and sigkill.snapshots(live.prefix) == live_snapshots
            assert live.run_id in rundir.registered_runs() and live_lock.exists()
            with lv.connect() as conn:
                states = {d.name: d.state for d in lv.domain_statuses(conn, live.prefix)}
            assert set(states.values()) == {"running"}, states
        answer = nodes.run_on(live, "mgmt01", "true", timeout=120)
        assert answer.ok, answer.describe()
        figure(
            f"SIGKILL at {', '.join(m.split()[0] for m in sigkill.moments())} with a kept pair beside (wall)",
            f"{time.monotonic() - started:.0f} s",
        )
    finally:
        live_lock.unlink(missing_ok=True)
