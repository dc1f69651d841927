"""`harness bundle kubernetes`: build the Kubernetes server bundle (harness.k8s_server) offline from
Debian 12's source package, into the harness's cache.

Steps, each a progress line (the commands' output goes to the build log):
1. fetch: `apt-get source --download-only` of the source package and `apt-get download` of the
   build's Debian packages (Go 1.19, reflect2 1.0.2, busybox-static), with an apt configuration of
   the build's own (deb and deb-src lines of Debian 12, its own lists) through the host's package
   cache on the loopback: nothing is installed on the host. Downloads are kept (DOWNLOADS) for
   the next build.
2. unpack: `dpkg-source -x` into a GOPATH (src/k8s.io/kubernetes), `dpkg-deb -x` of the packages;
   the vendored reflect2 replaced by Debian's.
3. openapi: pkg/generated/openapi, which kube-apiserver needs and the source lacks, generated with
   the vendored openapi-gen from every package tagged `+k8s:openapi-gen=`.
4. go: one `go build` (GOPATH mode, CGO off, `-ldflags -s -w` and the version variables).
5. pause: `gcc -static` of build/pause/linux/pause.c.
6. layout: the binaries, the pause and busybox images, bundle.yml, SHA256SUMS; moved into place
   only when complete. The work directory is removed.

Cached at <cache>/kubernetes-server/<source version>-<recipe digest>/; a bundle there that passes
`check_bundle` is used as is. Go's build cache is kept at <cache>/kubernetes-server/gocache (about
2-3 GB): delete it to reclaim the space, at the cost of a cold build next time.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness import cache, k8s_server, oci_image, proc
from harness.errors import HarnessError, HostError, SpecError
from harness.paths import cache_dir

Runner = Callable[[Sequence[str], Path, Mapping[str, str] | None], proc.CommandResult]
Progress = Callable[[str], None]

KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
ARCHIVES = (
    ("http://deb.debian.org/debian", "bookworm"),
    ("http://deb.debian.org/debian-security", "bookworm-security"),
)


class BuildError(HarnessError):
    """A build step failed; the message names the step and the log."""

    exit_code = 1


def cache_root() -> Path:
    return cache_dir() / "kubernetes-server"


def sources_list() -> str:
    """deb and deb-src lines of Debian 12 (main), signed by Debian's archive key."""
    lines = []
    for uri, suite in ARCHIVES:
        lines += [f"{kind} [signed-by={KEYRING}] {uri} {suite} main" for kind in ("deb", "deb-src")]
    return "\n".join(lines) + "\n"


def apt_options(apt_dir: Path, proxy: str) -> list[str]:
    """apt-get options that make it use only apt_dir's sources.list, lists and cache, through proxy."""
    opts = {
        "Dir::Etc::SourceList": str(apt_dir / "sources.list"),
        "Dir::Etc::SourceParts": str(apt_dir / "sources.list.d"),
        "Dir::State::Lists": str(apt_dir / "lists"),
        "Dir::Cache": str(apt_dir / "cache"),
        "Acquire::http::Proxy": proxy,
        "APT::Sandbox::User": "root",
    }
    return [arg for key, value in opts.items() for arg in ("-o", f"{key}={value}")]


@dataclass
class BuildResult:
    bundle: k8s_server.ServerBundle
    cached: bool
    seconds: float
    steps: dict[str, float] = field(default_factory=dict)
    log: Path | None = None


