"""Boxes per operating system (issue 25 item 4): the Debian 13 and Ubuntu 22.04/24.04 recipes, a
node's own `box:`, the Vagrantfile per node, preflight naming the build command of every box that
is missing, and `harness validate` showing which node boots which box.

No Ubuntu mirror is reachable from this host, so the Ubuntu recipes are checked here as recipes
(debootstrap's argv, the sources.list, the kernel package); only Debian 13 is built and booted
(ci/nightly.sh)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness import box, molecule, preflight
from harness.box import InstalledBox
from harness.cli import main
from harness.errors import HostError, SpecError, UsageError
from harness.spec import DEFAULT_BOX, Scenario, parse_scenario

DEBIAN12_ARGV_TAIL = ["bookworm", "/R", "http://deb.debian.org/debian"]


def test_the_default_recipe_is_unchanged() -> None:
    """Debian 12's recipe content (so its box version) and its debootstrap command stay as they were."""
    r = box.load_recipe("debian12")
    assert r.content_hash()[:12] == "4e28beee02d3"
    argv = r.debootstrap_argv(Path("/R"))
    assert argv[:2] == ["debootstrap", "--variant=minbase"]
    assert argv[2].startswith("--include=linux-image-amd64,")
    assert argv[3:] == DEBIAN12_ARGV_TAIL
    assert r.with_source(None, None) is r


def test_debian13_is_trixie_from_debian_with_debian12s_package_set() -> None:
    d12, d13 = box.load_recipe("debian12"), box.load_recipe("debian13")
    assert (d13.name, d13.suite, d13.mirror, d13.security_mirror) == (
        "harness/debian13",
        "trixie",
        "http://deb.debian.org/debian",
        "http://deb.debian.org/debian-security",
    )
    assert d13.packages == d12.packages and not d13.needs_source
    assert d13.debootstrap_argv(Path("/R"))[-3:] == ["trixie", "/R", "http://deb.debian.org/debian"]
    assert d13.content_hash() != d12.content_hash()
    assert "echo debian13 > /etc/hostname" in (d13.directory / "customize.sh").read_text()


@pytest.mark.parametrize(
    ("key", "script_from", "chain"),
    [
        ("debian13", "debian13", "base:debian12/"),
        ("ubuntu2204", "ubuntu2204", "base:debian12/"),
        ("ubuntu2404", "ubuntu2204", "base:ubuntu2204/base:debian12/"),
    ],
)
def test_a_recipe_made_like_debian12_runs_its_script_first_and_rebuilds_when_it_changes(
    tmp_path: Path, key: str, script_from: str, chain: str
) -> None:
    r = box.load_recipe(key)
    d12 = box.load_recipe("debian12")
    assert r.box_file("Vagrantfile") == d12.directory / "Vagrantfile"
    script, base_script = r.customize_scripts()
    assert (script, base_script) == (r.directory.parent / script_from / "customize.sh", d12.directory / "customize.sh")
    assert 'sh /tmp/base-customize.sh "$@"' in script.read_text()
    assert d12.customize_scripts() == (d12.directory / "customize.sh", None)
    assert [name for name, _f in r.files() if name.startswith(chain)] == [
        f"{chain}Vagrantfile",
        f"{chain}customize.sh",
        f"{chain}recipe.yml",
    ]
    # A copy of the recipes where debian12's script changes: this recipe's version changes too.
    shutil.copytree(r.directory.parent, tmp_path / "boxes")
    before = box.load_recipe(key, tmp_path / "boxes").version
    with (tmp_path / "boxes" / "debian12" / "customize.sh").open("a") as fh:
        fh.write("# changed\n")
    assert box.load_recipe(key, tmp_path / "boxes").version != before


def test_debian12s_debootstrap_and_keyring_know_trixie() -> None:
    """The host facts the Debian 13 recipe rests on (Debian 12's debootstrap and archive keyring)."""
    if not Path("/usr/share/debootstrap/scripts").is_dir():
        pytest.skip("debootstrap is not installed")
    assert (Path("/usr/share/debootstrap/scripts") / "trixie").exists()
    assert Path("/usr/share/keyrings/debian-archive-trixie-stable.gpg").is_file()


