"""`harness doctor`, `harness host setup` and `harness box ...`: the host and its boxes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from harness import accelerator, box, cache, capabilities, host
from harness.errors import HarnessError
from harness.paths import scenario_search_dirs
from harness.spec import load_scenario

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--scenario", "scenario_ref", default=None, help="Check free memory and disk against this scenario.")
def doctor(as_json: bool, scenario_ref: str | None) -> None:
    """Report whether this host can run clusters: libvirt, Vagrant, memory, disk, IOMMU, KVM/TCG."""
    from harness.doctor import run_doctor

    sc = load_scenario(scenario_ref, scenario_search_dirs()) if scenario_ref else None
    report = run_doctor(sc)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        t = Table(title="harness doctor")
        for col in ("check", "", "value", "hint"):
            t.add_column(col, overflow="fold")
        for c in report.checks:
            t.add_row(c.name, "[green]ok[/]" if c.ok else "[red]FAIL[/]", c.value, c.hint)
        out.print(t)
        out.print(f"VMs will run under: [bold]{report.accelerator}[/]")
    if not report.ok:
        failed = ", ".join(c.name for c in report.checks if not c.ok)
        raise HarnessError(f"this host is not ready: {failed} (see the hints above)")


@click.group("host")
def host_group() -> None:
    """Prepare this host."""


@host_group.command("setup")
def host_setup() -> None:
    """Install host packages (apt), start virtlogd/libvirtd, make the storage pool, start the package
    cache (apt-cacher-ng, guarded by nftables). Idempotent."""
    from harness.provider import libvirt as lv

    missing = host.missing_packages()
    if missing:
        err.print(f"installing {len(missing)} package(s): {' '.join(missing)}")
        host.install_packages(missing)
    else:
        err.print("host packages: all installed")
    fixed = capabilities.fix_kvm_device()
    if fixed:
        err.print(fixed)
    started = host.start_daemons()
    err.print(f"daemons: {'started ' + ', '.join(started) if started else 'already running'}")
    err.print(f"storage pool {lv.POOL!r}: {'created/started' if host.ensure_pool() else 'ok'}")
    err.print(f"package cache: {cache.ensure_running()}")
    accel = accelerator.host_accelerator()
    err.print(f"VMs will run under: {accel.reason}")


@click.group("box")
def box_group() -> None:
    """Build, list and remove the harness's offline Vagrant boxes."""


@box_group.command("build")
@click.argument("recipe", default="debian12")
@click.option("--force", is_flag=True, help="Rebuild even if a build of this recipe is cached.")
@click.option("--mirror", default=None, help="The archive mirror URL (required for the Ubuntu recipes).")
@click.option(
    "--keyring",
    type=click.Path(path_type=Path),
    default=None,
    help="The archive keyring file the mirror's Release is checked with (required for the Ubuntu recipes).",
)
@click.option("--security-mirror", default=None, help="The security archive's URL (default: the mirror).")
def box_build(recipe: str, force: bool, mirror: str | None, keyring: Path | None, security_mirror: str | None) -> None:
    """Build the box from vagrant/boxes/RECIPE with debootstrap and add it to Vagrant.

    Recipes: debian12 (the default box), debian13, ubuntu2204 and ubuntu2404 (these two from a
    mirror and keyring you name)."""
    r = box.load_recipe(recipe).with_source(mirror, keyring, security_mirror)
    started = time.monotonic()

    def step(msg: str) -> None:
        err.print(f"[dim]{time.monotonic() - started:6.1f}s[/] {msg}", highlight=False)

    built = box.build_box(r, force=force, on_step=step)
    step(("using cached build " if built.cached else f"built in {built.seconds:.0f}s: ") + str(built.path))
    box.register_box(built)
    step(f"box {r.name} version {built.version} is installed")


@box_group.command("list")
def box_list() -> None:
    """List installed boxes and the recipes they come from."""
    t = Table()
    for col in ("box", "provider", "version", "recipe", "current"):
        t.add_column(col)
    recipes = {r.name: r for r in map(box.load_recipe, box.available_recipes())}
    installed = box.installed_boxes()  # one `vagrant box list` (about a second) for the whole table
    for b in installed:
        r = recipes.get(b.name)
        t.add_row(
            b.name,
            b.provider,
            b.version,
            r.key if r else "-",
            ("yes" if r.version == b.version else "no (rebuild)") if r else "-",
        )
    for name, r in recipes.items():
        if not any(b.name == name for b in installed):
            t.add_row(name, "libvirt", "-", r.key, f"not built: harness box build {r.key}")
    out.print(t)


@box_group.command("remove")
@click.argument("name", default="harness/debian12")
def box_remove(name: str) -> None:
    """Remove box NAME (every version) from Vagrant and its images from libvirt's pool."""
    from harness.provider import libvirt as lv

    removed = box.remove_box(name)
    with lv.connect() as conn:
        vols = lv.remove_box_volumes(conn, name)
    out.print(f"removed {len(removed)} version(s) of {name} and {len(vols)} pool volume(s)")
