"""The k3s air-gap bundle: what a Kubernetes scenario installs on nodes that reach no registry and
no internet, checked before any VM boots.

Layout (docs/kubernetes.md, "Kubernetes (k3s from an air-gap bundle)"):

    k3s                                  the k3s binary of the release (asset `k3s`, or `k3s-arm64`)
    k3s-airgap-images-<arch>.tar.zst     the release's system images (pause, CoreDNS, busybox, ...)
    images/*.tar[.zst|.gz|...]           extra image tarballs, copied to the nodes of a group
    manifests/*.yaml                     put in the server's auto-deploy directory: the NVIDIA device
                                         plugin DaemonSet, selecting nodes labelled nvidia.com/gpu.present
    bundle.yml                           k3s_version, architecture, images per group, manifests
    SHA256SUMS                           every file above with its SHA-256 (`sha256sum` format)

Which bundle a scenario uses (one rule): a scenario that has a `kubernetes:` section needs one;
it is `kubernetes.bundle` (relative to the scenario file) when set, otherwise the directory in
HARNESS_K3S_BUNDLE. Neither given, or no such directory: HostError (exit 3) before anything is
created. A bundle that exists but is broken: SpecError (exit 2) naming every problem.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal
from urllib.parse import quote

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness import bundle, k8s_server
from harness.errors import HostError, SpecError
from harness.spec import Scenario, group_name_problem

ENV = "HARNESS_K3S_BUNDLE"
MANIFEST = "bundle.yml"
BINARY = "k3s"
IMAGES_DIR = "images"
MANIFESTS_DIR = "manifests"
RELEASES = "https://github.com/k3s-io/k3s/releases"
# The role relies on k3s deploying the `nvidia` RuntimeClass itself and on the agent option
# `default-runtime`, both there since v1.29.
MIN_VERSION = (1, 29)
_VERSION = re.compile(r"^v(\d+)\.(\d+)\.(\d+)(-rc\d+)?\+k3s\d+$")
# What k3s imports from /var/lib/rancher/k3s/agent/images/.
IMAGE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.zst", ".tzst", ".tar.lz4", ".tar.bz2", ".tbz")
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
# The NVIDIA device plugin: a DaemonSet with this in its name (the scenario tests find it so) that
# runs only on nodes with this label, which roles/k3s gives agents that have an NVIDIA GPU.
DEVICE_PLUGIN = "nvidia-device-plugin"
GPU_LABEL = "nvidia.com/gpu.present"
DEVICE_PLUGIN_SOURCE = "NVIDIA's k8s-device-plugin deployments/static/nvidia-device-plugin.yml (https://github.com/NVIDIA/k8s-device-plugin)"
README_SECTION = "docs/kubernetes.md 'Kubernetes (k3s from an air-gap bundle)'"
HOW_TO_GET = (
    f"Build one on a machine with internet access: from {RELEASES} (a release v{MIN_VERSION[0]}.{MIN_VERSION[1]} or "
    "later) download the assets `k3s` and `k3s-airgap-images-amd64.tar.zst`, add image tarballs for GPU nodes "
    "under images/ and the NVIDIA device plugin DaemonSet under manifests/, write bundle.yml and SHA256SUMS "
    f"(see {README_SECTION}); copy the directory here and check it with `harness bundle check DIR`."
)


class BundleManifest(BaseModel):
    """bundle.yml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    k3s_version: Annotated[str, Field(description="the k3s release, e.g. v1.31.4+k3s1")]
    architecture: Literal["amd64", "arm64"] = "amd64"
    images: dict[str, list[str]] = Field(
        default_factory=dict, description="inventory group (or 'all') → image tarballs under images/"
    )
    manifests: list[str] = Field(default_factory=list, description="files under manifests/ the server deploys")
    test_images: dict[str, str] = Field(
        default_factory=dict, description="images the scenario tests run: busybox, cuda (references)"
    )


def airgap_images(arch: str) -> str:
    return f"k3s-airgap-images-{arch}.tar.zst"


def binary_asset(arch: str) -> str:
    """The release asset of the k3s binary (saved as `k3s` in the bundle)."""
    return BINARY if arch == "amd64" else f"{BINARY}-{arch}"


def release_url(version: str, asset: str) -> str:
    return f"{RELEASES}/download/{quote(version, safe='')}/{asset}"


def parse_version(version: str) -> tuple[int, int, int] | None:
    match = _VERSION.match(version)
    return (int(match[1]), int(match[2]), int(match[3])) if match else None


