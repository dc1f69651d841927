"""The scenario model: one typed, frozen spec, validated once with every problem reported together.

Defaults live here and only here (the field defaults below). Paths in a scenario are relative to
the scenario file; `load_scenario` resolves them.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from harness import pci
from harness.errors import SpecError
from harness.paths import BOX_RECIPES_DIR

DEFAULT_BOX = "harness/debian12"
BUILTIN_GROUPS = ("login", "mgmt", "gpu")
_HOSTNAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
# Group names as Ansible takes them (it only warns about '-' and '.': `slurm-master`, `kube-node`
# are everywhere in real inventories). Refused: what breaks Ansible host patterns (':', ',', '!',
# '&', '*', '[', spaces...) and the names Ansible reserves.
_GROUP = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,62}$")
_GROUP_RULE = "group names are letters, digits, '_', '-' and '.', starting with a letter or '_'"
RESERVED_GROUPS = ("all", "ungrouped")


def box_name(value: str) -> str:
    """A scenario's `box:` as Vagrant names it: a harness recipe's name (`debian13`) means that
    recipe's box (`harness/debian13`); anything else is a Vagrant box name as given."""
    if "/" in value or not re.match(r"^[a-z0-9][a-z0-9._-]{0,63}$", value):
        return value  # not a recipe's name (and no path to look up: a 300-character name is ENAMETOOLONG)
    return f"harness/{value}" if (BOX_RECIPES_DIR / value / "recipe.yml").is_file() else value


def _box(value: str) -> str:
    if not value.strip() or any(c.isspace() or c in "\"'\\" for c in value):
        raise ValueError(
            "a box is a harness recipe (debian12, debian13, ubuntu2204, ubuntu2404) or a Vagrant box name, "
            "without spaces or quotes"
        )
    return box_name(value)


def group_name_problem(name: str) -> str | None:
    """Why Ansible would not take `name` as a group name, or None."""
    if name in RESERVED_GROUPS:
        return f"{name!r} is reserved by Ansible (every inventory has it); choose another name"
    if not _GROUP.match(name):
        return f"{name!r}: {_GROUP_RULE} (what Ansible host patterns accept)"
    return None


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


GpuRequest = int | Literal["auto"] | list[str]


class NodeSpec(_Model):
    """One entry of `nodes:`; with `count` it stands for several nodes (gpu01, gpu02, ...)."""

    name: str
    groups: list[str] = Field(default_factory=list)
    cpus: Annotated[int, Field(ge=1, le=256)] = 1
    memory: Annotated[int, Field(ge=256, le=2_097_152, description="MiB")] = 1024
    disk: Annotated[int, Field(ge=4, le=4096, description="GiB")] = 8
    gpus: GpuRequest = 0
    count: Annotated[int, Field(ge=1, le=99)] | None = None
    viommu: bool = Field(False, description="emulate an Intel IOMMU in the VM (q35), to rehearse host roles")
    emulated_devices: list[str] = Field(default_factory=list, description="extra QEMU PCI device models, e.g. edu")
    box: str | None = Field(None, description="this node's box (a recipe such as debian13, or a Vagrant box name)")

    @field_validator("box")
    @classmethod
    def _box(cls, v: str | None) -> str | None:
        return None if v is None else _box(v)

    @field_validator("emulated_devices")
    @classmethod
    def _devices(cls, v: list[str]) -> list[str]:
        bad = [d for d in v if not re.match(r"^[a-z][a-z0-9-]*$", d)]
        if bad:
            raise ValueError(
                f"QEMU device model names are lowercase words (see `qemu-system-x86_64 -device help`): {bad}"
            )
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _HOSTNAME.match(v):
            raise ValueError("must be a hostname: lowercase letters, digits and '-', starting with a letter")
        return v

    @field_validator("groups")
    @classmethod
    def _groups(cls, v: list[str]) -> list[str]:
        bad = [why for why in map(group_name_problem, v) if why]
        if bad:
            raise ValueError("; ".join(bad))
        if len(set(v)) != len(v):
            raise ValueError("a group is listed twice")
        return v

    @field_validator("gpus")
    @classmethod
    def _gpus(cls, v: GpuRequest) -> GpuRequest:
        if isinstance(v, int):
            if v < 0 or v > 16:
                raise ValueError("a GPU count must be between 0 and 16")
            return v
        if isinstance(v, list):
            addrs = [pci.normalize_address(a) for a in v]
            if len(set(addrs)) != len(addrs):
                raise ValueError("a PCI address is listed twice")
            return addrs
        return v


