from __future__ import annotations

from ipaddress import IPv4Network as N

import pytest

from harness.errors import HostError
from harness.network import choose_subnets


def test_skips_every_used_range() -> None:
    used = [N("10.213.0.0/24"), N("10.213.1.128/25"), N("10.213.2.5/32")]
    assert choose_subnets(2, used) == [N("10.213.3.0/24"), N("10.213.4.0/24")]


def test_a_wanted_subnet_is_kept_and_others_chosen_around_it() -> None:
    got = choose_subnets(2, [N("192.168.122.0/24")], wanted=[N("10.213.0.0/24")])
    assert got == [N("10.213.0.0/24"), N("10.213.1.0/24")]


def test_a_wanted_subnet_that_collides_is_refused_with_advice() -> None:
    with pytest.raises(HostError, match=r"overlaps 10\.0\.0\.0/8.*leave network\.subnet out"):
        choose_subnets(1, [N("10.0.0.0/8")], wanted=[N("10.77.0.0/24")])


def test_host_default_route_does_not_block_everything() -> None:
    # host_networks() never returns the default route; a /8 route does block its range.
    got = choose_subnets(1, [N("10.0.0.0/8")], pool=N("10.0.0.0/8").supernet(new_prefix=7))
    assert got == [N("11.0.0.0/24")]


def test_exhausted_pool_says_what_to_do() -> None:
    with pytest.raises(HostError, match="harness gc"):
        choose_subnets(1, [N("10.213.0.0/16")])
