"""A scenario's requirements file as users bring it: a fork of a collection the `ansible` package
ships, what `ansible-galaxy collection download` writes, broken tarballs, roles from local
tarballs and directories. Real `ansible-galaxy` on collections built into tmp_path; no network."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness import galaxy, lifecycle, playbook
from harness.cli import main
from harness.errors import SpecError
from harness.spec import load_scenario

pytestmark = pytest.mark.ansible  # real ansible-playbook: CI runs these on the oldest ansible-core too

GALAXY = str(Path(sys.executable).parent / "ansible-galaxy")
FORK_MODULE = """#!/usr/bin/python
from ansible.module_utils.basic import AnsibleModule
AnsibleModule(argument_spec={}).exit_json(changed=False, fork=True)
"""


@pytest.fixture(autouse=True)
def _own_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))


def _shipped_version(ns: str, name: str) -> str:
    manifest = next(Path(p) for p in sys.path if (Path(p) / "ansible_collections" / ns / name).is_dir())
    data = json.loads((manifest / "ansible_collections" / ns / name / "MANIFEST.json").read_text())
    return str(data["collection_info"]["version"])


def _build(where: Path, fqcn: str, version: str, *, module: str | None = None) -> Path:
    """`ansible-galaxy collection build` of a tiny collection (a marker file, maybe a module)."""
    ns, name = fqcn.split(".")
    src = where / "src"
    subprocess.run([GALAXY, "collection", "init", fqcn, "--init-path", str(src)], check=True, capture_output=True)
    root = src / ns / name
    galaxy_yml = (root / "galaxy.yml").read_text()
    (root / "galaxy.yml").write_text(galaxy_yml.replace("version: 1.0.0", f"version: {version}"))
    (root / "FORK_MARKER").write_text("the user's copy\n")
    if module is not None:
        (root / "plugins" / "modules").mkdir(parents=True, exist_ok=True)
        (root / "plugins" / "modules" / f"{module}.py").write_text(FORK_MODULE)
    subprocess.run(
        [GALAXY, "collection", "build", str(root), "--output-path", str(where)], check=True, capture_output=True
    )
    shutil.rmtree(src)
    return where / f"{ns}-{name}-{version}.tar.gz"


def _scenario(where: Path, requirements: str, play: str) -> Path:
    (where / "requirements.yml").write_text(requirements)
    (where / "site.yml").write_text(f"- name: p\n  hosts: all\n  gather_facts: false\n{play}")
    spec = "name: t\nnodes:\n  - name: a01\nprovision:\n  playbook: site.yml\n  collections: requirements.yml\n"
    (where / "scenario.yml").write_text(spec)
    return where / "scenario.yml"


@pytest.fixture(scope="module")
def fork(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A patched ansible.posix in the very version the `ansible` package ships, with a module of its own."""
    where = tmp_path_factory.mktemp("fork")
    return _build(where, "ansible.posix", _shipped_version("ansible", "posix"), module="fork_marker")


def test_a_fork_of_a_shipped_collection_is_installed_and_wins(tmp_path: Path, fork: Path) -> None:
    version = _shipped_version("ansible", "posix")
    tarball = Path(shutil.copy(fork, tmp_path))
    tasks = "  tasks:\n    - name: from the fork\n      ansible.posix.fork_marker:\n"
    sc = load_scenario(str(_scenario(tmp_path, f"collections:\n  - name: {tarball.name}\n    type: file\n", tasks)), [])

    installed = playbook.collections_path(sc)
    assert installed is not None
    fork = installed / "ansible_collections" / "ansible" / "posix"
    assert (fork / "MANIFEST.json").is_file() and (fork / "FORK_MARKER").is_file()

    check = playbook.syntax_check(sc)  # the fork's module resolves: the user's copy comes first
    assert check.ok, check.problems
    assert [s.name for s in check.collection_shadows] == ["ansible.posix"]
    assert check.collection_shadows[0].used == fork
    assert any(h.parent.parent.name == "ansible_collections" for h in check.collection_shadows[0].hidden)

    res = CliRunner().invoke(main, ["validate", str(sc.source)])
    assert res.exit_code == 0, res.output
    assert f"collection 'ansible.posix': using {fork} {version} (shadows" in " ".join(res.output.split())


