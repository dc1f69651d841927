"""Air-gapped by default: a node has no route beyond the host, reaches Debian's package host only
through the host's package cache, and `apt-get update` works through it."""

from __future__ import annotations

import ipaddress
import shlex
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import cache, nodes
from harness.provider import libvirt as lv
from harness.rundir import RunState

from .conftest import assert_nothing_left, scenario

pytestmark = pytest.mark.vm

RELEASE_PATH = "/debian/dists/bookworm/Release"


@pytest.fixture(scope="module")
def cluster(runs_dir: Path) -> Iterator[RunState]:
    run = nodes.up(scenario("pair"))
    try:
        yield run
    finally:
        nodes.teardown(run)
        assert_nothing_left(run)


def _python(code: str) -> str:
    return f"python3 -c {shlex.quote(code)}"


def _on(run: RunState, node: str, command: str, timeout: float = 300) -> tuple[int, str]:
    res = nodes.run_on(run, node, command, timeout=timeout)
    return res.rc, (res.stdout + res.stderr).strip()


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
