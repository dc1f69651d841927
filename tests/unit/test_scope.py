"""harness.scope: the inner loop's plan (which units a converge on top of `converged` runs).

The planner is tested on its own (shared inputs, digests, run-time links, generated playbooks) and
against real Ansible: a local "cluster" (localhost, its state a directory that a copy checkpoints)
converged in full and in scope from the same checkpoint, on fixtures built to catch a wrong skip.
A scoped run must never be green where the full run is red.
"""

from __future__ import annotations

import random
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import ansible_events, provision, scope, tools
from harness.spec import Scenario, parse_scenario

pytestmark = pytest.mark.ansible  # real ansible-playbook: CI runs these on the oldest ansible-core too

KEY = b"k" * 32


def _write(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))


def _role(base: Path, name: str, tasks: list[dict[str, Any]], handlers: list[dict[str, Any]] | None = None) -> None:
    _write(base / "roles" / name / "tasks" / "main.yml", tasks)
    if handlers:
        _write(base / "roles" / name / "handlers" / "main.yml", handlers)


def _file_task(name: str, path: str, content: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "ansible.builtin.copy": {"dest": "{{ state_dir }}/" + path, "content": content, "mode": "0644"},
        **extra,
    }


def _project(
    tmp_path: Path, roles: dict[str, list[dict[str, Any]]], plays: list[dict[str, Any]] | None = None
) -> Scenario:
    base = tmp_path / "project"
    for name, tasks in roles.items():
        _role(base, name, tasks)
    book = plays or [{"name": "All", "hosts": "all", "gather_facts": False, "roles": list(roles)}]
    _write(base / "site.yml", book)
    _write(base / "tests" / "test_x.py", "def test_x():\n    pass\n")
    text = yaml.safe_dump(
        {
            "name": "local",
            "nodes": [{"name": "n1"}],
            "provision": {"playbook": "site.yml", "roles_path": ["roles"], "extra_vars": {"state_dir": "x"}},
            "tests": "tests",
        }
    )
    _write(base / "scenario.yml", text)
    return parse_scenario(text, base / "scenario.yml")


def _units(sc: Scenario) -> scope.Units:
    return scope.analyse(sc, inventory=None, strategy="linear", key=KEY)


def _proven(units: scope.Units) -> scope.UnitsRecord:
    record = scope.UnitsRecord.of(units, "c0ffee")
    record.idempotent = True
    return record


THREE = {
    "a": [_file_task("a writes", "a", "a\n")],
    "b": [_file_task("b writes", "b", "b\n")],
    "c": [_file_task("c writes", "c", "c\n")],
}


def test_units_are_roles_and_play_tasks_in_order(tmp_path: Path) -> None:
    plays = [
        {"name": "One", "hosts": "all", "pre_tasks": [{"name": "p", "ansible.builtin.ping": {}}], "roles": ["a", "b"]},
        {
            "name": "Two",
            "hosts": "all",
            "roles": [{"role": "c", "when": "true"}],
            "tasks": [{"name": "t", "ansible.builtin.ping": {}}],
        },
    ]
    units = _units(_project(tmp_path, THREE, plays))
    assert [u.label for u in units.units] == [
        "play 1 (One): pre_tasks",
        "play 1 (One): role a",
        "play 1 (One): role b",
        "play 2 (Two): role c",
        "play 2 (Two): tasks",
    ]
    assert not units.problems


def test_a_comment_changes_no_digest_and_a_task_edit_changes_its_role_only(tmp_path: Path) -> None:
    sc = _project(tmp_path, THREE)
    before = _units(sc)
    tasks = sc.base_dir / "roles" / "b" / "tasks" / "main.yml"
    tasks.write_text("# a comment\n" + tasks.read_text())
    after = _units(sc)
    assert [u.digest for u in after.units] == [u.digest for u in before.units]
    assert scope.plan_first(after, _proven(before)).run == ()
    _role(sc.base_dir, "b", [_file_task("b writes", "b", "b, edited\n")])
    edited = _units(sc)
    assert [u.digest != v.digest for u, v in zip(before.units, edited.units, strict=True)] == [False, True, False]
    plan = scope.plan_first(edited, _proven(before))
    assert plan.run == (1, 2) and not plan.full and "role b changed" in plan.why


def test_meta_dependencies_belong_to_the_unit(tmp_path: Path) -> None:
    sc = _project(tmp_path, {**THREE, "dep": [_file_task("dep", "d", "d\n")]}, None)
    _write(sc.base_dir / "roles" / "c" / "meta" / "main.yml", {"dependencies": [{"role": "dep"}]})
    _write(sc.base_dir / "site.yml", [{"hosts": "all", "gather_facts": False, "roles": ["a", "b", "c"]}])
    before = _units(sc)
    assert before.units[2].roles == ("c", "dep")
    _role(sc.base_dir, "dep", [_file_task("dep", "d", "d2\n")])
    assert scope.plan_first(_units(sc), _proven(before)).run == (2,)


