"""Reports that tell the whole story (issue 27 item 3): the plays a failed converge never ran and on
which hosts, and an abort's cause beside the task failures before it, from real ansible-playbook
runs against local-connection fake hosts."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from harness import ansible_events, inventory, lifecycle, phases, playbook_reach
from harness.cli import _print_phase, main
from harness.provision import ProvisionOptions, converge_verdict, new_ident, run_playbook
from harness.report import PhaseResult
from harness.spec import load_scenario
from harness.verify import read_junit

pytestmark = pytest.mark.ansible  # real ansible-playbook: CI runs these on the oldest ansible-core too

LOCAL = {"ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}"}
INVENTORY = {
    "all": {
        "vars": LOCAL,
        "children": {"head": {"hosts": {"n01": {}}}, "compute": {"hosts": {"n02": {}, "n03": {}}}},
    }
}


def _run(tmp_path: Path, plays: list[dict[str, Any]], limit: str | None = None) -> ProvisionOptions:
    (tmp_path / "site.yml").write_text(yaml.safe_dump(plays, sort_keys=False))
    (tmp_path / "inventory.yml").write_text(yaml.safe_dump(INVENTORY))
    return ProvisionOptions(
        private_data_dir=tmp_path / "pdd",
        playbook=tmp_path / "site.yml",
        inventory=tmp_path / "inventory.yml",
        roles_path=[tmp_path / "roles"],
        extra_vars={},
        ident=new_ident("provision"),
        limit=limit,
    )


def _play(name: str, hosts: str, *tasks: Mapping[str, Any]) -> dict[str, Any]:
    return {"name": name, "hosts": hosts, "gather_facts": False, "tasks": list(tasks)}


SAY = {"name": "Say hello", "ansible.builtin.debug": {"msg": "hi"}}
FAIL = {"name": "Fail here", "ansible.builtin.fail": {"msg": "boom"}}


def test_plays_the_other_hosts_never_ran_are_named_with_their_hosts(tmp_path: Path) -> None:
    (tmp_path / "more.yml").write_text(yaml.safe_dump([_play("Imported", "all:!head", SAY)]))
    opts = _run(
        tmp_path,
        [
            _play("Everyone", "all", SAY),
            _play("Head only", "head", FAIL),
            _play("Compute", "compute", SAY),
            _play("Nobody", "no_such_group", SAY),
            {"ansible.builtin.import_playbook": "more.yml"},
        ],
    )
    result = run_playbook(opts)

    assert [p.name for p in result.plays] == ["Everyone", "Head only"]
    entries = converge_verdict(result)
    assert [e.name for e in entries] == ["n01: Fail here", "n02, n03: 2 play(s) never ran"]
    message = entries[1].message
    assert message.splitlines()[:3] == [
        "because every host of play 'Head only' failed (n01), which ends the playbook:",
        "  play 'Compute' (hosts: compute) never ran on: n02, n03",
        "  play 'Imported' (hosts: all:!head) never ran on: n02, n03",
    ]
    assert phases.converge_detail(result) == "3 hosts: ok=3 changed=0 failed=1; 2 play(s) never ran"


def test_missed_plays_stay_within_the_limit(tmp_path: Path) -> None:
    opts = _run(tmp_path, [_play("Head only", "head", FAIL), _play("Compute", "compute", SAY)], limit="n01,n02")
    [_failed, missed] = converge_verdict(run_playbook(opts))
    assert "play 'Compute' (hosts: compute) never ran on: n02\n" in missed.message


def test_a_converge_where_every_play_ran_names_no_missed_play(tmp_path: Path) -> None:
    opts = _run(
        tmp_path,
        [_play("Everyone", "all", {**FAIL, "when": "inventory_hostname == 'n01'"}), _play("Compute", "compute", SAY)],
    )
    result = run_playbook(opts)
    assert result.missed == [] and [e.name for e in converge_verdict(result)] == ["n01: Fail here"]


def test_an_abort_after_a_task_failure_names_both(tmp_path: Path) -> None:
    role = tmp_path / "roles" / "broken" / "tasks"
    role.mkdir(parents=True)
    (role / "main.yml").write_text("- name: Use a missing module\n  community.nope.thing: {x: 1}\n")
    include = {"name": "Include the broken role", "ansible.builtin.include_role": {"name": "broken"}}
    opts = _run(
        tmp_path,
        [
            _play("Mixed", "all", {**FAIL, "when": "inventory_hostname == 'n01'"}, include),
            _play("Later", "compute", SAY),
        ],
    )
    result = run_playbook(opts)

    entries = converge_verdict(result)
    assert [e.name for e in entries] == ["n01: Fail here", "provision", "n02, n03: 1 play(s) never ran"]
    cause = "couldn't resolve module/action 'community.nope.thing'"
    assert entries[1].message.startswith(f"ansible-playbook stopped: {cause} at {role / 'main.yml'}:1")
    assert entries[2].message.startswith(f"because ansible-playbook stopped: {cause}")
    assert "play 'Later' (hosts: compute) never ran on: n02, n03" in entries[2].message
    assert phases.converge_detail(result) == "no recap from ansible-playbook (status failed, rc 4); 1 play(s) never ran"


@pytest.mark.parametrize(
    ("pattern", "hosts"),
    [
        ("all", ["n01", "n02", "n03"]),
        ("compute:!n03", ["n02"]),
        ("head,n03", ["n01", "n03"]),
        ("all:&compute", ["n02", "n03"]),
        ("n0*:!n03", ["n01", "n02"]),
        ("compute[0]", ["n02"]),
        ("all[0:1]", ["n01", "n02"]),
        ("~n0[23]", ["n02", "n03"]),
        ("nothing", []),
        ("{{ target }}", None),
    ],
)
def test_host_patterns_resolve_as_ansible_resolves_them(pattern: str, hosts: list[str] | None) -> None:
    assert inventory.hosts_matching(INVENTORY, pattern) == hosts


FAILING_TESTS = """
import pytest
from harness import proc

