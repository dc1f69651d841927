"""One converge path (harness.converge): a rehearsal on the run's VMs and the promotion it gates
build Ansible's options in one place, so they can differ only in the target."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from harness import converge, phases, promote
from harness.errors import SpecError
from harness.spec import Scenario
from tests.unit.test_rehearsal import make_scenario

# What only the target decides: where the hosts are, how they are reached, where Ansible writes.
TARGET_FIELDS = {"private_data_dir", "inventory", "ssh_config", "ident", "check", "limit"}


@pytest.fixture
def site(tmp_path: Path) -> Scenario:
    return make_scenario(tmp_path / "site")


def _run(tmp_path: Path) -> Any:
    path = tmp_path / "run"
    path.mkdir()
    (path / "ssh_config").write_text("Host mgmt01\n  HostName 192.0.2.10\n")
    return SimpleNamespace(path=path, ssh_config=path / "ssh_config", run_id="r1", nodes=["mgmt01"])


def _options_of_both(site: Scenario, tmp_path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    rehearsed = phases._options(_run(tmp_path), site, "provision")
    promoted = promote.converge_options(site, tmp_path / "site-inventory.yml", tmp_path / "work")
    return asdict(rehearsed), asdict(promoted)


def test_a_rehearsal_and_its_promotion_differ_only_in_the_target(
    site: Scenario, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(converge.STRATEGY_ENV, raising=False)
    rehearsed, promoted = _options_of_both(site, tmp_path)
    same = {k for k in rehearsed if k not in TARGET_FIELDS}
    # The rehearsal's own env adds Molecule's variables (the run's inventory, its directory).
    assert {k: promoted[k] for k in same - {"env"}} == {k: rehearsed[k] for k in same - {"env"}}
    assert site.provision is not None
    assert promoted["env"] == dict(site.provision.env)
    assert {k: v for k, v in rehearsed["env"].items() if not k.startswith("MOLECULE_")} == dict(site.provision.env)
    assert promoted["ssh_config"] is None and rehearsed["ssh_config"] == tmp_path / "run" / "ssh_config"


def test_the_strategy_override_reaches_both(site: Scenario, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(converge.STRATEGY_ENV, "mitogen_linear")
    rehearsed, promoted = _options_of_both(site, tmp_path)
    assert rehearsed["strategy"] == promoted["strategy"] == "mitogen_linear"
    monkeypatch.setenv(converge.STRATEGY_ENV, "fast_please")
    with pytest.raises(SpecError, match="HARNESS_ANSIBLE_STRATEGY"):
        promote.converge_options(site, tmp_path / "inv.yml", tmp_path / "work")


def test_a_scenario_without_a_playbook_has_nothing_to_converge(tmp_path: Path) -> None:
    bare: Any = SimpleNamespace(provision=None, source=tmp_path / "scenario.yml")
    with pytest.raises(SpecError, match="nothing to provision"):
        converge.options(bare, converge.Target(tmp_path / "inv.yml", tmp_path), "provision")