@pytest.mark.parametrize(
    "edit",
    ["playbook", "group_vars", "extra_var", "secret", "strategy", "inventory"],
)
def test_any_change_to_a_shared_input_runs_everything(tmp_path: Path, edit: str) -> None:
    sc = _project(tmp_path, THREE)
    inv = tmp_path / "inventory.yml"
    inv.write_text("all: {hosts: {n1: {}}}\n")
    before = scope.analyse(sc, inventory=inv, strategy="linear", key=KEY)
    strategy = "linear"
    if edit == "playbook":
        _write(sc.base_dir / "site.yml", [{"hosts": "all", "become": True, "roles": ["a", "b", "c"]}])
    elif edit == "group_vars":
        _write(sc.base_dir / "group_vars" / "all.yml", {"x": 1})
    elif edit == "extra_var":
        assert sc.provision is not None
        sc.provision.extra_vars["state_dir"] = "y"
    elif edit == "secret":
        assert sc.provision is not None
        sc.provision.extra_vars["db_password"] = "hunter22"
    elif edit == "strategy":
        strategy = "mitogen_linear"
    elif edit == "inventory":
        inv.write_text("all: {hosts: {n1: {}, n2: {}}}\n")
    after = scope.analyse(sc, inventory=inv, strategy=strategy, key=KEY)
    plan = scope.plan_first(after, _proven(before))
    assert plan.full and "shared input changed" in plan.why


def test_secret_values_change_the_shared_digest_but_are_never_recorded(tmp_path: Path) -> None:
    sc = _project(tmp_path, THREE)
    assert sc.provision is not None
    sc.provision.extra_vars["api_token"] = "s3cr3t-value-1"
    one = _units(sc)
    sc.provision.extra_vars["api_token"] = "s3cr3t-value-2"
    two = _units(sc)
    assert one.shared != two.shared
    record = scope.UnitsRecord.of(two, "c0ffee")
    scope.save_record(tmp_path, record)
    assert "s3cr3t" not in scope.record_path(tmp_path).read_text()
    assert scope.load_record(tmp_path) == record


def test_no_skip_without_a_proven_idempotent_checkpoint(tmp_path: Path) -> None:
    sc = _project(tmp_path, THREE)
    units = _units(sc)
    assert scope.plan_first(units, None).full
    record = scope.UnitsRecord.of(units, "c0ffee")
    assert scope.plan_first(units, record).full  # not proven idempotent


@pytest.mark.parametrize(
    "skipped_task",
    [
        {"name": "r", "ansible.builtin.command": "true", "register": "a_result", "changed_when": False},
        {"name": "s", "ansible.builtin.set_fact": {"a_result": 1}},
    ],
)
def test_a_variable_set_in_a_skipped_unit_and_read_later_runs_everything(
    tmp_path: Path, skipped_task: dict[str, Any]
) -> None:
    roles = {**THREE, "a": [skipped_task]}
    sc = _project(tmp_path, roles)
    before = _units(sc)
    _role(sc.base_dir, "c", [_file_task("c writes", "c", "{{ a_result }}\n")])
    plan = scope.plan_first(_units(sc), _proven(before))
    assert plan.full and "a_result" in plan.why


def test_include_vars_in_a_skipped_unit_runs_everything(tmp_path: Path) -> None:
    sc = _project(tmp_path, {**THREE, "a": [{"name": "v", "ansible.builtin.include_vars": "x.yml"}]})
    before = _units(sc)
    _role(sc.base_dir, "c", [_file_task("c writes", "c", "c2\n")])
    plan = scope.plan_first(_units(sc), _proven(before))
    assert plan.full and "include_vars" in plan.why


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("- import_playbook: other.yml\n", "imports another playbook"),
        ("- hosts: all\n  roles: ['{{ r }}']\n", "without a fixed name"),
        ("- hosts: all\n  vars_files: ['{{ playbook_dir }}/v.yml']\n  roles: [a]\n", "playbook_dir"),
        ("- hosts: all\n  vars_files: [../v.yml]\n  roles: [a]\n", "above its directory"),
    ],
)
def test_playbooks_that_cannot_run_in_part_run_whole(tmp_path: Path, text: str, problem: str) -> None:
    sc = _project(tmp_path, THREE)
    (sc.base_dir / "site.yml").write_text(text)
    units = _units(sc)
    plan = scope.plan_first(units, _proven(units))
    assert plan.full and problem in plan.why