@pytest.mark.parametrize(("key", "suite", "script"), [("ubuntu2204", "jammy", None), ("ubuntu2404", "noble", "jammy")])
def test_ubuntu_recipes_use_the_mirror_and_keyring_the_user_names(
    tmp_path: Path, key: str, suite: str, script: str | None
) -> None:
    keyring = tmp_path / "ubuntu-archive-keyring.gpg"
    keyring.write_bytes(b"key")
    r = box.load_recipe(key)
    assert r.needs_source and r.name == f"harness/{key}" and r.suite == suite
    assert "linux-image-virtual" in r.packages and "linux-image-amd64" not in r.packages
    sourced = r.with_source("http://mirror.example/ubuntu/", keyring)
    assert (sourced.mirror, sourced.security_mirror) == ("http://mirror.example/ubuntu", "http://mirror.example/ubuntu")
    argv = sourced.debootstrap_argv(Path("/R"))
    assert "--components=main,universe" in argv
    assert f"--keyring={keyring}" in argv
    tail = [suite, "/R", "http://mirror.example/ubuntu"]
    assert argv[-4:] == [*tail, f"/usr/share/debootstrap/scripts/{script}"] if script else argv[-3:] == tail
    if script and Path("/usr/share/debootstrap/scripts").is_dir():  # Debian 12's debootstrap has it
        assert (Path("/usr/share/debootstrap/scripts") / script).exists()
    # The mirror and keyring are where the box gets its packages, not what it is: same version.
    assert sourced.version == r.version
    security = r.with_source("http://m/ubuntu", keyring, "http://security.example/ubuntu")
    assert security.security_mirror == "http://security.example/ubuntu"


@pytest.mark.parametrize("key", ["ubuntu2204", "ubuntu2404"])
def test_an_ubuntu_recipe_without_mirror_or_keyring_says_how_to_build_it(tmp_path: Path, key: str) -> None:
    r = box.load_recipe(key)
    with pytest.raises(UsageError, match=rf"harness box build {key} --mirror URL --keyring FILE.*--mirror URL"):
        r.with_source(None, tmp_path / "k.gpg")
    with pytest.raises(UsageError, match="missing: --mirror URL, --keyring FILE"):
        r.with_source(None, None)
    with pytest.raises(UsageError, match="is not a file"):
        r.with_source("http://m/ubuntu", tmp_path / "absent.gpg")


@pytest.mark.parametrize("key", ["ubuntu2204", "ubuntu2404"])
def test_ubuntu_customize_writes_main_and_universe_and_turns_ssh_socket_off(tmp_path: Path, key: str) -> None:
    """Run the recipe's sources.list step with the arguments build_box passes it."""
    script = box.load_recipe(key).customize_scripts()[0].read_text()
    start, end = script.index("mirror=$2"), script.index("\nSOURCES\n") + len("\nSOURCES\n")
    sources_step = script[start:end].replace("/etc/apt/sources.list", str(tmp_path / "sources.list"))
    sources_step = sources_step.replace('sh /tmp/base-customize.sh "$@"', "")
    suite = box.load_recipe(key).suite
    subprocess.run(
        ["sh", "-c", sources_step, "customize", "6.8.0-1-generic", "http://m/ubuntu", "http://s/ubuntu", suite],
        check=True,
    )
    assert (tmp_path / "sources.list").read_text().splitlines() == [
        f"deb http://m/ubuntu {suite} main universe",
        f"deb http://m/ubuntu {suite}-updates main universe",
        f"deb http://s/ubuntu {suite}-security main universe",
    ]
    assert "systemctl disable ssh.socket" in script
    assert 'name=ubuntu$(echo "$VERSION_ID" | tr -d .)' in script  # ubuntu2204, ubuntu2404


