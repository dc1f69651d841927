"""`harness gpus`: list the host's GPUs (and their IOMMU group mates) and whether each can be passed through.

Exit code 0 when at least one GPU is listed and every listed GPU is ready, 1 otherwise, so scripts and
the vfio_host role's rehearsal can use it as a check.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import click
from rich import box
from rich.console import Console
from rich.table import Table

from harness.gpus import DEFAULT_VENDORS, Discovery, discover

_VENDOR = re.compile(r"^(?:0x)?([0-9a-f]{4})$")


def _vendor_ids(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> frozenset[str]:
    out = set()
    for value in values:
        m = _VENDOR.match(value.strip().lower())
        if not m:
            raise click.BadParameter(f"{value!r} is not a PCI vendor id like 10de (four hex digits)")
        out.add(m.group(1))
    return frozenset(out) or DEFAULT_VENDORS


def exit_code(discovery: Discovery) -> int:
    """0 when at least one GPU is listed and all listed GPUs are ready for passthrough, else 1."""
    gpus = discovery.gpus
    return 0 if gpus and all(g.passthrough_ready for g in gpus) else 1


def _table(discovery: Discovery) -> tuple[Table, list[str]]:
    """The device table, and the distinct problem texts the table's `problems` column points into."""
    table = Table(
        title="PCI devices for passthrough",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
    )
    for name in ("address", "ids", "kind", "driver", "group", "numa", "ready", "problems"):
        table.add_column(name, no_wrap=True, min_width=len(name))
    notes: list[str] = []
    for dev in discovery.devices:
        refs = []
        for problem in dev.problems:
            if problem not in notes:
                notes.append(problem)
            refs.append(str(notes.index(problem) + 1))
        table.add_row(
            dev.address,
            dev.ids,
            dev.kind,
            dev.driver or "-",
            "-" if dev.iommu_group is None else str(dev.iommu_group),
            "-" if dev.numa_node is None else str(dev.numa_node),
            "[green]yes[/]" if dev.passthrough_ready else "[red]no[/]",
            ",".join(refs) or "-",
        )
    return table, notes


def _print_report(discovery: Discovery, console: Console) -> None:
    vendors = ", ".join(sorted(discovery.vendors))
    if not discovery.devices:
        console.print(f"no PCI device of vendor {vendors} on this host")
        return
    table, notes = _table(discovery)
    console.print(table)
    for i, note in enumerate(notes, start=1):
        console.print(f"[{i}] {note}", markup=False, highlight=False)
    ready = sum(1 for g in discovery.gpus if g.passthrough_ready)
    iommu = "on" if discovery.iommu_enabled else "off"
    console.print(
        f"{ready} of {len(discovery.gpus)} GPU(s) ready; IOMMU {iommu}; vfio-pci ids: {','.join(discovery.vfio_ids)}",
        markup=False,
        highlight=False,
    )


@click.command("gpus")
@click.option(
    "--sysfs-root",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/sys"),
    show_default=True,
    help="Read this sysfs tree instead of the host's (tests use fake trees).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option(
    "--vendor",
    "vendors",
    multiple=True,
    metavar="HEX",
    callback=_vendor_ids,
    help="PCI vendor id to list (repeatable; default 10de, NVIDIA).",
)
@click.pass_context
def gpus(ctx: click.Context, sysfs_root: Path, as_json: bool, vendors: frozenset[str]) -> None:
    """List GPUs, their drivers and IOMMU groups, and what blocks passing them through to VMs."""
    discovery = discover(sysfs_root, vendors)
    if as_json:
        click.echo(json.dumps(discovery.to_json(), indent=2))
    else:
        _print_report(discovery, Console())
    ctx.exit(exit_code(discovery))
