"""Molecule scenarios as harness scenarios (harness.molecule), and Molecule's environment for tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from harness import molecule, proc, run_inventory, verify
from harness.cli import main
from harness.errors import SpecError
from harness.rundir import RunState
from harness.spec import load_scenario

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "molecule"
TINY = FIX / "tinyrole" / "molecule" / "default"
MULTI = FIX / "multi" / "molecule" / "default"

SSH_CONFIG = """\
Host {name}
  HostName 127.0.0.1
  User vagrant
  Port {port}
  IdentityFile /tmp/key
"""


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))


def test_a_scenario_directory_with_molecule_yml_loads_as_a_scenario() -> None:
    sc = load_scenario(str(TINY), [])
    assert molecule.is_molecule(sc)
    assert sc.name == "tinyrole-default"
    assert [(n.name, n.groups) for n in sc.expanded_nodes()] == [("instance", ())]
    assert sc.tests is not None and sc.resolve(sc.tests) == TINY / "tests"
    assert sc.provision is not None
    assert sc.resolve(sc.provision.playbook) == TINY / "converge.yml"
    # The box stands in for the image: its own prepare first (apt lists, python3, sudo).
    assert sc.provision.prepare == [molecule.PREPARE_BOX]
    assert sc.provision.verify_playbook is None  # verifier testinfra: verify.yml is not Molecule's verifier
    assert sc.provision.idempotence is True
    assert sc.provision.env == {"TINYROLE_FROM_ENV": "yes"}
    # The role is found by its directory's name: the directory above it is on the roles path.
    assert FIX in [sc.resolve(p) for p in sc.provision.roles_path]
    # A docker platform is reached as root; the box as vagrant: the converge becomes root.
    assert sc.group_vars == {"all": {"ansible_become": True}}


def test_a_scenarios_own_become_wins_over_the_drivers(tmp_path: Path) -> None:
    shutil_copy(TINY.parent.parent, tmp_path / "tinyrole")
    mol = tmp_path / "tinyrole" / "molecule" / "default" / "molecule.yml"
    own = "provisioner:\n  inventory:\n    group_vars:\n      all:\n        ansible_become: false\n"
    mol.write_text(mol.read_text().replace("provisioner:\n", own))
    assert molecule.translate(mol).scenario.group_vars == {"all": {"ansible_become": False}}


def test_notes_say_what_was_mapped_and_what_is_not_honoured() -> None:
    notes = molecule.translate(TINY / "molecule.yml").notes
    text = "\n".join(notes)
    assert "platforms[0].image: 'geerlingguy/docker-debian12-ansible:latest' is replaced by the harness's box" in text
    assert "platforms[0].pre_build_image: a driver option the harness does not honour" in text
    assert "driver 'docker'" in text


def test_multi_platform_groups_children_inventory_links_and_playbooks() -> None:
    tr = molecule.translate(MULTI / "molecule.yml")
    sc = tr.scenario
    nodes = {n.name: n for n in sc.expanded_nodes()}
    assert nodes["ctl"].groups == ("controllers", "primary")
    assert (nodes["ctl"].memory, nodes["ctl"].cpus) == (2048, 2)
    assert nodes["worker-1"].groups == ("workers",)
    assert sc.group_vars == {
        "all": {"multi_everyone": True},
        "workers": {"multi_role": "worker"},
        "controllers": {"multi_role": "controller"},  # from links.group_vars
    }
    assert sc.host_vars == {"ctl": {"multi_id": 1}}
    assert sc.provision is not None and sc.tests is None
    assert sc.resolve(sc.provision.playbook) == MULTI / "playbook.yml"
    assert sc.provision.verify_playbook == MULTI / "verify.yml"  # Molecule's default verifier: ansible
    assert sc.provision.idempotence is False  # not in scenario.test_sequence
    assert sc.provision.side_effect == [MULTI / "side_effect.yml"]
    assert sc.provision.cleanup == []  # cleanup.yml is there, but not in scenario.test_sequence
    text = "\n".join(tr.notes)
    for said in (
        "provisioner.playbooks.side_effect: side_effect.yml, run at verify, after idempotence, before the tests",
        "provisioner.playbooks.cleanup: cleanup.yml not run (not in scenario.test_sequence)",
        "provisioner.config_options: not honoured",
        "platforms[1].interfaces: a driver option the harness does not honour",
        "platforms[0].box: 'debian/bookworm64' is replaced by the harness's box",
        "driver.provider: a driver option",
    ):
        assert said in text
    assert "test_sequence: side_effect" not in text and "not honoured by the harness (not run)" not in text


def _scenario_dir(tmp_path: Path, molecule_yml: str, *books: str) -> Path:
    sdir = tmp_path / "role" / "molecule" / "default"
    sdir.mkdir(parents=True)
    for book in ("converge.yml", *books):
        (sdir / book).write_text("- hosts: all\n  tasks: []\n")
    (sdir / "molecule.yml").write_text(molecule_yml)
    return sdir


def test_side_effect_and_cleanup_default_to_their_files_in_molecules_default_sequence(tmp_path: Path) -> None:
    sdir = _scenario_dir(tmp_path, "platforms:\n  - name: one\n", "side_effect.yml", "cleanup.yml")
    tr = molecule.translate(sdir / "molecule.yml")
    assert tr.scenario.provision is not None
    assert tr.scenario.provision.side_effect == [sdir / "side_effect.yml"]
    assert tr.scenario.provision.cleanup == [sdir / "cleanup.yml"]
    assert tr.scenario.provision.idempotence is True
    assert "provisioner.playbooks.cleanup: cleanup.yml, run before destroy" in tr.notes


def test_without_their_files_there_is_no_side_effect_and_no_cleanup(tmp_path: Path) -> None:
    sdir = _scenario_dir(tmp_path, "platforms:\n  - name: one\n")
    tr = molecule.translate(sdir / "molecule.yml")
    assert tr.scenario.provision is not None
    assert (tr.scenario.provision.side_effect, tr.scenario.provision.cleanup) == ([], [])
    assert not [n for n in tr.notes if "side_effect" in n or "cleanup" in n]


def test_named_playbooks_are_used_and_a_sequence_without_them_leaves_them_out(tmp_path: Path) -> None:
    books = "provisioner:\n  playbooks:\n    side_effect: disturb.yml\n    cleanup: tidy.yml\n"
    sdir = _scenario_dir(tmp_path, "platforms:\n  - name: one\n" + books, "disturb.yml", "tidy.yml")
    prov = molecule.translate(sdir / "molecule.yml").scenario.provision
    assert prov is not None and prov.side_effect == [sdir / "disturb.yml"] and prov.cleanup == [sdir / "tidy.yml"]
    seq = "scenario:\n  test_sequence: [create, converge, idempotence, verify, cleanup, destroy]\n"
    (sdir / "molecule.yml").write_text("platforms:\n  - name: one\n" + books + seq)
    tr = molecule.translate(sdir / "molecule.yml")
    assert tr.scenario.provision is not None
    assert tr.scenario.provision.side_effect == [] and tr.scenario.provision.cleanup == [sdir / "tidy.yml"]
    assert "provisioner.playbooks.side_effect: disturb.yml not run (not in scenario.test_sequence)" in tr.notes


def test_a_named_side_effect_that_is_missing_exits_2_under_its_key(tmp_path: Path) -> None:
    books = "provisioner:\n  playbooks:\n    side_effect: nowhere.yml\n"
    sdir = _scenario_dir(tmp_path, "platforms:\n  - name: one\n" + books)
    res = CliRunner().invoke(main, ["validate", "--no-playbook", str(sdir)])
    assert res.exit_code == 2, res.output
    assert "provisioner.playbooks.side_effect:" in res.output and "nowhere.yml does not exist" in res.output


@pytest.mark.parametrize(
    ("directory", "galaxy_info", "linked"),
    [
        ("ansible-role-thing", "role_name: thing\n  namespace: acme", ["acme.thing", "thing"]),
        # geerlingguy's roles: converge.yml names 'geerlingguy.git'; meta has role_name and author only.
        ("ansible-role-git", "role_name: git\n  author: geerlingguy", ["geerlingguy.git", "git"]),
        ("thing", "author: acme", ["acme.thing"]),
    ],
)
def test_a_role_is_linked_under_the_names_molecule_gives_it(
    tmp_path: Path, directory: str, galaxy_info: str, linked: list[str]
) -> None:
    role = tmp_path / directory
    shutil_copy(TINY.parent.parent, role)
    (role / "meta" / "main.yml").write_text(f"galaxy_info:\n  {galaxy_info}\n")
    sc = molecule.translate(role / "molecule" / "default" / "molecule.yml").scenario
    assert sc.provision is not None
    links = Path(sc.provision.roles_path[0])
    for name in linked:
        assert (links / name).resolve() == role.resolve()


def shutil_copy(src: Path, dst: Path) -> None:
    import shutil

    shutil.copytree(src, dst)


def test_bad_molecule_yml_exits_2_naming_the_file_and_every_key() -> None:
    res = CliRunner().invoke(main, ["validate", str(FIX / "bad" / "molecule" / "default")])
    assert res.exit_code == 2, res.output
    assert "bad/molecule/default/molecule.yml" in res.output
    assert "platforms[1].name: every platform needs a name" in res.output
    assert "provisioner.inventory.group_vars: expected a mapping" in res.output
    assert "Traceback" not in res.output


def test_a_bad_platform_name_is_reported_under_its_molecule_key(tmp_path: Path) -> None:
    sdir = tmp_path / "role" / "molecule" / "default"
    sdir.mkdir(parents=True)
    (sdir / "converge.yml").write_text("- hosts: all\n")
    (sdir / "molecule.yml").write_text("platforms:\n  - name: Bad_Name\n")
    with pytest.raises(SpecError) as exc:
        molecule.translate(sdir / "molecule.yml")
    assert any(p.startswith("platforms[0].name: must be a hostname") for p in exc.value.problems)


def test_validate_shows_the_mapping() -> None:
    res = CliRunner().invoke(main, ["validate", "--no-playbook", str(TINY)])
    assert res.exit_code == 0, res.output
    assert "molecule: platforms[0] 'instance' → node 'instance'" in res.output


def test_interpolation_as_molecule_does() -> None:
    env = {"A": "x"}
    assert molecule.interpolate("$A ${A} ${B:-dflt} ${B-d2} $$HOME ${B}", env) == "x x dflt d2 $HOME "


def _run(tmp_path: Path, nodes: list[str]) -> RunState:
    run = RunState("t-000001", "t", "s.yml", str(tmp_path / "run"), os.getpid(), "up")
    run.path.mkdir(parents=True)
    run.ssh_config.write_text("".join(SSH_CONFIG.format(name=n, port=2200 + i) for i, n in enumerate(nodes)))
    run.private_ips = {n: f"10.0.0.{10 + i}" for i, n in enumerate(nodes)}
    run.nodes = nodes
    return run


def test_the_run_inventory_carries_molecule_inventory_vars(tmp_path: Path) -> None:
    sc = load_scenario(str(MULTI), [])
    run = _run(tmp_path, ["ctl", "worker-1"])
    inv = yaml.safe_load(run_inventory.write(run, sc).read_text())
    assert inv["all"]["vars"]["multi_everyone"] is True
    assert inv["all"]["vars"]["harness_run_id"] == "t-000001"
    assert inv["all"]["children"]["workers"]["vars"] == {"multi_role": "worker"}
    assert inv["all"]["hosts"]["ctl"]["multi_id"] == 1
    config = yaml.safe_load((run.path / "instance_config.yml").read_text())
    assert {"instance": "ctl", "address": "127.0.0.1", "user": "vagrant", "port": 2200}.items() <= config[0].items()


def test_molecule_environment_for_any_scenario(tmp_path: Path) -> None:
    sc = load_scenario(str(FIX.parent / "scenarios" / "valid" / "full.yml"), [])
    run = _run(tmp_path, ["head"])
    env = molecule.environment(sc, run, run.path / "inventory.yml")
    assert env["MOLECULE_INVENTORY_FILE"] == str(run.path / "inventory.yml")
    assert env["MOLECULE_EPHEMERAL_DIRECTORY"] == str(run.path)
    assert env["MOLECULE_SCENARIO_DIRECTORY"] == str(sc.base_dir)
    assert env["MOLECULE_SCENARIO_NAME"] == sc.name
    for name in ("MOLECULE_PROJECT_DIRECTORY", "MOLECULE_INSTANCE_CONFIG", "MOLECULE_VERIFIER_TEST_DIRECTORY"):
        assert env[name]


def test_an_unchanged_molecule_era_testinfra_file_collects(tmp_path: Path) -> None:
    """It reads MOLECULE_INVENTORY_FILE at import and asks ansible-inventory for its hosts."""
    sc = load_scenario(str(TINY), [])
    run = _run(tmp_path, ["instance"])
    inventory = run_inventory.write(run, sc)
    argv = verify.pytest_argv(TINY / "tests", ["instance"], run.ssh_config, None, None, inventory, collect_only=True)
    env = {**molecule.environment(sc, run, inventory), "PYTHONDONTWRITEBYTECODE": "1"}
    result = proc.run(argv, env=env, cwd=TINY / "tests")
    assert result.rc == 0, result.stdout + result.stderr
    # testinfra_hosts (bare names from the inventory) connect with the inventory's settings.
    assert "test_default.py::test_marker_file[ansible://instance]" in result.stdout


@pytest.mark.ansible  # real ansible-playbook against localhost
def test_side_effect_and_cleanup_run_for_real_and_are_judged_from_their_events(tmp_path: Path) -> None:
    from harness import converge, phases

    mark = tmp_path / "disturbed"

    def play(name: str, module: str, args: str) -> str:
        return f"- hosts: all\n  gather_facts: false\n  tasks:\n    - name: {name}\n      {module}:\n{args}"

    touch = play(
        "Disturb", "ansible.builtin.file", f"        path: {mark}\n        state: touch\n        mode: '0644'\n"
    )
    tidy = play("Tidy", "ansible.builtin.file", f"        path: {mark}\n        state: absent\n")
    sdir = _scenario_dir(tmp_path, "platforms:\n  - name: node1\n")
    (sdir / "side_effect.yml").write_text(touch)
    (sdir / "cleanup.yml").write_text(tidy)
    sc = molecule.translate(sdir / "molecule.yml").scenario
    assert sc.provision is not None
    local = {"ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}"}
    (tmp_path / "inventory.yml").write_text(yaml.safe_dump({"all": {"hosts": {"node1": local}}}))
    on = converge.Target(tmp_path / "inventory.yml", tmp_path / "work", hosts=("node1",))
    said: list[str] = []

    def progress(_phase: str, msg: str) -> None:
        said.append(msg)

    assert phases.run_playbooks(on, sc, "verify", sc.provision.side_effect, progress) == []
    assert mark.exists() and "running side_effect.yml" in said
    assert phases.run_playbooks(on, sc, "destroy", sc.provision.cleanup, progress) == []
    assert not mark.exists()
    (sdir / "side_effect.yml").write_text(play("Break", "ansible.builtin.fail", "        msg: broken\n"))
    [failure] = phases.run_playbooks(on, sc, "verify", sc.provision.side_effect, progress)
    assert "node1" in failure.name
