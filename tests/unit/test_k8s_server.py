from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from harness import bundle, k8s_bundle, k8s_server, k8s_server_build, oci_image, proc
from harness.cli_bundle import KINDS
from harness.errors import HostError, SpecError
from harness.spec import Scenario, parse_scenario

RECIPE = k8s_server.Recipe()


def test_ldflags_strip_and_set_the_version_in_both_version_packages() -> None:
    flags = RECIPE.ldflags()
    assert flags.startswith("-s -w ")
    for pkg in ("k8s.io/client-go/pkg/version", "k8s.io/component-base/version"):
        assert f"-X k8s.io/kubernetes/vendor/{pkg}.gitVersion=v1.20.2" in flags
        assert f"-X k8s.io/kubernetes/vendor/{pkg}.gitMinor=20" in flags


def test_one_go_build_of_every_server_binary_in_gopath_mode_without_cgo(tmp_path: Path) -> None:
    argv = RECIPE.go_build_argv("/x/go", tmp_path / "out", 2)
    assert argv[:4] == ["/x/go", "build", "-p", "2"]
    assert argv[argv.index("-o") + 1] == f"{tmp_path / 'out'}/"
    assert argv[argv.index("-ldflags") + 1] == RECIPE.ldflags()
    wanted = ["kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "kubeadm"]
    assert argv[-6:] == [f"k8s.io/kubernetes/cmd/{b}" for b in wanted]
    env = RECIPE.go_environ(tmp_path / "goroot", tmp_path / "gopath", tmp_path / "cache")
    assert (env["GO111MODULE"], env["CGO_ENABLED"], env["GOPATH"]) == ("off", "0", str(tmp_path / "gopath"))
    assert env["PATH"].startswith(f"{tmp_path / 'goroot' / 'bin'}:")


def test_cache_key_is_the_source_version_and_a_digest_that_follows_the_recipe() -> None:
    key = RECIPE.cache_key()
    assert key.startswith("1.20.5+really1.20.2-1.1+deb12u1-") and len(key.rsplit("-", 1)[1]) == 12
    assert key == k8s_server.Recipe().cache_key()
    assert replace(RECIPE, binaries=("kubelet",)).cache_key() != key
    assert replace(RECIPE, go_flags=()).cache_key() != key
    other = replace(RECIPE, source_version="1.20.5:x/y").cache_key()
    assert other.startswith("1.20.5_x_y-") and other != key


def _busybox_like() -> oci_image.Image:
    return k8s_server.busybox_image(RECIPE, b"\x7fELF busybox")


def _members(data: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: m for m in tar.getmembers()}


def test_docker_archive_is_deterministic_and_consistent(tmp_path: Path) -> None:
    data = oci_image.archive(_busybox_like())
    assert data == oci_image.archive(_busybox_like())
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        [item] = manifest
        assert item["RepoTags"] == ["docker.io/library/busybox:1.35"]
        cfg_raw = tar.extractfile(item["Config"]).read()  # type: ignore[union-attr]
        layer = tar.extractfile(item["Layers"][0]).read()  # type: ignore[union-attr]
        repositories = json.load(tar.extractfile("repositories"))  # type: ignore[arg-type]
    assert item["Config"] == hashlib.sha256(cfg_raw).hexdigest() + ".json"
    cfg = json.loads(cfg_raw)
    diff_id = hashlib.sha256(layer).hexdigest()
    assert cfg["rootfs"]["diff_ids"] == [f"sha256:{diff_id}"]
    assert (cfg["os"], cfg["architecture"], cfg["config"]["Cmd"]) == ("linux", "amd64", ["sh"])
    assert repositories == {"docker.io/library/busybox": {"1.35": diff_id}}
    files = _members(layer)
    assert files["bin"].isdir() and files["bin/sh"].issym() and files["bin/sh"].linkname == "busybox"
    assert files["bin/busybox"].mode == 0o755 and files["tmp"].mode == 0o1777
    assert {m.uid for m in files.values()} == {0}
    path = oci_image.write(_busybox_like(), tmp_path / "busybox.tar")
    assert oci_image.archive_problems(path) == (["docker.io/library/busybox:1.35"], [])


def test_archive_problems_name_a_layer_that_does_not_match_its_config(tmp_path: Path) -> None:
    image = k8s_server.pause_image(RECIPE, b"pause")
    good = oci_image.archive(image)
    members = _members(good)
    with tarfile.open(fileobj=io.BytesIO(good)) as src, tarfile.open(tmp_path / "bad.tar", "w") as dst:
        for name, info in members.items():
            fh = src.extractfile(info)
            data = fh.read() if fh is not None else b""
            if name.endswith("layer.tar"):
                data = oci_image.layer_tar([oci_image.Entry("pause", b"evil")])
                info.size = len(data)
            dst.addfile(info, io.BytesIO(data) if info.isfile() else None)
    refs, problems = oci_image.archive_problems(tmp_path / "bad.tar")
    assert refs == ["k8s.gcr.io/pause:3.2"]
    assert problems and "does not have the digest its config gives" in problems[0]
    (tmp_path / "junk.tar").write_bytes(b"not a tar")
    assert "not a readable image tarball" in oci_image.archive_problems(tmp_path / "junk.tar")[1][0]


@pytest.mark.parametrize(("ref", "split"), [("a/b:1", ("a/b", "1")), ("host:5000/b", ("host:5000/b", "latest"))])
def test_split_ref(ref: str, split: tuple[str, str]) -> None:
    assert oci_image.split_ref(ref) == split


def _layout(root: Path) -> Path:
    bin_dir = root / k8s_server.BIN_DIR
    bin_dir.mkdir(parents=True)
    for name in RECIPE.binaries:
        (bin_dir / name).write_bytes(b"\x7fELF " + name.encode())
        (bin_dir / name).chmod(0o755)
    oci_image.write(k8s_server.pause_image(RECIPE, b"pause"), bin_dir / "pause.tar")
    oci_image.write(_busybox_like(), bin_dir / "busybox.tar")
    k8s_server.write_manifest_and_sums(root, k8s_server.manifest_for(RECIPE, {"go": "go1.19.8"}))
    return root


def test_a_laid_out_bundle_checks_and_is_detected_as_its_kind(tmp_path: Path) -> None:
    root = _layout(tmp_path / "b")
    assert bundle.detect_kind(root, KINDS) == k8s_server.KIND
    result = k8s_server.check_bundle(root)
    assert result.files == 9 and result.images["pause"] == ["k8s.gcr.io/pause:3.2"]
    assert "v1.20.2" in result.summary() and "6 binaries" in result.summary()


def _upstream_scenario(tmp_path: Path, extra: str = "") -> Scenario:
    text = "name: kubernetes\nnodes:\n  - name: mgmt01\n    groups: [mgmt]\n"
    return parse_scenario(text + f"kubernetes: {{distribution: upstream{extra}}}\n", tmp_path / "scenario.yml")


def test_an_upstream_scenario_takes_the_cached_server_bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    sc = _upstream_scenario(tmp_path)
    with pytest.raises(HostError, match=r"harness bundle kubernetes") as info:
        k8s_bundle.preflight(sc)
    assert info.value.exit_code == 3
    root = _layout(k8s_server_build.cache_root() / RECIPE.cache_key())
    checked = k8s_bundle.preflight(sc)
    assert isinstance(checked, k8s_server.ServerBundle) and checked.root == root
    assert k8s_bundle.extra_vars(sc) == {"kubernetes_bundle_dir": str(root)}


def test_an_upstream_scenario_with_its_own_bundle_checks_it_as_a_server_bundle(tmp_path: Path) -> None:
    root = _layout(tmp_path / "site-release")
    (root / k8s_server.BIN_DIR / "kubelet").write_bytes(b"tampered")
    sc = _upstream_scenario(tmp_path, ", bundle: site-release")
    with pytest.raises(SpecError, match=r"kubelet"):
        k8s_bundle.preflight(sc)
    assert k8s_bundle.extra_vars(sc) == {"kubernetes_bundle_dir": str(root)}


def test_check_names_every_problem(tmp_path: Path) -> None:
    root = _layout(tmp_path / "b")
    bin_dir = root / k8s_server.BIN_DIR
    (bin_dir / "kubelet").chmod(0o644)
    (bin_dir / "kubeadm").write_bytes(b"replaced")
    oci_image.write(oci_image.Image("other/pause:1", [oci_image.Entry("pause", b"p")]), bin_dir / "pause.tar")
    (bin_dir / "kube-proxy").unlink()
    with pytest.raises(SpecError) as exc:
        k8s_server.check_bundle(root)
    text = "\n".join(exc.value.problems)
    assert "kubernetes/server/bin/kubeadm: SHA-256 is" in text
    assert "kubernetes/server/bin/kubelet: not executable" in text
    assert "kube-proxy: listed in bundle.yml but missing" in text
    assert "pause.tar: tagged other/pause:1, but bundle.yml says k8s.gcr.io/pause:3.2" in text


def test_openapi_inputs_are_the_tagged_packages_through_vendor_links_without_the_skipped(tmp_path: Path) -> None:
    tagged = "// +k8s:openapi-gen=true\npackage x\n"
    files = {
        "staging/src/k8s.io/api/core/v1/doc.go": tagged,
        "pkg/apis/apps/v1/doc.go": "//  +k8s:openapi-gen=false\npackage v1\n",
        "pkg/apis/untagged/doc.go": "// +k8s:deepcopy-gen=package\npackage untagged\n",
        "pkg/only/x_test.go": tagged,
        "pkg/testdata/x.go": tagged,
        "vendor/k8s.io/code-generator/x/doc.go": tagged,
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    (tmp_path / "vendor/k8s.io/api").symlink_to("../../staging/src/k8s.io/api")
    assert k8s_server.openapi_inputs(tmp_path, RECIPE.openapi_skip) == ["pkg/apis/apps/v1", "vendor/k8s.io/api/core/v1"]
    argv = RECIPE.openapi_argv("/w/openapi-gen", ["pkg/apis/apps/v1", "vendor/k8s.io/api/core/v1"], tmp_path / "r")
    assert (
        argv[argv.index("-i") + 1] == "k8s.io/kubernetes/pkg/apis/apps/v1,k8s.io/kubernetes/vendor/k8s.io/api/core/v1"
    )
    assert argv[argv.index("-p") + 1] == "k8s.io/kubernetes/pkg/generated/openapi"


class FakeTools:
    """apt-get, dpkg-source, dpkg-deb, go and gcc as the build calls them, making what they would make."""

    def __init__(self, fail: str | None = None) -> None:
        self.calls: list[tuple[str, Path, Mapping[str, str] | None]] = []
        self.fail = fail

    def __call__(self, argv: Sequence[str], cwd: Path, env: Mapping[str, str] | None) -> proc.CommandResult:
        tool = Path(argv[0]).name
        self.calls.append((" ".join(argv), cwd, env))
        if tool == self.fail:
            return proc.CommandResult(tuple(argv), 2, "", f"{tool}: broken", 0.0)
        if tool == "apt-get" and "source" in argv:
            (cwd / "kubernetes_1.dsc").write_text("dsc")
        elif tool == "apt-get" and "download" in argv:
            for name in argv[argv.index("download") + 1 :]:
                (cwd / f"{name}_1_all.deb").write_text(name)
        elif tool == "dpkg-source":
            tree = Path(argv[-1])
            (tree / "vendor/github.com/modern-go/reflect2").mkdir(parents=True)
            (tree / "vendor/github.com/modern-go/reflect2/v101.go").write_text("old")
            (tree / "build/pause/linux").mkdir(parents=True)
            (tree / "build/pause/linux/pause.c").write_text("int main(){}")
            (tree / "pkg/apis/core").mkdir(parents=True)
            (tree / "pkg/apis/core/doc.go").write_text("// +k8s:openapi-gen=true\npackage core\n")
        elif tool == "dpkg-deb":
            root = Path(argv[-1])
            for sub, name, data in [
                ("usr/share/gocode/src/github.com/modern-go/reflect2", "v102.go", "new"),
                ("bin", "busybox", "busybox"),
                ("usr/lib/go-1.19", "VERSION", "go1.19.8\n"),
            ]:
                (root / sub).mkdir(parents=True, exist_ok=True)
                (root / sub / name).write_text(data)
        elif tool == "go" and argv[-1].endswith("/openapi-gen"):
            Path(argv[argv.index("-o") + 1]).write_bytes(b"\x7fELF")
        elif tool == "openapi-gen":
            assert argv[argv.index("-i") + 1] == "k8s.io/kubernetes/pkg/apis/core"
            (cwd / "pkg/generated/openapi").mkdir(parents=True)
            (cwd / "pkg/generated/openapi/zz_generated.openapi.go").write_text("package openapi")
        elif tool == "go":
            assert (cwd / "pkg/generated/openapi/zz_generated.openapi.go").is_file()
            vendored = cwd / "vendor/github.com/modern-go/reflect2"
            assert sorted(p.name for p in vendored.iterdir()) == ["v102.go"]
            out = Path(argv[argv.index("-o") + 1])
            for pkg in argv[argv.index("-o") + 2 :]:
                (out / pkg.rsplit("/", 1)[1]).write_bytes(b"\x7fELF")
        elif tool in {"gcc", "cc"}:
            Path(argv[argv.index("-o") + 1]).write_bytes(b"\x7fELF pause")
        return proc.CommandResult(tuple(argv), 0, "", "", 0.0)


def test_build_runs_every_step_then_serves_the_cache(tmp_path: Path) -> None:
    tools = FakeTools()
    lines: list[str] = []
    result = k8s_server_build.build(root=tmp_path, runner=tools, progress=lines.append, require_cache=False)
    assert not result.cached and set(result.steps) == {"fetch", "unpack", "openapi", "go", "pause", "layout"}
    assert result.bundle.root == tmp_path / RECIPE.cache_key()
    assert k8s_server.check_bundle(result.bundle.root).files == 9
    assert any(line.startswith("go: go build of kube-apiserver") for line in lines)
    apt = [c for c, _cwd, _env in tools.calls if c.startswith("apt-get")]
    assert all("Acquire::http::Proxy=http://127.0.0.1:3142/" in c for c in apt)
    assert "source --download-only kubernetes=1.20.5+really1.20.2-1.1+deb12u1" in apt[1]
    go_env = next(env for c, _cwd, env in tools.calls if "/go build" in c)
    assert go_env is not None and go_env["GO111MODULE"] == "off"
    assert not (tmp_path / f"work-{RECIPE.cache_key()}").exists()
    again = FakeTools(fail="apt-get")
    assert k8s_server_build.build(root=tmp_path, runner=again, require_cache=False).cached
    assert again.calls == []


def test_a_failing_step_is_named_and_leaves_no_bundle(tmp_path: Path) -> None:
    with pytest.raises(k8s_server_build.BuildError, match=r"step openapi: `\S*/openapi-gen --logtostderr .*` exited 2"):
        k8s_server_build.build(root=tmp_path, runner=FakeTools(fail="openapi-gen"), require_cache=False)
    assert not (tmp_path / RECIPE.cache_key()).exists()