class NetworkSpec(_Model):
    subnet: ipaddress.IPv4Network | None = None

    @field_validator("subnet")
    @classmethod
    def _subnet(cls, v: ipaddress.IPv4Network | None) -> ipaddress.IPv4Network | None:
        if v is not None:
            if not v.is_private:
                raise ValueError("must be a private IPv4 range (10/8, 172.16/12, 192.168/16)")
            if v.prefixlen > 28:
                raise ValueError("must be /28 or larger so every node, the host and DHCP fit")
        return v


class ProvisionSpec(_Model):
    playbook: Path
    roles_path: list[Path] = Field(default_factory=list)
    extra_vars: dict[str, Any] = Field(default_factory=dict)
    idempotence: bool = True
    # Ansible strategy plugin. The mitogen ones keep one Python interpreter per node instead of
    # starting one per task: the same modules and roles, several times faster under TCG.
    strategy: Literal["linear", "free", "mitogen_linear", "mitogen_free"] = "linear"
    # An Ansible requirements file (collections: local directories or tarballs), installed per run
    # without any network (ansible-galaxy --offline) and cached by content.
    collections: Path | None = None
    # Playbooks run once on the fresh cluster before the first converge (Molecule's prepare), not
    # again for idempotence.
    prepare: list[Path] = Field(default_factory=list)
    # Playbooks run after the idempotence converge, before the tests (Molecule's side_effect): the
    # tests judge the state they leave, so no quick verdict runs before idempotence.
    side_effect: list[Path] = Field(default_factory=list)
    # Playbooks run before the teardown, also after a failed step (Molecule's cleanup); not with --keep.
    cleanup: list[Path] = Field(default_factory=list)
    # A playbook run at verify, before the tests, judged from its events (Molecule's ansible verifier).
    verify_playbook: Path | None = None
    # Environment variables for every ansible-playbook run and the tests (Molecule's provisioner.env).
    env: dict[str, str] = Field(default_factory=dict)

    @field_validator("roles_path", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v


class KubernetesSpec(_Model):
    """`kubernetes:`: the scenario installs Kubernetes from a bundle (harness.k8s_bundle checks it
    before anything boots). `k3s`: a k3s air-gap bundle, without `bundle` the directory in
    HARNESS_K3S_BUNDLE (roles/k3s). `upstream`: a Kubernetes server bundle, without `bundle` the one
    `harness bundle kubernetes` keeps in the harness cache (roles/kubernetes)."""

    distribution: Literal["k3s", "upstream"] = "k3s"
    bundle: Path | None = None


class OfflineSpec(_Model):
    """`offline:`: the run installs from this apt bundle only (`harness bundle build` makes one;
    harness.offline serves it to the nodes). The path is relative to the scenario file."""

    bundle: Path


class Node(_Model):
    """A single machine after `count` expansion: what the renderer and inventory work from."""

    name: str
    groups: tuple[str, ...]
    cpus: int
    memory: int
    disk: int
    gpus: GpuRequest
    viommu: bool = False
    emulated_devices: tuple[str, ...] = ()
    box: str = DEFAULT_BOX


class Scenario(_Model):
    """A whole scenario file. `source` and `base_dir` are filled in by load_scenario."""

    name: str
    box: str = DEFAULT_BOX
    nodes: Annotated[list[NodeSpec], Field(min_length=1)]
    network: NetworkSpec = NetworkSpec()
    provision: ProvisionSpec | None = None
    tests: Path | None = None
    kubernetes: KubernetesSpec | None = None
    offline: OfflineSpec | None = None
    groups: dict[str, list[str]] = Field(default_factory=dict, description="extra inventory groups: name → nodes")
    group_vars: dict[str, dict[str, Any]] = Field(default_factory=dict, description="inventory vars per group")
    host_vars: dict[str, dict[str, Any]] = Field(default_factory=dict, description="inventory vars per node")
    synced_folders: bool = False
    source: Path = Path("scenario.yml")

    @field_validator("box")
    @classmethod
    def _box(cls, v: str) -> str:
        return _box(v)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.match(r"^[a-z][a-z0-9-]{0,23}$", v):
            raise ValueError("must be 1-24 characters: lowercase letters, digits and '-', starting with a letter")
        return v

    @property
    def base_dir(self) -> Path:
        return self.source.parent

    def expanded_nodes(self) -> list[Node]:
        out: list[Node] = []
        for spec in self.nodes:
            names = [spec.name] if spec.count is None else [f"{spec.name}{i:02d}" for i in range(1, spec.count + 1)]
            for n in names:
                out.append(
                    Node(
                        name=n,
                        groups=tuple(spec.groups),
                        cpus=spec.cpus,
                        memory=spec.memory,
                        disk=spec.disk,
                        gpus=spec.gpus,
                        viommu=spec.viommu,
                        emulated_devices=tuple(spec.emulated_devices),
                        box=spec.box or self.box,
                    )
                )
        return out

    def boxes(self) -> list[str]:
        """Every box the nodes use, each once, in node order."""
        return list(dict.fromkeys(n.box for n in self.expanded_nodes()))

    def resolve(self, path: Path) -> Path:
        """A path from the scenario, made absolute against the scenario file's directory."""
        return path if path.is_absolute() else (self.base_dir / path).resolve()


def _key_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out or "(top level)"


def _pydantic_problems(exc: ValidationError) -> list[str]:
    problems = []
    for err in exc.errors():
        # Drop the union branch names pydantic inserts (e.g. "int", "list[str]") from key paths.
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and ("[" in p or p in {"int", "str"})))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see docs/scenarios.md)"
        problems.append(f"{_key_path(loc)}: {msg}")
    return sorted(set(problems), key=problems.index)