@dataclass(frozen=True)
class K3sBundle:
    """A checked bundle."""

    root: Path
    manifest: BundleManifest
    files: bundle.FileCheck

    def summary(self) -> str:
        groups = ", ".join(f"{g} ({len(f)})" for g, f in self.manifest.images.items()) or "none"
        mib = self.files.bytes_verified / (1 << 20)
        return (
            f"k3s {self.manifest.k3s_version} ({self.manifest.architecture}), {len(self.files.verified)} files "
            f"verified ({mib:.0f} MiB); image tarballs by group: {groups}; manifests: {len(self.manifest.manifests)}"
        )


def _read_manifest(root: Path) -> tuple[BundleManifest | None, list[str]]:
    path = root / MANIFEST
    if not path.is_file():
        return None, [
            f"{MANIFEST}: missing; write it (keys k3s_version, architecture, images, manifests, test_images; "
            f"see {README_SECTION})"
        ]
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        return None, [f"{MANIFEST}: cannot read it as YAML: {exc}"]
    if not isinstance(data, dict):
        return None, [f"{MANIFEST}: expected a mapping with keys k3s_version, architecture, images, manifests"]
    try:
        manifest = BundleManifest.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "(top level)"
            msg = "unknown key (check the spelling)" if err["type"] == "extra_forbidden" else err["msg"]
            problems.append(f"{MANIFEST}: {key}: {msg}")
        return None, problems
    return manifest, _manifest_problems(manifest)


def _manifest_problems(m: BundleManifest) -> list[str]:
    problems: list[str] = []
    version = parse_version(m.k3s_version)
    if version is None:
        problems.append(f"{MANIFEST}: k3s_version: {m.k3s_version!r} is not a k3s release name like v1.31.4+k3s1")
    elif version[:2] < MIN_VERSION:
        problems.append(
            f"{MANIFEST}: k3s_version: {m.k3s_version} is older than v{MIN_VERSION[0]}.{MIN_VERSION[1]}; the role "
            "needs k3s to deploy the nvidia RuntimeClass and to take the agent option default-runtime"
        )
    for group, files in m.images.items():
        why = group_name_problem(group) if group != "all" else None
        if why:
            problems.append(f"{MANIFEST}: images.{group}: {why}")
        for k, name in enumerate(files):
            problems += _entry_problems(f"images.{group}[{k}]", name, IMAGES_DIR, IMAGE_SUFFIXES)
    for k, name in enumerate(m.manifests):
        problems += _entry_problems(f"manifests[{k}]", name, MANIFESTS_DIR, MANIFEST_SUFFIXES)
    for name, ref in m.test_images.items():
        if not ref.strip() or any(c.isspace() for c in ref):
            problems.append(f"{MANIFEST}: test_images.{name}: {ref!r} is not an image reference")
    return problems


def _entry_problems(key: str, name: str, folder: str, suffixes: tuple[str, ...]) -> list[str]:
    why = bundle.relative_name_problem(name)
    if why:
        return [f"{MANIFEST}: {key}: {name!r} {why}"]
    parts = PurePosixPath(name).parts
    if len(parts) != 2 or parts[0] != folder:
        return [f"{MANIFEST}: {key}: {name!r} must be a file directly under {folder}/"]
    if not name.endswith(suffixes):
        return [f"{MANIFEST}: {key}: {name!r} must end with one of {', '.join(suffixes)}"]
    return []


def _k8s_objects(root: Path, name: str) -> tuple[list[dict[str, Any]], list[str]]:
    """A manifest is YAML documents, each a Kubernetes object (apiVersion and kind): (objects, problems)."""
    try:
        docs = [d for d in yaml.safe_load_all((root / name).read_text(encoding="utf-8")) if d is not None]
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        return [], [f"{name}: cannot read it as YAML: {exc}"]
    if not docs:
        return [], [f"{name}: holds no Kubernetes object"]
    objects = [d for d in docs if isinstance(d, dict) and d.get("apiVersion") and d.get("kind")]
    bad = [i for i, d in enumerate(docs) if not (isinstance(d, dict) and d.get("apiVersion") and d.get("kind"))]
    return objects, [f"{name}: document {i + 1} is not a Kubernetes object (no apiVersion or kind)" for i in bad]


def _field(obj: object, *keys: str) -> object:
    """obj[k1][k2]... of parsed YAML, None where a level is missing or not a mapping."""
    for key in keys:
        obj = obj.get(key) if isinstance(obj, dict) else None
    return obj


