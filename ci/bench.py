"""Helper of ci/bench.sh (a benchmark that prints figures, not a test): the scenario copy with its
own copy of roles/, the edits of the edit loops, start/end stamps of the host, and the table of the loops.

    .venv/bin/python ci/bench.py name SCENARIO                  # the scenario's name
    .venv/bin/python ci/bench.py prepare SCENARIO WORK R        # copy → prints the copy's scenario file
    .venv/bin/python ci/bench.py late-role R                    # the late role to edit, or nothing (n/a)
    .venv/bin/python ci/bench.py edit WORK R LOOP [ROLE]        # append one task to the copy's roles/ROLE
    .venv/bin/python ci/bench.py comment WORK R LOOP            # append a comment to the copy's roles/common
    .venv/bin/python ci/bench.py stamp R start|end              # date and load average, printed and saved
    .venv/bin/python ci/bench.py table R                        # print the table, write R/bench.md
    .venv/bin/python ci/bench.py --table-only R                 # the same

What bench.sh leaves in R, and what `table` reads (all optional: a missing file is shown as "-"):
  R/<loop>/summary.json      `harness run --report-dir R/<loop>` (phases.<name>.seconds, status,
                             partial; verify's quick_seconds)
  R/runs.tsv                 loop, exit code ("-": not run), start and end (epoch seconds), note
  R/rss-<loop>.json          `harness status SCENARIO --json` taken right after that loop
  R/host-start.json, R/host-end.json, R/setup.json   (this helper's stamps and the copy's facts)

A kept cluster is found by the scenario's *file* (harness/rundir.py `active_run` compares
`scenario_file` with the scenario's source path), not by its name: every loop after the naive one
therefore runs the copy's scenario file, made before loop 2, so that --reuse finds the cluster loop 2
kept. The edits are cumulative: each edit loop starts from checkpoint `converged` as the loop
before it left it, and only its own edit is new.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness.spec import Scenario


@dataclass(frozen=True)
class Loop:
    name: str  # its directory in R and its key in runs.tsv
    title: str  # {late} stands for the late role's name
    reuses: bool  # runs on the kept cluster (--reuse): a new cluster would make its figures wrong


LOOPS: tuple[Loop, ...] = (
    Loop("naive", "naive: run (new cluster, destroyed)", False),
    Loop("kept", "from nothing: run --keep", False),
    Loop("reuse-booted", "run --reuse (from booted)", True),
    Loop("edit-first", "one-task edit of roles/common (first role): --reuse --from converged", True),
    Loop("edit-late", "one-task edit of roles/{late} (late role): --reuse --from converged", True),
    Loop("comment", "comment-only edit of roles/common: --reuse --from converged", True),
)
LOOP_NAMES = tuple(loop.name for loop in LOOPS)
PHASES = ("up", "provision", "idempotence", "verify", "destroy")
QUICK_PHASES = ("up", "provision", "idempotence")  # before the quick verdict, then verify's first pass
EDITED_ROLE = "common"
COMMENT = "# comment\n"


def edit_target(role: str) -> str:
    return f"/etc/harness-bench-{role}"


def edit_task(role: str, loop: str) -> str:
    """One harmless, idempotent task for roles/ROLE: a small file under /etc."""
    return f"""
# Appended by ci/bench.sh (loop {loop}), in a temporary copy of roles/ only.
- name: Mark the node as rehearsed by the harness benchmark ({role})
  ansible.builtin.copy:
    dest: {edit_target(role)}
    content: "rehearsed by ci/bench.sh\\n"
    owner: root
    group: root
    mode: "0644"
"""


COPY_IGNORE = shutil.ignore_patterns(".harness", ".git", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache")


class BenchError(Exception):
    pass


# --- the scenario copy -------------------------------------------------------------------------


def _load(ref: str) -> Scenario:
    from harness.paths import scenario_search_dirs
    from harness.spec import load_scenario

    return load_scenario(ref, scenario_search_dirs())


def _portable(path: Path, original: Scenario) -> str:
    """A path of the original scenario as the copy must say it: relative where it lies inside the
    scenario's directory (copied along), absolute where it lies outside (used in place)."""
    absolute = original.resolve(path)
    base = original.base_dir.resolve()
    return str(path) if not path.is_absolute() and absolute.is_relative_to(base) else str(absolute)


