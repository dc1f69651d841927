"""Offline runs end to end: `harness bundle build smoke` from a green smoke run, then `harness run` of
smoke with `offline: {bundle: ...}` passes (converge, verify; idempotence too in the nightly target)
with the bundle as the nodes' only package source and no proxy. Nightly, on the same kept cluster reset to `booted`, a
bundle without chrony (which roles/common installs) fails provision, and the report names chrony.

The green smoke run comes from this session when test_smoke.py ran first (its run directory holds
the package record); otherwise the module runs smoke once itself (without idempotence)."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import apt_bundle, apt_bundle_build, cache, node_packages
from harness.errors import UsageError
from harness.paths import SCENARIOS_DIR
from harness.provider import libvirt as lv
from tests.vm.cli import harness
from tests.vm.conftest import NIGHTLY

pytestmark = pytest.mark.vm

MISSING = "chrony"  # a package roles/common installs on every node
NAME = "smoke-offline"


@dataclass(frozen=True)
class Offline:
    tmp: Path
    scenario: Path
    record: node_packages.PackageRecord
    where: list[str]  # bundle build's arguments to find the record
    source_seconds: float | None  # the smoke run this module made for the record, if it made one


def _green_smoke_record(runs_dir: Path, tmp: Path) -> tuple[node_packages.PackageRecord, list[str], float | None]:
    try:
        record, _path = node_packages.find_green_record("smoke")
        return record, [], None
    except UsageError:
        pass
    source = tmp / "smoke-source"
    started = time.monotonic()
    proc = harness(runs_dir, "run", "smoke", "--skip-idempotence", "--report-dir", str(source))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    record = node_packages.load_record(source / node_packages.RECORD_FILE)
    return record, ["--report", str(source)], time.monotonic() - started


def _write_scenario(path: Path, bundle: Path) -> Path:
    smoke = yaml.safe_load((SCENARIOS_DIR / "smoke" / "scenario.yml").read_text())
    smoke.update(
        name=NAME,
        provision={**smoke["provision"], "playbook": str(SCENARIOS_DIR / "smoke" / "site.yml")},
        tests=str(SCENARIOS_DIR / "smoke" / "tests"),
        offline={"bundle": bundle.name},  # relative to the scenario file
    )
    path.write_text(yaml.safe_dump(smoke, sort_keys=False))
    return path


def _summary(report_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((report_dir / "summary.json").read_text())
    return data


@pytest.fixture(scope="module")
def offline(runs_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Offline]:
    """The smoke record and the offline scenario file; at the end, the kept cluster destroyed and
    nothing of it left (libvirt objects, the served bundle)."""
    tmp = tmp_path_factory.mktemp("offline")
    record, where, seconds = _green_smoke_record(runs_dir, tmp)
    scenario = tmp / f"{NAME}.yml"
    yield Offline(tmp, scenario, record, where, seconds)
    if scenario.exists():
        harness(runs_dir, "destroy", str(scenario), timeout=600)
    with lv.connect() as conn:
        left = lv.run_objects(conn, f"hx-{NAME}-")
    assert left.empty(), f"the offline runs left libvirt objects behind: {left.describe()}"
    assert not list(cache.BUNDLES_DIR.glob(f"{NAME}-*")), "a served bundle was left behind"


def test_offline_smoke_passes_from_its_bundle_alone(
    offline: Offline, runs_dir: Path, figure: Callable[[str, str], None]
) -> None:
    if offline.source_seconds is not None:
        figure("smoke run for the package record (no idempotence)", f"{offline.source_seconds:.0f} s")
    bundle = offline.tmp / "smoke-bundle"
    started = time.monotonic()
    built = harness(runs_dir, "bundle", "build", "smoke", "--output", str(bundle), *offline.where)
    assert built.returncode == 0, built.stdout + built.stderr
    size = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())
    packages = len(apt_bundle.check_bundle(bundle).manifest.packages)
    figure("bundle build smoke", f"{time.monotonic() - started:.1f} s, {packages} packages, {size / (1 << 20):.1f} MiB")
    checked = harness(runs_dir, "bundle", "check", str(bundle))
    assert checked.returncode == 0, checked.stdout + checked.stderr

    scenario = _write_scenario(offline.scenario, bundle)
    reports = offline.tmp / "offline"
    started = time.monotonic()
    # Per-submission CI leaves the second converge out (about a minute); the nightly target runs it.
    extra = [] if NIGHTLY else ["--skip-idempotence"]
    proc = harness(runs_dir, "run", str(scenario), "--keep", "--report-dir", str(reports), *extra)
    figure("offline smoke run from the bundle (up to verify, kept)", f"{time.monotonic() - started:.0f} s")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    phases = _summary(reports)["phases"]
    for name in ("up", "provision", "idempotence", "verify"):
        if name == "idempotence" and not NIGHTLY:
            assert phases[name]["status"] == "skipped", (name, phases[name])
            continue
        assert phases[name]["status"] == "passed", (name, phases[name])
    for node in ("mgmt01", "gpu01"):
        # No proxy; the bundle is the one source, signed by its key.
        apt = harness(runs_dir, "ssh", str(scenario), node, "--", "apt-config dump | grep -i proxy || true")
        assert apt.returncode == 0 and apt.stdout.strip() == "", apt.stdout
        cmd = "grep -hv '^#' /etc/apt/sources.list /etc/apt/sources.list.d/* | grep -v '^$'"
        lines = harness(runs_dir, "ssh", str(scenario), node, "--", cmd).stdout.splitlines()
        assert any(ln.startswith("URIs: http://") and "/harness-bundles/" in ln for ln in lines), lines
        assert not any("debian.org" in ln for ln in lines), lines
        assert "Signed-By: /etc/apt/keyrings/common-repository.gpg" in lines, lines


def test_a_bundle_without_a_package_the_role_needs_fails_provision_naming_it(
    offline: Offline, runs_dir: Path, figure: Callable[[str, str], None]
) -> None:
    if not NIGHTLY:
        pytest.skip("nightly: the offline smoke test above is the per-submission one; set HARNESS_NIGHTLY=1 to run it")
    broken = offline.tmp / "smoke-bundle-broken"
    without = [p for p in offline.record.packages if p.package != MISSING]
    assert len(without) < len(offline.record.packages), f"{MISSING} is not in the smoke record"
    apt_bundle_build.build_from_record(dataclasses.replace(offline.record, packages=without), broken)
    scenario = _write_scenario(offline.scenario, broken)
    reports = offline.tmp / "offline-broken"
    started = time.monotonic()
    # The kept cluster of the test above, reset to booted (a new one when there is none).
    failed = harness(runs_dir, "run", str(scenario), "--reuse", "--report-dir", str(reports))
    figure("offline smoke with chrony missing, --reuse to the verdict", f"{time.monotonic() - started:.0f} s")
    assert failed.returncode == 11, failed.stdout + failed.stderr
    provision = _summary(reports)["phases"]["provision"]
    assert provision["status"] == "failed", provision
    messages = " ".join(f["name"] + " " + f["message"] for f in provision["failures"])
    assert MISSING in messages, messages
