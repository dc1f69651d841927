"""Choosing per-run subnets that collide with no libvirt network, no host route and no other run."""

from __future__ import annotations

import contextlib
import ipaddress
import json
from collections.abc import Iterable, Iterator

from harness import flock, proc
from harness.errors import HostError
from harness.paths import state_dir

# Chosen subnets come from here; a run's management subnet always does (only the private one may
# be given by the scenario). The package cache's firewall admits clients from this pool on libvirt
# bridges (harness/cache.py), so the nodes reach the cache at their management gateway.
DEFAULT_POOL = ipaddress.IPv4Network("10.213.0.0/16")


def host_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network the host routes or has an address on (`ip -j route`, `ip -j addr`)."""
    nets: list[ipaddress.IPv4Network] = []
    routes = proc.run(["ip", "-j", "-4", "route", "show", "table", "all"], timeout=10)
    if routes.ok and routes.stdout.strip():
        for r in json.loads(routes.stdout):
            dst = r.get("dst", "")
            if dst and dst != "default" and r.get("type", "unicast") in ("unicast", "local"):
                with contextlib.suppress(ValueError):
                    nets.append(ipaddress.IPv4Network(dst if "/" in dst else f"{dst}/32", strict=False))
    addrs = proc.run(["ip", "-j", "-4", "addr"], timeout=10)
    if addrs.ok and addrs.stdout.strip():
        for link in json.loads(addrs.stdout):
            for a in link.get("addr_info", []):
                with contextlib.suppress(ValueError, KeyError):
                    nets.append(ipaddress.IPv4Network(f"{a['local']}/{a['prefixlen']}", strict=False))
    return [n for n in nets if not n.is_loopback]


def choose_subnets(
    count: int,
    used: Iterable[ipaddress.IPv4Network],
    *,
    pool: ipaddress.IPv4Network = DEFAULT_POOL,
    prefixlen: int = 24,
    wanted: Iterable[ipaddress.IPv4Network | None] = (),
) -> list[ipaddress.IPv4Network]:
    """`count` subnets of `pool` that overlap nothing in `used`. Entries of `wanted` that are not
    None are taken as they are (after checking them against `used`); the rest are chosen."""
    taken = list(used)
    wanted_list = list(wanted) + [None] * count
    out: list[ipaddress.IPv4Network] = []
    candidates = iter(pool.subnets(new_prefix=prefixlen))
    for want in wanted_list[:count]:
        if want is not None:
            clash = next((u for u in taken if u.overlaps(want)), None)
            if clash is not None:
                raise HostError(
                    f"network.subnet {want} overlaps {clash}, which the host or another network already uses: "
                    "pick another subnet or leave network.subnet out to have one chosen."
                )
            out.append(want)
            taken.append(want)
            continue
        for cand in candidates:
            if not any(cand.overlaps(u) for u in taken):
                out.append(cand)
                taken.append(cand)
                break
        else:
            raise HostError(f"no free /{prefixlen} left in {pool}: remove unused libvirt networks (`harness gc`).")
    return out


@contextlib.contextmanager
def network_lock() -> Iterator[None]:
    """Held from choosing subnets until their libvirt networks exist, so two runs never pick the same."""
    with flock.exclusive(state_dir() / "network.lock"):
        yield
