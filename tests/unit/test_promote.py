"""`harness promote`: the gate (a green rehearsal of exactly this content, or a refusal saying what
changed), check mode against the user's inventory, the converge and tests on real hosts, exit 16."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import ansible_runner
import pytest
import yaml
from click.testing import CliRunner

from harness import ansible_events, lifecycle, playbook, promote, provision, rehearsal, verify
from harness.cli import main
from harness.errors import PromotionRefused, ProvisionError, UnreachableError, VerifyError
from harness.report import Failure, PhaseResult, RunReport, render_markdown
from harness.spec import Scenario
from tests.unit.test_rehearsal import GREEN, PHASES, make_scenario

pytestmark = pytest.mark.ansible  # real ansible-playbook: CI runs these on the oldest ansible-core too

INVENTORY = {
    "all": {
        "vars": {"ansible_user": "admin"},
        "hosts": {"mgmt01": {"ansible_host": "mgmt01.example.org"}},
        "children": {"gpu": {"vars": {"ansible_port": 2222}, "hosts": {"dgx01": {}, "dgx02": {}}}},
    }
}


@pytest.fixture
def ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HARNESS_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state" / "rehearsals.jsonl"


@pytest.fixture
def site(tmp_path: Path) -> Scenario:
    return make_scenario(tmp_path / "site")


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    path = tmp_path / "site-inventory.yml"
    path.write_text(yaml.safe_dump(INVENTORY))
    return path


def rehearse(
    sc: Scenario, statuses: dict[str, str] = GREEN, run_id: str = "r-1", ansible_core: str = ""
) -> rehearsal.Rehearsal:
    """Record a rehearsal of the scenario's content as it is now (as `harness run` does)."""
    rep = RunReport(sc.name, run_id, order=PHASES)
    for name, status in statuses.items():
        rep.record(PhaseResult(name, status))  # type: ignore[arg-type]
    rep.metadata = {"host": "bench7", "accelerator": "kvm", "ansible_core": ansible_core}
    record = rehearsal.from_report(sc, rep, rehearsal.content_manifest(sc))
    rehearsal.append_to_ledger(record)
    return record


# --- the gate ------------------------------------------------------------------------------------


def test_no_rehearsal_is_refused_with_its_own_exit_code(site: Scenario, ledger: Path) -> None:
    with pytest.raises(PromotionRefused, match=r"no green rehearsal of 'site'.*no record") as exc:
        promote.require_rehearsal(site, rehearsal.content_manifest(site))
    assert exc.value.exit_code == 16 and "harness run" in str(exc.value)
    rehearse(site, {**GREEN, "verify": "failed"}, "r-red")
    (site.base_dir / "site.yml").write_text("- hosts: all\n  roles: [motd, motd]\n")
    with pytest.raises(PromotionRefused, match=r"1 record.*none green"):
        promote.require_rehearsal(site, rehearsal.content_manifest(site))


def test_the_refusal_names_the_role_files_changed_added_and_removed(site: Scenario, ledger: Path) -> None:
    rehearse(site)
    role = site.base_dir / "roles" / "motd"
    (role / "tasks" / "main.yml").write_text("- name: Say bye\n  ansible.builtin.debug: {}\n")
    (role / "handlers").mkdir()
    (role / "handlers" / "main.yml").write_text("[]\n")
    (role / "defaults" / "main.yml").unlink()
    with pytest.raises(PromotionRefused) as exc:
        promote.require_rehearsal(site, rehearsal.content_manifest(site))
    message = str(exc.value)
    assert "the newest green one, run r-1 of site on bench7 (kvm)" in message
    for line in (
        "  - changed: roles/motd/tasks/main.yml",
        "  - added: roles/motd/handlers/main.yml",
        "  - removed: roles/motd/defaults/main.yml",
    ):
        assert line in message.splitlines()
    assert f"harness run {site.source}" in message


def test_this_content_rehearsed_red_is_refused_saying_how_it_went(site: Scenario, ledger: Path) -> None:
    rehearse(site, run_id="r-green")
    rehearse(site, {**GREEN, "idempotence": "failed"}, "r-red")
    # The same content's green rehearsal still stands.
    assert promote.require_rehearsal(site, rehearsal.content_manifest(site)).run_id == "r-green"
    (site.base_dir / "tests" / "test_more.py").write_text("def test_more(host): pass\n")
    rehearse(site, {**GREEN, "verify": "failed"}, "r-red2")
    with pytest.raises(PromotionRefused, match="is red: verify failed: run r-red2"):
        promote.require_rehearsal(site, rehearsal.content_manifest(site))


