"""The k3s air-gap bundle: checked before any VM boots (fake files here: no real bundle exists on a
build host without internet), resolved from the scenario or HARNESS_K3S_BUNDLE, and `harness bundle
check` / `harness run` / `harness up` exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from harness import bundle, k8s_bundle, lifecycle, playbook, preflight
from harness.cli import main
from harness.errors import HostError, SpecError
from harness.spec import Scenario, parse_scenario

ROOT = Path(__file__).resolve().parents[2]
DEVICE_PLUGIN = """\
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: nvidia-device-plugin-daemonset, namespace: kube-system}
spec:
  selector: {matchLabels: {name: nvidia-device-plugin-ds}}
  template:
    metadata: {labels: {name: nvidia-device-plugin-ds}}
    spec:
      nodeSelector: {nvidia.com/gpu.present: "true"}
      runtimeClassName: nvidia
      containers:
        - name: nvidia-device-plugin-ctr
          image: nvcr.io/nvidia/k8s-device-plugin:v0.17.0
"""
MANIFEST = {
    "k3s_version": "v1.31.4+k3s1",
    "architecture": "amd64",
    "images": {"gpu": ["images/nvidia-device-plugin.tar.zst", "images/cuda-base.tar.zst"]},
    "manifests": ["manifests/nvidia-device-plugin.yml"],
    "test_images": {"cuda": "nvcr.io/nvidia/cuda:12.6.3-base-ubuntu22.04"},
}


def make_bundle(root: Path, manifest: dict[str, object] | None = None) -> Path:
    """A bundle with the real layout and fake contents, and a correct SHA256SUMS."""
    files = {
        "k3s": b"\x7fELF not really k3s",
        "k3s-airgap-images-amd64.tar.zst": b"\x28\xb5\x2f\xfd not really images",
        "images/nvidia-device-plugin.tar.zst": b"plugin image",
        "images/cuda-base.tar.zst": b"cuda image",
        "manifests/nvidia-device-plugin.yml": DEVICE_PLUGIN.encode(),
        "bundle.yml": yaml.safe_dump(manifest or MANIFEST).encode(),
    }
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    (root / bundle.SUMS_FILE).write_text(bundle.sums_text(root, list(files)))
    return root


def problems_of(root: Path) -> list[str]:
    with pytest.raises(SpecError) as info:
        k8s_bundle.check_bundle(root)
    return info.value.problems


def test_a_good_bundle_passes(tmp_path: Path) -> None:
    checked = k8s_bundle.check_bundle(make_bundle(tmp_path))
    assert checked.manifest.k3s_version == "v1.31.4+k3s1"
    assert len(checked.files.verified) == 6
    assert "k3s v1.31.4+k3s1 (amd64), 6 files verified" in checked.summary() and "gpu (2)" in checked.summary()


def test_missing_release_files_say_where_to_download_them(tmp_path: Path) -> None:
    root = make_bundle(tmp_path)
    (root / "k3s").unlink()
    (root / "k3s-airgap-images-amd64.tar.zst").unlink()
    problems = problems_of(root)
    assert problems == [
        "k3s: missing; download the asset `k3s` of k3s v1.31.4+k3s1: "
        "https://github.com/k3s-io/k3s/releases/download/v1.31.4%2Bk3s1/k3s and save it as `k3s`",
        "k3s-airgap-images-amd64.tar.zst: missing; download the asset `k3s-airgap-images-amd64.tar.zst` of k3s "
        "v1.31.4+k3s1: https://github.com/k3s-io/k3s/releases/download/v1.31.4%2Bk3s1/k3s-airgap-images-amd64.tar.zst",
    ]


def test_a_missing_image_tarball_says_how_to_save_it(tmp_path: Path) -> None:
    root = make_bundle(tmp_path)
    (root / "images" / "cuda-base.tar.zst").unlink()
    [problem] = problems_of(root)
    assert problem.startswith("images/cuda-base.tar.zst: missing; named in bundle.yml images.gpu: save the image")


def test_a_tampered_file_is_a_checksum_mismatch(tmp_path: Path) -> None:
    root = make_bundle(tmp_path)
    (root / "k3s").write_bytes(b"\x7fELF something else")
    [problem] = problems_of(root)
    assert problem.startswith("k3s: SHA-256 is ") and "but SHA256SUMS says" in problem


def test_unlisted_and_unnamed_files_are_reported(tmp_path: Path) -> None:
    root = make_bundle(tmp_path)
    (root / "images" / "stray.tar").write_bytes(b"stray")
    problems = problems_of(root)
    assert problems[0].startswith("images/stray.tar: not listed in SHA256SUMS")
    assert problems[1].startswith("images/stray.tar: not named in bundle.yml")


def test_no_sums_file(tmp_path: Path) -> None:
    root = make_bundle(tmp_path)
    (root / "SHA256SUMS").unlink()
    [problem] = problems_of(root)
    assert problem.startswith("SHA256SUMS: missing; make it in the bundle directory:")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"k3s_versoin": "v1.31.4+k3s1"}, "bundle.yml: k3s_versoin: unknown key (check the spelling)"),
        ({"k3s_version": "1.31"}, "bundle.yml: k3s_version: '1.31' is not a k3s release name like v1.31.4+k3s1"),
        ({"k3s_version": "v1.27.9+k3s1"}, "bundle.yml: k3s_version: v1.27.9+k3s1 is older than v1.29"),
        ({"architecture": "riscv64"}, "bundle.yml: architecture: Input should be 'amd64' or 'arm64'"),
        (
            {"images": {"gpu": ["nvidia.tar"]}},
            "bundle.yml: images.gpu[0]: 'nvidia.tar' must be a file directly under images/",
        ),
        ({"images": {"gpu": ["images/x.rpm"]}}, "bundle.yml: images.gpu[0]: 'images/x.rpm' must end with one of .tar"),
        ({"images": {"bad group": []}}, "bundle.yml: images.bad group: 'bad group': group names are"),
        ({"manifests": ["../etc/x.yml"]}, "bundle.yml: manifests[0]: '../etc/x.yml' must not contain"),
    ],
)
def test_bad_bundle_yml_keys_are_named(tmp_path: Path, change: dict[str, object], expected: str) -> None:
    manifest = {**MANIFEST, **change}
    if "k3s_versoin" in change:
        del manifest["k3s_version"]
    problems = problems_of(make_bundle(tmp_path, manifest))
    assert any(p.startswith(expected) for p in problems), problems


def test_a_manifest_that_is_no_kubernetes_object(tmp_path: Path) -> None:
    root = make_bundle(tmp_path)
    (root / "manifests" / "nvidia-device-plugin.yml").write_text("just: data\n---\n- a list\n")
    listed = [n for n in bundle.files_under(root) if n != bundle.SUMS_FILE]
    (root / bundle.SUMS_FILE).write_text(bundle.sums_text(root, listed))
    problems = [p for p in problems_of(root) if p.startswith("manifests/")]
    assert problems == [
        "manifests/nvidia-device-plugin.yml: document 1 is not a Kubernetes object (no apiVersion or kind)",
        "manifests/nvidia-device-plugin.yml: document 2 is not a Kubernetes object (no apiVersion or kind)",
    ]


def _with_plugin_manifest(root: Path, text: str) -> Path:
    (root / "manifests" / "nvidia-device-plugin.yml").write_text(text)
    listed = [n for n in bundle.files_under(root) if n != bundle.SUMS_FILE]
    (root / bundle.SUMS_FILE).write_text(bundle.sums_text(root, listed))
    return root


def test_a_bundle_without_the_device_plugin_daemonset_says_where_to_get_it(tmp_path: Path) -> None:
    root = _with_plugin_manifest(
        make_bundle(tmp_path), "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: other, namespace: kube-system}\n"
    )
    [problem] = problems_of(root)
    assert problem.startswith("bundle.yml: manifests: no DaemonSet named *nvidia-device-plugin*")
    assert "NVIDIA/k8s-device-plugin" in problem and 'nodeSelector: {nvidia.com/gpu.present: "true"}' in problem


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            '      nodeSelector: {nvidia.com/gpu.present: "true"}\n',
            "",
            "does not select the nodes labelled nvidia.com/gpu.present=true",
        ),
        (
            '{nvidia.com/gpu.present: "true"}',
            "{nvidia.com/gpu.present: true}",
            'its nodeSelector nvidia.com/gpu.present: True must be the string "true"',
        ),
        (
            '{nvidia.com/gpu.present: "true"}',
            '{kubernetes.io/os: "linux"}',
            "does not select the nodes labelled nvidia.com/gpu.present=true",
        ),
    ],
)
def test_a_device_plugin_that_would_run_on_every_node_is_refused(
    tmp_path: Path, old: str, new: str, expected: str
) -> None:
    assert old in DEVICE_PLUGIN
    root = _with_plugin_manifest(make_bundle(tmp_path), DEVICE_PLUGIN.replace(old, new))
    [problem] = problems_of(root)
    assert problem.startswith("manifests/nvidia-device-plugin.yml: DaemonSet nvidia-device-plugin-daemonset: ")
    assert expected in problem, problem


def test_a_device_plugin_selecting_gpu_nodes_by_node_affinity_passes(tmp_path: Path) -> None:
    affinity = (
        "      affinity:\n        nodeAffinity:\n          requiredDuringSchedulingIgnoredDuringExecution:\n"
        "            nodeSelectorTerms:\n              - matchExpressions:\n"
        '                  - {key: nvidia.com/gpu.present, operator: In, values: ["true"]}\n'
    )
    text = DEVICE_PLUGIN.replace('      nodeSelector: {nvidia.com/gpu.present: "true"}\n', affinity)
    assert k8s_bundle.check_bundle(_with_plugin_manifest(make_bundle(tmp_path), text)).files.verified


def test_an_empty_directory_names_every_missing_piece(tmp_path: Path) -> None:
    problems = problems_of(tmp_path)
    assert [p.split(":")[0] for p in problems] == ["bundle.yml", "SHA256SUMS", "k3s", "k3s-airgap-images-amd64.tar.zst"]
    assert "https://github.com/k3s-io/k3s/releases" in problems[2]


# --- which bundle a scenario uses, and the CLI ----------------------------------------------------


def _scenario(tmp_path: Path, kubernetes: str | None) -> Scenario:
    text = "name: k8s\nnodes:\n  - name: mgmt01\n    groups: [mgmt]\n"
    if kubernetes is not None:
        text += f"kubernetes: {kubernetes}\n"
    return parse_scenario(text, tmp_path / "scenario.yml")


def test_without_kubernetes_no_bundle_is_needed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(k8s_bundle.ENV, raising=False)
    sc = _scenario(tmp_path, None)
    assert k8s_bundle.preflight(sc) is None and k8s_bundle.extra_vars(sc) == {}


def test_the_scenario_key_wins_over_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_bundle(tmp_path / "bundle")
    monkeypatch.setenv(k8s_bundle.ENV, str(tmp_path / "elsewhere"))
    sc = _scenario(tmp_path, "{bundle: bundle}")
    assert k8s_bundle.extra_vars(sc) == {"k3s_bundle_dir": str(tmp_path / "bundle")}
    assert k8s_bundle.preflight(sc) is not None


def test_the_environment_is_used_when_the_key_is_absent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_bundle(tmp_path / "b")
    monkeypatch.setenv(k8s_bundle.ENV, str(tmp_path / "b"))
    checked = k8s_bundle.preflight(_scenario(tmp_path, "{}"))
    assert checked is not None and checked.root == tmp_path / "b"


def test_no_bundle_given_is_a_host_error_saying_how_to_get_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(k8s_bundle.ENV, raising=False)
    with pytest.raises(
        HostError, match=r"needs a k3s air-gap bundle, but none is given: set kubernetes.bundle"
    ) as info:
        k8s_bundle.preflight(_scenario(tmp_path, "{}"))
    assert info.value.exit_code == 3 and "github.com/k3s-io/k3s/releases" in str(info.value)


def test_a_bundle_path_that_is_not_there_is_a_host_error(tmp_path: Path) -> None:
    with pytest.raises(HostError, match=r"is not a directory"):
        k8s_bundle.preflight(_scenario(tmp_path, "{bundle: /nonexistent/bundle}"))


def test_a_broken_bundle_is_bad_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_bundle(tmp_path / "b")
    (root / "k3s").write_bytes(b"tampered")
    monkeypatch.setenv(k8s_bundle.ENV, str(root))
    with pytest.raises(SpecError) as info:
        lifecycle.check_playbook(_scenario(tmp_path, "{}"))
    assert info.value.exit_code == 2 and info.value.problems[0].startswith("k3s: SHA-256 is")


def test_cli_bundle_check(tmp_path: Path) -> None:
    root = make_bundle(tmp_path / "b")
    ok = CliRunner().invoke(main, ["bundle", "check", str(root)])
    assert ok.exit_code == 0 and "ok — k3s v1.31.4+k3s1 (amd64), 6 files verified" in ok.output
    (root / "k3s").unlink()
    bad = CliRunner().invoke(main, ["bundle", "check", str(root)])
    assert bad.exit_code == 2 and "k3s: missing; download the asset `k3s`" in bad.output
    assert "Traceback" not in bad.output


@pytest.mark.parametrize("command", ["run", "up"])
def test_run_and_up_without_a_bundle_exit_3_before_creating_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    monkeypatch.delenv(k8s_bundle.ENV, raising=False)
    monkeypatch.setenv("HARNESS_RUNS_DIR", str(tmp_path / "runs"))

    def must_not_be_called(*_args: object) -> None:
        raise AssertionError("nothing may be created or probed before the bundle check")

    monkeypatch.setattr(preflight, "check_box", must_not_be_called)
    monkeypatch.setattr(playbook, "syntax_check", must_not_be_called)
    res = CliRunner().invoke(main, [command, str(ROOT / "scenarios" / "k8s" / "scenario.yml")])
    assert res.exit_code == 3, res.output
    assert "needs a k3s air-gap bundle" in res.output and "HARNESS_K3S_BUNDLE" in res.output
    assert not (tmp_path / "runs").exists()