def test_second_converge_runs_up_to_the_last_changed_unit(tmp_path: Path) -> None:
    units = _units(_project(tmp_path, THREE))
    assert scope.plan_second(units, {0}).run == (0,)
    assert scope.plan_second(units, {0, 1}).run == (0, 1)
    assert scope.plan_second(units, {2}).full
    assert scope.plan_second(units, None).full
    assert scope.plan_second(units, set()).run == ()


def test_generated_playbooks_skip_only_before_the_first_and_after_the_last_change(tmp_path: Path) -> None:
    """Property: over random playbooks and random edits, the first converge runs every unit from
    the first changed one on, the second every unit up to the last changed one; shared edits run all."""
    rng = random.Random(20261207)
    for case in range(25):
        names = [f"r{i}" for i in range(rng.randint(1, 6))]
        roles = {n: [_file_task(f"{n} writes", n, f"{n}\n")] for n in names}
        plays: list[dict[str, Any]] = []
        rest = list(names)
        while rest:
            k = rng.randint(1, 3)
            take, rest = rest[:k], rest[k:]
            play: dict[str, Any] = {"hosts": "all", "roles": take}
            if rng.random() < 0.3:
                play["tasks"] = [{"name": "t", "ansible.builtin.ping": {}}]
            plays.append(play)
        sc = _project(tmp_path / str(case), roles, plays)
        before = _units(sc)
        edited = rng.sample(names, rng.randint(0, len(names)))
        for n in edited:
            _role(sc.base_dir, n, [_file_task(f"{n} writes", n, f"{n} edited\n")])
        after = _units(sc)
        plan = scope.plan_first(after, _proven(before))
        changed = [u.index for u, v in zip(after.units, before.units, strict=True) if u.digest != v.digest]
        assert {after.units[i].label.split("role ")[-1] for i in changed} == set(edited)
        if not changed:
            assert plan.run == ()
        else:
            assert plan.run == tuple(range(changed[0], len(after.units)))
        for i in plan.skipped:
            assert i < (changed[0] if changed else len(after.units))
        if changed:
            last = rng.choice(changed)
            second = scope.plan_second(after, {last})
            assert second.run == tuple(range(last + 1)) or second.full
        _write(sc.base_dir / "group_vars" / "all.yml", {"edited": case})
        assert scope.plan_first(_units(sc), _proven(before)).full


# --- against real Ansible: full and scoped converges from the same checkpoint --------------------------


def _ansible_ready() -> None:
    if tools.which("ansible-playbook") is None:
        pytest.skip("ansible-playbook is not installed (ci/bootstrap.sh installs it into .venv)")


class LocalCluster:
    """localhost as the cluster; its state is a directory, a checkpoint a copy of it."""

    def __init__(self, tmp_path: Path, sc: Scenario) -> None:
        self.tmp, self.sc, self.n = tmp_path, sc, 0
        self.state = tmp_path / "state"
        self.state.mkdir()
        self.inventory = tmp_path / "inventory.yml"
        host = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
        self.inventory.write_text(yaml.safe_dump({"all": {"hosts": {"n1": host}}}))

    def converge(self, plan: scope.Plan | None = None) -> ansible_events.ProvisionResult:
        self.n += 1
        assert self.sc.provision is not None
        book, skip = self.sc.resolve(self.sc.provision.playbook), None
        if plan is not None and not plan.full:
            book, skip = scope.scoped_playbook(self.sc, plan, self.tmp / f"scoped-{self.n}"), scope.SKIP_TAG
        opts = provision.ProvisionOptions(
            private_data_dir=self.tmp / "ansible",
            playbook=book,
            inventory=self.inventory,
            roles_path=[self.sc.base_dir / "roles"],
            extra_vars={"state_dir": str(self.state)},
            ident=f"c{self.n}",
            skip_tags=skip,
        )
        return provision.run_playbook(opts)

    def checkpoint(self) -> Path:
        saved = self.tmp / f"checkpoint-{self.n}"
        shutil.copytree(self.state, saved)
        return saved

    def reset(self, saved: Path) -> None:
        shutil.rmtree(self.state)
        shutil.copytree(saved, self.state)


def _verdict(result: ansible_events.ProvisionResult, second: ansible_events.ProvisionResult) -> str:
    if not result.ok:
        return "converge failed"
    return "green" if second.ok and not provision.idempotence_verdict(second) else "not idempotent"