def test_identical_content_is_accepted_from_the_ledger_or_a_record_file(site: Scenario, ledger: Path) -> None:
    first = rehearse(site, run_id="r-1")
    content = rehearsal.content_manifest(site)
    assert promote.require_rehearsal(site, content) == first
    record = rehearsal.write_record(first, site.base_dir.parent / "nightly")
    ledger.unlink()
    assert promote.require_rehearsal(site, content, record=record) == first
    other = make_scenario(
        site.base_dir.parent / "other", (site.base_dir / "scenario.yml").read_text().replace("name: site", "name: x")
    )
    with pytest.raises(PromotionRefused, match="another scenario"):
        promote.require_rehearsal(other, rehearsal.content_manifest(other), record=record)


# --- check mode ----------------------------------------------------------------------------------


def _event(counter: int, kind: str, **data: Any) -> dict[str, Any]:
    return {"event": kind, "counter": counter, "event_data": data}


CHECK_EVENTS = [
    _event(1, "playbook_on_task_start", task="Write motd", role="motd"),
    _event(
        2,
        "runner_on_ok",
        host="mgmt01",
        task="Write motd",
        role="motd",
        res={"changed": True, "diff": {"before": "hi\n", "after": "hello\n", "before_header": "/etc/motd"}},
    ),
    _event(3, "runner_on_ok", host="dgx01", task="Write motd", role="motd", res={"changed": False}),
    _event(4, "playbook_on_stats", ok={"mgmt01": 1, "dgx01": 1}, changed={"mgmt01": 1}),
]


@pytest.fixture
def runner_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """ansible_runner.run faked: records its arguments and plays CHECK_EVENTS to the handler."""
    calls: list[dict[str, Any]] = []

    def fake_run(**kwargs: Any) -> SimpleNamespace:
        env = Path(kwargs["private_data_dir"]) / "env"
        calls.append({**kwargs, "stale_cmdline": (env / "cmdline").exists()})
        for event in CHECK_EVENTS:
            kwargs["event_handler"](event)
        return SimpleNamespace(status="successful", rc=0)

    monkeypatch.setattr(ansible_runner, "run", fake_run)
    return calls


def test_check_runs_the_rehearsed_converge_in_check_mode_against_the_users_inventory(
    site: Scenario, inventory: Path, tmp_path: Path, runner_calls: list[dict[str, Any]]
) -> None:
    opts = promote.converge_options(site, inventory, tmp_path / "work", check=True, limit="gpu:mgmt01")
    assert (opts.check, opts.limit, opts.ssh_config, opts.inventory) == (True, "gpu:mgmt01", None, inventory)
    assert site.provision is not None and opts.extra_vars == dict(site.provision.extra_vars)
    (tmp_path / "work" / "ansible" / "env").mkdir(parents=True)
    (tmp_path / "work" / "ansible" / "env" / "cmdline").write_text("--check --diff")  # a stale one

    preview = promote.check(site, inventory, tmp_path / "work", limit="gpu:mgmt01")

    call = runner_calls[0]
    assert call["cmdline"] == "--check --diff" and call["limit"] == "gpu:mgmt01" and not call["stale_cmdline"]
    assert call["inventory"] == str(inventory.resolve())
    env = call["envvars"]
    assert "ANSIBLE_HOST_KEY_CHECKING" not in env and " -F " not in env["ANSIBLE_SSH_ARGS"]
    assert [(h.host, [c.task for c in h.changes]) for h in preview.hosts] == [("dgx01", []), ("mgmt01", ["Write motd"])]
    assert preview.failure() is None
    text = promote.render_preview(preview)
    assert "## mgmt01: 1 task(s) would change" in text and "## dgx01: nothing would change" in text
    assert "  -hi\n  +hello" in text


def test_a_real_converge_is_no_check_and_a_harness_run_keeps_its_settings(
    site: Scenario, inventory: Path, tmp_path: Path, runner_calls: list[dict[str, Any]]
) -> None:
    provision.run_playbook(promote.converge_options(site, inventory, tmp_path))
    assert runner_calls[0]["cmdline"] is None and runner_calls[0]["limit"] is None
    opts = promote.converge_options(site, inventory, tmp_path)
    opts.ssh_config = tmp_path / "ssh_config"
    assert provision._envvars(opts)["ANSIBLE_HOST_KEY_CHECKING"] == "False"


def test_check_failures_and_unreachable_hosts_give_their_exit_codes() -> None:
    failed = ansible_events.TaskFailure("dgx01", "Install", "slurm", "apt", "no package", Path("log"))
    result = ansible_events.ProvisionResult(2, "failed", {"dgx01": ansible_events.HostStats(failures=1)}, [failed])
    preview = promote.preview_of(result)
    assert isinstance(preview.failure(), ProvisionError) and "dgx01" in str(preview.failure())
    assert "FAILED slurm : Install (apt): no package" in promote.render_preview(preview)
    lost = ansible_events.TaskFailure("dgx02", "Gathering Facts", None, "setup", "unreachable: timeout", Path("log"))
    result = ansible_events.ProvisionResult(4, "failed", {"dgx02": ansible_events.HostStats(unreachable=1)}, [lost])
    preview = promote.preview_of(result)
    assert preview.hosts[0].unreachable and not preview.hosts[0].failures
    assert isinstance(preview.failure(), UnreachableError)


