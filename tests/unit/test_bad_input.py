"""Bad input never gives a traceback (property tests).

Scenario files (the valid fixtures and scenarios/*, mutated: keys, values, types, YAML syntax,
long strings, a 300-character path, unicode, NUL bytes, deep nesting), inventories and SCENARIO
arguments are either accepted or refused with a SpecError (exit code 2 from the CLI) whose every
problem names its key or its line; never another exception, never exit code 1.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from harness.cli import main
from harness.errors import SpecError
from harness.inventory import load_inventory
from harness.spec import MAX_DEPTH, Scenario, load_scenario, parse_scenario

ROOT = Path(__file__).resolve().parents[2]
SEEDS = sorted(
    [
        *(p for p in (ROOT / "tests" / "fixtures" / "scenarios" / "valid").glob("*.yml") if p.name != "playbook.yml"),
        *(ROOT / "scenarios").glob("*/scenario.yml"),
    ]
)
LONG_PATH = "p" * 300  # one name longer than any filesystem takes: ENAMETOOLONG
# Each property runs in about a second (HYPOTHESIS_EXAMPLES=5000 for a long hunt); no example
# database is written into the checkout.
EXAMPLES = int(os.environ.get("HYPOTHESIS_EXAMPLES", "300"))
FAST = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


# --- strategies ---------------------------------------------------------------------------------

nasty_text = st.one_of(
    st.text(max_size=30),  # any unicode, NUL and lone surrogates included
    st.text(min_size=250, max_size=400),
    st.sampled_from(
        [
            LONG_PATH,
            "/".join(["d" * 200] * 30),  # a path longer than PATH_MAX
            "a\x00b",
            "\ud800",
            "../" * 40,
            "",
            " ",
            "-",
            "*",
            "~",
            ":",
            "{{ x }}",
            "auto",
            "0000:08:00.0",
            "10.0.0.0/8",
            "\u202egnp.emalsi",
            "é" * 300,
            "2024-13-01",
        ]
    ),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    nasty_text,
)
values = st.one_of(
    st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3), st.dictionaries(st.one_of(nasty_text, st.integers()), inner, max_size=3)
        ),
        max_leaves=8,
    ),
    st.integers(min_value=1, max_value=3 * MAX_DEPTH).map(nested),
)
# Keys of the scenario model, to rename a key to one that means something elsewhere.
FIELDS = "name nodes box network provision tests groups source synced_folders count gpus disk memory cpus"
FIELDS += " playbook roles_path collections extra_vars idempotence strategy subnet viommu emulated_devices"
keys = st.one_of(nasty_text, st.integers(), st.sampled_from(FIELDS.split()))


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every key path into a loaded YAML document, the document itself first."""
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*prefix, i))


def _at(doc: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        doc = doc[part]
    return doc


@st.composite
def mutated_data(draw: st.DrawFn, doc: Any) -> Any:
    """The document with one to three of: a value replaced (any type), a key removed, renamed or added."""
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(list(_paths(doc))))
        op = draw(st.sampled_from(["set", "delete", "rename", "add", "wrap"]))
        if not path:
            doc = draw(values) if op == "set" else doc
            continue
        parent, last = _at(doc, path[:-1]), path[-1]
        if op == "set":
            parent[last] = draw(values)
        elif op == "wrap":
            parent[last] = draw(st.sampled_from([[parent[last]], {"x": parent[last]}, nested(MAX_DEPTH + 1)]))
        elif op == "delete":
            del parent[last]
        elif op == "rename" and isinstance(parent, dict):
            parent[draw(keys)] = parent.pop(last)
        elif op == "add" and isinstance(parent, dict):
            parent[draw(keys)] = draw(values)
    return doc


YAML_SIGNS = ":[]{}-&*!|>'\"%@`#,?\t\n\x00 "


@st.composite
def mutated_text(draw: st.DrawFn, text: str) -> str:
    """The text with one to three edits: characters inserted, deleted or replaced, lines shifted."""
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["insert", "delete", "replace", "indent", "truncate"]))
        if op == "insert":
            text = text[:at] + draw(st.one_of(st.sampled_from(list(YAML_SIGNS)), nasty_text)) + text[at:]
        elif op == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 20)) :]
        elif op == "replace":
            text = text[:at] + draw(st.characters()) + text[at + 1 :]
        elif op == "indent":
            start = text.rfind("\n", 0, at) + 1
            text = text[:start] + draw(st.sampled_from([" ", "  ", "\t", "- "])) + text[start:]
        else:
            text = text[:at]
    return text