def _semantic_problems(sc: Scenario) -> list[str]:
    problems: list[str] = []
    seen: dict[str, int] = {}
    expanded = 0
    for i, spec in enumerate(sc.nodes):
        names = [spec.name] if spec.count is None else [f"{spec.name}{k:02d}" for k in range(1, spec.count + 1)]
        for n in names:
            if n in seen:
                problems.append(
                    f"nodes[{i}].name: node {n!r} is also defined by nodes[{seen[n]}]; names must be unique"
                )
            seen.setdefault(n, i)
            expanded += 1
        if spec.gpus and "gpu" not in spec.groups:
            problems.append(f"nodes[{i}].gpus: only nodes in group 'gpu' get GPUs; add 'gpu' to groups")
    for group, members in sc.groups.items():
        why = group_name_problem(group)
        if why:
            problems.append(f"groups.{group}: {why}")
        for k, member in enumerate(members):
            if member not in seen:
                problems.append(f"groups.{group}[{k}]: no node named {member!r}")
    for host in sc.host_vars:
        if host not in seen:
            problems.append(f"host_vars.{host}: no node named {host!r}")
    if sc.network.subnet is not None and sc.network.subnet.num_addresses - 3 < expanded:
        problems.append(
            f"network.subnet: {sc.network.subnet} has room for "
            f"{sc.network.subnet.num_addresses - 3} nodes, not {expanded}"
        )
    # (key, path, a file (or a directory), what a missing one is called)
    paths: list[tuple[str, Path | None, bool, str]] = []
    if sc.provision is not None:
        paths.append(("provision.playbook", sc.provision.playbook, True, "does not exist"))
        for k, rp in enumerate(sc.provision.roles_path):
            paths.append((f"provision.roles_path[{k}]", rp, False, "is not a directory"))
        paths.append(("provision.collections", sc.provision.collections, True, "is not a file"))
        for kind in ("prepare", "side_effect", "cleanup"):
            for k, book in enumerate(getattr(sc.provision, kind)):
                paths.append((f"provision.{kind}[{k}]", book, True, "does not exist"))
        paths.append(("provision.verify_playbook", sc.provision.verify_playbook, True, "does not exist"))
    paths.append(("tests", sc.tests, False, "is not a directory"))
    if sc.offline is not None:
        paths.append(
            ("offline.bundle", sc.offline.bundle, False, "is not a directory (make one: `harness bundle build`)")
        )
    for key, path, file, missing in paths:
        why = _path_problem(sc, key, path, file=file, missing=missing) if path is not None else None
        if why:
            problems.append(why)
    return problems


def _shown(path: Path, limit: int = 80) -> str:
    """A path for a message: long ones cut in the middle, with their length."""
    text = str(path) if str(path).isprintable() else repr(str(path))[1:-1]
    return text if len(text) <= limit else f"{text[:40]}...{text[-30:]} ({len(text)} characters)"


def _path_problem(sc: Scenario, key: str, path: Path, *, file: bool, missing: str) -> str | None:
    """Why a scenario path is not an existing file (or directory), or None. A path the system cannot
    look up (too long, a NUL byte, a symlink loop) is a problem of its key, never a crash."""
    try:
        full = sc.resolve(path)
        found = full.is_file() if file else full.is_dir()
    except (OSError, ValueError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python < 3.13)
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return f"{key}: cannot look up {_shown(path)}: {why}"
    return None if found else f"{key}: {_shown(full, 240)} {missing}"


