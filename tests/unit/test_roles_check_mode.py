"""The roles behave in check mode (`harness promote --check` runs them with `--check --diff`).

Check mode skips a command/shell/script task: it registers no output, so a later task that reads
the result fails (or, with a `| default`, quietly decides from the default: a GPU node without
GPUs). Each such registered result must come from a read-only probe that runs in check mode too
(`check_mode: false`), or be read only by tasks that check mode skips (`when: not ansible_check_mode`).
A role variable (vars/, defaults/) built from the result counts as reading it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROLES = Path(__file__).resolve().parents[2] / "roles"
RUNS_A_COMMAND = {
    f"{prefix}{module}"
    for prefix in ("", "ansible.builtin.", "ansible.legacy.")
    for module in ("command", "shell", "script", "raw")
}
_BLOCK_KEYS = ("block", "rescue", "always")


@dataclass(frozen=True)
class Task:
    where: str  # roles/<role>/tasks/<file>.yml
    name: str
    data: dict[str, Any]
    when: tuple[str, ...]  # its own conditions and those of the blocks around it

    @property
    def text(self) -> str:
        return yaml.safe_dump({k: v for k, v in self.data.items() if k != "name"})

    @property
    def skipped_in_check_mode(self) -> bool:
        return any(re.search(r"\bnot\s+ansible_check_mode\b", w) for w in self.when)

    @property
    def runs_a_command(self) -> bool:
        return any(k in RUNS_A_COMMAND for k in self.data)


def _conditions(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    return tuple(str(v) for v in value) if isinstance(value, list) else (str(value),)


def _flatten(items: Any, where: str, when: tuple[str, ...] = ()) -> Iterator[Task]:
    for item in items or []:
        if not isinstance(item, dict):
            continue
        conditions = when + _conditions(item.get("when"))
        if any(k in item for k in _BLOCK_KEYS):
            for key in _BLOCK_KEYS:
                yield from _flatten(item.get(key), where, conditions)
        else:
            yield Task(where, str(item.get("name", "?")), item, conditions)


def role_tasks(roles: Path) -> list[Task]:
    tasks: list[Task] = []
    for f in sorted([*roles.glob("*/tasks/*.yml"), *roles.glob("*/handlers/*.yml")]):
        tasks += _flatten(yaml.safe_load(f.read_text()), str(f.relative_to(roles.parent)))
    return tasks


def role_vars(roles: Path) -> dict[str, str]:
    """Every role variable (vars/main.yml, defaults/main.yml) with its definition as text."""
    found: dict[str, str] = {}
    for f in sorted([*roles.glob("*/vars/main.yml"), *roles.glob("*/defaults/main.yml")]):
        for name, value in (yaml.safe_load(f.read_text()) or {}).items():
            found[str(name)] = yaml.safe_dump(value)
    return found


def _mentions(text: str, names: set[str]) -> bool:
    return any(re.search(rf"(?<![\w.]){re.escape(n)}\b", text) for n in names)


def readers_of(register: str, variables: dict[str, str]) -> set[str]:
    """The registered name and every role variable built from it, directly or through another."""
    names = {register}
    grew = True
    while grew:
        more = {v for v, text in variables.items() if v not in names and _mentions(text, names)}
        names |= more
        grew = bool(more)
    return names


def check_mode_problems(roles: Path) -> list[str]:
    tasks, variables = role_tasks(roles), role_vars(roles)
    problems = []
    for probe in tasks:
        register = probe.data.get("register")
        if not register or not probe.runs_a_command or probe.data.get("check_mode") is False:
            continue
        names = readers_of(str(register), variables)
        for task in tasks:
            if task is not probe and _mentions(task.text, names) and not task.skipped_in_check_mode:
                problems.append(
                    f"{task.where}: task {task.name!r} reads {register} (registered by {probe.where}: "
                    f"{probe.name!r}), which check mode skips: give the probe `check_mode: false` if it "
                    "only reads, or skip this task in check mode (`when: not ansible_check_mode`)"
                )
    return problems


def test_every_role_reads_only_results_that_check_mode_produces() -> None:
    assert check_mode_problems(ROLES) == []


def test_the_checker_flags_a_skipped_probe_read_later_directly_and_through_a_variable(tmp_path: Path) -> None:
    role = tmp_path / "roles" / "demo"
    (role / "tasks").mkdir(parents=True)
    (role / "vars").mkdir()
    (role / "vars" / "main.yml").write_text('_demo_count: "{{ __demo_probe.stdout_lines | default([]) | length }}"\n')
    tasks = [
        {"name": "Probe", "ansible.builtin.command": "ls /x", "register": "__demo_probe", "changed_when": False},
        {"name": "Use it", "ansible.builtin.debug": {"msg": "{{ __demo_probe.stdout }}"}},
        {"name": "Use the variable", "ansible.builtin.debug": {"msg": "{{ _demo_count }}"}},
        {
            "name": "Guarded block",
            "when": "not ansible_check_mode",
            "block": [{"name": "Guarded use", "ansible.builtin.debug": {"msg": "{{ __demo_probe.rc }}"}}],
        },
        {"name": "Create", "ansible.builtin.command": "touch /y", "register": "__demo_made", "check_mode": False},
        {"name": "Use the made", "ansible.builtin.debug": {"msg": "{{ __demo_made.rc }}"}},
    ]
    (role / "tasks" / "main.yml").write_text(yaml.safe_dump(tasks, sort_keys=False))
    problems = check_mode_problems(tmp_path / "roles")
    assert len(problems) == 2
    assert "'Use it' reads __demo_probe" in problems[0] and "'Use the variable'" in problems[1]
