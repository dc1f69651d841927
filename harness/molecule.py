"""Molecule scenarios as harness scenarios, and Molecule's environment for every scenario's tests.

`translate` reads a Molecule scenario's `molecule.yml` as it is and maps it into the one Scenario
model (harness.spec): platforms → nodes, `provisioner.inventory` → inventory vars, the playbooks with
Molecule's defaults (converge.yml; prepare.yml, side_effect.yml, verify.yml and cleanup.yml when
present; side_effect and cleanup only where `scenario.test_sequence` has them), the verifier (testinfra:
the scenario's tests directory; ansible: verify.yml, judged from its events). Every mapping and every
option the harness cannot honour is a note that `harness validate` shows; nothing is dropped silently.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness import spec
from harness.errors import SpecError
from harness.paths import DATA_DIR, cache_dir
from harness.rundir import RunState
from harness.spec import Scenario

MOLECULE_FILE = "molecule.yml"
# What the harness's box gets before the scenario's own prepare: what platform images give a role.
PREPARE_BOX = DATA_DIR / "molecule" / "prepare_box.yml"
_TOP_KEYS = {"dependency", "driver", "platforms", "provisioner", "verifier", "scenario", "lint", "log", "prerun"}
_TOP_KEYS |= {"role_name_check", "shared_state", "ansible"}
_NOT_USED = ("dependency", "lint", "log", "prerun", "role_name_check", "shared_state", "ansible")
_PLAYBOOKS = ("create", "prepare", "converge", "side_effect", "verify", "cleanup", "destroy")
# Drivers whose platforms (containers) the converge reaches as root.
_ROOT_DRIVERS = ("docker", "podman")
# Molecule's default scenario.test_sequence (`molecule test`).
TEST_SEQUENCE = (
    "dependency", "cleanup", "destroy", "syntax", "create", "prepare", "converge", "idempotence", "side_effect",
    "verify", "cleanup", "destroy",
)  # fmt: skip
_SEQUENCE_RUN = set(TEST_SEQUENCE)
# The harness's model key → the molecule.yml key, for messages about the translated scenario.
_KEYS = (
    ("nodes[", "platforms["),
    ("provision.playbook", "provisioner.playbooks.converge"),
    ("provision.side_effect[0]", "provisioner.playbooks.side_effect"),
    ("provision.cleanup[0]", "provisioner.playbooks.cleanup"),
)
_VAR = re.compile(r"\$\$|\$\{(\w+)(?::?-([^}]*))?\}|\$(\w+)")


@dataclass(frozen=True)
class Translation:
    """A molecule.yml as a Scenario, with what was mapped from what and what is not honoured."""

    scenario: Scenario
    notes: list[str] = field(default_factory=list)


def is_molecule(scenario: Scenario) -> bool:
    return scenario.source.name == MOLECULE_FILE


def project_dir(scenario: Scenario) -> Path:
    """Molecule's project directory: the role holding molecule/<scenario>/; else the working directory."""
    return scenario.base_dir.parent.parent if is_molecule(scenario) else Path.cwd()


