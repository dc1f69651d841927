"""Run reports: summary.json, junit.xml and summary.md, one entry per lifecycle phase.

Secrets never reach a report: `redact` drops every key that looks secret (key, secret, password,
token) from the metadata, and task results Ansible censored (`no_log`) stay censored because the
provisioning results carry only what the events carry.
"""

from __future__ import annotations

import json
import logging
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger(__name__)

MASK = "********"
# "unreachable": nodes did not answer (after retries): about the infrastructure, not the roles.
Status = Literal["passed", "failed", "skipped", "unreachable"]

_SECRET_KEY = re.compile(r"key|secret|password|token", re.IGNORECASE)
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_XML_INVALID = re.compile("[^\x09\x0a\x0d\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def is_secret_key(name: str) -> bool:
    """True for variable names that may hold a secret (api_key, db_password, vault_token...)."""
    return bool(_SECRET_KEY.search(name))


def redact(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of mapping without secret-like keys, at any depth (inside dicts and lists)."""

    def clean(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {str(k): clean(v) for k, v in value.items() if not is_secret_key(str(k))}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return value

    result: dict[str, Any] = clean(mapping)
    return result


def secret_values(extra_vars: Mapping[str, Any]) -> list[str]:
    """String values of secret-like extra vars, to mask should a module echo one back."""
    found: list[str] = []

    def walk(value: Any, secret: bool) -> None:
        if isinstance(value, Mapping):
            for k, v in value.items():
                walk(v, secret or is_secret_key(str(k)))
        elif isinstance(value, (list, tuple)):
            for v in value:
                walk(v, secret)
        elif secret and isinstance(value, (str, int)) and len(str(value)) >= 4:
            found.append(str(value))

    walk(extra_vars, False)
    return sorted(set(found), key=len, reverse=True)


def mask_secrets(text: str, secrets: Iterable[str]) -> str:
    """Replace every secret value in text with a mask."""
    for s in secrets:
        text = text.replace(s, MASK)
    return text


@dataclass(frozen=True)
class Failure:
    """One failing task or test: a short name (`node2: Check the scratch disk`) and the details."""

    name: str
    message: str


@dataclass(frozen=True)
class NotRun:
    """A test (or other unit of a phase's work) left out on purpose, and why
    (`disturbing: left for the full verdict`)."""

    name: str
    why: str


@dataclass
class PhaseResult:
    name: str
    status: Status
    seconds: float = 0.0
    failures: list[Failure] = field(default_factory=list)
    # One line of what the phase counted, e.g. "36 passed, 0 failed, 0 skipped" or "ok=352 changed=0".
    detail: str = ""
    # The phase's own JUnit file (verify's pytest run), whose testcases junit.xml takes in.
    junit: Path | None = None
    # One line per retry of the phase: what was unreachable, what was waited for, what was redone.
    retries: list[str] = field(default_factory=list)
    # A partial verdict (`verify --quick`, the inner loop's scoped converges): part of the phase's
    # work was left out on purpose, named in not_run with why; such a run is never a green rehearsal.
    partial: bool = False
    not_run: list[NotRun] = field(default_factory=list)
    # verify's first pass alone (the tests not marked disturbing), when two passes ran: the quick
    # verdict came this many seconds into the phase, plus the collect-only listing before it.
    quick_seconds: float | None = None


@dataclass
class RunReport:
    scenario: str
    run_id: str
    phases: list[PhaseResult] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    # The phase order of the sequence that made the report (lifecycle.PHASES); phases in it that
    # were never recorded are reported as skipped.
    order: tuple[str, ...] = ()

    def phase(self, name: str) -> PhaseResult:
        for p in self.phases:
            if p.name == name:
                return p
        raise KeyError(
            f"no phase {name!r} in this report; phases: {', '.join(p.name for p in self.phases) or '(none)'}"
        )

    def record(self, result: PhaseResult) -> None:
        """Add a phase result, replacing an earlier one of the same name."""
        self.phases = [p for p in self.phases if p.name != result.name] + [result]

    @property
    def partial(self) -> bool:
        """Some phase's verdict is partial: the run's verdict is, too."""
        return any(p.partial for p in self.phases)

    @property
    def status(self) -> Status:
        return "failed" if any(p.status in ("failed", "unreachable") for p in self.all_phases()) else "passed"

    def all_phases(self) -> list[PhaseResult]:
        """Every phase of `order` (those never reached as skipped), then any others as recorded."""
        known = {p.name: p for p in self.phases}
        out = [known.get(name) or PhaseResult(name, "skipped") for name in self.order]
        return out + [p for p in self.phases if p.name not in self.order]

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "run_id": self.run_id,
            "status": self.status,
            "partial": self.partial,
            "phases": {p.name: _phase_dict(p) for p in self.all_phases()},
            "metadata": redact(self.metadata),
        }


def _phase_dict(p: PhaseResult) -> dict[str, Any]:
    """A phase in summary.json; `partial` and `not_run` only where the phase left something out."""
    out: dict[str, Any] = {
        "status": p.status,
        "seconds": round(p.seconds, 3),
        "detail": p.detail,
        "failures": [{"name": f.name, "message": f.message} for f in p.failures],
        "retries": list(p.retries),
    }
    if p.quick_seconds is not None:
        out["quick_seconds"] = round(p.quick_seconds, 3)
    if p.partial or p.not_run:
        out["partial"] = p.partial
        out["not_run"] = [{"name": n.name, "why": n.why} for n in p.not_run]
    return out


def _xml_text(text: str) -> str:
    return _XML_INVALID.sub("", _ANSI.sub("", text))


def _first_line(text: str, limit: int = 200) -> str:
    line = _xml_text(text).strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _case(classname: str, name: str, seconds: float) -> ET.Element:
    return ET.Element("testcase", classname=classname, name=_xml_text(name), time=f"{seconds:.3f}")


def _phase_cases(scenario: str, p: PhaseResult) -> list[ET.Element]:
    """One testcase for a phase that passed or was skipped; one per failure for a phase that failed
    (a failure named like its phase keeps the phase's own test id)."""
    if p.status not in ("failed", "unreachable"):
        case = _case(scenario, p.name, p.seconds)
        if p.status == "skipped":
            ET.SubElement(case, "skipped")
        return [case]
    cases = []
    for f in p.failures or [Failure(p.name, f"phase {p.name} failed")]:
        own = f.name == p.name
        case = _case(scenario if own else f"{scenario}.{p.name}", f.name, p.seconds if own else 0.0)
        # Unreachable nodes are an error (the check could not run), not a failure of what was checked.
        kind, what = ("error", "Unreachable") if p.status == "unreachable" else ("failure", "Failure")
        el = ET.SubElement(case, kind, message=_first_line(f.message), type=f"{p.name.capitalize()}{what}")
        el.text = _xml_text(f.message)
        cases.append(case)
    return cases


def _verify_cases(scenario: str, p: PhaseResult) -> list[ET.Element] | None:
    """Every testcase of verify's own JUnit file, plus a case for each failure the file does not
    name (no test collected, say); None when there is no file to read."""
    if p.junit is None:
        return None
    try:
        cases = list(ET.parse(p.junit).getroot().iter("testcase"))
    except (OSError, ET.ParseError) as exc:
        log.warning("cannot read verify's JUnit file %s (%s); junit.xml lists its failures only", p.junit, exc)
        return None
    named = {f"{c.get('classname', '')}::{c.get('name', '')}".strip(":") for c in cases}
    extra = [f for f in p.failures if f.name not in named]
    failing = any(c.find("failure") is not None or c.find("error") is not None for c in cases)
    if extra or (p.status == "failed" and not failing):
        cases += _phase_cases(scenario, PhaseResult(p.name, "failed", 0.0, extra))
    return cases + [_not_run_case(n) for n in p.not_run]


def _not_run_case(test: NotRun) -> ET.Element:
    """A skipped testcase for a test left out (named by its pytest node id), as pytest would name it."""
    path, *rest = test.name.split("::")
    classname = ".".join([path.removesuffix(".py").replace("/", "."), *rest[:-1]])
    case = _case(classname, rest[-1] if rest else path, 0.0)
    ET.SubElement(case, "skipped", message=_first_line(test.why))
    return case


_OUTCOMES = (("failure", "failures"), ("error", "errors"), ("skipped", "skipped"))


def _suite(name: str, cases: list[ET.Element], seconds: float) -> ET.Element:
    """A testsuite of cases, its counts taken from the cases themselves."""
    suite = ET.Element("testsuite", name=name)
    counts = {"tests": len(cases), "failures": 0, "errors": 0, "skipped": 0}
    for case in cases:
        # A test that failed and then errored in teardown counts once, as failed.
        outcome = next((k for tag, k in _OUTCOMES if case.find(tag) is not None), None)
        if outcome is not None:
            counts[outcome] += 1
    suite.attrib.update({k: str(v) for k, v in counts.items()}, time=f"{seconds:.3f}")
    suite.extend(cases)
    return suite


def _junit(report: RunReport) -> ET.ElementTree:
    """One testsuite for the phases, one for verify's tests (read back from its own JUnit file):
    every task failure and every test counted once."""
    phases, verify = [], None
    for p in report.all_phases():
        cases = _verify_cases(report.scenario, p) if p.name == "verify" else None
        if cases is None:
            phases.append((p, _phase_cases(report.scenario, p)))
        else:
            verify = _suite(f"{report.scenario}.verify", cases, p.seconds)
    main = _suite(report.scenario, [c for _, cases in phases for c in cases], sum(p.seconds for p, _ in phases))
    props = ET.Element("properties")
    ET.SubElement(props, "property", name="run_id", value=report.run_id)
    main.insert(0, props)
    suites = [main] if verify is None else [main, verify]
    totals = {k: sum(int(s.get(k, "0")) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    seconds = sum(float(s.get("time", "0")) for s in suites)
    root = ET.Element("testsuites", {"name": "harness", **{k: str(v) for k, v in totals.items()}})
    root.set("time", f"{seconds:.3f}")
    root.extend(suites)
    ET.indent(root)
    return ET.ElementTree(root)


def format_seconds(seconds: float) -> str:
    """12.3s, 2m 05s, 1h 02m."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _fence(text: str) -> str:
    ticks = "```"
    while ticks in text:
        ticks += "`"
    return ticks


def render_markdown(report: RunReport) -> str:
    phases = report.all_phases()
    partial = " (partial verdict)" if report.partial else ""
    lines = [
        f"# {_md_cell(report.scenario)}: {report.status}{partial}",
        "",
        f"Run `{report.run_id}`."
        + (
            f" ansible-core {_md_cell(str(report.metadata['ansible_core']))}."
            if report.metadata.get("ansible_core")
            else ""
        ),
        "",
        "| Phase | Status | Time | Failures | Detail |",
        "|---|---|---:|---:|---|",
    ]
    for p in phases:
        cells = [_md_cell(p.name), p.status, format_seconds(p.seconds), str(len(p.failures)), _md_cell(p.detail)]
        lines.append(f"| {' | '.join(cells)} |")
    total = sum(p.seconds for p in phases)
    lines.append(
        f"| **total** | **{report.status}** | {format_seconds(total)} | {sum(len(p.failures) for p in phases)} | |"
    )
    warnings = [str(w) for w in report.metadata.get("warnings") or ()]
    if warnings:
        lines += ["", "## Warnings", ""]
        lines += [f"- {_md_cell(w)}" for w in warnings]
    retried = [(p, r) for p in phases for r in p.retries]
    if retried:
        lines += ["", "## Retries (nodes that stopped answering; not a verdict about the roles)", ""]
        lines += [f"- {p.name}: {_md_cell(r)}" for p, r in retried]
    left = [(p, n) for p in phases for n in p.not_run]
    if left:
        lines += ["", "## Not run", ""]
        lines += [f"- {p.name}: `{n.name}`: {_md_cell(n.why)}" for p, n in left]
    failing = [(p, f) for p in phases for f in p.failures]
    if failing:
        lines += ["", "## Failures"]
        for p, f in failing:
            body = _ANSI.sub("", f.message).rstrip()
            fence = _fence(body)
            lines += ["", f"### {p.name}: {f.name}", "", f"{fence}text", body, fence]
    return "\n".join(lines) + "\n"


def write_reports(report: RunReport, directory: Path) -> list[Path]:
    """Write summary.json, junit.xml and summary.md into directory; return their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    summary = directory / "summary.json"
    summary.write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    junit = directory / "junit.xml"
    _junit(report).write(junit, encoding="utf-8", xml_declaration=True)
    markdown = directory / "summary.md"
    markdown.write_text(render_markdown(report), encoding="utf-8")
    return [summary, junit, markdown]
