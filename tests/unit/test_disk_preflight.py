"""The disk preflight: `up` refuses a scenario that does not fit the storage pool, with the numbers,
before it creates anything; `harness doctor --scenario` judges by the same rule."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import libvirt
import pytest

from harness import accelerator, doctor, host, nodes, preflight, rundir
from harness.errors import HostError, ProviderError
from harness.provider import libvirt as lv
from harness.spec import Scenario, load_scenario

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
GIB = 1024**3


def scenario(*node_specs: dict[str, Any], name: str = "disky") -> Scenario:
    return Scenario.model_validate({"name": name, "nodes": list(node_specs)})


def test_the_rule_per_node_a_quarter_of_its_disk_at_least_2_gib_plus_memory_per_checkpoint() -> None:
    one = scenario({"name": "a"})  # disk 8, memory 1024: 2 + 2 x 1, plus the box image
    assert preflight.disk_need_gib(one.expanded_nodes()) == pytest.approx(1 + 2 + 2)
    small = scenario({"name": "a", "disk": 4, "memory": 512, "count": 3})  # the floor: 2 + 2 x 0.5
    assert preflight.disk_need_gib(small.expanded_nodes()) == pytest.approx(1 + 3 * 3)
    big = scenario({"name": "a", "disk": 100, "memory": 4096})
    assert preflight.disk_need_gib(big.expanded_nodes()) == pytest.approx(1 + 25 + 8)


def test_nodes_with_gpus_take_no_checkpoint_so_no_memory_is_counted() -> None:
    sc = scenario({"name": "mgmt"}, {"name": "gpu", "groups": ["gpu"], "gpus": 1, "memory": 4096, "disk": 16})
    assert preflight.disk_need_gib(sc.expanded_nodes()) == pytest.approx(1 + 2 + 4)


def test_the_slurm_scenario_needs_17_gib() -> None:
    slurm = load_scenario(str(SCENARIOS / "slurm" / "scenario.yml"), [])  # 4 nodes, disk 8, memory 1024
    assert preflight.disk_need_gib(slurm.expanded_nodes()) == pytest.approx(17)


def test_a_scenario_that_does_not_fit_is_refused_with_the_numbers_and_the_rule() -> None:
    sc = scenario({"name": "n", "count": 4}, name="slurm")
    with pytest.raises(HostError) as err:
        preflight.check_disk(sc, 12.34, "/var/lib/libvirt/images")
    message = str(err.value)
    assert message.startswith(
        "scenario slurm needs ~17 GiB in pool default (/var/lib/libvirt/images), 12.3 GiB free: "
        "free space or lower nodes[*].disk (per node: a quarter of its disk, at least 2 GiB"
    ), message
    assert err.value.exit_code == 3


def test_a_scenario_that_fits_passes() -> None:
    preflight.check_disk(scenario({"name": "n", "count": 4}), 17.0, "/pool")


class FakePool:
    def __init__(self, available: int, path: str = "/srv/pool") -> None:
        self.available, self.path, self.refreshed = available, path, False

    def refresh(self, _flags: int) -> None:
        self.refreshed = True

    def info(self) -> list[int]:
        return [2, 100 * GIB, 100 * GIB - self.available, self.available]

    def XMLDesc(self, _flags: int) -> str:
        return f"<pool type='dir'><name>default</name><target><path>{self.path}</path></target></pool>"


class FakeConn:
    def __init__(self, pool: FakePool | None) -> None:
        self.pool = pool

    def storagePoolLookupByName(self, name: str) -> FakePool:
        assert name == lv.POOL
        if self.pool is None:
            raise libvirt.libvirtError("Storage pool not found")
        return self.pool


def _libvirt(monkeypatch: pytest.MonkeyPatch, pool: FakePool | None, statvfs_gib: dict[str, float]) -> None:
    @contextmanager
    def connect(uri: str = lv.URI) -> Iterator[FakeConn]:
        yield FakeConn(pool)

    monkeypatch.setattr(lv, "connect", connect)
    monkeypatch.setattr(host, "disk_free_gib", lambda path: statvfs_gib[path])


def test_pool_free_space_comes_from_libvirt_after_a_refresh(monkeypatch: pytest.MonkeyPatch) -> None:
    pool = FakePool(40 * GIB)
    _libvirt(monkeypatch, pool, {"/srv/pool": 60.0})
    assert preflight.pool_free_gib() == (40.0, "/srv/pool")
    assert pool.refreshed


def test_reserved_blocks_libvirt_counts_are_not_free(monkeypatch: pytest.MonkeyPatch) -> None:
    """libvirt's `available` is f_bfree (reserved blocks included); statvfs's f_bavail is less."""
    _libvirt(monkeypatch, FakePool(220 * GIB), {"/srv/pool": 73.0})
    assert preflight.pool_free_gib() == (73.0, "/srv/pool")


def test_without_the_pool_the_free_space_of_its_default_directory_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    _libvirt(monkeypatch, None, {host.POOL_PATH: 9.5})
    assert preflight.pool_free_gib() == (9.5, host.POOL_PATH)


def test_without_libvirt_the_free_space_of_its_default_directory_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    @contextmanager
    def connect(uri: str = lv.URI) -> Iterator[FakeConn]:
        raise ProviderError("cannot connect to libvirt")
        yield FakeConn(None)  # pragma: no cover

    monkeypatch.setattr(lv, "connect", connect)
    monkeypatch.setattr(host, "disk_free_gib", lambda path: {host.POOL_PATH: 7.0}[path])
    assert preflight.pool_free_gib() == (7.0, host.POOL_PATH)


def test_up_refuses_before_creating_anything(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[str] = []
    monkeypatch.setattr(preflight, "check_box", lambda sc: None)
    monkeypatch.setattr(preflight, "check_resources", lambda sc: None)
    monkeypatch.setattr(preflight, "pool_free_gib", lambda: (2.0, "/pool"))
    for name in ("new_run_id", "new_run"):
        monkeypatch.setattr(rundir, name, lambda *a, _n=name: made.append(_n))
    monkeypatch.setattr(preflight, "preflight_gpus", lambda *a: made.append("gpus"))
    monkeypatch.setattr(nodes, "plan_run", lambda *a: made.append("networks"))
    monkeypatch.setattr(accelerator, "host_accelerator", lambda: made.append("accel"))

    with pytest.raises(HostError, match=r"needs ~5 GiB in pool default \(/pool\), 2.0 GiB free"):
        nodes.up(scenario({"name": "n"}))
    assert made == []


def test_doctor_judges_disk_by_the_same_rule() -> None:
    slurm = load_scenario(str(SCENARIOS / "slurm" / "scenario.yml"), [])
    short = doctor.disk_check(slurm, 16.0, "/pool")
    assert not short.ok and "~17 GiB needed for scenario slurm" in short.value and "16.0 GiB free" in short.value
    assert "lower nodes[*].disk" in short.hint
    assert doctor.disk_check(slurm, 17.0, "/pool").ok
    default = doctor.disk_check(None, 12.0, "/pool")  # 3 default nodes: 3 x (2 + 2) + 1
    assert not default.ok and "~13 GiB needed" in default.value