# --- the promotion -------------------------------------------------------------------------------


def test_promote_converges_then_tests_the_real_hosts_and_names_the_diverged_ones(
    site: Scenario, inventory: Path, tmp_path: Path, ledger: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    proven = rehearse(site)
    seen: dict[str, Any] = {}

    def fake_converge(opts: provision.ProvisionOptions, on_progress: Any = None) -> ansible_events.ProvisionResult:
        seen["opts"] = opts
        stats = {h: ansible_events.HostStats(ok=3) for h in ("dgx01", "dgx02")}
        return ansible_events.ProvisionResult(0, "successful", stats)

    def fake_tests(tests_dir: Path, **kwargs: Any) -> verify.VerifyResult:
        seen["tests"] = (tests_dir, kwargs)
        failures = [
            Failure("test_motd::test_motd[ansible://dgx02]", "assert False"),
            Failure("test_cluster::test_jobs", "srun failed"),
        ]
        return verify.VerifyResult(1, 3, 2, 0, failures)

    monkeypatch.setattr(provision, "run_playbook", fake_converge)
    monkeypatch.setattr(verify, "run_tests", fake_tests)

    rep = promote.promote(site, inventory, tmp_path / "report", proven, limit="gpu")

    assert seen["opts"].limit == "gpu" and seen["opts"].ssh_config is None and not seen["opts"].check
    tests_dir, kwargs = seen["tests"]
    assert tests_dir == site.base_dir / "tests"
    assert kwargs["nodes"] == ["dgx01", "dgx02"] and kwargs["ssh_config"] is None and kwargs["inventory"] == inventory
    assert rep.phase("provision").status == "passed"
    assert rep.phase("verify").detail == "3 passed, 2 failed, 0 skipped; diverged: dgx02, (cluster-level tests)"
    assert rep.metadata["rehearsal"] == proven.describe() and rep.metadata["hosts"] == "dgx01, dgx02"
    assert isinstance(lifecycle.first_failure(rep), VerifyError)


@pytest.mark.parametrize(
    ("rehearsed", "site_core", "warned"), [("2.17.14", "2.19.15", True), ("2.19.15", "2.19.15", False)]
)
def test_another_ansible_core_than_the_rehearsals_is_a_warning_in_the_report_not_a_refusal(
    site: Scenario,
    inventory: Path,
    tmp_path: Path,
    ledger: Path,
    monkeypatch: pytest.MonkeyPatch,
    rehearsed: str,
    site_core: str,
    warned: bool,
) -> None:
    proven = rehearse(site, ansible_core=rehearsed)
    ok = ansible_events.ProvisionResult(0, "successful", {"dgx01": ansible_events.HostStats(ok=1)})
    monkeypatch.setattr(provision, "run_playbook", lambda opts, on_progress=None: ok)
    monkeypatch.setattr(verify, "run_tests", lambda tests_dir, **kw: verify.VerifyResult(0, 1, 0, 0, []))
    monkeypatch.setattr(playbook, "ansible_core_version", lambda: site_core)

    rep = promote.promote(site, inventory, tmp_path / "report", proven)

    assert rep.status == "passed"
    assert rep.metadata["ansible_core"] == site_core and rep.metadata["rehearsal_ansible_core"] == rehearsed
    markdown = render_markdown(rep)
    assert f"ansible-core {site_core}." in markdown
    if warned:
        [warning] = rep.metadata["warnings"]
        assert "ansible-core differs: this promotion runs 2.19.15, the rehearsal (r-1) ran 2.17.14" in warning
        assert "## Warnings" in markdown and warning in markdown
    else:
        assert "warnings" not in rep.metadata and "## Warnings" not in markdown
    assert promote.ansible_core_warning(proven, "") is None  # unknown on either side: nothing to say
    assert promote.ansible_core_warning(rehearse(site, ansible_core=""), site_core) is None


def test_a_converge_that_fails_names_its_hosts_and_skips_the_tests(
    site: Scenario, inventory: Path, tmp_path: Path, ledger: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    failed = ansible_events.TaskFailure("dgx01", "Install", "slurm", "apt", "no package", Path("log"))
    result = ansible_events.ProvisionResult(2, "failed", {"dgx01": ansible_events.HostStats(failures=1)}, [failed])
    monkeypatch.setattr(provision, "run_playbook", lambda opts, on_progress=None: result)
    rep = promote.promote(site, inventory, tmp_path / "report", rehearse(site))
    assert rep.phase("provision").status == "failed" and rep.phase("provision").detail.endswith("diverged: dgx01")
    assert rep.all_phases()[1].status == "skipped"
    assert isinstance(lifecycle.first_failure(rep), ProvisionError)


# --- the command ---------------------------------------------------------------------------------


def test_the_command_exits_16_without_a_green_rehearsal(site: Scenario, inventory: Path, ledger: Path) -> None:
    res = CliRunner().invoke(main, ["promote", str(site.source), "--inventory", str(inventory), "--check"])
    assert res.exit_code == 16, res.output
    assert "no green rehearsal of 'site'" in res.output and "Traceback" not in res.output


def test_the_command_previews_a_rehearsed_scenario(
    site: Scenario, inventory: Path, tmp_path: Path, ledger: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rehearse(site)
    seen: dict[str, Any] = {}

    def fake_check(sc: Scenario, inv: Path, work: Path, *, limit: str | None, on_progress: Any) -> promote.Preview:
        seen.update(inventory=inv, work=work, limit=limit)
        change = ansible_events.TaskChange("dgx01", "Write motd", "motd", "--- a\n+++ b")
        result = ansible_events.ProvisionResult(
            0, "successful", {"dgx01": ansible_events.HostStats(ok=1, changed=1)}, [], [change]
        )
        return promote.preview_of(result)

    monkeypatch.setattr(promote, "check", fake_check)
    monkeypatch.setattr(lifecycle, "check_playbook", lambda sc, on_progress=None: None)
    argv = [
        "promote",
        str(site.source),
        "-i",
        str(inventory),
        "--check",
        "-l",
        "gpu",
        "--report-dir",
        str(tmp_path / "r"),
    ]
    res = CliRunner().invoke(main, argv)
    assert res.exit_code == 0, res.output
    assert "rehearsed run r-1 of site" in res.output and "## dgx01: 1 task(s) would change" in res.output
    assert seen == {"inventory": inventory, "work": tmp_path / "r", "limit": "gpu"}
    assert (tmp_path / "r" / "check.md").read_text().startswith("# What a promotion would change")


def test_the_command_warns_when_the_sites_ansible_core_is_not_the_rehearsals(
    site: Scenario, inventory: Path, tmp_path: Path, ledger: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rehearse(site, ansible_core="2.17.14")
    monkeypatch.setattr(playbook, "ansible_core_version", lambda: "2.19.15")
    monkeypatch.setattr(lifecycle, "check_playbook", lambda sc, on_progress=None: None)
    monkeypatch.setattr(
        promote, "check", lambda *a, **kw: promote.preview_of(ansible_events.ProvisionResult(0, "successful", {}))
    )
    argv = ["promote", str(site.source), "-i", str(inventory), "--check", "--report-dir", str(tmp_path / "r")]
    res = CliRunner().invoke(main, argv)
    assert res.exit_code == 0, res.output
    assert "ansible-core 2.17.14" in res.output  # the rehearsal it trusts, described
    assert "warning ansible-core differs: this promotion runs 2.19.15, the rehearsal (r-1) ran 2.17.14" in res.output


def test_check_mode_and_limit_reach_ansible_live_against_localhost(tmp_path: Path) -> None:
    """The real ansible-runner (local connection, files under tmp_path only): check mode reports the
    change with its diff and writes nothing; --limit leaves the other host alone."""
    fixtures = Path(__file__).resolve().parents[1] / "fixtures" / "ansible" / "playbooks"
    local = {"ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}"}
    inv = tmp_path / "inventory.yml"
    inv.write_text(yaml.safe_dump({"all": {"vars": {"fixture_root": str(tmp_path / "hosts")},
                                           "hosts": {"node1": local, "node2": local}}}))  # fmt: skip

    def opts(text: str, **extra: Any) -> provision.ProvisionOptions:
        return provision.ProvisionOptions(
            tmp_path / "pdd", fixtures / "converge.yml", inv, [fixtures / "roles"],
            {"motd_text": text, "motd_api_token": "t0ken-value"}, provision.new_ident("x"), **extra,
        )  # fmt: skip

    assert provision.run_playbook(opts("old", limit="node1")).ok
    assert not (tmp_path / "hosts" / "node2").exists()
    preview = promote.preview_of(provision.run_playbook(opts("new", check=True, limit="node1")))
    assert (tmp_path / "hosts" / "node1" / "motd").read_text() == "old\n"
    assert [h.host for h in preview.hosts] == ["node1"] and preview.failure() is None
    change = next(c for c in preview.hosts[0].changes if c.task == "Write the message of the day")
    assert change.diff is not None and "-old" in change.diff and "+new" in change.diff
    assert provision.run_playbook(opts("new", limit="node1")).ok  # no stale --check left behind
    assert (tmp_path / "hosts" / "node1" / "motd").read_text() == "new\n"
