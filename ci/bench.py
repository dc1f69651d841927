"""Helper of ci/bench.sh (a benchmark that prints figures, not a test): the scenario copy with its
own copy of roles/, the one-role edit, start/end stamps of the host, and the table of the loops.

    .venv/bin/python ci/bench.py name SCENARIO                  # the scenario's name
    .venv/bin/python ci/bench.py prepare SCENARIO WORK R        # copy → prints the copy's scenario file
    .venv/bin/python ci/bench.py edit WORK R                    # append one task to the copy's roles/common
    .venv/bin/python ci/bench.py stamp R start|end              # date and load average, printed and saved
    .venv/bin/python ci/bench.py table R                        # print the table, write R/bench.md
    .venv/bin/python ci/bench.py --table-only R                 # the same

What bench.sh leaves in R, and what `table` reads (all optional: a missing file is shown as "-"):
  R/<loop>/summary.json      `harness run --report-dir R/<loop>` (phases.<name>.seconds, status)
  R/runs.tsv                 loop, exit code ("-": not run), start and end (epoch seconds), note
  R/rss-<loop>.json          `harness status SCENARIO --json` taken right after that loop
  R/host-start.json, R/host-end.json, R/setup.json   (this helper's stamps and the copy's facts)

A kept cluster is found by the scenario's *file* (harness/rundir.py `active_run` compares
`scenario_file` with the scenario's source path), not by its name: loops 2-4 therefore all run the
copy's scenario file, made before loop 2, so that --reuse finds the cluster loop 2 kept.
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

LOOPS: tuple[tuple[str, str], ...] = (
    ("naive", "naive: run (new cluster, destroyed)"),
    ("kept", "from nothing: run --keep"),
    ("reuse-booted", "run --reuse (from booted)"),
    ("reuse-converged", "edit one role: run --reuse --from converged"),
)
PHASES = ("up", "provision", "idempotence", "verify", "destroy")
EDITED_ROLE = "common"
EDIT_TARGET = "/etc/harness-bench"
EDIT_TASK = f"""
# Appended by ci/bench.sh (edit-one-role loop), in a temporary copy of roles/ only.
- name: Mark the node as rehearsed by the harness benchmark
  ansible.builtin.copy:
    dest: {EDIT_TARGET}
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
    _update(
        reports / "setup.json",
        {
            "scenario": original.name,
            "scenario_file": str(original.source),
            "copy": str(copy_file),
            "roles_copy": str(roles_copy),
            "warning": warning,
        },
    )
    return copy_file


def edit(work: Path, reports: Path) -> Path:
    """Append one harmless, idempotent task to the copy's roles/common/tasks/main.yml."""
    target = work / "roles" / EDITED_ROLE / "tasks" / "main.yml"
    text = target.read_text(encoding="utf-8")
    if EDIT_TARGET in text:
        raise BenchError(f"{target}: already edited")
    target.write_text(text + ("" if text.endswith("\n") else "\n") + EDIT_TASK, encoding="utf-8")
    yaml.safe_load(target.read_text(encoding="utf-8"))  # still YAML
    _update(reports / "setup.json", {"edit": {"file": f"roles/{EDITED_ROLE}/tasks/main.yml", "appended": EDIT_TASK}})
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
    loop: str
    title: str
    verdict: str
    ok: bool
    phases: dict[str, tuple[str, float]]  # name → (status, seconds)
    total: float | None
    wall: float | None
    rss: int | None
    base: str
    failures: list[str]
    note: str

    @property
    def skipped_by_user(self) -> bool:
        return self.note.startswith(SKIPPED_NOTE)


SKIPPED_NOTE = "skipped (BENCH_SKIP)"  # bench.sh writes it into runs.tsv


def _verdict(inv: Invocation | None, summary: dict[str, Any] | None) -> tuple[str, bool]:
    status = str(summary.get("status", "?")) if summary else None
    if inv is not None and inv.rc is None and inv.note.startswith(SKIPPED_NOTE):
        return "skipped", False
    if inv is not None and inv.rc is None:
        return "not run", False
    if inv is None:
        return (status, status == "passed") if status else ("not run", False)
    if inv.rc == 0:
        return "passed", True
    if inv.rc == 130:
        return "interrupted (exit 130)", False
    return f"{'unreachable' if inv.rc == 15 else 'failed'} (exit {inv.rc})", False


