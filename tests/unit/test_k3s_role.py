"""roles/k3s's templates rendered with jinja2 from the role's own defaults and vars, for a server, an
agent and an agent with a GPU; pinned by golden files under tests/fixtures/k3s/ (regenerate with
`pytest --update-golden` or HARNESS_UPDATE_GOLDEN=1)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta
import jinja2.nativetypes
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "roles" / "k3s"
GOLDEN = ROOT / "tests" / "fixtures" / "k3s"
ANSIBLE_MANAGED = "Ansible managed"


def _comment(text: str) -> str:
    """Ansible's `comment` filter, plain style."""
    return "#\n" + "\n".join(f"# {line}" if line else "#" for line in str(text).splitlines()) + "\n#"


def _bool(value: Any) -> bool:
    return value if isinstance(value, bool) else str(value).strip().lower() in ("yes", "on", "1", "true", "y")


def _dict2items(value: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [{"key": k, "value": v} for k, v in value.items()]


def _flatten(value: Iterable[Any]) -> list[Any]:
    out: list[Any] = []
    for item in value:
        out.extend(_flatten(item) if isinstance(item, list) else [item])
    return out


def _intersect(a: Iterable[Any], b: Iterable[Any]) -> list[Any]:
    bs = list(b)
    return [x for x in dict.fromkeys(a) if x in bs]


FILTERS = {
    "comment": _comment,
    "bool": _bool,
    "dict2items": _dict2items,
    "flatten": _flatten,
    "intersect": _intersect,
    "to_json": json.dumps,
    "unique": lambda value: list(dict.fromkeys(value)),  # Ansible's: a list (jinja2's is a generator)
}


def _env(cls: type[jinja2.Environment]) -> jinja2.Environment:
    env = cls(undefined=jinja2.StrictUndefined, trim_blocks=True, keep_trailing_newline=True)
    env.filters.update(FILTERS)
    return env


def resolve(raw: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    """Ansible's lazy variables, eagerly: render every '{{ }}' string once all the variables it
    names are resolved (native types, so lists stay lists)."""
    env = _env(jinja2.nativetypes.NativeEnvironment)
    done: dict[str, Any] = dict(context)
    pending = {k: v for k, v in raw.items() if k not in context}
    while pending:
        progress = False
        for name, value in list(pending.items()):
            if not (isinstance(value, str) and "{{" in value):
                done[name] = value
            else:
                needs = jinja2.meta.find_undeclared_variables(env.parse(value)) & set(pending) - {name}
                if needs:
                    continue
                done[name] = env.from_string(value).render(done)
            del pending[name]
            progress = True
        assert progress, f"variables that name each other: {sorted(pending)}"
    return done


def _yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    return dict(data or {})


def host_vars(node: str, *, gpus: list[str], overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What a converge of `node` sees: the inventory of the k8s scenario, facts, the GPU probe."""
    ips = {"mgmt01": "10.77.0.11", "gpu01": "10.77.0.21", "gpu02": "10.77.0.22"}
    groups = {"all": list(ips), "mgmt": ["mgmt01"], "gpu": ["gpu01", "gpu02"], "login": []}
    facts = {
        "interfaces": ["lo", "eth0", "eth1"],
        "lo": {"device": "lo", "ipv4": {"address": "127.0.0.1"}},
        "eth0": {"device": "eth0", "ipv4": {"address": "192.168.121.15"}},
        "eth1": {"device": "eth1", "ipv4": {"address": ips[node]}},
        "default_ipv4": {"address": "192.168.121.15", "interface": "eth0"},
    }
    context: dict[str, Any] = {
        "inventory_hostname": node,
        "group_names": [g for g, members in groups.items() if node in members and g != "all"],
        "groups": groups,
        "hostvars": {
            n: {"harness_private_ip": ip, "ansible_facts": {"default_ipv4": {"address": "192.168.121.15"}}}
            for n, ip in ips.items()
        },
        "harness_private_ip": ips[node],
        "ansible_facts": facts,
        "ansible_play_hosts_all": list(ips),
        "ansible_managed": ANSIBLE_MANAGED,
        "__nvidia_common_gpu_probe": {"stdout_lines": gpus},
        "__k3s_bundle": {
            "k3s_version": "v1.31.4+k3s1",
            "architecture": "amd64",
            "images": {"gpu": ["images/nvidia-device-plugin.tar.zst"], "all": ["images/extra.tar"]},
            "manifests": ["manifests/nvidia-device-plugin.yml"],
        },
        **(overrides or {}),
    }
    raw = {**_yaml(ROLE / "defaults" / "main.yml"), **_yaml(ROLE / "vars" / "main.yml")}
    return resolve({k: v for k, v in raw.items() if k not in context}, context)


def render(template: str, variables: Mapping[str, Any]) -> str:
    env = _env(jinja2.Environment)
    return env.from_string((ROLE / "templates" / template).read_text()).render(variables)


CASES = {
    "server": ("mgmt01", []),
    "agent": ("gpu02", []),
    "gpu-agent": ("gpu01", ["0000:08:00.0"]),
}


GOLDEN_CASES = [
    *[("config.yaml.j2", c) for c in sorted(CASES)],
    *[("k3s.service.j2", c) for c in ("agent", "server")],
    ("k3s-default-route.service.j2", "agent"),
]


@pytest.mark.parametrize(("template", "case"), GOLDEN_CASES)
def test_golden(template: str, case: str, update_golden: bool) -> None:
    node, gpus = CASES[case]
    text = render(template, host_vars(node, gpus=gpus))
    golden = GOLDEN / f"{template.removesuffix('.j2')}.{case}"
    if update_golden or os.environ.get("HARNESS_UPDATE_GOLDEN") == "1":
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
    assert text == golden.read_text(), f"output differs from {golden}; rerun with --update-golden if intended"


def test_server_config() -> None:
    config = yaml.safe_load(render("config.yaml.j2", host_vars("mgmt01", gpus=[])))
    assert config["node-ip"] == config["advertise-address"] == "10.77.0.11"
    assert config["flannel-iface"] == "eth1"  # the interface with the private IP, not the default route's
    assert config["tls-san"] == ["10.77.0.11"]
    assert config["disable"] == ["traefik", "servicelb"]
    assert config["node-taint"] == ["node-role.kubernetes.io/control-plane:NoSchedule"]
    assert config["token-file"] == "/etc/rancher/k3s/cluster-token" and "token" not in config
    assert "server" not in config


def test_agent_config_joins_the_server_over_the_private_network() -> None:
    config = yaml.safe_load(render("config.yaml.j2", host_vars("gpu02", gpus=[])))
    assert config["server"] == "https://10.77.0.11:6443"
    assert config["node-ip"] == "10.77.0.22" and config["flannel-iface"] == "eth1"
    assert not {"node-label", "default-runtime", "tls-san", "node-taint"} & set(config)


def test_gpu_agent_gets_the_label_and_the_nvidia_runtime() -> None:
    config = yaml.safe_load(render("config.yaml.j2", host_vars("gpu01", gpus=["0000:08:00.0"])))
    assert config["node-label"] == ["nvidia.com/gpu.present=true"]
    assert config["default-runtime"] == "nvidia"


def test_extra_config_replaces_the_roles_keys_instead_of_repeating_them() -> None:
    extra = {"k3s_server_config": {"disable": ["traefik"], "kube-apiserver-arg": ["audit-log-maxage=7"], "debug": True}}
    text = render("config.yaml.j2", host_vars("mgmt01", gpus=[], overrides=extra))
    config = yaml.safe_load(text)
    assert text.count("\ndisable:") == 1  # k3s refuses a config.yaml with a key twice
    assert config["disable"] == ["traefik"]
    assert config["kube-apiserver-arg"] == ["audit-log-maxage=7"] and config["debug"] is True


def test_units_and_node_images() -> None:
    server, agent = host_vars("mgmt01", gpus=[]), host_vars("gpu01", gpus=["0000:08:00.0"])
    assert (server["_k3s_role"], server["_k3s_unit"]) == ("server", "k3s")
    assert (agent["_k3s_role"], agent["_k3s_unit"]) == ("agent", "k3s-agent")
    assert "ExecStart=/usr/local/bin/k3s server --config /etc/rancher/k3s/config.yaml" in render(
        "k3s.service.j2", server
    )
    assert "Type=exec" in render("k3s.service.j2", agent)
    # Images of the node's groups and of `all`; the server (group mgmt) gets only `all`'s.
    assert sorted(agent["_k3s_node_images"]) == ["images/extra.tar", "images/nvidia-device-plugin.tar.zst"]
    assert server["_k3s_node_images"] == ["images/extra.tar"]
    assert server["_k3s_cluster_nodes"] == ["mgmt01", "gpu01", "gpu02"]
    assert server["_k3s_airgap_images"] == "k3s-airgap-images-amd64.tar.zst"


def test_a_node_in_neither_group_is_left_alone() -> None:
    other = host_vars("mgmt01", gpus=[], overrides={"k3s_server_host": "gpu02", "groups": {"mgmt": [], "gpu": []}})
    assert other["_k3s_role"] == "none"


def test_every_public_variable_is_in_the_argument_spec() -> None:
    spec = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    defaults = _yaml(ROLE / "defaults" / "main.yml")
    assert set(defaults) == set(spec)
    for name, value in defaults.items():
        if "default" in spec[name]:
            assert spec[name]["default"] == value, name


def test_the_default_route_fallback_is_only_for_nodes_without_one() -> None:
    routed = host_vars("gpu01", gpus=[])  # a default route through eth0
    assert routed["_k3s_manage_default_route"] is False
    facts = routed["ansible_facts"]
    air_gapped = {**facts, "default_ipv4": {}}
    assert host_vars("gpu01", gpus=[], overrides={"ansible_facts": air_gapped})["_k3s_manage_default_route"] is True
    ours = {**facts, "default_ipv4": {"interface": "k3s-default", "address": "10.77.0.21"}}
    assert host_vars("gpu01", gpus=[], overrides={"ansible_facts": ours})["_k3s_manage_default_route"] is True
    off = {"ansible_facts": air_gapped, "k3s_default_route_fallback": False}
    assert host_vars("gpu01", gpus=[], overrides=off)["_k3s_manage_default_route"] is False


def _tasks(path: Path) -> list[dict[str, Any]]:
    return [t for t in yaml.safe_load(path.read_text()) or [] if isinstance(t, dict)]


def test_every_task_that_touches_the_join_token_has_no_log() -> None:
    tasks = _tasks(ROLE / "tasks" / "token.yml")
    assert len(tasks) >= 4
    assert [t["name"] for t in tasks if t.get("no_log") is not True] == []
    # Only the file's name reaches config.yaml and the unit; no variable holds the token elsewhere.
    others = [p for p in (ROLE / "tasks").glob("*.yml") if p.name != "token.yml"]
    assert not any("__k3s_cluster_token" in p.read_text() or "__k3s_node_token" in p.read_text() for p in others)
    for template in (ROLE / "templates").glob("*.j2"):
        assert "__k3s_cluster_token" not in template.read_text(), template


def test_gpu_nodes_get_the_toolkit_alone_before_k3s() -> None:
    """scenarios/k8s/kubernetes.yml: the NVIDIA container toolkit in its toolkit-only mode (no engine,
    no engine config) on the gpu group before k3s, whose containerd then finds the nvidia runtime
    that roles/k3s asserts on GPU agents."""
    plays = yaml.safe_load((ROOT / "scenarios" / "k8s" / "kubernetes.yml").read_text())
    roles_in_order = [(p["hosts"], r["role"], r.get("vars", {})) for p in plays for r in p["roles"]]
    names = [r for _, r, _ in roles_in_order]
    assert names.index("nvidia_container_toolkit") < names.index("k3s")
    hosts, _, toolkit_vars = roles_in_order[names.index("nvidia_container_toolkit")]
    assert hosts == "gpu" and toolkit_vars == {"nvidia_container_toolkit_runtime": "none"}
    toolkit = ROOT / "roles" / "nvidia_container_toolkit"
    internal = _yaml(toolkit / "vars" / "main.yml")
    assert internal["_nvidia_container_toolkit_engine_packages"]["none"] == []
    assert (
        internal["_nvidia_container_toolkit_runtime_binary"]
        == _yaml(ROLE / "vars" / "main.yml")["_k3s_nvidia_runtime_binary"]
    )
    engine_steps = {
        t["ansible.builtin.import_tasks"]: t["when"]
        for t in _tasks(toolkit / "tasks" / "install.yml")
        if "ansible.builtin.import_tasks" in t
    }
    assert engine_steps == {
        "docker.yml": "nvidia_container_toolkit_runtime == 'docker'",
        "containerd.yml": "nvidia_container_toolkit_runtime == 'containerd'",
    }
    spec = yaml.safe_load((toolkit / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]
    assert "none" in spec["options"]["nvidia_container_toolkit_runtime"]["choices"]
