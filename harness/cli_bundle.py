"""`harness bundle`: offline bundles a scenario installs from (the k3s air-gap bundle, the apt bundle
of an `offline:` scenario), checked before any VM boots. Problems are a SpecError (exit 2),
printed one per line by the CLI."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from harness import apt_bundle, bundle, k8s_bundle
from harness.paths import scenario_search_dirs
from harness.spec import load_scenario

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
# Which kind a directory is: the first whose marker files it has.
KINDS = {"k3s": (k8s_bundle.MANIFEST, k8s_bundle.BINARY), apt_bundle.KIND: apt_bundle.MARKERS}


@click.group("bundle")
def bundle_group() -> None:
    """Build and check offline bundles (the apt bundle of an offline run, the k3s air-gap bundle)."""


@bundle_group.command("check")
@click.argument("directory", type=click.Path(path_type=Path))
def check(directory: Path) -> None:
    """Verify a bundle DIRECTORY, of either kind (found from its files): every file against
    SHA256SUMS, nothing missing or unlisted; a k3s bundle's bundle.yml; an apt bundle's signature
    (key.gpg → InRelease → Packages → each .deb) and manifest.json against Packages. Exit 2
    naming every problem.

    Layouts: README "Kubernetes (k3s from an air-gap bundle)" and "Offline runs: the apt bundle"."""
    root = directory.expanduser().resolve()
    kind = bundle.detect_kind(root, KINDS)
    summary = (
        apt_bundle.check_bundle(root).summary() if kind == apt_bundle.KIND else k8s_bundle.check_bundle(root).summary()
    )
    out.print(f"{root}: ok — {summary}", highlight=False)


@bundle_group.command("build")
@click.argument("scenario")
@click.option(
    "--output", "-o", required=True, type=click.Path(path_type=Path), help="The bundle directory (new or empty)."
)
@click.option(
    "--report",
    "report_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The report directory of the green run to bundle (default: the newest green run of SCENARIO in "
    "the run directories).",
)
def build(scenario: str, output: Path, report_dir: Path | None) -> None:
    """An apt bundle of exactly what a green run of SCENARIO installed on its nodes beyond the box:
    the .deb files (from the host's package cache), a signed flat repository (apt-ftparchive, a key
    made for this bundle and then destroyed), key.gpg, manifest.json and SHA256SUMS. Use it with
    `offline: {bundle: DIR}` in a scenario, or serve it at a real site (README "Real hosts")."""
    from harness import apt_bundle_build

    sc = load_scenario(scenario, scenario_search_dirs())
    result = apt_bundle_build.build(sc, output.expanduser().resolve(), report_dir)
    for note in result.notes:
        err.print(f"[yellow]note:[/] {note}", highlight=False)
    out.print(
        f"{result.bundle.root}: {result.bundle.summary()}; {result.bytes_total / (1 << 20):.1f} MiB in all, "
        f"built in {result.seconds:.1f}s from {result.record_path}",
        highlight=False,
    )