def _full_and_scoped(
    tmp_path: Path, roles: dict[str, list[dict[str, Any]]], edit: dict[str, list[dict[str, Any]]]
) -> tuple[str, str, scope.Plan]:
    """Converge twice (proven idempotent: the checkpoint), edit roles, then from that checkpoint a
    full pair of converges and a scoped pair; both verdicts and the scoped first plan."""
    _ansible_ready()
    sc = _project(tmp_path, roles)
    cluster = LocalCluster(tmp_path, sc)
    first, second = cluster.converge(), cluster.converge()
    assert _verdict(first, second) == "green", (first.failures, second.changed)
    record = _proven(_units(sc))
    saved = cluster.checkpoint()
    for name, tasks in edit.items():
        _role(sc.base_dir, name, tasks)
    units = _units(sc)
    full = _verdict(cluster.converge(), cluster.converge())
    cluster.reset(saved)
    plan = scope.plan_first(units, record)
    one = cluster.converge(plan)
    two = cluster.converge(scope.plan_second(units, scope.changed_units(units, one.changed)))
    return full, _verdict(one, two), plan


def test_real_ansible_a_later_role_rewriting_an_earlier_roles_file_is_not_idempotent_either_way(tmp_path: Path) -> None:
    roles = {"owner": [_file_task("owner writes f", "f", "owner\n")], "other": [_file_task("other", "o", "o\n")]}
    full, scoped, plan = _full_and_scoped(tmp_path, roles, {"other": [_file_task("other rewrites f", "f", "other\n")]})
    assert plan.run == (1,)  # only the edited role runs first
    assert full == scoped == "not idempotent"


def test_real_ansible_a_role_made_non_idempotent_is_caught_in_scope(tmp_path: Path) -> None:
    roles = {**THREE}
    edit = {"b": [{"name": "b always changes", "ansible.builtin.command": "true"}]}
    full, scoped, plan = _full_and_scoped(tmp_path, roles, edit)
    assert plan.run == (1, 2)
    assert full == scoped == "not idempotent"


def test_real_ansible_a_registered_variable_read_by_a_later_role_runs_everything(tmp_path: Path) -> None:
    roles = {
        "a": [
            {"name": "a reads", "ansible.builtin.command": "echo from-a", "register": "a_out", "changed_when": False}
        ],
        "b": [_file_task("b writes", "b", "{{ a_out.stdout }}\n")],
    }
    edit = {"b": [_file_task("b writes", "b", "{{ a_out.stdout }} edited\n")]}
    full, scoped, plan = _full_and_scoped(tmp_path, roles, edit)
    assert plan.full and "a_out" in plan.why
    assert full == scoped == "green"


def test_real_ansible_handlers_of_skipped_roles_still_run(tmp_path: Path) -> None:
    _ansible_ready()
    roles = {
        "a": [_file_task("a writes", "a", "a\n")],
        "b": [_file_task("b writes", "b", "b\n", notify="a done")],
    }
    sc = _project(tmp_path, roles)
    _role(sc.base_dir, "a", roles["a"], [_file_task("a handler", "handled", "yes\n", listen="a done")])
    cluster = LocalCluster(tmp_path, sc)
    cluster.converge()
    (cluster.state / "handled").unlink()
    record = _proven(_units(sc))
    _role(sc.base_dir, "b", [_file_task("b writes", "b", "b2\n", notify="a done")])
    units = _units(sc)
    plan = scope.plan_first(units, record)
    assert plan.run == (1,)
    result = cluster.converge(plan)
    assert result.ok
    assert (cluster.state / "handled").read_text() == "yes\n"
    assert {c.task for c in result.changed} == {"b writes", "a handler"}
    assert scope.changed_units(units, result.changed) == {0, 1}


def test_a_role_given_by_path_is_digested_and_an_untracked_collection_role_runs_everything(tmp_path: Path) -> None:
    sc = _project(tmp_path, THREE)
    _role(tmp_path / "elsewhere", "p", [_file_task("p writes", "p", "p\n")])
    _write(sc.base_dir / "site.yml", [{"hosts": "all", "roles": ["a", "../elsewhere/roles/p"]}])
    # `../` in the playbook: its copy could not resolve it, so such a playbook always runs whole;
    # the role's own files still make its digest.
    before = _units(sc)
    assert before.units[1].roles == ("../elsewhere/roles/p",) and before.problems
    _role(tmp_path / "elsewhere", "p", [_file_task("p writes", "p", "p2\n")])
    assert _units(sc).units[1].digest != before.units[1].digest
    _write(sc.base_dir / "site.yml", [{"hosts": "all", "roles": ["a", "acme.tools.thing"]}])
    units = _units(sc)
    plan = scope.plan_first(units, _proven(units))
    assert plan.full and "collection this scenario does not install" in plan.why
