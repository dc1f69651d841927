"""Secrets never reach a run's files: ansible-runner's artifacts, the logs, the reports.

A playbook handles secrets the way our roles do (roles/munge: a key made with `dd`, read back with
`slurp`, installed through base64 on stdin; a secret from `openssl rand`, registered; extra vars
named `*_token` / `*_password` written with `copy: content:`), run against localhost through the
harness's own provision and idempotence phases; the reports are written from their results. Then
every file of the run directory and the report directory is searched for every secret value, raw,
base64 and hex. The cluster's private SSH key exists in one file only, mode 0600.
"""

from __future__ import annotations

import base64
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import checkpoints, inventory, lifecycle, nodes, phases, proc, run_inventory
from harness.errors import UsageError
from harness.report import RunReport, write_reports
from harness.rundir import RunState
from harness.spec import Scenario, parse_scenario

API_TOKEN = "tok-3f9a1c77e2b94d0e8a1b"
DB_PASSWORD = "pw-Zq8!vL2#xR5@nK7$"
CANARY = "canary-7d41e8a2"  # not a secret: proves the search sees what a task prints

PLAYBOOK = """\
- name: Handle secrets the way the harness's roles do
  hosts: all
  gather_facts: false
  vars:
    _dir: "{{ fixture_root }}/{{ inventory_hostname }}"
  tasks:
    - name: Create the secrets directory
      ansible.builtin.file:
        path: "{{ _dir }}"
        state: directory
        mode: "0700"

    - name: Create the cluster key unless there is one
      ansible.builtin.shell:
        cmd: umask 0377 && dd if=/dev/urandom of={{ _dir }}/cluster.key bs=64 count=1 status=none
        creates: "{{ _dir }}/cluster.key"
      no_log: true

    - name: Read the cluster key
      ansible.builtin.slurp:
        src: "{{ _dir }}/cluster.key"
      register: __cluster_key
      no_log: true

    - name: Install a copy of the key through base64 on stdin
      ansible.builtin.shell:
        cmd: umask 0377 && base64 -d > {{ _dir }}/copy.key
        stdin: "{{ __cluster_key.content }}"
        creates: "{{ _dir }}/copy.key"
      no_log: true

    - name: Make a secret with openssl unless there is one
      ansible.builtin.shell:
        cmd: umask 0377 && openssl rand -hex 24 > {{ _dir }}/openssl.secret
        creates: "{{ _dir }}/openssl.secret"
      no_log: true

    - name: Read the openssl secret
      ansible.builtin.command: cat {{ _dir }}/openssl.secret
      register: __openssl_secret
      changed_when: false
      no_log: true

    - name: Write the service's credentials
      ansible.builtin.copy:
        content: |
          token={{ site_api_token }}
          password={{ db_password }}
          key={{ __cluster_key.content }}
          derived={{ __openssl_secret.stdout }}
        dest: "{{ _dir }}/credentials.conf"
        mode: "0600"
      no_log: true

    - name: Rotate a credential every time (an idempotence failure that must stay censored)
      ansible.builtin.shell:
        cmd: "printf '%s' \\"$TOKEN\\" > {{ _dir }}/rotated"
      environment:
        TOKEN: "{{ site_api_token }}"
      changed_when: rotate | default(false) | bool
      no_log: true

    - name: Check the credentials (fails when asked to, censored)
      ansible.builtin.shell:
        cmd: >-
          grep -qF {{ db_password | quote }} {{ _dir }}/credentials.conf
          && test {{ fail_now | default(false) }} = False
      changed_when: false
      no_log: true

    - name: Say something that is no secret
      ansible.builtin.debug:
        msg: "{{ canary }}"
"""


@dataclass
class Rehearsal:
    scenario: Scenario
    run: RunState
    report_dir: Path
    secrets_dir: Path
    report: RunReport


def _fake_vagrant_ssh_config(host: str) -> str:
    return (
        f"Host {host}\n  HostName 127.0.0.1\n  User vagrant\n  Port 22\n"
        "  IdentityFile /root/.vagrant.d/insecure_private_key\n  StrictHostKeyChecking no\n"
    )