def test_an_incomplete_install_is_never_taken_from_the_cache(tmp_path: Path, fork: Path) -> None:
    """What an older harness cached after "Nothing to do": the directory without the collection."""
    tarball = Path(shutil.copy(fork, tmp_path))
    req = tmp_path / "requirements.yml"
    req.write_text(f"collections:\n  - name: ./{tarball.name}\n    type: file\n")
    first = galaxy.install(req)
    shutil.rmtree(first / "ansible_collections" / "ansible")
    again = galaxy.install(req)
    assert again == first and (again / "ansible_collections" / "ansible" / "posix" / "MANIFEST.json").is_file()


def test_what_collection_download_writes_is_a_local_file(tmp_path: Path) -> None:
    tarball = _build(tmp_path, "site.tools", "1.2.0")
    req = tmp_path / "requirements.yml"
    req.write_text(f"collections:\n- name: {tarball.name}\n  version: 1.2.0\n")  # no `type`, as written
    assert galaxy.requirement_sources(req) == [tarball]
    installed = galaxy.install(req)
    assert (installed / "ansible_collections" / "site" / "tools" / "MANIFEST.json").is_file()


@pytest.mark.parametrize("content", ["garbage", "not-a-collection"])
def test_a_broken_tarball_is_bad_input_named_before_any_ok(tmp_path: Path, content: str) -> None:
    bad = tmp_path / "site-tools-1.0.0.tar.gz"
    if content == "garbage":
        bad.write_bytes(b"\x1f\x8b garbage")
    else:  # a tar.gz, but no MANIFEST.json in it
        (tmp_path / "README").write_text("x")
        with tarfile.open(bad, "w:gz") as tar:
            tar.add(tmp_path / "README", arcname="README")
    scenario = _scenario(tmp_path, f"collections:\n  - name: {bad.name}\n    type: file\n", "  tasks: []\n")
    res = CliRunner().invoke(main, ["validate", str(scenario)])
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    assert str(bad) in text and "ansible-galaxy collection build" in text
    assert ": ok" not in res.output and "Traceback" not in res.output
    with pytest.raises(SpecError) as info:  # `harness run` checks the same before anything boots
        lifecycle.check_playbook(load_scenario(str(scenario), []))
    assert str(bad) in info.value.problems[0]


def test_roles_from_local_tarballs_and_directories_install_offline(tmp_path: Path) -> None:
    for role in ("site_motd", "site_dirrole"):
        for sub in ("tasks", "meta"):
            (tmp_path / "vendor" / role / sub).mkdir(parents=True)
        (tmp_path / "vendor" / role / "tasks" / "main.yml").write_text(f"- name: {role}\n  ansible.builtin.ping:\n")
        (tmp_path / "vendor" / role / "meta" / "main.yml").write_text(
            "galaxy_info:\n  author: site\ndependencies: []\n"
        )
    with tarfile.open(tmp_path / "vendor" / "site_motd-1.0.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "vendor" / "site_motd", arcname="site_motd-1.0")
    shutil.rmtree(tmp_path / "vendor" / "site_motd")
    requirements = (
        "roles:\n  - src: ./vendor/site_motd-1.0.tar.gz\n    name: site_motd\n  - src: ./vendor/site_dirrole\n"
    )
    sc = load_scenario(str(_scenario(tmp_path, requirements, "  roles:\n    - site_motd\n    - site_dirrole\n")), [])
    installed = playbook.collections_path(sc)
    assert installed is not None
    assert (installed / "roles" / "site_motd" / "tasks" / "main.yml").is_file()
    assert (installed / "roles" / "site_dirrole" / "tasks" / "main.yml").is_file()
    assert installed / "roles" in playbook.roles_path(sc)
    check = playbook.syntax_check(sc)
    assert check.ok, check.problems


def test_a_role_that_needs_the_network_is_refused_naming_the_entry(tmp_path: Path) -> None:
    req = tmp_path / "requirements.yml"
    req.write_text(
        "roles:\n  - name: geerlingguy.java\n  - src: https://github.com/x/y.git\n    scm: git\ncollections: []\n"
    )
    with pytest.raises(SpecError) as info:
        galaxy.install(req)
    problems = info.value.problems
    assert len(problems) == 2
    assert problems[0].startswith("roles[0]: 'geerlingguy.java'") and "offline" in problems[0]
    assert problems[1].startswith("roles[1]:") and "local tarball or directory" in problems[1]
    assert not (tmp_path / "cache" / "collections").exists() or not any((tmp_path / "cache" / "collections").iterdir())
