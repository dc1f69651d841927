"""One converge: Ansible's options and environment, built in one place from a scenario and a target.

Every command that converges builds its options here: `harness run`/`provision` and the inner
loop (the run's VMs), `harness promote` and `promote --check` (a site's own hosts). A rehearsal and
the promotion it gates therefore run the same playbook with the same roles path, collections,
extra vars, strategy and environment; only the target differs, and a target says only where the
hosts are and how to reach them.

Owns: `Target`, `options`, `strategy`. Imports `playbook` (roles path, collections, extra vars),
`provision` (the options type) and `scope` (the inner loop's copy of the playbook); nothing above.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

from harness import playbook, provision, scope
from harness.errors import SpecError
from harness.spec import ProvisionSpec, Scenario

STRATEGY_ENV = "HARNESS_ANSIBLE_STRATEGY"  # overrides provision.strategy, to compare strategies


@dataclass(frozen=True)
class Target:
    """Where a converge goes. A run's VMs: its inventory, its ssh_config, its directory, and what
    the run adds (an offline bundle's vars, Molecule's environment). A site's hosts: the site's
    inventory with its own connection settings (`ssh_config` None), a work directory."""

    inventory: Path
    work_dir: Path  # ansible-runner's private data dir is work_dir/ansible
    ssh_config: Path | None = None
    hosts: tuple[str, ...] = ()  # the hosts the scenario's tests run against
    extra_vars: Mapping[str, Any] = field(default_factory=dict)  # under the scenario's own
    env: Mapping[str, str] = field(default_factory=dict)


def strategy(scenario: Scenario) -> str:
    """provision.strategy, unless HARNESS_ANSIBLE_STRATEGY overrides it (to compare strategies)."""
    assert scenario.provision is not None
    forced = os.environ.get(STRATEGY_ENV)
    if not forced:
        return scenario.provision.strategy
    allowed = get_args(ProvisionSpec.model_fields["strategy"].annotation)
    if forced not in allowed:
        raise SpecError(STRATEGY_ENV, [f"{forced!r} is not one of: {', '.join(allowed)}"])
    return forced


def options(
    scenario: Scenario,
    target: Target,
    phase: str,
    *,
    book: Path | None = None,
    plan: scope.Plan | None = None,
    check: bool = False,
    limit: str | None = None,
) -> provision.ProvisionOptions:
    """The options of one ansible-playbook run of `phase`: the scenario's converge playbook, or
    `book` (prepare, Molecule's verify.yml); with a partial `plan` (the inner loop), a copy of the
    playbook that tags the units it skips; `check` for `--check --diff`; `limit` as `--limit`."""
    if scenario.provision is None:
        raise SpecError(
            str(scenario.source), ["provision: this scenario has nothing to provision (add provision.playbook)"]
        )
    ident = provision.new_ident(phase)
    path = scenario.resolve(book or scenario.provision.playbook)
    skip_tags = None
    if plan is not None and not plan.full:  # the inner loop runs part of the playbook (harness.scope)
        path, skip_tags = scope.scoped_playbook(scenario, plan, target.work_dir / "scope" / ident), scope.SKIP_TAG
    return provision.ProvisionOptions(
        private_data_dir=target.work_dir / "ansible",
        playbook=path,
        inventory=target.inventory,
        roles_path=playbook.roles_path(scenario),
        collections_path=playbook.collections_path(scenario),
        extra_vars={**target.extra_vars, **playbook.extra_vars(scenario)},
        ident=ident,
        ssh_config=target.ssh_config,
        strategy=strategy(scenario),
        skip_tags=skip_tags,
        check=check,
        limit=limit,
        env={**scenario.provision.env, **target.env},
    )