SSH = ["-o", "ControlMaster=auto", "-o", "ControlPersist=60s", "-o", "BatchMode=yes", "login01"]


def test_sinfo():
    script = "echo slurm_load_partitions: Unable to contact slurm controller >&2; exit 1"
    res = proc.run(["sh", "-c", script, *SSH, "sinfo -h"])
    assert res.ok, "sinfo failed"


def test_service():
    pytest.fail("slurmctld on login01: not running\\n--- journal ---\\nstarted\\nstopped", pytrace=False)
"""


def test_a_failed_test_says_each_fact_once_indented_on_the_console(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "test_cluster.py").write_text(FAILING_TESTS)
    junit = tmp_path / "junit.xml"
    argv = [sys.executable, "-m", "pytest", str(tmp_path), "-p", "no:cacheprovider", "--tb=short", "-q"]
    subprocess.run([*argv, f"--junitxml={junit}", "-o", "junit_family=xunit2"], cwd=tmp_path, capture_output=True)
    _passed, failed, _skipped, failures = read_junit(junit)
    assert failed == 2
    sinfo, service = (f.message for f in failures)
    assert sinfo.count("AssertionError: sinfo failed") == 1 and sinfo.count("Unable to contact slurm controller") == 1
    assert sinfo.count("CommandResult(") == 1 and "ControlPersist" not in sinfo
    assert "CommandResult(rc=1, argv=\"sh ... login01 'sinfo -h'\"" in sinfo
    assert service.count("not running") == 1 and service.endswith("stopped")

    _print_phase(PhaseResult("verify", "failed", 1.0, failures, "0 passed, 2 failed, 0 skipped"))
    lines = capsys.readouterr().err.splitlines()
    first = next(i for i, line in enumerate(lines) if "test_service" in line)
    assert lines[first].startswith("          - ") and "slurmctld on login01: not running" in lines[first]
    assert lines[first + 1 : first + 4] == ["            --- journal ---", "            started", "            stopped"]
    assert all(line.startswith(" ") for line in lines[1:]), lines


def _scenario(tmp_path: Path, tasks: list[dict[str, Any]], roles: dict[str, str]) -> Path:
    """A scenario whose playbook runs `tasks`, with `roles` (name: tasks/main.yml text) in its roles/."""
    for name, text in roles.items():
        (tmp_path / "roles" / name / "tasks").mkdir(parents=True)
        (tmp_path / "roles" / name / "tasks" / "main.yml").write_text(text)
    (tmp_path / "site.yml").write_text(yaml.safe_dump([_play("Site", "all", *tasks)], sort_keys=False))
    (tmp_path / "scenario.yml").write_text("name: t\nnodes:\n  - name: a\nprovision:\n  playbook: site.yml\n")
    return tmp_path / "scenario.yml"


def _include(kind: str, name: str) -> dict[str, Any]:
    return {"name": f"{kind} {name}", f"ansible.builtin.{kind}": {"name": name} if kind.endswith("role") else name}


BROKEN = "- name: Use a missing module\n  community.nope.thing: {x: 1}\n"


@pytest.fixture
def _own_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))


@pytest.mark.usefixtures("_own_cache")
def test_validate_follows_include_role_to_a_module_that_does_not_resolve(tmp_path: Path) -> None:
    scenario = _scenario(
        tmp_path,
        [_include("include_role", "outer")],
        {"outer": "- name: Then the broken one\n  ansible.builtin.include_role: {name: broken}\n", "broken": BROKEN},
    )
    res = CliRunner().invoke(main, ["validate", str(scenario)])
    assert res.exit_code == 2, res.output
    assert "community.nope.thing" in res.output and f"{tmp_path / 'roles/broken/tasks/main.yml'}, line 1" in res.output
    assert "every role and module resolves" not in res.output


@pytest.mark.usefixtures("_own_cache")
def test_validate_names_an_included_role_that_does_not_exist(tmp_path: Path) -> None:
    scenario = _scenario(tmp_path, [_include("include_role", "no_such_role")], {})
    res = CliRunner().invoke(main, ["validate", str(scenario)])
    assert res.exit_code == 2, res.output
    assert "ansible.builtin.include_role 'no_such_role' at " in res.output and "site.yml:5: no role" in res.output


@pytest.mark.usefixtures("_own_cache")
def test_validate_checks_included_task_files_and_says_what_it_could_not_check(tmp_path: Path) -> None:
    main_yml = (
        "- name: More tasks\n  ansible.builtin.include_tasks: more.yml\n"
        "- name: Per OS\n  ansible.builtin.include_tasks: '{{ ansible_os_family }}.yml'\n"
    )
    scenario = _scenario(tmp_path, [_include("include_role", "good")], {"good": main_yml})
    (tmp_path / "roles" / "good" / "tasks" / "more.yml").write_text("- name: Fine\n  ansible.builtin.ping:\n")
    res = CliRunner().invoke(main, ["validate", str(scenario)])
    assert res.exit_code == 0, res.output
    assert "ok — the roles and modules it names resolve, 2 include(s) checked too" in res.output
    assert "not checked (a run builds these names):" in res.output
    assert "ansible.builtin.include_tasks '{{ ansible_os_family }}.yml' at " in res.output
    assert "every role and module resolves" not in res.output
    said: list[str] = []
    lifecycle.check_playbook(load_scenario(str(scenario), []), lambda _phase, line: said.append(line))
    assert any(line.startswith("not checked (a run builds this name): ") for line in said), said

    (tmp_path / "roles" / "good" / "tasks" / "more.yml").write_text(BROKEN)
    res = CliRunner().invoke(main, ["validate", str(scenario)])
    assert res.exit_code == 2 and "community.nope.thing" in res.output, res.output


@pytest.mark.usefixtures("_own_cache")
def test_the_shadowing_notice_names_only_roles_the_playbook_uses(tmp_path: Path) -> None:
    scenario = _scenario(
        tmp_path,
        [_include("include_role", "lmod"), _include("import_role", "site")],
        {"lmod": "- name: Own lmod\n  ansible.builtin.ping:\n", "slurm": "[]\n", "site": "[]\n"},
    )
    (tmp_path / "scenario.yml").write_text(
        "name: t\nnodes:\n  - name: a\nprovision:\n  playbook: site.yml\n  roles_path: [roles]\n"
    )
    res = CliRunner().invoke(main, ["validate", str(scenario)])
    assert res.exit_code == 0, res.output
    assert "role 'lmod': using" in res.output
    assert "role 'slurm'" not in res.output


def test_roles_a_playbook_reaches_by_name_galaxy_style_included(tmp_path: Path) -> None:
    for name in ("geerlingguy.docker", "dep"):
        (tmp_path / "roles" / name / "tasks").mkdir(parents=True)
        (tmp_path / "roles" / name / "tasks" / "main.yml").write_text("[]\n")
    (tmp_path / "roles" / "dep" / "meta").mkdir()
    (tmp_path / "roles" / "dep" / "meta" / "main.yml").write_text("dependencies: []\n")
    (tmp_path / "roles" / "geerlingguy.docker" / "meta").mkdir()
    (tmp_path / "roles" / "geerlingguy.docker" / "meta" / "main.yml").write_text("dependencies: [dep]\n")
    tasks = [_include("include_role", "geerlingguy.docker"), _include("include_role", "site.cluster.banner")]
    (tmp_path / "site.yml").write_text(yaml.safe_dump([_play("Site", "all", *tasks)], sort_keys=False))
    reached = playbook_reach.reach(tmp_path / "site.yml", [])
    assert sorted(reached.roles) == ["dep", "geerlingguy.docker"]
    assert [i.role for i in reached.includes] == [str(tmp_path / "roles" / "geerlingguy.docker"), "site.cluster.banner"]
    assert reached.missing == [] and reached.unchecked == []


def test_a_censored_change_counts_on_every_ansible_core() -> None:
    """Up to 2.18 a no_log result keeps `changed`; from 2.19 it holds only the censor's note and
    the event's display line says it changed."""
    censored = {"censored": "the output has been hidden due to the fact that 'no_log: true' was specified"}
    events = [
        {"counter": 1, "event": "runner_on_ok", "stdout": "\x1b[0;33mchanged: [n1]\x1b[0m",
         "event_data": {"host": "n1", "task": "Rotate", "res": censored}},
        {"counter": 2, "event": "runner_on_ok", "stdout": "ok: [n1]",
         "event_data": {"host": "n1", "task": "Read", "res": censored}},
        {"counter": 3, "event": "runner_on_ok", "stdout": "",
         "event_data": {"host": "n1", "task": "Old", "res": {**censored, "changed": True}}},
    ]  # fmt: skip
    result = ansible_events.result_from_events(events, 0, "successful", Path("log"))
    assert [c.task for c in result.changed] == ["Rotate", "Old"]
