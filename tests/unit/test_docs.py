"""The docs keep up with the code: every HARNESS_* variable the harness names is in
docs/environment.md, every exit code in docs/exit-codes.md (and in `harness --help`), every module
under harness/ in docs/architecture.md's code map, every page of docs/ in README's map, and every
relative link of README.md and docs/*.md points at a file that exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from click.testing import CliRunner

from harness import errors
from harness.cli import main

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "harness"
DOCS = ROOT / "docs"
VARIABLE = re.compile(r"\bHARNESS_[A-Z][A-Z0-9_]*\b")
LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts and "data" not in p.parts)


def harness_variables() -> dict[str, str]:
    """Each HARNESS_* name in a string of harness/ (environment reads, constants, messages,
    docstrings), with the first module that names it."""
    found: dict[str, str] = {}
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                for name in VARIABLE.findall(node.value):
                    found.setdefault(name, str(path.relative_to(ROOT)))
    return found


def _error_classes() -> list[type[errors.HarnessError]]:
    classes: list[type[errors.HarnessError]] = [errors.HarnessError]
    for cls in classes:
        classes.extend(cls.__subclasses__())
    return classes


def _markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


def relative_links(path: Path) -> list[str]:
    """The link targets of a markdown file that are not URLs (fenced code left out)."""
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    return [t for t in LINK.findall(text) if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]


def test_every_harness_variable_the_code_names_is_documented() -> None:
    variables = harness_variables()
    assert {"HARNESS_RUNS_DIR", "HARNESS_ACCEL", "HARNESS_ANSIBLE_STRATEGY"} <= set(variables)  # the scan works
    page = (DOCS / "environment.md").read_text(encoding="utf-8")
    missing = [f"{name} (named in {where})" for name, where in sorted(variables.items()) if f"`{name}`" not in page]
    assert not missing, f"docs/environment.md lacks: {', '.join(missing)}"


def test_every_error_class_has_a_code_in_the_table() -> None:
    classes = _error_classes()
    assert len(classes) >= 12
    missing = [f"{cls.__name__} ({cls.exit_code})" for cls in classes if cls.exit_code not in errors.EXIT_CODES]
    assert not missing, f"errors.EXIT_CODES lacks: {', '.join(missing)}"


def test_every_exit_code_is_documented_with_its_meaning() -> None:
    page = (DOCS / "exit-codes.md").read_text(encoding="utf-8")
    missing = [
        f"{code} {meaning!r}" for code, meaning in errors.EXIT_CODES.items() if f"| {code} | {meaning} |" not in page
    ]
    assert not missing, f"docs/exit-codes.md lacks the rows: {', '.join(missing)}"
    documented = {int(m) for m in re.findall(r"^\| (\d+) \|", page, re.MULTILINE)}
    assert documented == set(errors.EXIT_CODES), "docs/exit-codes.md lists codes errors.py does not have"


def test_help_prints_every_exit_code_from_errors() -> None:
    res = CliRunner().invoke(main, ["--help"])
    assert res.exit_code == 0
    lines = [line.split() for line in res.output.splitlines()]
    for code, meaning in errors.EXIT_CODES.items():
        assert [str(code), *meaning.split()] in lines, f"harness --help lacks exit code {code}"


def test_every_module_is_in_the_code_map() -> None:
    modules = _modules()
    assert len(modules) >= 50
    page = (DOCS / "architecture.md").read_text(encoding="utf-8")
    missing = [str(p.relative_to(ROOT)) for p in modules if f"`{p.relative_to(ROOT)}`" not in page]
    assert not missing, f"docs/architecture.md's code map lacks: {', '.join(missing)}"


def test_every_docs_page_is_in_the_readme_map() -> None:
    linked = set(relative_links(ROOT / "README.md"))
    missing = [f"docs/{p.name}" for p in sorted(DOCS.glob("*.md")) if f"docs/{p.name}" not in linked]
    assert not missing, f"README.md's map of docs/ lacks: {', '.join(missing)}"


def test_relative_links_point_at_existing_files_without_anchors() -> None:
    problems: list[str] = []
    count = 0
    for path in _markdown_files():
        for target in relative_links(path):
            count += 1
            where = f"{path.relative_to(ROOT)}: ({target})"
            if "#" in target:
                problems.append(f"{where}: an anchor (link the page; anchors drift when headings change)")
            elif not (path.parent / target).exists():
                problems.append(f"{where}: no such file")
    assert count >= 30  # the scan found the links
    assert not problems, "\n".join(problems)
