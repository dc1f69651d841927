"""Offline runs end to end: `harness bundle build smoke` from a green smoke run, then `harness run` of
smoke with `offline: {bundle: ...}` passes (converge, idempotence, verify) with the bundle as the
nodes' only package source and no proxy; then, on the same kept cluster reset to `booted`, a bundle
without chrony (which roles/common installs) fails provision, and the report names chrony.

The green smoke run comes from this session when test_smoke.py ran first (its run directory holds
the package record); otherwise this test runs smoke once itself (without idempotence)."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from harness import apt_bundle, apt_bundle_build, node_packages
from harness.errors import UsageError
from harness.paths import SCENARIOS_DIR
from harness.provider import libvirt as lv
from tests.vm.cli import harness

pytestmark = pytest.mark.vm

MISSING = "chrony"  # a package roles/common installs on every node


def _green_smoke_record(
    runs_dir: Path, tmp_path: Path, figure: Callable[[str, str], None]
) -> tuple[node_packages.PackageRecord, list[str]]:
    """The newest green smoke run's record (running smoke once when there is none); bundle build's
    extra arguments to find it."""
    try:
        record, _path = node_packages.find_green_record("smoke")
        return record, []
    except UsageError:
        pass
    source = tmp_path / "smoke-source"
    started = time.monotonic()
    proc = harness(runs_dir, "run", "smoke", "--skip-idempotence", "--report-dir", str(source))
    figure("smoke run for the package record (no idempotence)", f"{time.monotonic() - started:.0f} s")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return node_packages.load_record(source / node_packages.RECORD_FILE), ["--report", str(source)]


def _offline_scenario(path: Path, bundle: Path) -> Path:
    smoke = yaml.safe_load((SCENARIOS_DIR / "smoke" / "scenario.yml").read_text())
    smoke.update(
        name="smoke-offline",
        provision={**smoke["provision"], "playbook": str(SCENARIOS_DIR / "smoke" / "site.yml")},
        tests=str(SCENARIOS_DIR / "smoke" / "tests"),
        offline={"bundle": bundle.name},  # relative to the scenario file
    )
    path.write_text(yaml.safe_dump(smoke, sort_keys=False))
    return path


def _summary(report_dir: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads((report_dir / "summary.json").read_text())
    return data


def test_offline_smoke_passes_from_its_bundle_and_a_bundle_without_a_package_fails_naming_it(
    tmp_path: Path, runs_dir: Path, figure: Callable[[str, str], None]
) -> None:
    record, where = _green_smoke_record(runs_dir, tmp_path, figure)
    bundle = tmp_path / "smoke-bundle"
    started = time.monotonic()
    built = harness(runs_dir, "bundle", "build", "smoke", "--output", str(bundle), *where)
    assert built.returncode == 0, built.stdout + built.stderr
    size = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())
    figure("bundle build smoke", f"{time.monotonic() - started:.1f} s, {size / (1 << 20):.1f} MiB")
    figure("smoke bundle packages", str(len(apt_bundle.check_bundle(bundle).manifest.packages)))
    assert harness(runs_dir, "bundle", "check", str(bundle)).returncode == 0

    scenario = _offline_scenario(tmp_path / "smoke-offline.yml", bundle)
    reports = tmp_path / "offline"
    started = time.monotonic()
    proc = harness(runs_dir, "run", str(scenario), "--keep", "--report-dir", str(reports))
    try:
        figure("offline smoke run (bundle only, kept)", f"{time.monotonic() - started:.0f} s")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        phases = _summary(reports)["phases"]
        assert isinstance(phases, dict)
        for name in ("up", "provision", "idempotence", "verify"):
            assert phases[name]["status"] == "passed", (name, phases[name])
        for node in ("mgmt01", "gpu01"):
            # No proxy; the bundle is the one source, signed by its key.
            apt = harness(runs_dir, "ssh", str(scenario), node, "--", "apt-config dump | grep -i proxy || true")
            assert apt.returncode == 0 and apt.stdout.strip() == "", apt.stdout
            cmd = "grep -hv '^#' /etc/apt/sources.list /etc/apt/sources.list.d/* | grep -v '^$'"
            sources = harness(runs_dir, "ssh", str(scenario), node, "--", cmd)
            lines = sources.stdout.splitlines()
            assert any(ln.startswith("URIs: http://") and "/harness-bundles/" in ln for ln in lines), lines
            assert not any("debian.org" in ln for ln in lines), lines
            assert "Signed-By: /etc/apt/keyrings/common-repository.gpg" in lines, lines

        # The same cluster, reset to booted, with a bundle that lacks a package the role installs.
        broken = tmp_path / "smoke-bundle-broken"
        without = [p for p in record.packages if p.package != MISSING]
        assert len(without) < len(record.packages), f"{MISSING} is not in the smoke record"
        apt_bundle_build.build_from_record(dataclasses.replace(record, packages=without), broken)
        _offline_scenario(scenario, broken)
        failed_reports = tmp_path / "offline-broken"
        started = time.monotonic()
        failed = harness(runs_dir, "run", str(scenario), "--reuse", "--report-dir", str(failed_reports))
        figure(
            "offline smoke with a package missing, from booted, to the verdict", f"{time.monotonic() - started:.0f} s"
        )
        assert failed.returncode == 11, failed.stdout + failed.stderr
        provision = _summary(failed_reports)["phases"]["provision"]  # type: ignore[index]
        assert provision["status"] == "failed", provision
        messages = " ".join(f["name"] + " " + f["message"] for f in provision["failures"])
        assert MISSING in messages, messages
    finally:
        destroyed = harness(runs_dir, "destroy", str(scenario), timeout=600)
    assert destroyed.returncode == 0, destroyed.stdout + destroyed.stderr
    run_id = _summary(reports).get("run_id")
    with lv.connect() as conn:
        assert lv.run_objects(conn, f"hx-{run_id}").empty()
    assert not list(Path("/var/lib/harness/served-bundles").glob(f"{run_id}*")), "the served bundle was left behind"
