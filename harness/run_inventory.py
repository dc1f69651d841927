"""The run's one inventory: written at up from the run's plan (nodes, groups, addresses, GPUs,
Molecule's inventory vars), then read by Ansible and testinfra alike.

Owns: where it lives (`path`) and `write`. Imports `inventory` (building and writing an inventory)
and `molecule` (its instance config); nothing that converges or verifies.
"""

from __future__ import annotations

from pathlib import Path

from harness import inventory, molecule
from harness.rundir import RunState
from harness.spec import Scenario


def path(run: RunState) -> Path:
    return run.path / "inventory.yml"


def write(run: RunState, scenario: Scenario, gpus: dict[str, list[str]] | None = None) -> Path:
    """The one inventory of the run, read by Ansible and testinfra alike."""
    conns = inventory.parse_ssh_config(run.ssh_config.read_text())
    inv = inventory.build_inventory(
        scenario.expanded_nodes(),
        conns,
        run.private_ips,
        gpus or {},
        scenario.groups or None,
        {
            "harness_cluster_name": scenario.name,
            "harness_run_id": run.run_id,
            "harness_private_subnet": run.private_subnet,
        },
    )
    children = inv["all"]["children"]
    for group, values in scenario.group_vars.items():  # Molecule's provisioner.inventory, for one
        target = inv["all"] if group == "all" else children.setdefault(group, {"hosts": {}})
        target["vars"] = {**target.get("vars", {}), **values}
    for host, values in scenario.host_vars.items():
        inv["all"]["hosts"][host].update(values)
    molecule.instance_config(run, inv)
    return inventory.write_inventory(inv, path(run))