def build_rows(reports: Path) -> list[Row]:
    runs = read_runs(reports)
    rows: list[Row] = []
    for loop, title in LOOPS:
        summary = _read_json(reports / loop / "summary.json")
        inv = runs.get(loop)
        verdict, ok = _verdict(inv, summary)
        phases: dict[str, tuple[str, float]] = {}
        failures: list[str] = []
        for name, ph in ((summary or {}).get("phases") or {}).items():
            if not isinstance(ph, dict):
                continue
            phases[name] = (str(ph.get("status", "?")), float(ph.get("seconds") or 0.0))
            for f in (ph.get("failures") or [])[:3]:
                first = str(f.get("message", "")).strip().splitlines()[:1]
                failures.append(f"{name}: {f.get('name', '?')}: {first[0][:200] if first else ''}")
        total = sum(s for st, s in phases.values() if st != "skipped") if summary else None
        status = _read_json(reports / f"rss-{loop}.json")
        rss = status.get("host_rss_mib_total") if status else None
        base = str(((summary or {}).get("metadata") or {}).get("base", ""))
        rows.append(
            Row(
                loop,
                title,
                verdict,
                ok,
                phases,
                total,
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


def render(reports: Path) -> tuple[str, bool]:
    """The markdown report of R, and whether every loop ran and passed."""
    rows = build_rows(reports)
    setup = _read_json(reports / "setup.json") or {}
    start, end = _read_json(reports / "host-start.json"), _read_json(reports / "host-end.json")
    summaries = [_read_json(reports / loop / "summary.json") or {} for loop, _ in LOOPS]
    meta = next((s.get("metadata") for s in summaries if s.get("metadata")), None) or {}
    scenario = setup.get("scenario") or next((s.get("scenario") for s in summaries if s.get("scenario")), "?")

    # The baseline: the naive loop; when it was skipped, loop 2 (kept), the same phases from nothing.
    baseline = rows[1] if rows[0].skipped_by_user else rows[0]
    naive = baseline.total
    table: list[list[str]] = []
    for r in rows:
        ratio = f"{r.total / naive:.2f}" if r.total is not None and naive else "-"
        if ratio != "-" and not (r.ok and baseline.ok):
            ratio += "*"
        table.append(
            [
                r.title,
                r.verdict,
                *(_cell_phase(r.phases, p) for p in PHASES),
                f"{r.total:.1f}" if r.total is not None else "-",
                ratio,
                f"{r.wall:.1f}" if r.wall is not None else "-",
                str(r.rss) if r.rss is not None else "-",
            ]
        )
    header = ["loop", "verdict", *(f"{p} s" for p in PHASES), "total s", "x naive", "wall s", "host RSS MiB"]
    out = [f"# harness bench: {scenario}", ""]
    host = (start or end or {}).get("host") or meta.get("host") or "?"
    out.append(
        f"- host: {host}, accelerator {meta.get('accelerator') or '?'}, harness {meta.get('harness_version', '?')}"
    )
    out.append(f"- start: {_stamp_line(start) if start else '?'}")
    out.append(f"- end: {_stamp_line(end) if end else '?'}")
    if setup.get("scenario_file"):
        out.append(
            f"- scenario file: loop 1 `{setup['scenario_file']}`; loops 2-4 its copy `{setup.get('copy', '?')}` "
            f"(same name; roles from `{setup.get('roles_copy', '?')}`)"
        )
    out += ["", *_md_table(header, table, right=set(range(2, len(header)))), ""]
    out += [
        "Seconds are each phase's `phases.<name>.seconds` in `<loop>/summary.json`; `-` is skipped or absent.",
        "total: the sum of the phases run; x naive: total / the naive loop's total; wall: the whole",
        "`harness run` command (validation, playbook syntax check, reports included).",
        "host RSS: `harness status --json` → `host_rss_mib_total` (QEMU resident sets), right after the",
        "loop, while the cluster is kept. Loops ran in this order, one after the other, on this host.",
    ]
    if baseline is not rows[0]:
        out.append(
            "x naive: the naive loop was skipped (BENCH_SKIP): ratios are to loop 2 (kept), which runs the same"
            " phases from nothing and keeps the cluster instead of destroying it."
        )
    if any(c[header.index("x naive")].endswith("*") for c in table):
        out.append("*: this loop or the naive loop failed: the ratio compares runs that did not all finish.")
    notes: list[str] = []
    for r in rows:
        if r.base:
            notes.append(f"- {r.loop}: started from {r.base}")
        if r.loop.startswith("reuse") and r.base and not r.base.startswith("reused"):
            notes.append(f"- {r.loop}: WARNING: did not reuse a kept cluster, its figures are a new cluster's")
        if r.note:
            notes.append(f"- {r.loop}: {r.note}")
        notes += [f"- {r.loop}: {f}" for f in r.failures]
    edit_info = setup.get("edit")
    if isinstance(edit_info, dict):
        notes.append(f"- reuse-converged: the edit, appended to the copy's `{edit_info.get('file')}`:")
        notes += ["", "```yaml", *str(edit_info.get("appended", "")).strip("\n").splitlines(), "```"]
    if setup.get("warning"):
        notes.append(f"- WARNING: {setup['warning']}")
    if notes:
        out += ["", "Notes:", "", *notes]
    return "\n".join(out) + "\n", all(r.ok or r.skipped_by_user for r in rows)


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
    p = sub.add_parser("edit", help=f"append one task to WORK/roles/{EDITED_ROLE}/tasks/main.yml")
    p.add_argument("work", type=Path)
    p.add_argument("reports", type=Path)
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
        elif args.cmd == "edit":
            print(f"bench: edited {edit(args.work, args.reports)}", file=sys.stderr)
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