# YAML nesting deeper than this is refused (deeper still would exhaust Python's recursion limit).
MAX_DEPTH = 64


class _Loader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses nesting deeper than MAX_DEPTH and whose unreadable values are
    YAML errors with their line: a date like 2024-13-01, an integer of 5000 digits, a string that
    is no valid Unicode (a lone surrogate, "\\ud800" in YAML)."""

    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self._depth >= MAX_DEPTH:
            raise yaml.composer.ComposerError(None, None, f"nested more than {MAX_DEPTH} levels deep", self.get_mark())
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            value = super().construct_object(node, deep)
            if isinstance(value, str):
                value.encode("utf-8")
        except UnicodeEncodeError as exc:
            why = f"not valid Unicode text (a lone surrogate, {exc.object[exc.start : exc.end]!a})"
            raise yaml.constructor.ConstructorError(None, None, why, node.start_mark) from exc
        except (ValueError, OverflowError) as exc:
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read this value ({exc})", node.start_mark
            ) from exc
        return value


def load_yaml(text: str) -> Any:
    """YAML text as data (safe types only). Raises yaml.YAMLError (with its line where known) for
    bad syntax, an unreadable value or nesting deeper than MAX_DEPTH; never another exception."""
    loader = _Loader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def parse_yaml(text: str, source: Path) -> Any:
    """YAML text as data; SpecError with the line of a syntax error."""
    try:
        return load_yaml(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        raise SpecError(str(source), [f"YAML syntax error at {where}: {exc.problem}"]) from exc
    except yaml.reader.ReaderError as exc:  # a character YAML refuses (NUL, most control characters)
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        what = f"character #x{exc.character:04x}" if isinstance(exc.character, int) else "character"
        raise SpecError(
            str(source), [f"YAML syntax error at line {line}, column {column}: {what}: {exc.reason}"]
        ) from exc
    except yaml.YAMLError as exc:
        raise SpecError(str(source), [f"YAML syntax error: {exc}"]) from exc


def parse_scenario(text: str, source: Path) -> Scenario:
    """Parse and validate scenario text. Raises SpecError listing every problem."""
    data = parse_yaml(text, source)
    if not isinstance(data, dict):
        raise SpecError(str(source), ["(top level): expected a mapping with keys name, nodes, ..."])
    if "source" in data:
        raise SpecError(str(source), ["source: unknown key (check the spelling; see docs/scenarios.md)"])
    return validate_scenario({**data, "source": source.resolve()}, source)


def validate_scenario(data: dict[str, Any], source: Path) -> Scenario:
    """The Scenario of `data` (with its `source`), every problem reported at once (SpecError)."""
    try:
        sc = Scenario.model_validate(data)
    except ValidationError as exc:
        raise SpecError(str(source), _pydantic_problems(exc)) from None
    problems = _semantic_problems(sc)
    if problems:
        raise SpecError(str(source), problems)
    return sc


def find_scenario(ref: str, search_dirs: list[Path]) -> Path:
    """A SCENARIO argument: a YAML file, a directory holding scenario.yml (or a Molecule scenario's
    molecule.yml), or a name under scenarios/."""
    p = Path(ref)
    candidates = [p, p / "scenario.yml", p / "scenario.yaml", p / "molecule.yml"]
    for d in search_dirs:
        candidates += [d / ref / "scenario.yml", d / ref / "scenario.yaml", d / f"{ref}.yml", d / f"{ref}.yaml"]
    for c in candidates:
        try:
            if c.is_file():
                return c
        except OSError:  # a name the system refuses (too long): no such file
            continue
    names = sorted({q.parent.name for d in search_dirs if d.is_dir() for q in d.glob("*/scenario.y*ml")})
    raise SpecError(ref, [f"no such scenario file or name; known names: {', '.join(names) or '(none)'}"])


def read_text(path: Path) -> str:
    """A scenario file's text; SpecError when it cannot be read or is not UTF-8."""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(str(path), [f"cannot read: {exc.strerror}"]) from exc
    except UnicodeDecodeError as exc:
        raise SpecError(str(path), [f"not a YAML text file: byte {exc.start} is not UTF-8 ({exc.reason})"]) from exc


def load_scenario(ref: str, search_dirs: list[Path]) -> Scenario:
    path = find_scenario(ref, search_dirs)
    if path.name == "molecule.yml":  # a Molecule scenario, translated into this model
        from harness import molecule

        return molecule.translate(path).scenario
    return parse_scenario(read_text(path), path)