def test_box_build_cli_refuses_an_ubuntu_recipe_without_a_mirror_before_building(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(box, "build_box", lambda *a, **k: pytest.fail("built without a mirror"))
    result = CliRunner().invoke(main, ["box", "build", "ubuntu2204"])
    assert result.exit_code == 2
    assert "harness box build ubuntu2204 --mirror URL --keyring FILE" in result.output


def _scenario(text: str) -> Scenario:
    return parse_scenario(text, Path("/s/scenario.yml"))


def test_a_node_boots_its_own_box_and_the_others_the_scenarios() -> None:
    sc = _scenario(
        "name: os\nnodes:\n  - name: a\n  - name: b\n    box: debian13\n    count: 2\n"
        "  - name: c\n    box: generic/ubuntu2204\n"
    )
    assert {n.name: n.box for n in sc.expanded_nodes()} == {
        "a": DEFAULT_BOX,
        "b01": "harness/debian13",
        "b02": "harness/debian13",
        "c": "generic/ubuntu2204",
    }
    assert sc.boxes() == [DEFAULT_BOX, "harness/debian13", "generic/ubuntu2204"]
    whole = _scenario("name: os\nbox: ubuntu2404\nnodes:\n  - name: a\n")
    assert whole.boxes() == ["harness/ubuntu2404"]


def test_a_box_name_that_is_no_recipe_is_a_vagrant_box_name() -> None:
    long = "p" * 300  # no filesystem takes the name: it is not looked up as a recipe
    assert _scenario(f"name: os\nnodes:\n  - name: a\n    box: {long}\n").boxes() == [long]
    assert _scenario("name: os\nnodes:\n  - name: a\n    box: ..\n").boxes() == [".."]
    assert _scenario("name: os\nnodes:\n  - name: a\n    box: debian14\n").boxes() == ["debian14"]


def test_a_bad_box_name_is_a_spec_problem_with_its_key_path() -> None:
    with pytest.raises(SpecError, match=r"nodes\[1\]\.box: .*without spaces or quotes"):
        _scenario('name: os\nnodes:\n  - name: a\n  - name: b\n    box: "debian 13"\n')


def _installed(monkeypatch: pytest.MonkeyPatch, *boxes: InstalledBox) -> None:
    monkeypatch.setattr(box, "installed_boxes", lambda: list(boxes))


def test_preflight_pins_every_box_the_nodes_use(monkeypatch: pytest.MonkeyPatch) -> None:
    v12, v13 = box.load_recipe("debian12").version, box.load_recipe("debian13").version
    _installed(
        monkeypatch,
        InstalledBox(DEFAULT_BOX, "libvirt", v12),
        InstalledBox("harness/debian13", "libvirt", v13),
        InstalledBox("example/other", "libvirt", "7"),
    )
    sc = _scenario(
        "name: os\nnodes:\n  - name: a\n  - name: b\n    box: debian13\n  - name: c\n    box: example/other\n"
    )
    assert preflight.check_box(sc) == {DEFAULT_BOX: v12, "harness/debian13": v13, "example/other": None}
    only13 = _scenario("name: os\nnodes:\n  - name: b\n    box: debian13\n")
    assert preflight.check_box(only13) == {"harness/debian13": v13}  # the unused default is not asked for


def test_preflight_names_the_build_command_of_every_missing_box(monkeypatch: pytest.MonkeyPatch) -> None:
    _installed(monkeypatch, InstalledBox(DEFAULT_BOX, "libvirt", box.load_recipe("debian12").version))
    sc = _scenario(
        "name: os\nnodes:\n  - name: a\n  - name: b\n    box: debian13\n  - name: c\n    box: ubuntu2204\n"
        "  - name: d\n    box: example/other\n"
    )
    with pytest.raises(HostError) as info:
        preflight.check_box(sc)
    text = str(info.value)
    assert "`harness box build debian13`" in text
    assert "`harness box build ubuntu2204 --mirror URL --keyring FILE`" in text
    assert "box 'example/other' is not installed" in text and "vagrant box add" in text
    assert "debian12" not in text


def test_validate_shows_which_node_boots_which_box(tmp_path: Path) -> None:
    path = tmp_path / "scenario.yml"
    path.write_text("name: os\nnodes:\n  - name: a\n  - name: b\n    box: debian13\n")
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    assert "box harness/debian12: a" in result.output
    assert "box harness/debian13: b" in result.output
    path.write_text("name: os\nnodes:\n  - name: a\n")
    plain = CliRunner().invoke(main, ["validate", str(path)])
    assert plain.exit_code == 0 and "box " not in plain.output  # the default box goes unsaid


@pytest.mark.parametrize(
    ("image", "recipe"),
    [
        ("geerlingguy/docker-debian12-ansible:latest", None),
        ("debian:12", None),
        ("debian/bookworm64", None),
        ("geerlingguy/docker-debian13-ansible:latest", "debian13"),
        ("docker.io/library/debian:trixie", "debian13"),
        ("debian:13.1", "debian13"),
        ("ubuntu:22.04", "ubuntu2204"),
        ("geerlingguy/docker-ubuntu2204-ansible", "ubuntu2204"),
        ("ubuntu:noble", "ubuntu2404"),
        ("geerlingguy/docker-ubuntu2404-ansible:latest", "ubuntu2404"),
        ("rockylinux:9", None),
        ("debian:130", None),
    ],
)
def test_a_molecule_image_maps_to_the_box_of_its_os(image: str, recipe: str | None) -> None:
    assert molecule.box_for_image(image) == recipe


def test_a_molecule_platform_on_another_os_gets_that_box(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    tiny = Path(__file__).parent.parent / "fixtures" / "molecule" / "tinyrole" / "molecule" / "default"
    monkeypatch.setenv("MOLECULE_DISTRO", "debian13")
    translated = molecule.translate(tiny / "molecule.yml")
    assert [n.box for n in translated.scenario.expanded_nodes()] == ["harness/debian13"]
    text = "\n".join(translated.notes)
    assert "platforms[0].image: 'geerlingguy/docker-debian13-ansible:latest' → box harness/debian13" in text
    monkeypatch.setenv("MOLECULE_DISTRO", "debian12")
    assert [n.box for n in molecule.translate(tiny / "molecule.yml").scenario.expanded_nodes()] == [DEFAULT_BOX]
