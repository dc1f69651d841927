"""Rehearsal records: the content manifest (every file with its sha256, vars without secrets), the
green rule, rehearsal.json and the ledger."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from harness import rehearsal
from harness.errors import SpecError
from harness.report import PhaseResult, RunReport
from harness.spec import Scenario, parse_scenario

SCENARIO = """\
name: site
nodes:
  - {name: mgmt01, groups: [mgmt]}
provision:
  playbook: site.yml
  roles_path: [roles]
  extra_vars:
    site_motd: hello
    site_api_token: s3cr3t-value
    nested: {db_password: another-secret, port: 5432}
tests: tests
"""
PHASES = ("up", "provision", "idempotence", "verify", "destroy")


def make_scenario(root: Path, text: str = SCENARIO) -> Scenario:
    """A scenario directory: playbook, one role of its own, tests (and caches that are no content)."""
    (root / "roles" / "motd" / "tasks").mkdir(parents=True)
    (root / "roles" / "motd" / "tasks" / "main.yml").write_text("- name: Say hello\n  ansible.builtin.debug: {}\n")
    (root / "roles" / "motd" / "defaults").mkdir()
    (root / "roles" / "motd" / "defaults" / "main.yml").write_text("motd_text: hi\n")
    (root / "site.yml").write_text("- hosts: all\n  roles: [motd]\n")
    (root / "tests" / "__pycache__").mkdir(parents=True)
    (root / "tests" / "test_motd.py").write_text("def test_motd(host): pass\n")
    (root / "tests" / "__pycache__" / "test_motd.cpython-311.pyc").write_bytes(b"\0cache")
    (root / "scenario.yml").write_text(text)
    return parse_scenario(text, root / "scenario.yml")


def report(statuses: dict[str, str]) -> RunReport:
    rep = RunReport("site", "r-1", order=PHASES)
    for name, status in statuses.items():
        rep.record(PhaseResult(name, status))  # type: ignore[arg-type]
    rep.metadata = {"host": "bench7", "accelerator": "kvm", "base": "a new cluster"}
    return rep


GREEN = {"up": "passed", "provision": "passed", "idempotence": "passed", "verify": "passed", "destroy": "passed"}


def test_the_manifest_has_every_file_with_its_sha256_and_no_caches(tmp_path: Path) -> None:
    sc = make_scenario(tmp_path)
    m = rehearsal.content_manifest(sc)
    task = tmp_path / "roles" / "motd" / "tasks" / "main.yml"
    assert m.files["roles/motd/tasks/main.yml"] == hashlib.sha256(task.read_bytes()).hexdigest()
    for name in ("site.yml", "scenario.yml", "tests/test_motd.py", "roles/motd/defaults/main.yml"):
        assert name in m.files
    assert not [f for f in m.files if "__pycache__" in f or f.endswith(".pyc")]
    # The harness's own roles come last on every roles path: they are content too.
    assert any(f.endswith("roles/common/tasks/main.yml") and f.startswith("../") for f in m.files)


def test_secret_values_never_reach_the_manifest_but_their_names_do(tmp_path: Path) -> None:
    m = rehearsal.content_manifest(make_scenario(tmp_path))
    text = json.dumps(m.to_dict())
    assert "s3cr3t-value" not in text and "another-secret" not in text
    assert m.extra_vars == {"site_motd": "hello", "nested": {"port": 5432}}
    assert m.secret_vars == ("nested.db_password", "site_api_token")


def test_the_digest_follows_content_not_time(tmp_path: Path) -> None:
    sc = make_scenario(tmp_path)
    before = rehearsal.content_manifest(sc)
    task = tmp_path / "roles" / "motd" / "tasks" / "main.yml"
    task.write_text(task.read_text())  # same bytes, new mtime
    assert rehearsal.content_manifest(sc).digest == before.digest
    task.write_text(task.read_text() + "# changed\n")
    assert rehearsal.content_manifest(sc).digest != before.digest
    assert len(before.short) == 16 and before.digest.startswith(before.short)


def test_compare_names_changed_added_removed_files_vars_and_version(tmp_path: Path) -> None:
    sc = make_scenario(tmp_path / "a")
    old = rehearsal.content_manifest(sc)
    role = tmp_path / "a" / "roles" / "motd"
    (role / "tasks" / "main.yml").write_text("- name: Changed\n  ansible.builtin.debug: {}\n")
    (role / "templates").mkdir()
    (role / "templates" / "motd.j2").write_text("{{ motd_text }}\n")
    (role / "defaults" / "main.yml").unlink()
    sc2 = make_scenario(tmp_path / "b", SCENARIO.replace("hello", "bye").replace("site_api_token", "site_key"))
    new = rehearsal.content_manifest(sc)
    diff = rehearsal.compare(old, new)
    assert diff.changed == ["roles/motd/tasks/main.yml"]
    assert diff.added == ["roles/motd/templates/motd.j2"]
    assert diff.removed == ["roles/motd/defaults/main.yml"]
    assert not diff.empty and rehearsal.compare(new, new).empty
    vars_diff = rehearsal.compare(old, rehearsal.content_manifest(sc2))
    assert vars_diff.vars_changed == ["site_api_token", "site_key", "site_motd"]
    bumped = rehearsal.Manifest(new.files, new.extra_vars, new.secret_vars, "9.9.9")
    assert rehearsal.compare(new, bumped).lines() == [f"harness version: {new.harness_version} -> 9.9.9"]


def test_green_means_up_provision_verify_passed_and_nothing_failed(tmp_path: Path) -> None:
    sc = make_scenario(tmp_path)
    m = rehearsal.content_manifest(sc)

    def rec(statuses: dict[str, str], select: str | None = None) -> rehearsal.Rehearsal:
        return rehearsal.from_report(sc, report(statuses), m, select)

    assert rec(GREEN).green and rec(GREEN).verdict == "green"
    assert rec({**GREEN, "idempotence": "skipped", "destroy": "skipped"}).green  # --skip-idempotence, --keep
    assert not rec({**GREEN, "verify": "skipped"}).green
    assert not rec({**GREEN, "destroy": "failed"}).green
    assert rec({**GREEN, "verify": "failed"}).verdict == "red: verify failed"
    assert rec({**GREEN, "idempotence": "unreachable"}).verdict == "red: idempotence unreachable"
    partial = rec(GREEN, select="test_motd")
    assert not partial.green and "only tests matching -k 'test_motd'" in partial.verdict
    quick = report(GREEN)
    quick.record(PhaseResult("verify", "passed", partial=True))  # `--quick`: disturbing tests left out
    record = rehearsal.from_report(sc, quick, m)
    assert not record.green and record.partial == ("verify",)
    assert record.verdict == "red: partial verify (part of it was left out, see the report)"
    assert rehearsal.Rehearsal.from_dict(json.loads(json.dumps(record.to_dict()))) == record
    assert rec({"up": "failed"}).phases == {"up": "failed", **dict.fromkeys(PHASES[1:], "skipped")}


def test_record_run_writes_rehearsal_json_and_appends_the_ledger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HARNESS_STATE_DIR", str(tmp_path / "state"))
    sc = make_scenario(tmp_path / "sc")
    m = rehearsal.content_manifest(sc)
    path = rehearsal.record_run(sc, report(GREEN), m, tmp_path / "reports")
    assert path == tmp_path / "reports" / "rehearsal.json"
    data = json.loads(path.read_text())
    assert data["green"] is True and data["host"] == "bench7" and data["accelerator"] == "kvm"
    assert data["content"]["digest"] == m.digest and data["content"]["files"] == m.files
    rehearsal.record_run(sc, report({**GREEN, "verify": "failed"}), m, tmp_path / "reports2")
    ledger = tmp_path / "state" / "rehearsals.jsonl"
    with ledger.open("a") as fh:
        fh.write("not json\n")
    records = rehearsal.read_ledger()
    assert [r.green for r in records] == [True, False]
    assert records[0] == rehearsal.load_record(path)
    assert rehearsal.read_ledger(scenario="other") == []
    assert rehearsal.newest(records, green=True) == records[0]
    assert rehearsal.newest(records, digest=m.digest) == records[1]


def test_a_file_that_is_no_record_is_bad_input(tmp_path: Path) -> None:
    bad = tmp_path / "rehearsal.json"
    bad.write_text("{}")
    with pytest.raises(SpecError, match="not a rehearsal record"):
        rehearsal.load_record(bad)


def test_the_record_keeps_the_ansible_core_the_run_used_and_older_records_read_without_it(tmp_path: Path) -> None:
    sc = make_scenario(tmp_path)
    rep = report(GREEN)
    rep.metadata["ansible_core"] = "2.19.15"
    record = rehearsal.from_report(sc, rep, rehearsal.content_manifest(sc))

    assert record.ansible_core == "2.19.15" and record.to_dict()["ansible_core"] == "2.19.15"
    assert record.describe().endswith(", ansible-core 2.19.15")
    assert rehearsal.Rehearsal.from_dict(json.loads(json.dumps(record.to_dict()))) == record
    older = {k: v for k, v in record.to_dict().items() if k != "ansible_core"}
    assert rehearsal.Rehearsal.from_dict(older).ansible_core == ""
    assert "ansible-core" not in rehearsal.Rehearsal.from_dict(older).describe()
    # The Ansible that ran is no content: the same files rehearsed on another release prove the same content.
    assert rehearsal.Rehearsal.from_dict(older).content.digest == record.content.digest