def _first_role_dir(scenario: Scenario, role: str) -> Path | None:
    """Where Ansible takes `role` from for this scenario: the playbook's roles/, then roles_path
    (the harness's own roles/ last), as harness.playbook resolves them."""
    from harness import playbook

    assert scenario.provision is not None
    pb = scenario.resolve(scenario.provision.playbook)
    for d in [pb.parent / "roles", *playbook.roles_path(scenario)]:
        if (d / role / "tasks").is_dir():
            return (d / role).resolve()
    return None


def prepare(ref: str, work: Path, reports: Path) -> Path:
    """Copy the scenario (its directory: scenario file, playbook, tests) and this repository's
    roles/ into `work`; the copy's roles_path ends with the roles copy, so it stands where the
    repository's roles/ stands in the resolution order. Same scenario name. Returns the copy's file."""
    from harness.paths import ROLES_DIR
    from harness.spec import load_scenario

    original = _load(ref)
    if original.provision is None:
        raise BenchError(f"{original.source}: no provision.playbook: there is no role to edit and converge")
    base = original.base_dir.resolve()
    if Path.cwd().resolve().is_relative_to(base):
        raise BenchError(f"{original.source}: its directory {base} holds this checkout: refusing to copy it")
    if _first_role_dir(original, EDITED_ROLE) != (ROLES_DIR / EDITED_ROLE).resolve():
        where = _first_role_dir(original, EDITED_ROLE) or "nowhere"
        raise BenchError(
            f"{original.source}: its role {EDITED_ROLE!r} comes from {where}, not from this repository's "
            f"roles/: the edit-one-role loop edits a copy of roles/{EDITED_ROLE} and would change nothing"
        )
    scen_dir, roles_copy = work / "scenario", work / "roles"
    shutil.copytree(base, scen_dir, ignore=COPY_IGNORE)
    shutil.copytree(ROLES_DIR, roles_copy, ignore=COPY_IGNORE)

    data = yaml.safe_load(original.source.read_text(encoding="utf-8"))
    prov = data["provision"]
    prov["playbook"] = _portable(original.provision.playbook, original)
    prov["roles_path"] = [_portable(p, original) for p in original.provision.roles_path] + [str(roles_copy)]
    if original.provision.collections is not None:  # local sources relative to it: used in place
        prov["collections"] = str(original.resolve(original.provision.collections))
    if original.tests is not None:
        data["tests"] = _portable(original.tests, original)
    copy_file = scen_dir / original.source.name
    header = f"# A copy made by ci/bench.sh of {original.source} (same name), with roles/ copied to {roles_copy}.\n"
    copy_file.write_text(header + yaml.safe_dump(data, sort_keys=False), encoding="utf-8")

    copy = load_scenario(str(copy_file), [])
    assert copy.provision is not None
    if copy.name != original.name:
        raise BenchError(f"{copy_file}: the copy is named {copy.name!r}, not {original.name!r}")
    used = _first_role_dir(copy, EDITED_ROLE)
    if used != (roles_copy / EDITED_ROLE).resolve():
        raise BenchError(f"{copy_file}: its role {EDITED_ROLE!r} resolves to {used}, not to the copy in {roles_copy}")
    pb_text = copy.resolve(copy.provision.playbook).read_text(encoding="utf-8")
    warning = "" if EDITED_ROLE in pb_text else f"the playbook never names {EDITED_ROLE!r}: the edit may not be run"
    if warning:
        print(f"bench: warning: {warning}", file=sys.stderr)
    late, why = late_role(copy, work, os.environ.get("BENCH_LATE_ROLE") or None)
    _update(
        reports / "setup.json",
        {
            "scenario": original.name,
            "scenario_file": str(original.source),
            "copy": str(copy_file),
            "roles_copy": str(roles_copy),
            "warning": warning,
            "late_role": late,
            "late_role_why": why,
        },
    )
    return copy_file


