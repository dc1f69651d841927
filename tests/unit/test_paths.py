"""The Vagrantfile template and the box recipes come from the package, so a wheel has them too."""

from __future__ import annotations

import tomllib
from importlib.resources import files
from pathlib import Path

import yaml

import harness
from harness import box, paths, render

PACKAGE = Path(harness.__file__).resolve().parent


def test_template_is_package_data() -> None:
    template = files("harness").joinpath("data/vagrant/Vagrantfile.j2")
    assert template.is_file()
    assert Path(str(template)).parent == paths.TEMPLATES_DIR
    assert paths.TEMPLATES_DIR.is_relative_to(PACKAGE)
    assert paths.TEMPLATES_DIR != paths.PROJECT_ROOT / "vagrant"  # not through the checkout's link


def test_render_loads_the_template_from_the_package() -> None:
    filename = render._environment().get_template("Vagrantfile.j2").filename
    assert filename is not None
    assert Path(filename).resolve().is_relative_to(PACKAGE)


def test_debian12_recipe_is_package_data() -> None:
    assert files("harness").joinpath("data/vagrant/boxes/debian12/recipe.yml").is_file()
    recipe = box.load_recipe("debian12")
    assert recipe.directory.is_relative_to(PACKAGE)
    assert {"recipe.yml", "customize.sh", "Vagrantfile"} <= {p.name for p in recipe.directory.iterdir()}
    assert "debian12" in box.available_recipes()


def test_checkout_vagrant_dir_is_the_package_data() -> None:
    """The documented layout keeps a top-level vagrant/: a link to the data the package ships."""
    assert (paths.PROJECT_ROOT / "vagrant").resolve() == paths.TEMPLATES_DIR.resolve()


def test_collection_version_follows_the_package() -> None:
    pyproject = tomllib.loads((paths.PROJECT_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    galaxy = yaml.safe_load((paths.PROJECT_ROOT / "galaxy.yml").read_text(encoding="utf-8"))
    assert (galaxy["namespace"], galaxy["name"]) == ("harness", "cluster")
    assert str(galaxy["version"]) == pyproject["project"]["version"]