@st.composite
def scenario_texts(draw: st.DrawFn) -> tuple[Path, str]:
    """A seed scenario and a mutation of it: of its data (dumped again as YAML), of its text, or both."""
    seed = draw(st.sampled_from(SEEDS))
    text = seed.read_text(encoding="utf-8")
    kind = draw(st.sampled_from(["data", "text", "both"]))
    if kind != "text":
        text = yaml.safe_dump(draw(mutated_data(yaml.safe_load(text))), allow_unicode=True, sort_keys=False)
    if kind != "data":
        text = draw(mutated_text(text))
    return seed, text


# --- the oracle -------------------------------------------------------------------------------

_LINE = re.compile(r"^YAML syntax error at line \d+, column \d+: \S")


def _heads(text: str) -> set[str] | None:
    """The top-level keys a problem may start with; None when the text is no mapping."""
    try:
        data = yaml.safe_load(text)
    except Exception:  # any failure here: the problem must then name a line
        return set()
    if not isinstance(data, dict):
        return None
    return {str(k) for k in data} | set(Scenario.model_fields)


def assert_names_key_or_line(problems: list[str], text: str) -> None:
    assert problems
    heads = _heads(text)
    for p in problems:
        if _LINE.match(p) or p.startswith("(top level): "):
            continue
        assert heads, f"a problem that names neither a line nor a key: {p!r}"
        assert p.startswith("[") or any(h and p.startswith(h) for h in heads), f"names no key of the file: {p!r}"
        assert ": " in p, p


def assert_parses_or_names_the_problem(text: str, source: Path) -> Scenario | None:
    try:
        sc = parse_scenario(text, source)
    except SpecError as exc:
        assert_names_key_or_line(exc.problems, text)
        return None
    assert sc.expanded_nodes()
    return sc


def assert_exit_0_or_2(res: Result) -> None:
    assert res.exit_code in (0, 2), f"exit {res.exit_code}: {res.output}\n{res.exception!r}"
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert "Traceback" not in res.output
    if res.exit_code == 2:
        assert "error:" in res.output and "  - " in res.output, res.output


# --- scenario files -----------------------------------------------------------------------------


def test_the_seeds_are_valid_scenarios() -> None:
    assert len(SEEDS) >= 6
    for seed in SEEDS:
        assert assert_parses_or_names_the_problem(seed.read_text(encoding="utf-8"), seed) is not None, seed


@FAST
@given(scenario_texts())
def test_mutated_scenarios_parse_or_name_the_key_or_line(case: tuple[Path, str]) -> None:
    seed, text = case
    assert_parses_or_names_the_problem(text, seed)


@pytest.mark.parametrize("key", ["provision.playbook", "provision.roles_path", "provision.collections", "tests"])
@pytest.mark.parametrize("value", [LONG_PATH, "/".join(["d" * 200] * 30), "a\x00b"])
def test_a_path_the_system_refuses_is_a_problem_of_its_key(key: str, value: str) -> None:
    doc: dict[str, Any] = {"name": "x", "nodes": [{"name": "n"}]}
    section, _, field = key.rpartition(".")
    if section:
        doc[section] = {"playbook": str(SEEDS[0]), field: value}
    else:
        doc[field] = value
    with pytest.raises(SpecError) as err:
        parse_scenario(yaml.safe_dump(doc), ROOT / "scenario.yml")
    assert len(err.value.problems) == 1 and err.value.problems[0].startswith(key), err.value.problems
    assert "cannot look up" in err.value.problems[0]


@pytest.mark.parametrize(
    ("text", "line", "why"),
    [
        ("name: a\nnodes:\n  - name: n\n    cpus: \x00\n", 4, "#x0000"),
        ("name: a\nnodes: " + "[" * 200 + "]" * 200 + "\n", 2, "nested more than"),
        ("name: a\nnodes:\n  - name: n\n    cpus: 1" + "0" * 5000 + "\n", 4, "integer string conversion"),
        ("name: 2024-13-01\nnodes: []\n", 1, "month must be in 1..12"),
        ('name: a\nnodes: [{name: n}]\ntests: "\\ud800"\n', 3, "lone surrogate"),
    ],
)
def test_unreadable_yaml_names_its_line(text: str, line: int, why: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_scenario(text, Path("scenario.yml"))
    [problem] = err.value.problems
    assert problem.startswith(f"YAML syntax error at line {line},") and why in problem, problem


@pytest.fixture(scope="module")
def seed_copies(tmp_path_factory: pytest.TempPathFactory) -> dict[Path, Path]:
    """Each seed's directory copied, so a mutated file beside the copy resolves its relative paths."""
    out = {}
    for i, seed in enumerate(SEEDS):
        copy = tmp_path_factory.mktemp(f"seed{i}")
        shutil.copytree(seed.parent, copy, dirs_exist_ok=True, symlinks=True)
        out[seed] = copy
    return out


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Result]:
    monkeypatch.setenv("HARNESS_ACCEL", "tcg")  # `render` probes no accelerator
    runner = CliRunner()
    return lambda *args: runner.invoke(main, list(args))