def _plays(book: Path, depth: int = 0) -> list[dict[str, Any]]:
    """The plays of a playbook in order, those of `import_playbook`s (a fixed path) in place."""
    try:
        data = yaml.safe_load(book.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return []
    plays: list[dict[str, Any]] = []
    for entry in data if isinstance(data, list) else []:
        if not isinstance(entry, dict):
            continue
        imported = entry.get("ansible.builtin.import_playbook") or entry.get("import_playbook")
        if isinstance(imported, str) and "{{" not in imported and depth < 10:
            plays += _plays(book.parent / imported, depth + 1)
        elif "hosts" in entry:
            plays.append(entry)
    return plays


def _role_entry_name(entry: Any) -> str | None:
    name = entry.get("role") or entry.get("name") if isinstance(entry, dict) else entry
    return name if isinstance(name, str) and "{{" not in name else None


def late_role(copy: Scenario, work: Path, wanted: str | None = None) -> tuple[str | None, str]:
    """The role the edit-late loop edits, and why; None (and why) where there is none to edit apart
    from roles/common. `wanted` (BENCH_LATE_ROLE) names it; otherwise the last play of the playbook
    that has roles: the role named like the scenario, where it runs one (issue 23: roles/slurm for
    slurm), else its last role with tasks. The role must come from the copy, never the checkout."""
    assert copy.provision is not None
    chosen = "named by BENCH_LATE_ROLE" if wanted else "the late role"
    if wanted is None:
        book = copy.resolve(copy.provision.playbook)
        with_roles = [p for p in _plays(book) if isinstance(p.get("roles"), list) and p["roles"]]
        names = [n for n in map(_role_entry_name, with_roles[-1]["roles"] if with_roles else []) if n]
        names = [n for n in names if _first_role_dir(copy, n) is not None]
        if not names:
            return None, "not applicable: no play of the playbook runs a role with tasks"
        wanted = copy.name if copy.name in names else names[-1]
        if wanted == EDITED_ROLE:
            return None, (
                f"not applicable: the playbook's last play with roles runs {EDITED_ROLE!r} last, "
                "the role the edit-first loop edits"
            )
    where = _first_role_dir(copy, wanted)
    if where is None:
        return None, f"not applicable: no role {wanted!r} with tasks for this scenario"
    if not where.is_relative_to(work.resolve()):
        return None, f"not applicable: role {wanted!r} comes from {where}, outside the copy (it would not be edited)"
    return wanted, f"roles/{wanted}: {chosen}"


def _tasks_file(work: Path, reports: Path, role: str) -> Path:
    """roles/ROLE/tasks/main.yml as the copy resolves it; refused unless it lies inside `work`."""
    from harness.spec import load_scenario

    copy_file = (_read_json(reports / "setup.json") or {}).get("copy")
    where = _first_role_dir(load_scenario(str(copy_file), []), role) if copy_file else work / "roles" / role
    target = (where or work / "roles" / role) / "tasks" / "main.yml"
    if not target.resolve().is_relative_to(work.resolve()):
        raise BenchError(f"{target}: outside the copy {work}: refusing to edit it")
    return target


def _append(target: Path, text: str, work: Path, reports: Path, loop: str) -> None:
    old = target.read_text(encoding="utf-8")
    target.write_text(old + ("" if old.endswith("\n") else "\n") + text, encoding="utf-8")
    yaml.safe_load(target.read_text(encoding="utf-8"))  # still YAML
    edits = (_read_json(reports / "setup.json") or {}).get("edits") or {}
    file = str(target.resolve().relative_to(work.resolve()))
    _update(reports / "setup.json", {"edits": {**edits, loop: {"file": file, "appended": text}}})


def edit(work: Path, reports: Path, loop: str, role: str = EDITED_ROLE) -> Path:
    """Append one harmless, idempotent task to the copy's roles/ROLE/tasks/main.yml."""
    target = _tasks_file(work, reports, role)
    if edit_target(role) in target.read_text(encoding="utf-8"):
        raise BenchError(f"{target}: already edited")
    _append(target, edit_task(role, loop), work, reports, loop)
    return target


def comment(work: Path, reports: Path, loop: str) -> Path:
    """Append a comment, and nothing else, to the copy's roles/common/tasks/main.yml."""
    target = _tasks_file(work, reports, EDITED_ROLE)
    _append(target, COMMENT, work, reports, loop)
    return target


def _update(path: Path, fields: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = _read_json(path) or {}
    data.update(fields)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


# --- stamps ------------------------------------------------------------------------------------


def stamp(reports: Path, which: str) -> str:
    now = time.time()
    load = os.getloadavg()
    data = {
        "date": time.strftime("%a %b %d %H:%M:%S %Z %Y", time.localtime(now)),
        "epoch": now,
        "loadavg": [round(x, 2) for x in load],
        "cpus": os.cpu_count(),
        "host": platform.node(),
    }
    reports.mkdir(parents=True, exist_ok=True)
    (reports / f"host-{which}.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return f"{which}: {_stamp_line(data)}"


def _stamp_line(data: dict[str, Any]) -> str:
    load = " ".join(f"{x:.2f}" for x in data.get("loadavg", []))
    return f"{data.get('date', '?')}; load average {load} (1, 5, 15 min) on {data.get('cpus', '?')} CPUs"


# --- the table ---------------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@dataclass
class Invocation:
    """One line of runs.tsv: how bench.sh ran a loop."""

    rc: int | None  # None: not run
    wall: float | None
    note: str


def read_runs(reports: Path) -> dict[str, Invocation]:
    out: dict[str, Invocation] = {}
    try:
        lines = (reports / "runs.tsv").read_text(encoding="utf-8").splitlines()
    except OSError:
        return out
    for line in lines:
        cells = line.split("\t")
        if len(cells) < 2 or not cells[0]:
            continue
        cells += [""] * (5 - len(cells))
        loop, rc, start, end, note = cells[:5]
        try:
            wall: float | None = float(end) - float(start)
        except ValueError:
            wall = None
        out[loop] = Invocation(int(rc) if rc.lstrip("-").isdigit() else None, wall, note)
    return out


@dataclass
class Row:
    loop: Loop
    title: str
    verdict: str
    ok: bool
    phases: dict[str, tuple[str, float]]  # name → (status, seconds)
    total: float | None  # the full verdict: every phase run
    quick: float | None  # the quick verdict: up, provision and the quick step (bench._quick)
    quick_pass: float | None  # verify's first pass alone, when verify ran two
    partial: bool | None  # summary.json's "partial"; None without a summary
    partial_phases: list[tuple[str, str, int]]  # (phase, detail, units or tests not run)
    wall: float | None
    rss: int | None
    base: str
    failures: list[str]
    note: str

    @property
    def left_out(self) -> bool:
        """Skipped on purpose (BENCH_SKIP) or not applicable to this scenario: no failure, no figure."""
        return self.note.startswith((SKIPPED_NOTE, NOT_APPLICABLE))


SKIPPED_NOTE = "skipped (BENCH_SKIP)"  # bench.sh writes these into runs.tsv
NOT_APPLICABLE = "not applicable"


def _verdict(inv: Invocation | None, summary: dict[str, Any] | None) -> tuple[str, bool]:
    status = str(summary.get("status", "?")) if summary else None
    if inv is not None and inv.rc is None and inv.note.startswith(SKIPPED_NOTE):
        return "skipped", False
    if inv is not None and inv.rc is None and inv.note.startswith(NOT_APPLICABLE):
        return "n/a", False
    if inv is not None and inv.rc is None:
        return "not run", False
    if inv is None:
        return (status, status == "passed") if status else ("not run", False)
    if inv.rc == 0:
        return "passed", True
    if inv.rc == 130:
        return "interrupted (exit 130)", False
    return f"{'unreachable' if inv.rc == 15 else 'failed'} (exit {inv.rc})", False


def _quick(phases: dict[str, dict[str, Any]]) -> tuple[float | None, float | None]:
    """(seconds to the quick verdict, its pass alone): up, provision and the quick step where the run
    had one (the quick verdict before the idempotence converge); else the phases before verify, then
    verify's first pass when it ran two (`quick_seconds`), else verify itself (one pass, or a
    verdict carried over from the checkpoint). None when no test ran."""
    step = phases.get("quick")
    if step is not None and step.get("status") not in (None, "skipped"):  # its own step, before idempotence
        own = float(step.get("seconds") or 0.0)
        before = sum(float(phases[p].get("seconds") or 0.0) for p in ("up", "provision") if p in phases)
        return before + own, own
    verify = phases.get("verify")
    if verify is None or verify.get("status") in (None, "skipped"):
        return None, None
    first = verify.get("quick_seconds")
    before = sum(
        float(phases[p].get("seconds") or 0.0)
        for p in QUICK_PHASES
        if p in phases and phases[p].get("status") != "skipped"
    )
    seconds = float(first) if isinstance(first, int | float) else float(verify.get("seconds") or 0.0)
    return before + seconds, float(first) if isinstance(first, int | float) else None


def build_rows(reports: Path) -> list[Row]:
    runs = read_runs(reports)
    late = (_read_json(reports / "setup.json") or {}).get("late_role") or "<none>"
    rows: list[Row] = []
    for loop in LOOPS:
        summary = _read_json(reports / loop.name / "summary.json")
        inv = runs.get(loop.name)
        verdict, ok = _verdict(inv, summary)
        raw = {n: ph for n, ph in ((summary or {}).get("phases") or {}).items() if isinstance(ph, dict)}
        phases: dict[str, tuple[str, float]] = {}
        failures: list[str] = []
        partial_phases: list[tuple[str, str, int]] = []
        for name, ph in raw.items():
            phases[name] = (str(ph.get("status", "?")), float(ph.get("seconds") or 0.0))
            for f in (ph.get("failures") or [])[:3]:
                first = str(f.get("message", "")).strip().splitlines()[:1]
                failures.append(f"{name}: {f.get('name', '?')}: {first[0][:200] if first else ''}")
            if ph.get("partial"):
                partial_phases.append((name, str(ph.get("detail", "")), len(ph.get("not_run") or [])))
        total = sum(s for st, s in phases.values() if st != "skipped") if summary else None
        quick, quick_pass = _quick(raw) if summary else (None, None)
        status = _read_json(reports / f"rss-{loop.name}.json")
        rss = status.get("host_rss_mib_total") if status else None
        base = str(((summary or {}).get("metadata") or {}).get("base", ""))
        rows.append(
            Row(
                loop,
                loop.title.format(late=late),
                verdict,
                ok,
                phases,
                total,
                quick,
                quick_pass,
                bool(summary.get("partial")) if summary else None,
                partial_phases,
                inv.wall if inv else None,
                int(rss) if isinstance(rss, int | float) else None,
                base,
                failures,
                inv.note if inv else "",
            )
        )
    return rows


def _cell_phase(phases: dict[str, tuple[str, float]], name: str) -> str:
    if name not in phases or phases[name][0] == "skipped":
        return "-"
    status, seconds = phases[name]
    return f"{seconds:.1f}" if status == "passed" else f"{seconds:.1f} {status.upper()}"


def _cell_verify(r: Row) -> str:
    cell = _cell_phase(r.phases, "verify")
    return cell if r.quick_pass is None or cell == "-" else f"{cell} ({r.quick_pass:.1f})"


def _ratio(value: float | None, base: float | None, trusted: bool) -> str:
    if value is None or not base:
        return "-"
    return f"{value / base:.2f}" + ("" if trusted else "*")


def _md_table(header: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return (
            "| "
            + " | ".join(
                c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )
            + " |"
        )

    rule = "|" + "|".join(("-" * (w + 1) + ":") if i in right else "-" * (w + 2) for i, w in enumerate(widths)) + "|"
    return [line(header), rule, *(line(r) for r in rows)]


def _seconds(value: float | None) -> str:
    return f"{value:.1f}" if value is not None else "-"


def render(reports: Path) -> tuple[str, bool]:
    """The markdown report of R, and whether every loop ran and passed (or was left out on purpose)."""
    rows = build_rows(reports)
    setup = _read_json(reports / "setup.json") or {}
    start, end = _read_json(reports / "host-start.json"), _read_json(reports / "host-end.json")
    summaries = [_read_json(reports / loop.name / "summary.json") or {} for loop in LOOPS]
    meta = next((s.get("metadata") for s in summaries if s.get("metadata")), None) or {}
    scenario = setup.get("scenario") or next((s.get("scenario") for s in summaries if s.get("scenario")), "?")

    # The baseline: the naive loop; when it was skipped, loop 2 (kept), the same phases from nothing.
    baseline = rows[1] if rows[0].left_out else rows[0]
    table: list[list[str]] = []
    for r in rows:
        trusted = r.ok and baseline.ok
        partial = "-" if r.partial is None else "yes" if r.partial else "no"
        table.append(
            [
                r.title,
                r.verdict,
                partial,
                *(_cell_verify(r) if p == "verify" else _cell_phase(r.phases, p) for p in PHASES),
                _seconds(r.total),
                _ratio(r.total, baseline.total, trusted),
                _seconds(r.quick),
                _ratio(r.quick, baseline.total, trusted),
                _seconds(r.wall),
                str(r.rss) if r.rss is not None else "-",
            ]
        )
    header = [
        "loop",
        "verdict",
        "partial",
        *(f"{p} s" for p in PHASES),
        "full s",
        "x naive",
        "quick s",
        "quick x naive",
        "wall s",
        "host RSS MiB",
    ]
    out = [f"# harness bench: {scenario}", ""]
    host = (start or end or {}).get("host") or meta.get("host") or "?"
    out.append(
        f"- host: {host}, accelerator {meta.get('accelerator') or '?'}, harness {meta.get('harness_version', '?')}"
    )
    out.append(f"- start: {_stamp_line(start) if start else '?'}")
    out.append(f"- end: {_stamp_line(end) if end else '?'}")
    if setup.get("scenario_file"):
        out.append(
            f"- scenario file: loop 1 `{setup['scenario_file']}`; the later loops its copy `{setup.get('copy', '?')}` "
            f"(same name; roles from `{setup.get('roles_copy', '?')}`)"
        )
    out += ["", *_md_table(header, table, right=set(range(3, len(header)))), ""]
    out += [
        "Seconds are each phase's `phases.<name>.seconds` in `<loop>/summary.json`; `-` is skipped or absent.",
        "verify: the whole phase; in brackets its first pass alone (the tests not marked `disturbing`),",
        "when it ran two. full: the sum of the phases run (the full verdict; the naive loop's destroy",
        "included); quick: up + provision + the quick step (the quick verdict, before the idempotence",
        "converge); in a run without that step up + provision + idempotence + verify's first pass (verify",
        "itself when it ran one pass or carried its verdict over); x naive: full / the naive loop's full,",
        "quick x naive: quick / the naive loop's full (what a developer waits for without the inner",
        "loop; 0.20 is 5x faster). partial: `summary.json`",
        '`"partial"`: the inner loop left units or tests out on purpose (see the notes). wall: the whole',
        "`harness run` command (validation, playbook syntax check, reports included).",
        "host RSS: `harness status --json` → `host_rss_mib_total` (QEMU resident sets), right after the",
        "loop, while the cluster is kept. Loops ran in this order, one after the other, on this host;",
        "the edits are cumulative, each edit loop starting from checkpoint `converged` as the loop before",
        "it left it.",
    ]
    if baseline is not rows[0]:
        out.append(
            "x naive: the naive loop was skipped (BENCH_SKIP): ratios are to loop 2 (kept), which runs the same"
            " phases from nothing and keeps the cluster instead of destroying it."
        )
    if any(c.endswith("*") for row in table for c in row):
        out.append("*: this loop or the naive loop failed: the ratio compares runs that did not all finish.")
    notes: list[str] = []
    edits = setup.get("edits")
    edits = edits if isinstance(edits, dict) else {}
    for r in rows:
        if r.base:
            notes.append(f"- {r.loop.name}: started from {r.base}")
        if r.loop.reuses and r.base and not r.base.startswith("reused"):
            notes.append(f"- {r.loop.name}: WARNING: did not reuse a kept cluster, its figures are a new cluster's")
        if r.note:
            notes.append(f"- {r.loop.name}: {r.note}")
        for phase, detail, left in r.partial_phases:
            more = f" ({left} left out)" if left else ""
            notes.append(f"- {r.loop.name}: partial {phase}" + (f": {detail}" if detail else "") + more)
        notes += [f"- {r.loop.name}: {f}" for f in r.failures]
        edit_info = edits.get(r.loop.name)
        if isinstance(edit_info, dict):
            notes.append(f"- {r.loop.name}: the edit, appended to the copy's `{edit_info.get('file')}`:")
            notes += ["", "```yaml", *str(edit_info.get("appended", "")).strip("\n").splitlines(), "```", ""]
    if setup.get("warning"):
        notes.append(f"- WARNING: {setup['warning']}")
    if notes:
        out += ["", "Notes:", "", *notes]
    text = "\n".join(out).rstrip("\n") + "\n"
    return text, all(r.ok or r.left_out for r in rows)


def table(reports: Path) -> int:
    text, ok = render(reports)
    print(text, end="")
    (reports / "bench.md").write_text(text, encoding="utf-8")
    print(f"\n(written to {reports / 'bench.md'})")
    return 0 if ok else 1


# --- command line ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ci/bench.py", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--table-only", metavar="DIR", type=Path, help="print the table of DIR (like `table DIR`)")
    sub = parser.add_subparsers(dest="cmd")
    p = sub.add_parser("name", help="print the scenario's name")
    p.add_argument("scenario")
    p = sub.add_parser("prepare", help="copy the scenario and roles/ into WORK; print the copy's scenario file")
    p.add_argument("scenario")
    p.add_argument("work", type=Path)
    p.add_argument("reports", type=Path)
    p = sub.add_parser("late-role", help="print the late role to edit (exit 3, printing why, where there is none)")
    p.add_argument("reports", type=Path)
    p = sub.add_parser("edit", help="append one task to the copy's roles/ROLE/tasks/main.yml (ROLE: common)")
    p.add_argument("work", type=Path)
    p.add_argument("reports", type=Path)
    p.add_argument("loop", choices=LOOP_NAMES)
    p.add_argument("role", nargs="?", default=EDITED_ROLE)
    p = sub.add_parser("comment", help=f"append a comment to the copy's roles/{EDITED_ROLE}/tasks/main.yml")
    p.add_argument("work", type=Path)
    p.add_argument("reports", type=Path)
    p.add_argument("loop", choices=LOOP_NAMES)
    p = sub.add_parser("stamp", help="print and save the date and the load average")
    p.add_argument("reports", type=Path)
    p.add_argument("which", choices=("start", "end"))
    p = sub.add_parser("table", help="print the table of R and write R/bench.md (exit 1 if a loop failed)")
    p.add_argument("reports", type=Path)
    args = parser.parse_args(argv)

    from harness.errors import HarnessError

    try:
        if args.table_only is not None:
            return table(args.table_only)
        if args.cmd == "name":
            print(_load(args.scenario).name)
        elif args.cmd == "prepare":
            print(prepare(args.scenario, args.work.resolve(), args.reports))
        elif args.cmd == "late-role":
            setup = _read_json(args.reports / "setup.json") or {}
            if not setup.get("late_role"):
                print(setup.get("late_role_why") or f"{NOT_APPLICABLE}: no late role in {args.reports}/setup.json")
                return 3
            print(setup["late_role"])
        elif args.cmd == "edit":
            print(f"bench: edited {edit(args.work, args.reports, args.loop, args.role)}", file=sys.stderr)
        elif args.cmd == "comment":
            print(f"bench: edited {comment(args.work, args.reports, args.loop)}", file=sys.stderr)
        elif args.cmd == "stamp":
            print(stamp(args.reports, args.which))
        elif args.cmd == "table":
            return table(args.reports)
        else:
            parser.print_help(sys.stderr)
            return 2
    except (BenchError, HarnessError, OSError) as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