@dataclass
class _Build:
    recipe: k8s_server.Recipe
    work: Path
    downloads: Path
    runner: Runner
    progress: Progress
    log: Path
    steps: dict[str, float] = field(default_factory=dict)

    def run(self, step: str, argv: Sequence[str], cwd: Path, env: Mapping[str, str] | None = None) -> str:
        result = self.runner(argv, cwd, env)
        if not result.ok:
            raise BuildError(f"kubernetes bundle, step {step}: {result.describe()}\n(full output: {self.log})")
        return result.stdout

    def timed(self, step: str, what: str, fn: Callable[[], None]) -> None:
        self.progress(f"{step}: {what}")
        started = time.monotonic()
        fn()
        self.steps[step] = time.monotonic() - started
        self.progress(f"{step}: done in {self.steps[step]:.0f}s")

    def fetch(self) -> None:
        apt_dir = self.work / "apt"
        for sub in ("lists/partial", "cache/archives/partial", "sources.list.d"):
            (apt_dir / sub).mkdir(parents=True, exist_ok=True)
        (apt_dir / "sources.list").write_text(sources_list(), encoding="utf-8")
        apt = ["apt-get", "-q", *apt_options(apt_dir, f"http://127.0.0.1:{cache.PORT}/")]
        self.run("fetch", [*apt, "update"], self.work)
        src, debs = self.downloads / "source", self.downloads / "debs"
        src.mkdir(parents=True, exist_ok=True)
        debs.mkdir(parents=True, exist_ok=True)
        if not list(src.glob("*.dsc")):
            pkg = f"{self.recipe.source_package}={self.recipe.source_version}"
            self.run("fetch", [*apt, "source", "--download-only", pkg], src)
        missing = [p for p in self.recipe.build_debs if not list(debs.glob(f"{p}_*.deb"))]
        if missing:
            self.run("fetch", [*apt, "download", *missing], debs)

    def unpack(self) -> None:
        dscs = sorted((self.downloads / "source").glob("*.dsc"))
        if not dscs:
            raise BuildError(f"kubernetes bundle, step unpack: no .dsc in {self.downloads / 'source'}")
        tree = self.tree
        tree.parent.mkdir(parents=True, exist_ok=True)
        self.run("unpack", ["dpkg-source", "--no-check", "-x", str(dscs[-1]), str(tree)], self.work)
        for name in self.recipe.build_debs:
            for deb in sorted((self.downloads / "debs").glob(f"{name}_*.deb")):
                self.run("unpack", ["dpkg-deb", "-x", str(deb), str(self.root)], self.work)
        for vendored, replacement in self.recipe.vendor_replacements:
            target, source = tree / "vendor" / vendored, self.root / replacement
            if not source.is_dir():
                raise BuildError(f"kubernetes bundle, step unpack: {source} is not in the unpacked packages")
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(source, target, symlinks=True)

    @property
    def tree(self) -> Path:
        return self.work / "gopath" / "src" / k8s_server.GO_PACKAGE

    @property
    def root(self) -> Path:
        return self.work / "debroot"

    @property
    def gocache(self) -> Path:
        """Go's build cache, kept between builds: with -trimpath its entries do not depend on the
        work directory, so a changed recipe recompiles only what changed."""
        return self.work.parent / "gocache"

    @property
    def out(self) -> Path:
        return self.work / "out"

    def openapi(self) -> None:
        goroot = self.root / self.recipe.goroot
        env = self.recipe.go_environ(goroot, self.work / "gopath", self.gocache)
        inputs = k8s_server.openapi_inputs(self.tree, self.recipe.openapi_skip)
        if not inputs:
            raise BuildError(f"kubernetes bundle, step openapi: no package in {self.tree} has a +k8s:openapi-gen tag")
        tool = self.work / "openapi-gen"
        go = str(goroot / "bin" / "go")
        self.run(
            "openapi",
            [go, "build", *self.recipe.go_flags, "-o", str(tool), f"{k8s_server.GO_PACKAGE}/{self.recipe.openapi_gen}"],
            self.tree,
            env,
        )
        self.run(
            "openapi", self.recipe.openapi_argv(str(tool), inputs, self.work / "openapi-report.txt"), self.tree, env
        )

    def go(self) -> None:
        goroot = self.root / self.recipe.goroot
        env = self.recipe.go_environ(goroot, self.work / "gopath", self.gocache)
        self.out.mkdir(parents=True, exist_ok=True)
        argv = self.recipe.go_build_argv(str(goroot / "bin" / "go"), self.out, os.cpu_count() or 1)
        self.run("go", argv, self.tree, env)

    def pause(self) -> None:
        cc = shutil.which("gcc") or shutil.which("cc")
        if cc is None:
            raise HostError("kubernetes bundle: no C compiler (gcc) to build the pause binary: apt-get install gcc")
        self.run("pause", self.recipe.cc_argv(cc, self.tree / self.recipe.pause_source, self.out / "pause"), self.work)

    def provenance(self) -> dict[str, str]:
        version = self.root / self.recipe.goroot / "VERSION"
        go = version.read_text(encoding="utf-8").split()[0] if version.is_file() else "unknown"
        debs = sorted(p.name for p in (self.downloads / "debs").glob("*.deb"))
        return {"go": go, "debian_packages": ", ".join(debs)}

    def layout(self, staging: Path) -> None:
        shutil.rmtree(staging, ignore_errors=True)
        bin_dir = staging / k8s_server.BIN_DIR
        bin_dir.mkdir(parents=True)
        for name in self.recipe.binaries:
            if not (self.out / name).is_file():
                raise BuildError(f"kubernetes bundle, step layout: go build made no {name} (see {self.log})")
            shutil.copyfile(self.out / name, bin_dir / name)
            (bin_dir / name).chmod(0o755)
        busybox = self.root / "bin" / "busybox"
        images = (
            k8s_server.pause_image(self.recipe, (self.out / "pause").read_bytes()),
            k8s_server.busybox_image(self.recipe, busybox.read_bytes()),
        )
        for spec, image in zip(self.recipe.images(), images, strict=True):
            oci_image.write(image, bin_dir / spec.file)
        k8s_server.write_manifest_and_sums(staging, k8s_server.manifest_for(self.recipe, self.provenance()))