@settings(FAST, max_examples=EXAMPLES // 2)
@given(case=scenario_texts())
def test_validate_and_render_exit_0_or_2(
    case: tuple[Path, str], seed_copies: dict[Path, Path], cli: Callable[..., Result]
) -> None:
    seed, text = case
    path = seed_copies[seed] / "mutated.yml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    validated = cli("validate", "--no-playbook", str(path))
    assert_exit_0_or_2(validated)
    rendered = cli("render", str(path))
    assert_exit_0_or_2(rendered)
    assert rendered.exit_code == validated.exit_code
    if rendered.exit_code == 0:
        assert "Vagrant.configure" in rendered.output


# --- SCENARIO arguments -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def odd_files(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    d = tmp_path_factory.mktemp("odd")
    (d / "binary.yml").write_bytes(bytes(range(256)) * 4)
    (d / "latin1.yml").write_bytes("name: caf\xe9\nnodes: [{name: n}]\n".encode("latin-1"))
    (d / "empty.yml").write_text("")
    (d / "list.yml").write_text("- a\n- b\n")
    (d / "dir").mkdir()
    (d / "loop").symlink_to(d / "loop")
    return [str(d / n) for n in ("binary.yml", "latin1.yml", "empty.yml", "list.yml", "dir", "loop")] + [str(d)]


@settings(FAST, max_examples=EXAMPLES // 3)
@given(ref=st.one_of(nasty_text, st.sampled_from(["/", ".", "..", "/dev/null", "/proc/self/mem", "/nonexistent"])))
def test_scenario_arguments_exit_0_or_2(ref: str, cli: Callable[..., Result]) -> None:
    assert_exit_0_or_2(cli("validate", "--no-playbook", "--", ref))  # "--": a ref like "-0" is no option


# A path that looks like rich markup is printed as text (it once exited 1 with MarkupError).
def test_a_scenario_argument_that_looks_like_markup_exits_2(cli: Callable[..., Result]) -> None:
    assert_exit_0_or_2(cli("validate", "--no-playbook", "--", "0[/0]"))


def test_odd_scenario_files_exit_2(odd_files: list[str], cli: Callable[..., Result]) -> None:
    for ref in [*odd_files, LONG_PATH, "/".join(["d" * 200] * 30), "a\x00b"]:
        res = cli("validate", "--no-playbook", ref)
        assert_exit_0_or_2(res)
        assert res.exit_code == 2, (ref, res.output)
        with pytest.raises(SpecError):
            load_scenario(ref, [])


# --- inventories ----------------------------------------------------------------------------------

INVENTORY = """\
# Written by the harness for this run; Ansible and testinfra both read it.
all:
  vars:
    harness_cluster_name: smoke
  hosts:
    mgmt01:
      ansible_host: 192.168.121.10
      ansible_port: 22
      harness_private_ip: 10.77.0.10
  children:
    mgmt:
      hosts:
        mgmt01: {}
"""


def assert_inventory_loads_or_is_refused(path: Path) -> None:
    try:
        inv = load_inventory(path)
    except SpecError as exc:
        assert exc.problems and exc.source == str(path)
        return
    assert isinstance(inv["all"], dict)


@settings(FAST, report_multiple_bugs=False)
@example(text="0000-00-00")  # yaml's date constructor raises ValueError
@example(text="\ud800")  # written with surrogatepass: bytes that are not UTF-8
@given(text=st.one_of(mutated_text(INVENTORY), nasty_text))
def test_mutated_inventories_load_or_are_refused(text: str, tmp_path: Path) -> None:
    path = tmp_path / "inventory.yml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    assert_inventory_loads_or_is_refused(path)


def test_missing_or_directory_inventory_is_refused(tmp_path: Path) -> None:
    for path in (tmp_path / "nope.yml", tmp_path, tmp_path / LONG_PATH):
        assert_inventory_loads_or_is_refused(path)
