"""roles/k3s run by real ansible-playbook, without a cluster: its templates rendered exactly as the
golden files; its configure part (join token, config.yaml, units, manifests) converged on three
stand-in nodes (local connection, every path redirected under tmp_path, a stand-in systemctl),
again with no change, and in check mode; and the syntax check of the k8s playbooks.

What needs a real node (the binary, images, apt, kernel modules, k3s starting, nodes Ready) is the
VM test's (tests/vm/test_k8s.py)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import k8s_bundle, playbook, tools
from harness.spec import load_scenario
from tests.unit.test_k3s_role import GOLDEN, GOLDEN_CASES, ROLE, ROOT, host_vars
from tests.unit.test_k8s_bundle import make_bundle

pytestmark = pytest.mark.ansible  # real ansible-playbook: CI runs these on the oldest ansible-core too

# gpu01 has a GPU (the gpu-agent golden case), gpu02 none (agent), mgmt01 is the server.
NODES = {"mgmt01": ("10.77.0.11", []), "gpu01": ("10.77.0.21", ["0000:08:00.0"]), "gpu02": ("10.77.0.22", [])}
CASES = {"server": "mgmt01", "agent": "gpu02", "gpu-agent": "gpu01"}
# Answers `show UNIT` as an active unit, anything else with success; logs every call.
FAKE_SYSTEMCTL = """#!/bin/sh
echo "$*" >> "$FAKE_SYSTEMCTL_LOG"
case "$1" in
  show) printf 'Id=%s\\nLoadState=loaded\\nActiveState=active\\nSubState=running\\nUnitFileState=enabled\\n' "$2" ;;
  is-enabled) echo enabled ;;