def _gpu_selection_problem(pod_spec: object) -> str | None:
    """Why a pod template does not run only on nodes labelled nvidia.com/gpu.present="true" (None: it does):
    a nodeSelector with that label, or a required node affinity whose every term asks for it."""
    selector = _field(pod_spec, "nodeSelector")
    if isinstance(selector, dict) and GPU_LABEL in selector:
        if selector[GPU_LABEL] == "true":
            return None
        return (
            f'its nodeSelector {GPU_LABEL}: {selector[GPU_LABEL]!r} must be the string "true" (quoted in YAML: '
            "Kubernetes refuses a label value that is not a string)"
        )
    required = _field(pod_spec, "affinity", "nodeAffinity", "requiredDuringSchedulingIgnoredDuringExecution")
    terms = _field(required, "nodeSelectorTerms")

    def asks_for_gpus(term: object) -> bool:
        exprs = _field(term, "matchExpressions")
        return isinstance(exprs, list) and any(
            _field(e, "key") == GPU_LABEL
            and (
                _field(e, "operator") == "Exists" or (_field(e, "operator") == "In" and _field(e, "values") == ["true"])
            )
            for e in exprs
        )

    if isinstance(terms, list) and terms and all(asks_for_gpus(t) for t in terms):
        return None
    return (
        f"it does not select the nodes labelled {GPU_LABEL}=true (roles/k3s labels the GPU agents so), and would "
        f'run on every node: add `nodeSelector: {{{GPU_LABEL}: "true"}}` to spec.template.spec'
    )


def _device_plugin_problems(objects: list[tuple[str, dict[str, Any]]], *, required: bool) -> list[str]:
    """The manifests hold the NVIDIA device plugin DaemonSet (when `required`), and it runs on GPU nodes only."""
    plugins = [
        (name, obj, str(_field(obj, "metadata", "name") or ""))
        for name, obj in objects
        if obj.get("kind") == "DaemonSet" and DEVICE_PLUGIN in str(_field(obj, "metadata", "name") or "")
    ]
    if not plugins and required:
        return [
            f"{MANIFEST}: manifests: no DaemonSet named *{DEVICE_PLUGIN}*, so GPU nodes would offer no "
            f"nvidia.com/gpu: get {DEVICE_PLUGIN_SOURCE}, give its DaemonSet "
            f'`nodeSelector: {{{GPU_LABEL}: "true"}}`, save it under {MANIFESTS_DIR}/ and name it in {MANIFEST} '
            "manifests (its image goes in images.gpu)"
        ]
    problems = []
    for name, obj, ds_name in plugins:
        why = _gpu_selection_problem(_field(obj, "spec", "template", "spec"))
        if why:
            problems.append(f"{name}: DaemonSet {ds_name}: {why}")
    return problems


def _required(m: BundleManifest | None, arch: str) -> dict[str, str]:
    """Files the bundle must have → where to get a missing one."""
    known = m is not None and parse_version(m.k3s_version) is not None
    version = m.k3s_version if m is not None and known else ""

    def where(asset: str) -> str:
        if not known:
            return f"download the asset `{asset}` of your k3s release (bundle.yml k3s_version) from {RELEASES}"
        return f"download the asset `{asset}` of k3s {version}: {release_url(version, asset)}"

    required = {
        BINARY: f"{where(binary_asset(arch))} and save it as `{BINARY}`",
        airgap_images(arch): where(airgap_images(arch)),
    }
    if m is None:
        return required
    for group, files in m.images.items():
        for name in files:
            required[name] = (
                f"named in bundle.yml images.{group}: save the image on a connected machine "
                f"(`docker save IMAGE | zstd > {name}`; a plain .tar from `docker save -o` or `ctr images export` "
                "works too)"
            )
    for name in m.manifests:
        required[name] = (
            "named in bundle.yml manifests: put the manifest there (for the device plugin, NVIDIA's "
            "k8s-device-plugin deployments/static/nvidia-device-plugin.yml with a node selector on "
            "nvidia.com/gpu.present)"
        )
    return required


