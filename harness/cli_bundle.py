"""`harness bundle`: offline bundles a scenario installs from (the k3s air-gap bundle), checked
before any VM boots. Problems are a SpecError (exit 2), printed one per line by the CLI."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from harness import k8s_bundle

out = Console(soft_wrap=True)


@click.group("bundle")
def bundle_group() -> None:
    """Check offline bundles (the k3s air-gap bundle of a Kubernetes scenario)."""


@bundle_group.command("check")
@click.argument("directory", type=click.Path(path_type=Path))
def check(directory: Path) -> None:
    """Verify a k3s air-gap bundle DIRECTORY: bundle.yml, every file against SHA256SUMS, nothing
    missing or unlisted. Exit 2 naming every problem (a missing release file with its download URL).

    Layout and how to build one: README "Kubernetes (k3s from an air-gap bundle)"."""
    checked = k8s_bundle.check_bundle(directory.expanduser().resolve())
    out.print(f"{checked.root}: ok — {checked.summary()}", highlight=False)