def interpolate(text: str, env: dict[str, str]) -> str:
    """Molecule's variable substitution in molecule.yml: $VAR, ${VAR}, ${VAR:-default}; $$ is a '$'."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(3)
        return env.get(name) or (m.group(2) if m.group(2) is not None else "")

    return _VAR.sub(sub, text)


def _as_dict(value: Any, key: str, problems: list[str]) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.append(f"{key}: expected a mapping")
        return {}
    return value


def _names(value: Any, key: str, problems: list[str]) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        problems.append(f"{key}: expected a list of names")
        return []
    return list(value)


# A platform image's OS → the harness box of that OS (spec.box_name), where it is not the default
# box: role sets key on ansible_distribution, so a platform on Debian 13 or Ubuntu gets that OS.
# Matched on the image name's words: debian:trixie, geerlingguy/docker-ubuntu2404-ansible, ubuntu:22.04.
_IMAGE_BOXES = (
    (re.compile(r"debian[^a-z0-9]*(13|trixie)\b|trixie"), "debian13"),
    (re.compile(r"ubuntu[^a-z0-9]*(22\.?04|jammy)\b|jammy"), "ubuntu2204"),
    (re.compile(r"ubuntu[^a-z0-9]*(24\.?04|noble)\b|noble"), "ubuntu2404"),
)


def box_for_image(image: str) -> str | None:
    """The harness box recipe for a Molecule platform's image, or None (the default box: Debian 12,
    or an OS the harness has no box for)."""
    name = image.lower()
    return next((recipe for pattern, recipe in _IMAGE_BOXES if pattern.search(name)), None)


def _platforms(data: dict[str, Any], problems: list[str], notes: list[str]) -> list[dict[str, Any]]:
    platforms = data.get("platforms")
    if not isinstance(platforms, list) or not platforms:
        problems.append("platforms: expected a list of at least one platform (each with a name)")
        return []
    nodes = []
    for i, plat in enumerate(platforms):
        key = f"platforms[{i}]"
        if not isinstance(plat, dict) or not isinstance(plat.get("name"), str):
            problems.append(f"{key}.name: every platform needs a name")
            continue
        groups = _names(plat.get("groups"), f"{key}.groups", problems)
        children = _names(plat.get("children"), f"{key}.children", problems)
        node: dict[str, Any] = {"name": plat["name"], "groups": list(dict.fromkeys(groups + children))}
        for opt in ("memory", "cpus"):
            if opt in plat:
                node[opt] = plat[opt]
        mapped = f"{key} {plat['name']!r} → node {plat['name']!r}"
        if children:
            mapped += (
                f" (in groups {', '.join(groups) or '(none)'} and their children {', '.join(children)}, flattened)"
            )
        notes.append(mapped)
        for opt in sorted(set(plat) - {"name", "groups", "children", "memory", "cpus"}):
            recipe = box_for_image(str(plat[opt])) if opt in ("image", "box") else None
            if recipe is not None:
                node["box"] = spec.box_name(recipe)
                notes.append(f"{key}.{opt}: {plat[opt]!r} → box {node['box']} (the image's OS)")
            elif opt in ("image", "box"):
                notes.append(f"{key}.{opt}: {plat[opt]!r} is replaced by the harness's box")
            else:
                notes.append(f"{key}.{opt}: a driver option the harness does not honour (ignored)")
        nodes.append(node)
    return nodes


def _vars_dir(path: Path, key: str, problems: list[str]) -> dict[str, dict[str, Any]]:
    """An Ansible group_vars/ or host_vars/ directory: name.yml files, or name/ directories of them."""
    if not path.is_dir():
        problems.append(f"{key}: {path} is not a directory")
        return {}
    out: dict[str, dict[str, Any]] = {}
    for entry in sorted(path.iterdir()):
        files = sorted(entry.glob("*.y*ml")) if entry.is_dir() else [entry]
        name = entry.name if entry.is_dir() else entry.name.removesuffix(".yml").removesuffix(".yaml")
        for f in files:
            try:
                loaded = spec.load_yaml(f.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
                problems.append(f"{key}: cannot read {f}: {exc}")
                continue
            out.setdefault(name, {}).update(loaded if isinstance(loaded, dict) else {})
    return out


def _inventory(prov: dict[str, Any], sdir: Path, problems: list[str], notes: list[str]) -> dict[str, Any]:
    inv = _as_dict(prov.get("inventory"), "provisioner.inventory", problems)
    out: dict[str, Any] = {}
    links = _as_dict(inv.get("links"), "provisioner.inventory.links", problems)
    for kind in ("group_vars", "host_vars"):
        merged = dict(_as_dict(inv.get(kind), f"provisioner.inventory.{kind}", problems))
        if isinstance(links.get(kind), str):
            key = f"provisioner.inventory.links.{kind}"
            for name, values in _vars_dir((sdir / links[kind]).resolve(), key, problems).items():
                merged[name] = {**merged.get(name, {}), **values}
        if merged:
            out[kind] = merged
            notes.append(f"provisioner.inventory.{kind} → the run inventory's vars of {', '.join(merged)}")
    if "hosts" in links:
        notes.append("provisioner.inventory.links.hosts: not honoured (the harness writes the run's inventory)")
    return out


def _role_links(project: Path) -> Path | None:
    """A directory of links to the role under test named as Molecule would find it (meta's
    role_name, and namespace.role_name with galaxy_info.author standing in for a missing namespace),
    when those names differ from its directory's; else None."""
    try:
        meta = spec.load_yaml((project / "meta" / "main.yml").read_text(encoding="utf-8"))
        info = meta.get("galaxy_info") or {} if isinstance(meta, dict) else {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        info = {}
    info = info if isinstance(info, dict) else {}
    role_name = str(info.get("role_name") or project.name)
    # As Molecule (ansible-compat) names it: the namespace, else galaxy_info.author (geerlingguy.git).
    namespace = info.get("namespace") or info.get("author")
    names = {role_name} | ({f"{namespace}.{role_name}"} if isinstance(namespace, str) and namespace else set())
    names.discard(project.name)
    if not names:
        return None
    links = cache_dir() / "molecule-roles" / re.sub(r"[^A-Za-z0-9]+", "_", str(project)).strip("_")[-120:]
    links.mkdir(parents=True, exist_ok=True)
    for name in names:
        link = links / name
        if not link.is_symlink() or link.resolve() != project:
            link.unlink(missing_ok=True)
            link.symlink_to(project, target_is_directory=True)
    return links


def _scenario_name(project: Path, name: str) -> str:
    cleaned = re.sub(r"[^a-z0-9-]+", "-", f"{project.name}-{name}".lower()).lstrip("-0123456789")
    return cleaned[:24].strip("-") or "molecule"


def _provision(
    data: dict[str, Any], sdir: Path, sequence: list[str], problems: list[str], notes: list[str]
) -> dict[str, Any]:
    """The playbooks, env and verifier; side_effect and cleanup only where `sequence` has them."""
    out: dict[str, Any] = {}
    prov = _as_dict(data.get("provisioner"), "provisioner", problems)
    if prov.get("name", "ansible") != "ansible":
        problems.append(f"provisioner.name: {prov['name']!r}: only Molecule's ansible provisioner exists")
    books = _as_dict(prov.get("playbooks"), "provisioner.playbooks", problems)
    given = {k: sdir / v for k, v in books.items() if k in _PLAYBOOKS and isinstance(v, str)}
    for k in sorted(set(books) - set(_PLAYBOOKS)):
        notes.append(f"provisioner.playbooks.{k}: not a Molecule playbook the harness runs (ignored)")
    for k in ("create", "destroy"):
        if k in given:
            notes.append(f"provisioner.playbooks.{k}: not run; the harness creates and destroys the VMs")
    for k, when in (("side_effect", "at verify, after idempotence, before the tests"), ("cleanup", "before destroy")):
        book = given.get(k, sdir / f"{k}.yml")
        if k not in given and not book.is_file():
            continue
        if k not in sequence:
            notes.append(f"provisioner.playbooks.{k}: {book.name} not run (not in scenario.test_sequence)")
            continue
        out[k] = [str(book)]
        notes.append(f"provisioner.playbooks.{k}: {book.name}, run {when}")
    converge = given.get("converge", sdir / "converge.yml")
    prepare = given.get("prepare", sdir / "prepare.yml")
    out["playbook"] = str(converge)
    out["prepare"] = [str(PREPARE_BOX)] + ([str(prepare)] if "prepare" in given or prepare.is_file() else [])
    notes.append(f"converge: {converge.name}; prepare: the box's own ({PREPARE_BOX.name}: apt lists, python3, sudo)")
    if len(out["prepare"]) > 1:
        notes[-1] += f", then {prepare.name}"
    env = {**_as_dict(prov.get("env"), "provisioner.env", problems)}
    if env:
        out["env"] = {str(k): str(v) for k, v in env.items()}
        notes.append(f"provisioner.env → the environment of ansible-playbook and the tests: {', '.join(env)}")
    for opt in ("config_options", "options", "connection_options", "ansible_args"):
        if prov.get(opt):
            notes.append(f"provisioner.{opt}: not honoured by the harness (ignored)")
    verifier = _as_dict(data.get("verifier"), "verifier", problems)
    if verifier.get("name", "ansible") == "ansible":
        verify = given.get("verify", sdir / "verify.yml")
        if "verify" in given or verify.is_file():
            out["verify_playbook"] = str(verify)
            notes.append(f"verifier ansible: {verify.name}, judged from its events")
    elif verifier.get("name") != "testinfra":
        problems.append(f"verifier.name: {verifier['name']!r}: the harness runs ansible or testinfra")
    return out


def _tests(data: dict[str, Any], sdir: Path, notes: list[str]) -> str | None:
    verifier = data.get("verifier") if isinstance(data.get("verifier"), dict) else {}
    assert isinstance(verifier, dict)
    if verifier.get("name") != "testinfra":
        return None
    tests = sdir / str(verifier.get("directory", "tests"))
    notes.append(f"verifier testinfra: {tests} (with Molecule's environment: MOLECULE_INVENTORY_FILE, ...)")
    for opt in ("options", "additional_files_or_dirs", "env"):
        if verifier.get(opt):
            notes.append(f"verifier.{opt}: not honoured by the harness (ignored)")
    return str(tests)


def _sequence(data: dict[str, Any], problems: list[str], notes: list[str]) -> list[str]:
    """`scenario.test_sequence`, or Molecule's default: what decides idempotence, side_effect, cleanup."""
    sc = _as_dict(data.get("scenario"), "scenario", problems)
    sequence = sc.get("test_sequence")
    if sequence is None:
        return list(TEST_SEQUENCE)
    steps = _names(sequence, "scenario.test_sequence", problems)
    left = [s for s in steps if s not in _SEQUENCE_RUN]
    if left:
        notes.append(f"scenario.test_sequence: {', '.join(left)} not honoured by the harness")
    return steps


def translate(path: Path) -> Translation:
    """molecule.yml as a Scenario; SpecError naming the file and every key that cannot be read."""
    sdir = path.resolve().parent
    project = sdir.parent.parent
    env = {**os.environ, "MOLECULE_SCENARIO_NAME": sdir.name, "MOLECULE_PROJECT_DIRECTORY": str(project)}
    env["MOLECULE_SCENARIO_DIRECTORY"] = str(sdir)
    data = spec.parse_yaml(interpolate(spec.read_text(path), env), path)
    if not isinstance(data, dict):
        raise SpecError(str(path), ["(top level): expected a mapping with keys platforms, provisioner, ..."])
    problems = [f"{k}: unknown key (not a Molecule setting)" for k in data if k not in _TOP_KEYS]
    driver = _as_dict(data.get("driver"), "driver", problems)
    notes = [f"driver {driver.get('name', 'default')!r} → the harness's VMs (vagrant-libvirt, box {spec.DEFAULT_BOX})"]
    notes += [f"{k}: not honoured by the harness (ignored)" for k in _NOT_USED if data.get(k)]
    notes += [f"driver.{k}: a driver option the harness does not honour" for k in driver if k != "name"]
    nodes = _platforms(data, problems, notes)
    prov = _as_dict(data.get("provisioner"), "provisioner", [])
    inventory = _inventory(prov, sdir, problems, notes)
    if driver.get("name") in _ROOT_DRIVERS:
        # A container platform logs the converge in as root; the box logs in as vagrant: become root
        # unless the scenario's own inventory says otherwise (geerlingguy's converge.yml has no become).
        groups = inventory.setdefault("group_vars", {})
        groups["all"] = {"ansible_become": True, **groups.get("all", {})}
        notes.append(f"driver {driver['name']!r} logs in as root → ansible_become: true for all")
    sequence = _sequence(data, problems, notes)
    provision = _provision(data, sdir, sequence, problems, notes)
    provision["idempotence"] = "idempotence" in sequence
    tests = _tests(data, sdir, notes)
    if problems:
        raise SpecError(str(path), problems)
    links = _role_links(project)
    provision["roles_path"] = [str(p) for p in (links, project.parent) if p is not None]
    notes.append(
        f"role {project.name!r} found in {project.parent}" + (f" (also as linked in {links})" if links else "")
    )
    name = str(_as_dict(data.get("scenario"), "scenario", []).get("name") or sdir.name)
    model = {"name": _scenario_name(project, name), "nodes": nodes, "provision": provision, **inventory}
    if tests is not None:
        model["tests"] = tests
    try:
        scenario = spec.validate_scenario({**model, "source": path.resolve()}, path)
    except SpecError as exc:
        raise SpecError(str(path), [_molecule_key(p) for p in exc.problems]) from None
    return Translation(scenario, notes)


def _molecule_key(problem: str) -> str:
    for ours, theirs in _KEYS:
        if problem.startswith(ours):
            return theirs + problem[len(ours) :]
    return problem


def instance_config(run: RunState, inventory: dict[str, Any]) -> Path:
    """Molecule's instance config (instance, address, user, port, identity_file) of the run's nodes."""
    hosts = inventory.get("all", {}).get("hosts", {})
    rows = [
        {
            "instance": name,
            "address": h.get("ansible_host"),
            "user": h.get("ansible_user"),
            "port": h.get("ansible_port"),
            "identity_file": h.get("ansible_ssh_private_key_file"),
        }
        for name, h in hosts.items()
    ]
    path = run.path / "instance_config.yml"
    path.write_text(yaml.safe_dump(rows, sort_keys=False), encoding="utf-8")
    return path


def environment(scenario: Scenario, run: RunState, inventory: Path) -> dict[str, str]:
    """Molecule's environment, for every scenario's tests and playbooks (molecule.yml or not), then
    the scenario's own `provision.env` on top."""
    sdir = scenario.base_dir
    name = sdir.name if is_molecule(scenario) else scenario.name
    tests = scenario.resolve(scenario.tests) if scenario.tests is not None else sdir / "tests"
    env = {
        "MOLECULE_DEBUG": "False",
        "MOLECULE_FILE": str(scenario.source),
        "MOLECULE_ENV_FILE": str(project_dir(scenario) / ".env.yml"),
        "MOLECULE_STATE_FILE": str(run.path / "state.json"),
        "MOLECULE_INVENTORY_FILE": str(inventory),
        "MOLECULE_EPHEMERAL_DIRECTORY": str(run.path),
        "MOLECULE_SCENARIO_DIRECTORY": str(sdir),
        "MOLECULE_PROJECT_DIRECTORY": str(project_dir(scenario)),
        "MOLECULE_INSTANCE_CONFIG": str(run.path / "instance_config.yml"),
        "MOLECULE_DEPENDENCY_NAME": "galaxy",
        "MOLECULE_DRIVER_NAME": "vagrant",
        "MOLECULE_PROVISIONER_NAME": "ansible",
        "MOLECULE_SCENARIO_NAME": name,
        "MOLECULE_VERIFIER_NAME": "testinfra",
        "MOLECULE_VERIFIER_TEST_DIRECTORY": str(tests),
    }
    return {**env, **(scenario.provision.env if scenario.provision is not None else {})}
