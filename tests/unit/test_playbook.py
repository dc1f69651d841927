"""Role resolution, offline collections and the playbook syntax check, with the external role
set in tests/fixtures/external (a site's own roles, not the harness's)."""

from __future__ import annotations

import importlib.metadata
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness import galaxy, playbook
from harness.cli import main
from harness.errors import SpecError
from harness.paths import ROLES_DIR
from harness.spec import load_scenario

pytestmark = pytest.mark.ansible  # real ansible-playbook: CI runs these on the oldest ansible-core too

EXT = Path(__file__).parent.parent / "fixtures" / "external"


@pytest.fixture(autouse=True)
def _own_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))


def test_the_scenarios_roles_come_before_the_harnesss_own() -> None:
    sc = load_scenario(str(EXT / "scenario.yml"), [])
    assert playbook.roles_path(sc) == [EXT / "roles", ROLES_DIR]


def test_a_role_defined_twice_is_named_with_the_one_used() -> None:
    sc = load_scenario(str(EXT / "scenario.yml"), [])
    shadows = playbook.shadowed_roles(sc.resolve(sc.provision.playbook), playbook.roles_path(sc))  # type: ignore[union-attr]
    assert [(s.name, s.used, s.hidden) for s in shadows] == [("lmod", EXT / "roles" / "lmod", (ROLES_DIR / "lmod",))]


def test_syntax_check_resolves_user_roles_collections_and_dashed_groups() -> None:
    sc = load_scenario(str(EXT / "scenario.yml"), [])
    check = playbook.syntax_check(sc)
    assert check.ok, check.problems
    assert [s.name for s in check.shadows] == ["lmod"]


def test_collections_install_offline_once_per_content(tmp_path: Path) -> None:
    src = tmp_path / "reqs"
    shutil.copytree(EXT / "collections", src)
    first = galaxy.install(src / "requirements.yml")
    assert (first / "ansible_collections" / "site" / "cluster" / "roles" / "banner").is_dir()
    marker = first / "ansible_collections" / "marker"
    marker.write_text("kept")
    assert galaxy.install(src / "requirements.yml") == first and marker.exists()
    (src / "site" / "cluster" / "roles" / "banner" / "tasks" / "main.yml").write_text("---\n[]\n")
    assert galaxy.install(src / "requirements.yml") != first


def test_a_galaxy_collection_is_refused_because_runs_are_offline(tmp_path: Path) -> None:
    req = tmp_path / "requirements.yml"
    req.write_text("collections:\n  - name: community.docker\n    version: '>=3'\n")
    with pytest.raises(SpecError) as info:
        galaxy.install(req)
    assert "community.docker" in info.value.problems[0] and "offline" in info.value.problems[0]


def test_validate_refuses_a_module_from_a_missing_collection_in_seconds() -> None:
    res = CliRunner().invoke(main, ["validate", str(EXT / "broken.yml")])
    assert res.exit_code == 2, res.output
    assert "acme.fabric.switch_port" in res.output and "broken.yml, line 6" in res.output
    assert "Traceback" not in res.output


def test_validate_names_a_missing_role(tmp_path: Path) -> None:
    (tmp_path / "site.yml").write_text("- name: p\n  hosts: all\n  roles:\n    - role: no_such_role\n")
    (tmp_path / "scenario.yml").write_text("name: t\nnodes:\n  - name: a\nprovision:\n  playbook: site.yml\n")
    res = CliRunner().invoke(main, ["validate", str(tmp_path / "scenario.yml")])
    assert res.exit_code == 2 and "no_such_role" in res.output, res.output


def test_validate_ok_says_which_role_is_used() -> None:
    res = CliRunner().invoke(main, ["validate", str(EXT / "scenario.yml")])
    assert res.exit_code == 0, res.output
    assert "role 'lmod': using" in res.output and "every role and module resolves" in res.output


def test_the_ansible_core_version_is_that_of_the_ansible_playbook_the_harness_runs() -> None:
    # Under .venv-ansible-oldest (CI) this is 2.17.x, under .venv the newest: whichever is installed.
    assert playbook.ansible_core_version() == importlib.metadata.version("ansible-core")