def _install_cluster_key(run: RunState, monkeypatch: pytest.MonkeyPatch) -> None:
    """nodes.install_cluster_key for real (ssh-keygen, ssh_config), with Vagrant and ssh faked."""
    real_run = proc.run

    class FakeVagrant:
        def __init__(self, _root: Path, _log: Path) -> None:
            pass

        def ssh_config(self) -> str:
            return "".join(_fake_vagrant_ssh_config(n) for n in run.nodes)

    def fake_run(argv: list[str], **kwargs: Any) -> proc.CommandResult:
        if argv[0] == "ssh":  # installing the public key on a node
            return proc.CommandResult(tuple(argv), 0, "", "", 0.0)
        return real_run(argv, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(nodes, "VagrantEnvironment", FakeVagrant)
        m.setattr(proc, "run", fake_run)
        nodes.install_cluster_key(run)


def _local_inventory(run: RunState, scenario: Scenario, secrets_dir: Path) -> None:
    """The run's inventory as `up` writes it, with every node reached by a local connection."""
    run_inventory.write(run, scenario)
    path = run_inventory.path(run)
    inv = inventory.load_inventory(path)
    for host in inv["all"]["hosts"].values():
        host.update(ansible_connection="local", ansible_python_interpreter="{{ ansible_playbook_python }}")
    inv["all"]["vars"]["fixture_root"] = str(secrets_dir)
    inventory.write_inventory(inv, path)


def rehearse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **extra_vars: Any) -> Rehearsal:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "site.yml").write_text(PLAYBOOK)
    extra_vars = {"site_api_token": API_TOKEN, "db_password": DB_PASSWORD, "canary": CANARY, **extra_vars}
    spec: dict[str, Any] = {
        "name": "secrets",
        "nodes": [{"name": "node1"}],
        "provision": {
            "playbook": "site.yml",
            "extra_vars": extra_vars,
        },
    }
    scenario = parse_scenario(yaml.safe_dump(spec), tmp_path / "scenario.yml")
    run = RunState("secrets-0a1b2c", scenario.name, str(scenario.source), str(tmp_path / "run"), os.getpid(), "up")
    run.nodes, run.private_ips, run.private_subnet = ["node1"], {"node1": "10.77.0.10"}, "10.77.0.0/24"
    run.log_dir.mkdir(parents=True)
    secrets_dir = tmp_path / "secrets"
    _install_cluster_key(run, monkeypatch)
    _local_inventory(run, scenario, secrets_dir)

    def no_checkpoint(*_args: Any, **_kwargs: Any) -> None:
        raise UsageError("no libvirt in a unit test")

    monkeypatch.setattr(checkpoints, "save", no_checkpoint)
    report = RunReport(scenario.name, run.run_id, order=lifecycle.PHASES)
    say = lambda _phase, _msg: None  # noqa: E731
    report.record(phases.provision_phase(run, scenario, say))
    if report.phase("provision").status == "passed":
        report.record(phases.idempotence_phase(run, scenario, say))
    # lifecycle.run_scenario puts no extra vars in the metadata; were they there, `redact` drops the secret ones.
    report.metadata = {"harness_version": "test", "extra_vars": extra_vars}
    report_dir = tmp_path / "reports"
    write_reports(report, report_dir)
    write_reports(report, run.path)  # `harness run` without --report-dir: the run directory
    return Rehearsal(scenario, run, report_dir, secrets_dir, report)


def _files(*roots: Path) -> Iterator[Path]:
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.is_file() and not path.is_symlink():
                yield path


def _forms(secret: bytes) -> dict[str, bytes]:
    """How a secret can appear in a file: raw, base64 (slurp, a JSON event), hex."""
    forms = {"raw": secret, "base64": base64.b64encode(secret), "hex": secret.hex().encode()}
    return {k: v for k, v in forms.items() if len(v) >= 8}


def _leaks(roots: list[Path], secrets: dict[str, bytes], allowed: set[Path]) -> list[str]:
    found = []
    for path in _files(*roots):
        if path in allowed:
            continue
        data = path.read_bytes()
        for name, secret in secrets.items():
            for form, needle in _forms(secret).items():
                if needle in data:
                    found.append(f"{path}: {name} ({form})")
    return found


def _generated_secrets(secrets_dir: Path) -> dict[str, bytes]:
    node = secrets_dir / "node1"
    key = (node / "cluster.key").read_bytes()
    assert len(key) == 64 and (node / "copy.key").read_bytes() == key
    return {
        "cluster key": key,
        "openssl secret": (node / "openssl.secret").read_bytes().strip(),
        "api token": API_TOKEN.encode(),
        "db password": DB_PASSWORD.encode(),
    }


def _private_key_lines(run: RunState) -> dict[str, bytes]:
    """The cluster's private SSH key, whole and each line of its body."""
    text = (run.path / "ssh" / "id_ed25519").read_bytes()
    body = [line for line in text.splitlines() if line and not line.startswith(b"-----")]
    return {"ssh private key": text, **{f"ssh private key line {i}": line for i, line in enumerate(body)}}


