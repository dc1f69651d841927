from __future__ import annotations

import json
import os
import signal
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import proc
from harness.ansible_events import (
    Progress,
    ProgressTracker,
    ProvisionResult,
    abort_cause,
    load_events,
    render_diff,
    result_from_events,
)
from harness.errors import ProvisionError
from harness.provision import (
    ProvisionOptions,
    _envvars,
    changes_for_report,
    converge_verdict,
    failures_for_report,
    idempotence_verdict,
    new_ident,
    run_playbook,
)

pytestmark = pytest.mark.ansible  # real ansible-playbook: CI runs these on the oldest ansible-core too

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ansible"
LOG = Path("/tmp/harness-run/artifacts/fixture/stdout")
PLAYBOOKS = "/src/harness/tests/fixtures/ansible/playbooks"


def _events(case: str) -> list[dict[str, Any]]:
    lines = (FIXTURES / case / "events.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def _result(case: str, secrets: tuple[str, ...] = (), log: Path = LOG) -> ProvisionResult:
    meta = json.loads((FIXTURES / case / "result.json").read_text(encoding="utf-8"))
    return result_from_events(_events(case), meta["rc"], meta["status"], log, secrets)


# --- results from recorded events -------------------------------------------------------------


def test_first_converge_converges_with_changes() -> None:
    result = _result("converge_changed")

    assert result.ok
    assert {h: s.changed for h, s in result.stats.items()} == {"node1": 3, "node2": 3}
    assert {h: s.ok for h, s in result.stats.items()} == {"node1": 5, "node2": 5}
    assert sorted({(c.host, c.task) for c in result.changed}) == [
        (h, t)
        for h in ("node1", "node2")
        for t in ("Create the motd directory", "Store the API token", "Write the message of the day")
    ]
    assert all(c.role == "motd" for c in result.changed)
    assert converge_verdict(result) == []


def test_changes_carry_rendered_diffs_but_no_log_results_stay_hidden() -> None:
    changes = {(c.host, c.task): c for c in _result("converge_changed").changed}

    copy = changes[("node1", "Write the message of the day")]
    assert copy.diff is not None
    assert "+++ /tmp/harness-fixture/node1/motd" in copy.diff
    assert "+Welcome to the fixture cluster" in copy.diff
    directory = changes[("node1", "Create the motd directory")].diff
    assert directory is not None and '-state: "absent"' in directory and '+state: "directory"' in directory
    assert changes[("node1", "Store the API token")].diff is None
    assert "fixture-token" not in json.dumps([c.__dict__ for c in changes.values()], default=str)


def test_first_converge_is_not_idempotent() -> None:
    assert idempotence_verdict(_result("converge_changed"))


def test_second_converge_without_changes_is_idempotent() -> None:
    result = _result("converge_clean")

    assert result.changed == []
    assert all(s.changed == 0 for s in result.stats.values())
    assert converge_verdict(result) == []
    assert idempotence_verdict(result) == []


def test_second_converge_with_drift_names_each_task_host_and_diff() -> None:
    result = _result("converge_drift")

    entries = idempotence_verdict(result)
    msg = "\n".join(f"{f.name}: {f.message}" for f in entries)
    assert len(entries) == 4 and {f.name.split(":")[0] for f in entries} == {"node1", "node2"}
    for host in ("node1", "node2"):
        assert f"{host}: motd : Write the message of the day: changed" in msg
        assert f"{host}: motd : Reload the motd service: changed (no diff given)" in msg
    assert "-Welcome to the fixture cluster" in msg
    assert "+Maintenance tonight" in msg
    assert str(LOG) in msg
    assert "Probe the message of the day" not in msg


def test_changes_for_report_lists_each_changed_task() -> None:
    entries = changes_for_report(_result("converge_drift"))

    assert sorted(e.name for e in entries) == [
        "node1: motd : Reload the motd service",
        "node1: motd : Write the message of the day",
        "node2: motd : Reload the motd service",
        "node2: motd : Write the message of the day",
    ]
    assert all("+Maintenance tonight" in e.message for e in entries if "Write" in e.name)


def test_failing_task_names_every_failure_and_skips_ignored_errors() -> None:
    result = _result("failing_task")

    assert not result.ok
    assert [(f.host, f.task, f.action) for f in result.failures] == [
        ("node2", "Check the scratch disk", "ansible.builtin.shell"),
        ("node1", "Fail on purpose", "ansible.builtin.command"),
    ]
    scratch = result.failures[0]
    assert scratch.task_path == f"{PLAYBOOKS}/failing.yml:12"
    assert result.failures[1].task_path == f"{PLAYBOOKS}/failing.yml:16"
    assert scratch.message.startswith("non-zero return code")
    assert "scratch disk /dev/vdb is missing" in scratch.message
    assert scratch.path_to_log == LOG
    assert result.stats["node1"].ignored == 1 and result.stats["node2"].ignored == 1


def test_converge_verdict_reports_host_task_message_and_log() -> None:
    entries = converge_verdict(_result("failing_task"))

    msg = "\n".join(f"{f.name}: {f.message}" for f in entries)
    assert {f.name.split(":")[0] for f in entries} == {"node1", "node2"}
    assert "node2: Check the scratch disk: ansible.builtin.shell: " in msg
    assert f"\nfrom {PLAYBOOKS}/failing.yml:12\n" in msg
    assert "scratch disk /dev/vdb is missing" in msg
    assert "node1: Fail on purpose: ansible.builtin.command: " in msg
    assert "non-zero return code" in msg
    assert msg.rstrip().endswith(f"Full log: {LOG}")
    assert "Try an optional probe" not in msg


def test_unreachable_host_is_a_failure() -> None:
    result = _result("unreachable_host")

    assert result.stats["node2"].unreachable == 1
    assert result.stats["node1"].unreachable == 0
    [failure] = result.failures
    assert (failure.host, failure.task, failure.role) == ("node2", "Create the motd directory", "motd")
    assert failure.message.startswith("unreachable: Failed to connect to the host via ssh")
    assert "Connection refused" in failure.message
    assert [f.name for f in converge_verdict(result)] == ["node2: motd : Create the motd directory"]
    assert failures_for_report(result)[0].name == "node2: motd : Create the motd directory"


def test_task_durations_come_from_event_timestamps() -> None:
    durations = _result("converge_changed").task_durations

    assert len(durations) == 10  # 5 tasks x 2 hosts
    assert {(d.task, d.host) for d in durations} >= {("motd : Write the message of the day", "node1")}
    assert all(0 < d.seconds < 60 for d in durations)


def test_failure_messages_mask_secret_values() -> None:
    result = _result("failing_task", secrets=("/dev/vdb",))
    assert "/dev/vdb" not in result.failures[0].message
    assert "********" in result.failures[0].message


def test_rescued_failures_do_not_count() -> None:
    events = [
        {"counter": 1, "event": "runner_on_failed", "event_data": {"host": "n1", "task": "t", "res": {"msg": "boom"}}},
        {"counter": 2, "event": "playbook_on_stats", "event_data": {"ok": {"n1": 2}, "rescued": {"n1": 1}}},
    ]
    result = result_from_events(events, 0, "successful", LOG)
    assert result.failures == []
    assert converge_verdict(result) == []


def test_loop_failure_message_names_failed_items() -> None:
    res = {
        "msg": "One or more items failed",
        "results": [
            {"item": "ok-pkg", "failed": False},
            {"item": "nvidia-driver", "failed": True, "msg": "No package matching 'nvidia-driver'"},
        ],
    }
    events = [{"counter": 1, "event": "runner_on_failed", "event_data": {"host": "n1", "task": "Install", "res": res}}]
    [failure] = result_from_events(events, 2, "failed", LOG).failures
    assert 'item "nvidia-driver": No package matching' in failure.message
    assert "ok-pkg" not in failure.message


def test_failed_run_without_failed_task_quotes_the_log(tmp_path: Path) -> None:
    log = tmp_path / "stdout"
    log.write_text("ERROR! the role 'slurm' was not found in /roles\n")
    result = result_from_events([], 4, "failed", log)

    [entry] = converge_verdict(result)
    assert "ERROR! the role 'slurm' was not found" in entry.message
    assert f"Full log: {log}" in entry.message


def test_aborted_play_names_its_cause_first_then_the_log() -> None:
    result = _result("aborted_play", log=FIXTURES / "aborted_play" / "stdout")

    assert not result.ok and result.stats == {} and result.failures == []
    cause = abort_cause(result)
    first = cause.splitlines()[0]
    assert first == (
        "ansible-playbook stopped: couldn't resolve module/action 'community.general.no_such_module' "
        f"at {PLAYBOOKS}/aborted.yml:7 (status failed, rc 4)"
    )
    assert "the end of the log says:" in cause
    assert "- name: Probe with a module from a missing collection" in cause
    assert "\n\n" not in cause  # blank lines of the log dropped
    [entry] = converge_verdict(result)
    assert entry.message.startswith(first + "\n")
    assert entry.message.rstrip().endswith(f"Full log: {FIXTURES / 'aborted_play' / 'stdout'}")


def test_missing_role_is_named_without_its_search_path(tmp_path: Path) -> None:
    log = tmp_path / "stdout"
    log.write_text(
        "ERROR! the role 'slurm' was not found in /x/roles:/root/.ansible/roles\n\n"
        "The error appears to be in '/x/site.yml': line 5, column 7, but may\n"
    )
    first = abort_cause(result_from_events([], 1, "failed", log)).splitlines()[0]
    assert first == "ansible-playbook stopped: the role 'slurm' was not found at /x/site.yml:5 (status failed, rc 1)"


def test_the_fatal_error_is_named_not_an_earlier_task_failures_error_of_ansible_core_2_19(tmp_path: Path) -> None:
    log = tmp_path / "stdout"
    log.write_text(
        "[ERROR]: Task failed: Action failed: boom\nOrigin: /x/site.yml:3:7\n\n"
        'fatal: [n01]: FAILED! => {"changed": false, "msg": "boom"}\n'
        "[ERROR]: couldn't resolve module/action 'community.nope.thing'. This often indicates a misspelling.\n"
        "Origin: /x/roles/broken/tasks/main.yml:1:3\n"
    )
    first = abort_cause(result_from_events([], 4, "failed", log)).splitlines()[0]
    assert first == (
        "ansible-playbook stopped: couldn't resolve module/action 'community.nope.thing' "
        "at /x/roles/broken/tasks/main.yml:1:3 (status failed, rc 4)"
    )


def test_abort_log_tail_keeps_early_error_lines_first_and_masks_secrets(tmp_path: Path) -> None:
    log = tmp_path / "stdout"
    rows = ["PLAY [x] ******", "", "ERROR! Syntax Error while loading YAML. found a tab", "  token: hunter22"]
    log.write_text("\r\n".join([*rows, *(f"detail {i}" for i in range(30))]) + "\n")
    result = result_from_events([], 4, "failed", log, secrets=("hunter22",))

    assert result.log_tail[0] == "ERROR! Syntax Error while loading YAML. found a tab"
    assert result.log_tail[1] == "... (17 lines left out)"
    assert result.log_tail[2:] == [f"detail {i}" for i in range(15, 30)]
    assert abort_cause(result).splitlines()[0].startswith("ansible-playbook stopped: Syntax Error while loading YAML ")
    short = tmp_path / "short"
    short.write_text("\n".join(rows) + "\n")
    masked = abort_cause(result_from_events([], 4, "failed", short, secrets=("hunter22",)))
    assert "hunter22" not in masked and "token: ********" in masked
    assert "PLAY [x]" in masked


def test_failed_run_without_a_readable_log_says_so(tmp_path: Path) -> None:
    result = result_from_events([], 4, "failed", tmp_path / "missing")
    cause = abort_cause(result)
    assert cause.splitlines()[0] == "ansible-playbook ended with status failed, rc 4, without a failed task"
    assert f"(nothing readable in {tmp_path / 'missing'})" in cause


def test_converged_run_keeps_no_log_tail() -> None:
    assert _result("converge_clean").log_tail == []
    assert _result("failing_task").log_tail == []  # its failed tasks say what went wrong


def test_failed_tasks_and_changes_say_which_file_they_come_from() -> None:
    [entry, *_] = failures_for_report(_result("failing_task"))
    assert entry.message.splitlines()[-2:] == [f"from {PLAYBOOKS}/failing.yml:12", f"Full log: {LOG}"]

    drift = _result("converge_drift")
    paths = {(c.host, c.task): c.task_path for c in drift.changed}
    assert paths[("node1", "Write the message of the day")] == f"{PLAYBOOKS}/roles/motd/tasks/main.yml:8"
    entries = {e.name: e.message for e in changes_for_report(drift)}
    write = entries["node1: motd : Write the message of the day"]
    assert write.startswith(f"changed, from {PLAYBOOKS}/roles/motd/tasks/main.yml:8\n")
    assert "+Maintenance tonight" in write
    reload = entries["node1: motd : Reload the motd service"]
    assert reload == f"changed (no diff given), from {PLAYBOOKS}/roles/motd/tasks/main.yml:26\nFull log: {LOG}"
    verdict = {e.name: e.message for e in idempotence_verdict(drift)}
    assert verdict["node1: motd : Write the message of the day"].startswith(
        f"changed, from {PLAYBOOKS}/roles/motd/tasks/main.yml:8\n"
    )


def _changed(res: dict[str, Any]) -> list[dict[str, Any]]:
    data = {"host": "n1", "task": "Write config", "role": "app", "task_path": "/r/app/tasks/main.yml:3", "res": res}
    return [
        {"counter": 1, "event": "runner_on_ok", "event_data": data},
        {"counter": 2, "event": "playbook_on_stats", "event_data": {"ok": {"n1": 1}, "changed": {"n1": 1}}},
    ]


def test_diff_of_an_always_diff_converge_reaches_the_report() -> None:
    diff = [
        {"before": "port=1\n", "after": "port=2\n", "before_header": "/etc/app.conf", "after_header": "/etc/app.conf"},
        {"before": {"mode": "0644"}, "after": {"mode": "0600"}},
    ]
    result = result_from_events(_changed({"changed": True, "diff": diff}), 0, "successful", LOG)

    [entry] = changes_for_report(result)
    assert entry.name == "n1: app : Write config"
    assert entry.message.splitlines()[0] == "changed, from /r/app/tasks/main.yml:3"
    assert "-port=1" in entry.message and "+port=2" in entry.message
    assert '+mode: "0600"' in entry.message


def test_no_log_results_never_show_a_diff_or_value() -> None:
    hidden = "the output has been hidden due to the fact that 'no_log: true' was specified for this result"
    censored = {"censored": hidden, "changed": True, "diff": {"before": "old-s3cr3t\n", "after": "new-s3cr3t\n"}}
    item_censored = {
        "changed": True,
        "results": [
            {"censored": hidden, "changed": True, "diff": {"before": "a-s3cr3t\n", "after": "b-s3cr3t\n"}},
            {"_ansible_no_log": True, "changed": True, "diff": {"before": "c-s3cr3t\n", "after": "d-s3cr3t\n"}},
            {"changed": True, "diff": {"before": "plain-old\n", "after": "plain-new\n"}},
        ],
    }
    for res, shown in ((censored, None), (item_censored, "+plain-new")):
        result = result_from_events(_changed(res), 0, "successful", LOG)
        [change] = result.changed
        assert (change.diff is None) if shown is None else (change.diff is not None and shown in change.diff)
        verdict = idempotence_verdict(result)
        assert verdict
        texts = [*(e.message for e in verdict), *(e.message for e in changes_for_report(result))]
        assert all("s3cr3t" not in text for text in texts), texts
    failed = [{"counter": 1, "event": "runner_on_failed", "event_data": {"host": "n1", "task": "t", "res": censored}}]
    [failure] = result_from_events(failed, 2, "failed", LOG).failures
    assert failure.message == hidden


def test_render_diff_shapes() -> None:
    assert render_diff({"before": {"state": "file"}, "after": {"state": "file"}}) is None
    assert render_diff({"prepared": "+ pkg nvidia-driver"}) == "+ pkg nvidia-driver"
    long = render_diff({"before": "", "after": "".join(f"line {i}\n" for i in range(100))}, limit=10)
    assert long is not None
    assert long.splitlines()[-1] == "... (93 more lines)"
    assert len(long.splitlines()) == 11


# --- progress -----------------------------------------------------------------------------------


def test_progress_tracker_follows_tasks_and_hosts() -> None:
    now = [100.0]
    tracker = ProgressTracker(clock=lambda: now[0])
    seen: list[tuple[str | None, int, int, int]] = []
    for event in _events("failing_task"):
        now[0] += 0.5
        if tracker.feed(event):
            seen.append((tracker.current_task, tracker.hosts_done, tracker.hosts_total, tracker.hosts_failed))

    # The play names no hosts: they count as they start their first task.
    probe = "Try an optional probe"
    assert seen[:4] == [(None, 0, 0, 0), (probe, 0, 0, 0), (probe, 0, 1, 0), (probe, 0, 2, 0)]
    assert (probe, 2, 2, 0) in seen  # ignored errors are not failures
    assert ("Check the scratch disk", 0, 2, 0) in seen  # the play's hosts stay counted
    assert ("Check the scratch disk", 2, 2, 1) in seen
    assert seen[-1] == ("Fail on purpose", 1, 2, 2)
    snap = tracker.snapshot()
    assert (snap.hosts_done, snap.hosts_total, snap.hosts_failed) == (1, 2, 2)
    assert snap.finished and snap.tasks_started == 3
    assert snap.play == "Check the fixture hosts"
    assert snap.elapsed == pytest.approx(0.5 * len(_events("failing_task")))


# --- the real ansible-runner API ------------------------------------------------------------------


def _local_inventory(tmp_path: Path) -> Path:
    local = {"ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}"}
    inv = {"all": {"vars": {"fixture_root": str(tmp_path / "hosts")}, "hosts": {"node1": local}}}
    path = tmp_path / "inventory.yml"
    path.write_text(yaml.safe_dump(inv))
    return path


@pytest.mark.parametrize("strategy", ["linear", "mitogen_linear"])
def test_run_playbook_live_against_localhost(tmp_path: Path, strategy: str) -> None:
    secret = "live-secret-value-42"
    opts = ProvisionOptions(
        private_data_dir=tmp_path / "pdd",
        playbook=FIXTURES / "playbooks" / "converge.yml",
        inventory=_local_inventory(tmp_path),
        roles_path=[FIXTURES / "playbooks" / "roles"],
        extra_vars={"motd_text": "live", "motd_api_token": secret},
        ident=new_ident("provision"),
        strategy=strategy,
    )
    progress: list[Progress] = []
    sigint = signal.getsignal(signal.SIGINT)

    first = run_playbook(opts, on_progress=progress.append)

    assert signal.getsignal(signal.SIGINT) is sigint  # ansible-runner's own handler is gone again

    assert converge_verdict(first) == []
    assert first.rc == 0 and first.status == "successful"
    assert first.stats["node1"].changed == 3
    assert (tmp_path / "hosts" / "node1" / "motd").read_text() == "live\n"
    assert first.log_path == tmp_path / "pdd" / "artifacts" / opts.ident / "stdout"
    assert "Write the message of the day" in first.log_path.read_text()
    assert any(p.task == "motd : Write the message of the day" for p in progress)
    assert progress[-1].finished
    artifacts = first.log_path.parent
    assert len(load_events(artifacts)) == len(list((artifacts / "job_events").glob("*.json")))
    for path in [*artifacts.rglob("*"), *artifacts.parent.parent.joinpath("env").glob("*")]:
        if path.is_file() and path.name != "extravars":
            assert secret not in path.read_text(), path
    extravars = tmp_path / "pdd" / "env" / "extravars"
    assert stat.S_IMODE(os.stat(extravars.parent).st_mode) == 0o700

    opts.ident = new_ident("idempotence")
    second = run_playbook(opts)
    assert idempotence_verdict(second) == []

    with pytest.raises(ProvisionError, match="already exists"):
        run_playbook(opts)


def test_run_playbook_missing_playbook(tmp_path: Path) -> None:
    opts = ProvisionOptions(tmp_path, tmp_path / "nope.yml", tmp_path / "inv.yml", [], {}, "x")
    with pytest.raises(ProvisionError, match="does not exist"):
        run_playbook(opts)


def test_mitogen_strategy_points_ansible_at_its_plugins(tmp_path: Path) -> None:
    opts = ProvisionOptions(tmp_path, tmp_path / "p.yml", tmp_path / "inv.yml", [], {}, "x", strategy="mitogen_linear")
    env = _envvars(opts)
    assert env["ANSIBLE_STRATEGY"] == "mitogen_linear"
    assert (Path(env["ANSIBLE_STRATEGY_PLUGINS"]) / "mitogen_linear.py").is_file()
    plain = _envvars(ProvisionOptions(tmp_path, tmp_path / "p.yml", tmp_path / "inv.yml", [], {}, "x"))
    assert plain["ANSIBLE_STRATEGY"] == "linear" and "ANSIBLE_STRATEGY_PLUGINS" not in plain


def test_a_change_counted_only_in_the_recap_still_fails_idempotence() -> None:
    events = [{"counter": 1, "event": "playbook_on_stats", "event_data": {"ok": {"n1": 3}, "changed": {"n1": 2}}}]
    result = result_from_events(events, 0, "successful", LOG)
    [entry] = idempotence_verdict(result)
    assert entry.name == "n1: 2 changed task(s)" and "no event names them" in entry.message


def test_ansible_playbook_carries_the_runs_mark_only_while_a_run_is_marked(tmp_path: Path) -> None:
    """gc and teardown find a run's ansible-playbook by its mark (proc.RUN_ENV), given in its envvars."""
    opts = ProvisionOptions(tmp_path, tmp_path / "p.yml", tmp_path / "inv.yml", [], {}, "x")
    proc.mark_children("unit-iiiiii")
    try:
        assert _envvars(opts)[proc.RUN_ENV] == "unit-iiiiii" and proc.RUN_ENV not in os.environ
    finally:
        proc.unmark_children("unit-iiiiii")
    assert proc.RUN_ENV not in _envvars(opts)
