"""roles/kubernetes, read as data: its public variables all specified, secrets never logged, every
binary it installs one the server bundle has."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from harness import k8s_server

ROLE = Path(__file__).resolve().parents[2] / "roles" / "kubernetes"
# What makes a task touch key material: the CA and certificates, kubeconfigs, worker credentials.
SECRET_MARKERS = ("kubeadm init phase", "kubeconfig user", "__kubernetes_creds", "node_creds_dir }}/", "pki_dir }}/ca")


def _tasks() -> list[tuple[str, dict[str, Any]]]:
    return [
        (p.name, t)
        for p in sorted((ROLE / "tasks").glob("*.yml"))
        for t in yaml.safe_load(p.read_text()) or []
        if isinstance(t, dict)
    ]


def test_every_public_variable_is_in_the_argument_spec_with_its_default() -> None:
    spec = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    assert set(defaults) == set(spec)
    for name, value in defaults.items():
        if "default" in spec[name]:
            assert spec[name]["default"] == value, name


def test_every_task_that_touches_key_material_has_no_log() -> None:
    touching = [(f, t) for f, t in _tasks() if any(m in yaml.safe_dump(t) for m in SECRET_MARKERS)]
    assert len(touching) >= 6
    assert [f"{f}: {t['name']}" for f, t in touching if t.get("no_log") is not True] == []


def test_every_task_is_named_fqcn_and_tagged() -> None:
    for file, task in _tasks():
        module = next(k for k in task if "." in k and k.split(".")[0] in {"ansible", "community"})
        assert module.count(".") == 2, (file, task["name"])
        assert task.get("tags"), (file, task["name"])


def test_the_role_installs_only_binaries_and_images_the_server_bundle_has() -> None:
    internal = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())
    wanted = internal["_kubernetes_control_plane_binaries"] + internal["_kubernetes_worker_binaries"]
    assert set(wanted) <= set(k8s_server.Recipe().binaries)
    assert internal["_kubernetes_bundle_bin"] == k8s_server.BIN_DIR
    # containerd's sandbox image is the bundle's pause image, by its reference in bundle.yml.
    assert "_kubernetes_images.pause.ref" in (ROLE / "templates" / "containerd-config.toml.j2").read_text()