def _default_runner(log: Path) -> Runner:
    def run(argv: Sequence[str], cwd: Path, env: Mapping[str, str] | None) -> proc.CommandResult:
        return proc.run_logged(argv, log, env=env, cwd=cwd)

    return run


def cached_bundle(target: Path) -> k8s_server.ServerBundle | None:
    if not (target / k8s_server.MANIFEST).is_file():
        return None
    try:
        return k8s_server.check_bundle(target)
    except SpecError:
        return None


def build(
    recipe: k8s_server.Recipe | None = None,
    *,
    root: Path | None = None,
    runner: Runner | None = None,
    progress: Progress = lambda _line: None,
    keep_work: bool = False,
    require_cache: bool = True,
) -> BuildResult:
    """The bundle for `recipe`, from the cache or built (see the module's docstring)."""
    recipe = recipe or k8s_server.Recipe()
    root = root or cache_root()
    target = root / recipe.cache_key()
    started = time.monotonic()
    found = cached_bundle(target)
    if found is not None:
        progress(f"cached: {target}")
        return BuildResult(found, True, time.monotonic() - started)
    if require_cache and not cache.listening():
        raise HostError(
            f"kubernetes bundle: the host's package cache is not listening on 127.0.0.1:{cache.PORT}, and the "
            "source package is fetched through it: run `harness host setup` first"
        )
    work = root / f"work-{recipe.cache_key()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    log = root / f"{recipe.cache_key()}.log"
    log.unlink(missing_ok=True)
    downloads = root / "downloads" / recipe.cache_key().rsplit("-", 1)[0]
    b = _Build(recipe, work, downloads, runner or _default_runner(log), progress, log=log)
    progress(f"building {recipe.kubernetes_version} from Debian's {recipe.source_package} {recipe.source_version}")
    progress(f"log: {b.log}")
    b.timed("fetch", "source package and build packages from Debian (through the package cache)", b.fetch)
    b.timed("unpack", "source tree into a GOPATH, Go and reflect2 from Debian", b.unpack)
    b.timed("openapi", "generate pkg/generated/openapi (openapi-gen, as upstream's make does)", b.openapi)
    b.timed("go", f"go build of {', '.join(recipe.binaries)} (the long step)", b.go)
    b.timed("pause", "static pause binary", b.pause)
    staging = root / f"staging-{recipe.cache_key()}"
    b.timed("layout", "binaries, images, bundle.yml, SHA256SUMS", lambda: b.layout(staging))
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    if not keep_work:
        shutil.rmtree(work, ignore_errors=True)
    result = k8s_server.check_bundle(target)
    return BuildResult(result, False, time.monotonic() - started, b.steps, log)
