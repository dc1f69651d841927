"""Offline runs without VMs: the scenario key, the package record of a green run (what is beyond
the box, which run a bundle is built from), serving a bundle through the cache's plain-file
directory, and the extra vars that point roles/common at it."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import cache, node_packages, offline, rehearsal
from harness.errors import ProviderError, SpecError, UsageError
from harness.node_packages import Installed
from harness.rundir import RunState
from harness.spec import parse_scenario

SMOKE = """\
name: smoke-offline
nodes:
  - {name: mgmt01, groups: [mgmt]}
provision: {playbook: site.yml}
"""


def _scenario(tmp_path: Path, extra: str) -> Path:
    (tmp_path / "site.yml").write_text("- hosts: all\n  tasks: []\n")
    path = tmp_path / "scenario.yml"
    path.write_text(SMOKE + extra)
    return path


def test_offline_bundle_is_relative_to_the_scenario_file(tmp_path: Path) -> None:
    (tmp_path / "bundles" / "smoke").mkdir(parents=True)
    path = _scenario(tmp_path, "offline: {bundle: bundles/smoke}\n")
    sc = parse_scenario(path.read_text(), path)
    assert offline.bundle_dir(sc) == (tmp_path / "bundles" / "smoke").resolve()


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("offline: {bundle: no-such-dir}\n", "offline.bundle: "),
        ("offline: {}\n", "offline.bundle: Field required"),
        ("offline: {bundle: x, mirror: y}\n", "offline.mirror: unknown key"),
    ],
)
def test_a_bad_offline_key_is_named(tmp_path: Path, extra: str, expected: str) -> None:
    path = _scenario(tmp_path, extra)
    with pytest.raises(SpecError) as info:
        parse_scenario(path.read_text(), path)
    assert any(p.startswith(expected) for p in info.value.problems), info.value.problems
    if "no-such-dir" in extra:
        assert any("is not a directory (make one: `harness bundle build`)" in p for p in info.value.problems)


def _pkg(name: str, version: str = "1", arch: str = "amd64", uri: str = "") -> Installed:
    return Installed(name, version, arch, uri, "a" * 64 if uri else "", 10 if uri else 0)


def test_the_record_is_what_is_beyond_the_box_per_node_and_in_all() -> None:
    box = [_pkg("libc6", "2.36-9"), _pkg("tzdata", "2024a", "all")]
    uri = "http://deb.debian.org/debian/pool/main/c/chrony/chrony_4.3_amd64.deb"
    nodes = {
        "mgmt01": [*box, _pkg("chrony", "4.3", uri=uri)],
        # another version of a box package is new too
        "gpu01": [
            box[0],
            _pkg("tzdata", "2025b", "all", uri="http://deb.debian.org/debian/t.deb"),
            _pkg("chrony", "4.3", uri=uri),
        ],
    }
    record = node_packages.make_record("smoke", "smoke-1", "d" * 64, nodes, box)
    assert [p.key for p in record.packages] == [("chrony", "4.3", "amd64"), ("tzdata", "2025b", "all")]
    assert [p.package for p in record.nodes["mgmt01"]] == ["chrony"]
    data = record.to_dict()
    assert data["nodes"]["gpu01"] == ["chrony=4.3", "tzdata=2025b"] and data["has_baseline"] is True
    again = node_packages.PackageRecord.from_dict(json.loads(json.dumps(data)))
    assert again.packages == record.packages and again.run_id == "smoke-1"
    unbased = node_packages.make_record("smoke", "smoke-1", "", nodes, None)
    assert not unbased.has_baseline and len(unbased.packages) == 4  # libc6, both tzdata, chrony


def test_the_node_answer_is_read_from_its_last_line() -> None:
    out = (
        'W: a warning\n[{"package": "chrony", "version": "4.3", "architecture": "amd64", "uri": "u", "sha256": "s"}]\n'
    )
    assert node_packages.parse_node_output("mgmt01", out) == [Installed("chrony", "4.3", "amd64", "u", "s", 0)]
    with pytest.raises(ProviderError, match="mgmt01: cannot read the installed packages"):
        node_packages.parse_node_output("mgmt01", "Traceback ...\nImportError: apt_pkg\n")


def test_the_node_script_is_valid_python() -> None:
    compile(node_packages.NODE_SCRIPT, "node_script", "exec")


def _ledger_line(run_id: str, verify: str) -> str:
    record = rehearsal.Rehearsal(
        "smoke", run_id, "t", "h", "tcg", {"up": "passed", "provision": "passed", "verify": verify},
        rehearsal.Manifest(files={}),
    )  # fmt: skip
    return json.dumps(record.to_dict()) + "\n"


def test_bundle_build_takes_the_newest_green_run_with_a_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HARNESS_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("HARNESS_RUNS_DIR", str(tmp_path / "runs"))
    with pytest.raises(UsageError, match="no green run of 'smoke' with a package record"):
        node_packages.find_green_record("smoke")
    (tmp_path / "state").mkdir()
    lines = [_ledger_line("smoke-1", "passed"), _ledger_line("smoke-2", "passed"), _ledger_line("smoke-3", "failed")]
    (tmp_path / "state" / rehearsal.LEDGER_FILE).write_text("".join(lines))
    for run_id in ("smoke-1", "smoke-3"):  # smoke-2 recorded nothing
        (tmp_path / "runs" / run_id).mkdir(parents=True)
        record = node_packages.make_record("smoke", run_id, "", {"n": [_pkg("chrony")]}, [])
        (tmp_path / "runs" / run_id / node_packages.RECORD_FILE).write_text(json.dumps(record.to_dict()))
    record, path = node_packages.find_green_record("smoke")
    assert record.run_id == "smoke-1" and path.parent.name == "smoke-1"
    with pytest.raises(UsageError, match="was not green"):
        node_packages.find_green_record("smoke", tmp_path / "runs" / "smoke-3")
    assert node_packages.find_green_record("smoke", tmp_path / "runs" / "smoke-1")[0].run_id == "smoke-1"


def test_the_cache_serves_bundles_as_plain_files() -> None:
    conf = cache.config_text()
    assert f"LocalDirs: {cache.BUNDLES_URL_PATH} {cache.BUNDLES_DIR}" in conf
    assert "ForceManaged: 1" in conf  # still nothing else


def _run(tmp_path: Path) -> RunState:
    return RunState(
        "smoke-offline-abc123", "smoke-offline", "s.yml", str(tmp_path), 1, "up", mgmt_subnet="10.213.7.0/24"
    )


def test_the_repository_url_is_the_gateway_and_the_run(tmp_path: Path) -> None:
    assert offline.repository_url(_run(tmp_path)) == "http://10.213.7.1:3142/harness-bundles/smoke-offline-abc123/"


def test_a_served_copy_is_world_readable_and_replaced_only_when_the_bundle_changed(tmp_path: Path) -> None:
    src = tmp_path / "bundle"
    (src / "pool").mkdir(parents=True)
    (src / "pool" / "a.deb").write_bytes(b"deb")
    (src / "SHA256SUMS").write_text("1\n")
    (src / "pool" / "a.deb").chmod(0o600)
    dest = tmp_path / "served" / "run-1"
    assert offline.copy_bundle(src, dest)
    assert (dest / "pool" / "a.deb").stat().st_mode & 0o777 == 0o644
    assert (dest / "pool").stat().st_mode & 0o777 == 0o755
    assert not offline.copy_bundle(src, dest)
    (src / "SHA256SUMS").write_text("2\n")
    (src / "pool" / "b.deb").write_bytes(b"b")
    assert offline.copy_bundle(src, dest) and (dest / "pool" / "b.deb").is_file()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["run-1"]


def test_gc_removes_the_served_bundles_of_dead_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache, "BUNDLES_DIR", tmp_path)
    for name in ("live-1", "dead-1", "dead-2.new"):
        (tmp_path / name).mkdir()
    assert offline.gc({"live-1"}) == ["dead-1", "dead-2"]
    assert [p.name for p in tmp_path.iterdir()] == ["live-1"]


class _Served(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:
        ok = self.path == f"/{cache.BUNDLES_URL_PATH}/run-1/InRelease"
        self.send_response(200 if ok else 404)
        data = self.body if ok else b"no"
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def served() -> Iterator[tuple[str, int]]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Served)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield ("127.0.0.1", server.server_address[1])
    server.shutdown()


def test_the_probe_asks_the_cache_for_the_runs_inrelease(served: tuple[str, int]) -> None:
    _Served.body = b"signed"
    assert offline.probe("run-1", b"signed", served) is None
    assert "instead of the bundle's InRelease" in (offline.probe("run-1", b"other", served) or "")
    assert "404" in (offline.probe("run-2", b"signed", served) or "")


def test_a_record_that_cannot_be_made_is_said_never_a_failed_run(tmp_path: Path) -> None:
    run = RunState("smoke-1", "smoke", "s.yml", str(tmp_path), 1, "up", nodes=["mgmt01"])  # no ssh_config
    said: list[str] = []
    assert node_packages.record_after_green(run, "smoke", "", said.append) is None
    assert said and said[0].startswith("could not record the installed packages")
    node_packages.baseline_after_up(run, said.append)
    assert said[-1].startswith("could not list the box's packages")
    assert not (tmp_path / node_packages.RECORD_FILE).exists()


def test_the_record_is_copied_into_the_report_directory(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    assert node_packages.copy_record(tmp_path / "run", tmp_path / "report") is None
    (tmp_path / "run" / node_packages.RECORD_FILE).write_text("{}")
    assert node_packages.copy_record(tmp_path / "run", tmp_path / "report") == tmp_path / "report" / "packages.json"
    assert node_packages.copy_record(tmp_path / "run", tmp_path / "run") == tmp_path / "run" / "packages.json"