esac
exit 0
"""


def _ansible_playbook() -> str:
    found = tools.which("ansible-playbook")
    if found is None:
        pytest.skip("ansible-playbook is not installed (ci/bootstrap.sh installs it into .venv)")
    return found


def _stand_in_nodes(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """An inventory of the k8s scenario's nodes, all reached with the local connection, their facts
    in a fact cache (host_vars': eth1 has the private IP); and the environment to run Ansible with."""
    cache = tmp_path / "facts"
    cache.mkdir()
    hosts: dict[str, Any] = {}
    for node, (ip, gpus) in NODES.items():
        seen = host_vars(node, gpus=gpus)
        hosts[node] = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
        hosts[node]["harness_private_ip"] = ip
        facts = json.dumps({f"ansible_{k}": v for k, v in seen["ansible_facts"].items()})
        # ansible-core <= 2.18 reads `NODE` (the facts); 2.19 reads `s1_NODE` (them as a payload).
        (cache / node).write_text(facts)
        (cache / f"s1_{node}").write_text(json.dumps({"__payload__": facts}))
    children: dict[str, Any] = {"mgmt": {"hosts": {"mgmt01": {}}}, "gpu": {"hosts": {"gpu01": {}, "gpu02": {}}}}
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": hosts, "children": children}}))
    env = {
        **os.environ,
        "ANSIBLE_CACHE_PLUGIN": "jsonfile",
        "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(cache),
        "ANSIBLE_CACHE_PLUGIN_TIMEOUT": "0",
        "ANSIBLE_GATHERING": "explicit",
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp"),
        "ANSIBLE_HOME": str(tmp_path / "home"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
        "ANSIBLE_ROLES_PATH": str(ROOT / "roles"),
    }
    return inventory, env


def _run(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-4000:]
    return proc


def test_real_ansible_renders_the_templates_as_the_golden_files(tmp_path: Path) -> None:
    """The golden files come from a jinja2 stand-in for Ansible's templating (test_k3s_role);
    ansible-playbook's template module must write exactly the same files."""
    tool = _ansible_playbook()
    inventory, env = _stand_in_nodes(tmp_path)
    out = tmp_path / "out"
    probe = {"stdout_lines": "{{ ['0000:08:00.0'] if inventory_hostname == 'gpu01' else [] }}"}
    bundle_yml = host_vars("mgmt01", gpus=[])["__k3s_bundle"]
    play = {
        "name": "Render roles/k3s's templates",
        "hosts": "mgmt:gpu",
        "gather_facts": False,
        "vars_files": [str(ROLE / "defaults" / "main.yml"), str(ROLE / "vars" / "main.yml")],
        "vars": {"__nvidia_common_gpu_probe": probe, "__k3s_bundle": bundle_yml},
        "tasks": [
            {
                "name": "Make the output directory",
                "ansible.builtin.file": {"path": f"{out}/{{{{ inventory_hostname }}}}", "state": "directory"},
            },
            {
                "name": "Render",
                "ansible.builtin.template": {
                    "src": f"{ROLE}/templates/{{{{ item }}}}",
                    "dest": f"{out}/{{{{ inventory_hostname }}}}/{{{{ item | regex_replace('[.]j2$', '') }}}}",
                    "mode": "0644",
                },
                "loop": sorted(p.name for p in (ROLE / "templates").glob("*.j2")),
            },
        ],
    }
    (tmp_path / "render.yml").write_text(yaml.safe_dump([play], sort_keys=False))
    _run([tool, "-i", str(inventory), str(tmp_path / "render.yml")], tmp_path, env)
    compared = 0
    for golden in sorted(GOLDEN.iterdir()):
        name, case = golden.name.rsplit(".", 1)
        node = CASES[case]
        assert (out / node / name).read_text() == golden.read_text(), f"{node}: {name} differs from {golden}"
        compared += 1
    assert compared == len(GOLDEN_CASES)


@pytest.mark.parametrize("scenario", ["scenario.yml", "slurm-k8s.yml"])
def test_the_k8s_playbooks_pass_the_syntax_check(
    scenario: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ansible-playbook --syntax-check` of scenarios/k8s/site.yml and site-slurm-k8s.yml with the run's
    roles (no bundle needed: the check resolves roles and modules, it reads no bundle)."""
    _ansible_playbook()
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv(k8s_bundle.ENV, raising=False)
    check = playbook.syntax_check(load_scenario(str(ROOT / "scenarios" / "k8s" / scenario), []))
    assert check.ok, check.problems


# --- the configure part, converged on stand-in nodes ---------------------------------------------


class StandIn:
    """roles/k3s with tags k3s_configure on the stand-in nodes; each node's files under root/<node>/."""

    def __init__(self, tmp_path: Path, root: Path) -> None:
        self.tool = _ansible_playbook()
        self.tmp, self.root = tmp_path, root
        self.inventory, self.env = _stand_in_nodes(tmp_path)
        fake_bin = tmp_path / "bin"
        fake_bin.mkdir()
        (fake_bin / "systemctl").write_text(FAKE_SYSTEMCTL)
        (fake_bin / "systemctl").chmod(0o755)
        self.systemctl_log = tmp_path / "systemctl.log"
        self.env |= {"PATH": f"{fake_bin}{os.pathsep}{self.env.get('PATH', '')}"}
        self.env |= {"FAKE_SYSTEMCTL_LOG": str(self.systemctl_log), "ANSIBLE_STDOUT_CALLBACK": "json"}
        runtime = tmp_path / "nvidia-container-runtime"  # what the toolkit installs on a GPU agent
        runtime.write_text("#!/bin/sh\n")
        node = f"{root}/{{{{ inventory_hostname }}}}"
        extra = {
            "k3s_bundle_dir": str(make_bundle(tmp_path / "bundle")),
            "__nvidia_common_gpu_probe": {
                "stdout_lines": "{{ ['0000:08:00.0'] if inventory_hostname == 'gpu01' else [] }}"
            },
            "_k3s_nvidia_runtime_binary": str(runtime),
            "_k3s_config_dir": f"{node}/etc/rancher/k3s",
            "_k3s_config_path": f"{node}/etc/rancher/k3s/config.yaml",
            "_k3s_token_path": f"{node}/etc/rancher/k3s/cluster-token",
            "_k3s_bundle_record": f"{node}/etc/rancher/k3s/bundle.yml",
            "_k3s_manifests_dir": f"{node}/var/lib/rancher/k3s/server/manifests",
            "_k3s_systemd_dir": f"{node}/etc/systemd/system",
        }
        (tmp_path / "extra.json").write_text(json.dumps(extra))
        play = {"name": "k3s", "hosts": "mgmt:gpu", "gather_facts": False, "roles": [{"role": "k3s"}]}
        (tmp_path / "site.yml").write_text(yaml.safe_dump([play], sort_keys=False))

    def make_dirs(self) -> None:
        """What the role's install part makes before configure runs."""
        for node in NODES:
            (self.root / node / "etc" / "rancher" / "k3s").mkdir(parents=True)
            (self.root / node / "etc" / "systemd" / "system").mkdir(parents=True)

    def converge(self, *flags: str) -> tuple[dict[str, Any], str]:
        """(the json callback's stats per host, everything Ansible printed)."""
        argv = [self.tool, "-i", str(self.inventory), "-e", f"@{self.tmp / 'extra.json'}", "--tags", "k3s_configure"]
        proc = _run([*argv, *flags, str(self.tmp / "site.yml")], self.tmp, self.env)
        return json.loads(proc.stdout)["stats"], proc.stdout + proc.stderr

    def token(self, node: str) -> Path:
        return self.root / node / "etc" / "rancher" / "k3s" / "cluster-token"

    def systemctl_calls(self) -> list[str]:
        return self.systemctl_log.read_text().splitlines() if self.systemctl_log.exists() else []


def _needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("the role makes files owned by root: run as root (CI does)")


def test_configure_converges_makes_one_token_never_printed_and_changes_nothing_the_second_time(
    tmp_path: Path,
) -> None:
    _needs_root()
    nodes = StandIn(tmp_path, tmp_path / "nodes")
    nodes.make_dirs()
    stats, printed = nodes.converge()
    assert all(stats[n]["changed"] > 0 and stats[n]["failures"] == 0 for n in NODES), stats
    token = nodes.token("mgmt01").read_text()
    assert len(token) == 64 and int(token, 16) >= 0  # 32 random bytes, hex
    for node in NODES:
        assert nodes.token(node).read_text() == token, node
        assert stat.S_IMODE(nodes.token(node).stat().st_mode) == 0o600
    assert token not in printed  # every task that touches it has no_log
    server = yaml.safe_load((tmp_path / "nodes" / "mgmt01" / "etc" / "rancher" / "k3s" / "config.yaml").read_text())
    assert server["token-file"] == str(nodes.token("mgmt01")) and "token" not in server
    agent = yaml.safe_load((tmp_path / "nodes" / "gpu01" / "etc" / "rancher" / "k3s" / "config.yaml").read_text())
    assert agent["server"] == "https://10.77.0.11:6443" and agent["default-runtime"] == "nvidia"
    assert (tmp_path / "nodes" / "mgmt01" / "var/lib/rancher/k3s/server/manifests/nvidia-device-plugin.yml").is_file()
    assert not (tmp_path / "nodes" / "gpu01" / "var").exists()  # manifests go to the server only
    assert (tmp_path / "nodes" / "gpu02" / "etc/systemd/system/k3s-agent.service").is_file()
    restarts = [c for c in nodes.systemctl_calls() if c.startswith("restart")]
    assert sorted(restarts) == ["restart k3s", "restart k3s-agent", "restart k3s-agent"], restarts

    stats, printed = nodes.converge()
    assert {n: s["changed"] for n, s in stats.items()} == dict.fromkeys(NODES, 0)
    assert nodes.token("gpu02").read_text() == token and token not in printed
    assert [c for c in nodes.systemctl_calls() if c.startswith("restart")] == restarts  # no restart

    stats, _ = nodes.converge("--check", "--diff")
    assert {n: s["changed"] for n, s in stats.items()} == dict.fromkeys(NODES, 0)


def test_check_mode_on_fresh_nodes_previews_without_writing(tmp_path: Path) -> None:
    _needs_root()
    nodes = StandIn(tmp_path, tmp_path / "nodes")
    stats, _ = nodes.converge("--check", "--diff")
    assert all(stats[n]["changed"] > 0 and stats[n]["failures"] == 0 for n in NODES), stats
    assert not (tmp_path / "nodes").exists()  # no token, no config, no directory
    assert not [c for c in nodes.systemctl_calls() if c.startswith(("restart", "daemon-reload"))]