def check_bundle(root: Path) -> K3sBundle:
    """Verify a bundle directory; SpecError (exit 2) naming every problem, or the checked bundle."""
    if not root.is_dir():
        raise SpecError(str(root), [f"no such directory. {HOW_TO_GET}"])
    manifest, problems = _read_manifest(root)
    arch = manifest.architecture if manifest is not None else "amd64"
    required = _required(manifest, arch)
    sums: dict[str, str] = {}
    sums_path = root / bundle.SUMS_FILE
    if sums_path.is_file():
        sums, sum_problems = bundle.read_sums(sums_path.read_text(encoding="utf-8", errors="replace"))
        problems += sum_problems
    else:
        problems.append(
            f"{bundle.SUMS_FILE}: missing; make it in the bundle directory: "
            f"`find . -type f ! -name {bundle.SUMS_FILE} -printf '%P\\0' | sort -z | "
            f"xargs -0 sha256sum > {bundle.SUMS_FILE}`"
        )
    absent = [n for n in required if not (root / n).is_file()]
    problems += [f"{n}: missing; {required[n]}" for n in absent]
    files = bundle.verify_files(root, sums)
    reported = bundle.FileCheck(
        tuple(n for n in files.missing if n not in absent),
        files.mismatched,
        files.unlisted,
        unreadable=files.unreadable,
    )
    problems += bundle.describe(reported) if sums_path.is_file() else []
    if manifest is not None:
        named = {n for fs in manifest.images.values() for n in fs} | set(manifest.manifests)
        for name in bundle.files_under(root):
            if name.startswith((f"{IMAGES_DIR}/", f"{MANIFESTS_DIR}/")) and name not in named:
                problems.append(
                    f"{name}: not named in {MANIFEST} (images.<group> or manifests), so no node would get it; "
                    "name it there or remove it"
                )
        objects: list[tuple[str, dict[str, Any]]] = []
        readable = True
        for name in manifest.manifests:
            if not (root / name).is_file():
                readable = False
                continue
            found, bad = _k8s_objects(root, name)
            objects += [(name, obj) for obj in found]
            problems += bad
            readable = readable and not bad
        # A manifest missing or unreadable is reported already and may be the one with the plugin.
        problems += _device_plugin_problems(objects, required=readable)
    if problems or manifest is None:
        raise SpecError(str(root), problems)
    return K3sBundle(root, manifest, files)


def _upstream(scenario: Scenario) -> bool:
    return scenario.kubernetes is not None and scenario.kubernetes.distribution == "upstream"


def bundle_dir(scenario: Scenario) -> tuple[Path | None, str]:
    """The bundle directory a scenario uses (None: none given) and where that came from."""
    if scenario.kubernetes is None:
        return None, ""
    if scenario.kubernetes.bundle is not None:
        return scenario.resolve(scenario.kubernetes.bundle), f"kubernetes.bundle in {scenario.source}"
    if _upstream(scenario):
        from harness import k8s_server_build

        return k8s_server_build.cache_root() / k8s_server.Recipe().cache_key(), "the harness cache"
    env = os.environ.get(ENV, "").strip()
    return (Path(env).expanduser().resolve(), ENV) if env else (None, "")


def preflight(scenario: Scenario) -> K3sBundle | k8s_server.ServerBundle | None:
    """Before anything is created: the scenario's bundle, checked (None for a scenario without
    `kubernetes:`). HostError (exit 3) when none is given or it is not there; SpecError (exit 2)
    when it is there but broken."""
    if scenario.kubernetes is None:
        return None
    root, origin = bundle_dir(scenario)
    if _upstream(scenario):
        if root is None or not root.is_dir():
            raise HostError(
                f"scenario {scenario.name!r} installs upstream Kubernetes and needs a Kubernetes server bundle, but "
                f"{root} (from {origin}) is not a directory: build it with `harness bundle kubernetes` (a cold build "
                f"takes about 30 min) or set kubernetes.bundle in {scenario.source} (see {k8s_server.README_SECTION})"
            )
        return k8s_server.check_bundle(root)
    if root is None:
        raise HostError(
            f"scenario {scenario.name!r} installs Kubernetes (k3s) and needs a k3s air-gap bundle, but none is given: "
            f"set kubernetes.bundle in {scenario.source} or {ENV}=DIR. {HOW_TO_GET}"
        )
    if not root.is_dir():
        raise HostError(f"the k3s air-gap bundle {root} (from {origin}) is not a directory. {HOW_TO_GET}")
    return check_bundle(root)


def extra_vars(scenario: Scenario) -> dict[str, str]:
    """The variables a converge passes to the role: the bundle directory on this host
    (roles/k3s: k3s_bundle_dir; roles/kubernetes: kubernetes_bundle_dir)."""
    root, _origin = bundle_dir(scenario)
    if root is None:
        return {}
    return {"kubernetes_bundle_dir" if _upstream(scenario) else "k3s_bundle_dir": str(root)}