def _assert_no_leak(done: Rehearsal) -> None:
    secrets = {**_generated_secrets(done.secrets_dir), **_private_key_lines(done.run)}
    assert _leaks([done.run.path, done.report_dir], secrets, {done.run.path / "ssh" / "id_ed25519"}) == []
    assert not (done.run.path / "ansible" / "env" / "extravars").exists()  # removed after each run


def test_converges_leave_no_secret_in_any_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A green converge, then a second one whose censored task changed (an idempotence failure)."""
    done = rehearse(tmp_path, monkeypatch, rotate=True)

    assert done.report.phase("provision").status == "passed", done.report.to_dict()
    [change] = done.report.phase("idempotence").failures
    assert "Rotate a credential" in change.name and "changed (no diff given)" in change.message
    artifacts = done.run.path / "ansible" / "artifacts"
    assert len(list(artifacts.glob("*/job_events/*.json"))) > 20
    stdout = b"".join(p.read_bytes() for p in artifacts.glob("*/stdout"))
    assert CANARY.encode() in stdout  # the search reads what the tasks printed...
    canary = _leaks([done.run.path], {"canary": CANARY.encode()}, set())
    assert any("/job_events/" in line for line in canary), canary  # ...and what the events carry
    _assert_no_leak(done)


def test_a_failed_censored_task_leaves_no_secret_in_any_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    done = rehearse(tmp_path, monkeypatch, fail_now=True)

    [failure] = done.report.phase("provision").failures
    assert "Check the credentials" in failure.name and "no_log: true" in failure.message
    _assert_no_leak(done)


def test_the_cluster_ssh_key_is_one_private_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = RunState("secrets-0a1b2c", "secrets", str(tmp_path / "s.yml"), str(tmp_path / "run"), os.getpid(), "up")
    run.nodes = ["node1", "node2"]
    run.log_dir.mkdir(parents=True)
    _install_cluster_key(run, monkeypatch)

    key = run.path / "ssh" / "id_ed25519"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(run.ssh_config.stat().st_mode) == 0o600
    assert f"IdentityFile {key}" in run.ssh_config.read_text()
    assert "insecure_private_key" not in run.ssh_config.read_text()
    assert not (run.path / "vagrant_ssh_config").exists()
    assert _leaks([run.path], _private_key_lines(run), {key}) == []


# --- the roles: every task that touches a secret has no_log ------------------------------------

ROLES = Path(__file__).resolve().parents[2] / "roles"
# What makes a secret in a task (what uses one is found through the variable it registers).
SECRET_MARKERS = ("/dev/urandom", "openssl rand", "password_hash", "pwgen")
# A file read with slurp whose name says it holds a secret.
SECRET_FILE = re.compile(r"key|token|secret|password|credential|\.pem", re.IGNORECASE)
# Tasks that read a file named like a secret that is none, and why.
NOT_SECRET = {("common", "Read the connecting user's authorized_keys"): "public keys"}


def _tasks(items: Any) -> Iterator[dict[str, Any]]:
    for task in items if isinstance(items, list) else []:
        if isinstance(task, dict):
            yield task
            for section in ("block", "rescue", "always"):
                yield from _tasks(task.get(section))


def _secret_tasks(role: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Tasks that make, read, decode or use a secret: the markers, slurp of a file named like a
    secret, or a variable registered by such a task (followed until nothing new is found)."""
    tasks = [(f.name, t) for f in sorted((role / "tasks").glob("*.yml")) for t in _tasks(yaml.safe_load(f.read_text()))]
    found: dict[int, tuple[str, dict[str, Any]]] = {}
    registered: set[str] = set()
    while True:
        before = len(found)
        for file, task in tasks:
            if (role.name, task.get("name")) in NOT_SECRET or id(task) in found:
                continue
            text = yaml.safe_dump({k: v for k, v in task.items() if k not in ("block", "rescue", "always")})
            uses = any(m in text for m in SECRET_MARKERS) or any(re.search(rf"\b{r}\b", text) for r in registered)
            slurp = task.get("ansible.builtin.slurp") or task.get("slurp")
            if uses or (isinstance(slurp, dict) and SECRET_FILE.search(str(slurp.get("src", "")))):
                found[id(task)] = (file, task)
                if task.get("register"):
                    registered.add(str(task["register"]))
        if len(found) == before:
            return iter(found.values())


def test_every_role_task_that_touches_a_secret_has_no_log() -> None:
    missing, seen = [], 0
    for role in sorted(p for p in ROLES.iterdir() if (p / "tasks").is_dir()):
        for file, task in _secret_tasks(role):
            seen += 1
            if task.get("no_log") is not True:
                missing.append(f"roles/{role.name}/tasks/{file}: {task.get('name')!r}")
    assert seen >= 4  # munge's key tasks at least
    assert missing == [], "add `no_log: true` to:\n" + "\n".join(missing)
