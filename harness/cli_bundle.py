"""`harness bundle`: offline bundles a scenario installs from (the k3s air-gap bundle, the apt bundle
of an `offline:` scenario), checked before any VM boots. Problems are a SpecError (exit 2),
printed one per line by the CLI."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from harness import apt_bundle, bundle, k8s_bundle, k8s_server
from harness.errors import UsageError
from harness.paths import scenario_search_dirs
from harness.spec import load_scenario

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
# Which kind a directory is: the first whose marker files it has.
KINDS = {
    k8s_server.KIND: (f"{k8s_server.BIN_DIR}/kube-apiserver", f"{k8s_server.BIN_DIR}/kubelet"),
    "k3s": (k8s_bundle.MANIFEST, k8s_bundle.BINARY),
    apt_bundle.KIND: apt_bundle.MARKERS,
}


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

    Layouts: docs/kubernetes.md, "Kubernetes (k3s from an air-gap bundle)", "Kubernetes from Debian's source (the
    server bundle)" and "Offline runs: the apt bundle"."""
    root = directory.expanduser().resolve()
    kind = bundle.detect_kind(root, KINDS)
    if kind == apt_bundle.KIND:
        summary = apt_bundle.check_bundle(root).summary()
    elif kind == k8s_server.KIND:
        summary = k8s_server.check_bundle(root).summary()
    else:
        summary = k8s_bundle.check_bundle(root).summary()
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
    `offline: {bundle: DIR}` in a scenario, or serve it at a real site (docs/promotion.md, "Real hosts")."""
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


@bundle_group.command("kubernetes")
@click.option(
    "--output",
    "-o",
    type=click.Path(path_type=Path),
    default=None,
    help="Also copy the bundle to this directory (new or empty); it is kept in the harness cache either way.",
)
@click.option("--keep-work", is_flag=True, help="Keep the build directory (source tree, Go cache) for debugging.")
def kubernetes(output: Path | None, keep_work: bool) -> None:
    """The Kubernetes server bundle, built offline from Debian 12's source package `kubernetes`
    (upstream v1.20.2 with vendor/) with Debian's Go: kube-apiserver, kube-controller-manager,
    kube-scheduler, kubelet, kube-proxy, kubeadm, the pause and busybox images, bundle.yml and
    SHA256SUMS, laid out like upstream's server release. Cached by source version and recipe
    digest; a cold build takes long (docs/kubernetes.md, "Kubernetes from Debian's source (the server bundle)")."""
    import shutil

    from harness import k8s_server_build

    result = k8s_server_build.build(progress=lambda line: err.print(f"[dim]bundle:[/] {line}", highlight=False))
    where = result.bundle.root
    if output is not None:
        dest = output.expanduser().resolve()
        if dest.exists() and any(dest.iterdir()):
            raise UsageError(f"{dest} is not empty: name a new or empty directory for --output")
        shutil.copytree(where, dest, dirs_exist_ok=True)
        where = dest
    how = "from the cache" if result.cached else f"built in {result.seconds:.0f}s (log: {result.log})"
    out.print(f"{where}: {result.bundle.summary()}; {how}", highlight=False)
