"""The Kubernetes server bundle: upstream Kubernetes's server binaries and the images a node needs
without a registry, laid out like upstream's own server release (kubernetes-server-linux-amd64.tar.gz
unpacked), so that a site can drop in its own release instead.

Layout (docs/kubernetes.md, "Kubernetes from Debian's source (the server bundle)"):

    kubernetes/server/bin/kube-apiserver, kube-controller-manager, kube-scheduler, kubelet,
                          kube-proxy, kubeadm          static linux binaries
    kubernetes/server/bin/pause.tar, busybox.tar      docker-archive image tarballs (`docker save` layout)
    bundle.yml                                        kind, version, binaries, images (file → reference), provenance
    SHA256SUMS                                        every file above (`sha256sum` format)

What this module holds: the recipe the harness builds it by (harness.k8s_server_build: Debian 12's
source package `kubernetes`, the full upstream v1.20.2 tree with vendor/, built offline with
Debian's Go), the cache key, and the check (`harness bundle check`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness import bundle, oci_image
from harness.errors import SpecError

KIND: Literal["kubernetes-server"] = "kubernetes-server"
MANIFEST = "bundle.yml"
BIN_DIR = "kubernetes/server/bin"
README_SECTION = "docs/kubernetes.md 'Kubernetes from Debian's source (the server bundle)'"
# Changed whenever the build steps change in a way the Recipe fields do not show: a new cache key.
RECIPE_REVISION = 2
# The Go import path the tree lives at in GOPATH mode (hack/lib/init.sh: KUBE_GO_PACKAGE).
GO_PACKAGE = "k8s.io/kubernetes"
# What the version ldflags set (hack/lib/version.sh: kube::version::ldflags).
VERSION_PACKAGES = ("k8s.io/client-go/pkg/version", "k8s.io/component-base/version")


@dataclass(frozen=True)
class ImageRecipe:
    """An image the bundle carries: its tarball name under BIN_DIR and its reference."""

    file: str
    ref: str


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the bundle's content; its digest is part of the cache key."""

    source_package: str = "kubernetes"
    source_version: str = "1.20.5+really1.20.2-1.1+deb12u1"
    kubernetes_version: str = "v1.20.2"
    build_date: str = "2021-01-13T13:20:00Z"  # v1.20.2's release date: the same bytes at every build
    # Debian 12 packages fetched (not installed) and unpacked into the build directory.
    build_debs: tuple[str, ...] = (
        "golang-1.19-go",
        "golang-1.19-src",
        "golang-github-modern-go-reflect2-dev",
        "busybox-static",
    )
    goroot: str = "usr/lib/go-1.19"
    # vendor/ directory → the Debian package directory (under the unpacked debs) that replaces it:
    # reflect2 1.0.1 segfaults under Go >= 1.18 at the first map marshal; 1.0.2 fixes it.
    vendor_replacements: tuple[tuple[str, str], ...] = (
        ("github.com/modern-go/reflect2", "usr/share/gocode/src/github.com/modern-go/reflect2"),
    )
    binaries: tuple[str, ...] = (
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kubelet",
        "kube-proxy",
        "kubeadm",
    )
    go_env: tuple[tuple[str, str], ...] = (
        ("GO111MODULE", "off"),
        ("CGO_ENABLED", "0"),
        ("GOOS", "linux"),
        ("GOARCH", "amd64"),
        ("GOFLAGS", ""),
    )
    go_flags: tuple[str, ...] = ("-trimpath",)
    # kube-apiserver needs pkg/generated/openapi/zz_generated.openapi.go, which upstream generates at
    # build time (Makefile.generated_files, `make gen_openapi`) and the source package lacks: every
    # package with a `+k8s:openapi-gen=` tag, outside these, is an input.
    openapi_gen: str = "vendor/k8s.io/kube-openapi/cmd/openapi-gen"
    openapi_output: str = "pkg/generated/openapi"
    openapi_skip: tuple[str, ...] = (
        "staging", "_output", ".git", "vendor/k8s.io/code-generator", "vendor/k8s.io/sample-apiserver",
    )  # fmt: skip
    openapi_boilerplate: str = "hack/boilerplate/boilerplate.generatego.txt"
    pause_source: str = "build/pause/linux/pause.c"
    cc_flags: tuple[str, ...] = ("-Os", "-Wall", "-Werror", "-static")
    # kubelet 1.20's default sandbox image, so neither kubelet nor containerd need telling.
    pause: ImageRecipe = ImageRecipe("pause.tar", "k8s.gcr.io/pause:3.2")
    busybox: ImageRecipe = ImageRecipe("busybox.tar", "docker.io/library/busybox:1.35")
    busybox_applets: tuple[str, ...] = (
        "sh", "ash", "cat", "chmod", "cp", "date", "df", "echo", "env", "false", "grep", "head", "hostname",
        "id", "ifconfig", "ip", "kill", "ln", "ls", "mkdir", "mount", "mv", "nc", "nslookup", "ping", "printf",
        "ps", "pwd", "rm", "sed", "sleep", "tail", "test", "touch", "true", "uname", "wc", "wget",
    )  # fmt: skip

    def digest(self) -> str:
        """SHA-256 of the recipe (canonical JSON) and RECIPE_REVISION."""
        text = json.dumps({"revision": RECIPE_REVISION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    def cache_key(self) -> str:
        """`<source version>-<recipe digest, 12 hex>`, with the version made safe for a file name."""
        version = "".join(c if c.isalnum() or c in ".+-" else "_" for c in self.source_version)
        return f"{version}-{self.digest()[:12]}"

    def ldflags(self) -> str:
        """`-s -w` (no symbol table, no DWARF: upstream's release flags) and the version variables."""
        major, minor = self.kubernetes_version.lstrip("v").split(".")[:2]
        values = {
            "gitVersion": self.kubernetes_version,
            "gitMajor": major,
            "gitMinor": minor,
            "gitTreeState": "archive",
            "buildDate": self.build_date,
        }
        flags = ["-s", "-w"]
        for pkg in VERSION_PACKAGES:
            flags += [f"-X {GO_PACKAGE}/vendor/{pkg}.{k}={v}" for k, v in values.items()]
        return " ".join(flags)

    def go_build_argv(self, go: str, out_dir: Path, jobs: int) -> list[str]:
        """One `go build` of every binary (one invocation shares the compiled dependencies)."""
        packages = [f"{GO_PACKAGE}/cmd/{b}" for b in self.binaries]
        return [
            go,
            "build",
            "-p",
            str(jobs),
            *self.go_flags,
            "-ldflags",
            self.ldflags(),
            "-o",
            f"{out_dir}/",
            *packages,
        ]

    def openapi_argv(self, tool: str, inputs: Sequence[str], report: Path) -> list[str]:
        """openapi-gen as Makefile.generated_files runs it for pkg/generated/openapi."""
        return [
            tool,
            "--logtostderr",
            "-i",
            ",".join(f"{GO_PACKAGE}/{d}" for d in inputs),
            "-p",
            f"{GO_PACKAGE}/{self.openapi_output}",
            "-O",
            "zz_generated.openapi",
            "-h",
            self.openapi_boilerplate,
            "-r",
            str(report),
        ]

    def go_environ(self, goroot: Path, gopath: Path, gocache: Path) -> dict[str, str]:
        return {
            **dict(self.go_env),
            "GOROOT": str(goroot),
            "GOPATH": str(gopath),
            "GOCACHE": str(gocache),
            "PATH": f"{goroot / 'bin'}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        }

    def cc_argv(self, cc: str, source: Path, output: Path) -> list[str]:
        version = self.pause.ref.rpartition(":")[2]
        return [cc, *self.cc_flags, f"-DVERSION=v{version}-harness", "-o", str(output), str(source)]

    def images(self) -> tuple[ImageRecipe, ...]:
        return (self.pause, self.busybox)


OPENAPI_TAG = re.compile(r"^// *\+k8s:openapi-gen=", re.MULTILINE)


def openapi_inputs(tree: Path, skip: Sequence[str]) -> list[str]:
    """Directories (relative to tree, through vendor/'s symlinks) with a Go file, not a test, that
    has a `+k8s:openapi-gen=` tag; `skip` and testdata pruned. Sorted."""
    found: set[str] = set()
    for top, dirs, files in os.walk(tree, followlinks=True):
        rel = Path(top).relative_to(tree).as_posix()
        dirs[:] = sorted(d for d in dirs if d != "testdata" and (d if rel == "." else f"{rel}/{d}") not in skip)
        for name in files:
            if name.endswith(".go") and not name.endswith("_test.go"):
                text = (Path(top) / name).read_text(encoding="utf-8", errors="replace")
                if OPENAPI_TAG.search(text):
                    found.add(rel)
                    break
    return sorted(found)


def pause_image(recipe: Recipe, binary: bytes) -> oci_image.Image:
    return oci_image.Image(recipe.pause.ref, [oci_image.Entry("pause", binary)], entrypoint=["/pause"])


def busybox_image(recipe: Recipe, binary: bytes) -> oci_image.Image:
    entries = [oci_image.Entry("bin/busybox", binary), oci_image.Entry("tmp", mode=0o1777)]
    entries += [oci_image.Entry(f"bin/{a}", symlink="busybox") for a in recipe.busybox_applets]
    return oci_image.Image(recipe.busybox.ref, entries, cmd=["sh"])


class ImageEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    file: str = Field(description="tarball under kubernetes/server/bin")
    ref: str = Field(description="the reference it imports as")


class ServerManifest(BaseModel):
    """bundle.yml of a Kubernetes server bundle."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["kubernetes-server"]
    kubernetes_version: str = Field(description="e.g. v1.20.2")
    architecture: Literal["amd64", "arm64"] = "amd64"
    binaries: list[str] = Field(description="names under kubernetes/server/bin")
    images: dict[str, ImageEntry] = Field(default_factory=dict, description="role (pause, busybox) → image")
    source: dict[str, str] = Field(default_factory=dict, description="where it was built from (free form)")


def manifest_for(recipe: Recipe, provenance: dict[str, str]) -> ServerManifest:
    return ServerManifest(
        kind=KIND,
        kubernetes_version=recipe.kubernetes_version,
        binaries=list(recipe.binaries),
        images={
            "pause": ImageEntry(file=recipe.pause.file, ref=recipe.pause.ref),
            "busybox": ImageEntry(file=recipe.busybox.file, ref=recipe.busybox.ref),
        },
        source={
            "package": f"{recipe.source_package} {recipe.source_version} (Debian 12)",
            "recipe": recipe.digest(),
            **provenance,
        },
    )


def write_manifest_and_sums(root: Path, manifest: ServerManifest) -> None:
    """bundle.yml, then SHA256SUMS over every file under root."""
    (root / MANIFEST).write_text(yaml.safe_dump(manifest.model_dump(), sort_keys=False), encoding="utf-8")
    names = [n for n in bundle.files_under(root) if n != bundle.SUMS_FILE]
    (root / bundle.SUMS_FILE).write_text(bundle.sums_text(root, names), encoding="utf-8")


@dataclass(frozen=True)
class ServerBundle:
    root: Path
    manifest: ServerManifest
    files: int
    bytes_total: int
    images: dict[str, list[str]] = field(default_factory=dict)

    def summary(self) -> str:
        refs = ", ".join(r for refs in self.images.values() for r in refs)
        return (
            f"Kubernetes server bundle {self.manifest.kubernetes_version} ({self.manifest.architecture}): "
            f"{len(self.manifest.binaries)} binaries, images {refs or 'none'}; {self.files} files verified, "
            f"{self.bytes_total / (1 << 20):.1f} MiB"
        )


def _binary_problems(root: Path, names: Sequence[str]) -> list[str]:
    problems = []
    for name in names:
        path = root / BIN_DIR / name
        if not path.is_file():
            problems.append(f"{BIN_DIR}/{name}: listed in {MANIFEST} but missing")
        elif not os.access(path, os.X_OK):
            problems.append(f"{BIN_DIR}/{name}: not executable (chmod 0755 it)")
    return problems


def check_bundle(root: Path) -> ServerBundle:
    """Check a Kubernetes server bundle: SHA256SUMS against every file, bundle.yml, every binary
    present and executable, every image a readable docker-archive with its reference. SpecError
    (exit 2) naming every problem."""
    problems: list[str] = []
    sums_path = root / bundle.SUMS_FILE
    if not sums_path.is_file():
        raise SpecError(str(root), [f"{bundle.SUMS_FILE}: missing; write it with `sha256sum` (see {README_SECTION})"])
    sums, sum_problems = bundle.read_sums(sums_path.read_text(encoding="utf-8", errors="replace"))
    check = bundle.verify_files(root, sums)
    problems += sum_problems + bundle.describe(check)
    manifest: ServerManifest | None = None
    try:
        manifest = ServerManifest.model_validate(yaml.safe_load((root / MANIFEST).read_text(encoding="utf-8")))
    except (OSError, yaml.YAMLError) as exc:
        problems.append(f"{MANIFEST}: cannot read it: {exc}")
    except ValidationError as exc:
        problems += [f"{MANIFEST}: {'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
    images: dict[str, list[str]] = {}
    if manifest is not None:
        problems += _binary_problems(root, manifest.binaries)
        for role, image in manifest.images.items():
            path = root / BIN_DIR / image.file
            if not path.is_file():
                problems.append(f"{BIN_DIR}/{image.file}: the {role} image, listed in {MANIFEST}, is missing")
                continue
            refs, image_problems = oci_image.archive_problems(path)
            problems += image_problems
            if refs and image.ref not in refs:
                problems.append(f"{BIN_DIR}/{image.file}: tagged {', '.join(refs)}, but {MANIFEST} says {image.ref}")
            images[role] = refs
    if problems or manifest is None:
        raise SpecError(str(root), problems or [f"{MANIFEST}: missing"])
    return ServerBundle(root, manifest, len(check.verified), check.bytes_verified, images)
