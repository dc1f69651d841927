"""Offline runs: a scenario with `offline: {bundle: PATH}` installs from that apt bundle only.

- Before anything boots, the bundle is checked (harness.apt_bundle; a broken one is exit 2).
- The nodes get no proxy to Debian (harness.nodes writes none) and no route out (as every run).
- Before each converge the bundle is copied to cache.BUNDLES_DIR/<run id>/ (again only when its
  SHA256SUMS changed), which the host's package cache serves as plain files
  (`LocalDirs`, cache.config_text): the nodes reach it at
  http://<management gateway>:3142/harness-bundles/<run id>/, the one port the cache's nftables
  rule admits from run networks. No other server, no other open port.
- roles/common points apt at it: the converge gets `common_apt_repository_url` and
  `common_apt_repository_key_file` (the bundle's key.gpg on this host) as extra vars, the same
  variables a real air-gapped site sets (docs/promotion.md, "Real hosts"), and with them the repository is
  the node's only source.
- Teardown removes the served copy; `harness gc` removes those of dead runs.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import logging
import shutil
from pathlib import Path

from harness import apt_bundle, bundle, cache, rundir
from harness.errors import HostError
from harness.provider import libvirt as lv
from harness.rundir import RunState
from harness.spec import Scenario

log = logging.getLogger(__name__)


def bundle_dir(scenario: Scenario) -> Path | None:
    return scenario.resolve(scenario.offline.bundle) if scenario.offline is not None else None


def preflight(scenario: Scenario) -> apt_bundle.AptBundle | None:
    """The scenario's apt bundle, checked (None when the scenario is not offline); SpecError (exit 2)
    naming every problem of a broken one."""
    root = bundle_dir(scenario)
    return apt_bundle.check_bundle(root) if root is not None else None


def served_dir(run_id: str, base: Path = cache.BUNDLES_DIR) -> Path:
    return base / run_id


def repository_url(run: RunState) -> str:
    gateway = lv.gateway_address(ipaddress.IPv4Network(run.mgmt_subnet))
    return f"http://{gateway}:{cache.PORT}/{cache.BUNDLES_URL_PATH}/{run.run_id}/"


def _same(a: Path, b: Path) -> bool:
    try:
        return (a / bundle.SUMS_FILE).read_bytes() == (b / bundle.SUMS_FILE).read_bytes()
    except OSError:
        return False


def copy_bundle(root: Path, dest: Path) -> bool:
    """dest becomes a world-readable copy of root (the cache runs as its own user), replaced whole;
    nothing is copied when their SHA256SUMS are the same. True when it copied."""
    if dest.is_dir() and _same(root, dest):
        return False
    dest.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    new = dest.with_name(dest.name + ".new")
    old = dest.with_name(dest.name + ".old")
    for leftover in (new, old):
        shutil.rmtree(leftover, ignore_errors=True)
    shutil.copytree(root, new, copy_function=shutil.copyfile)
    for path in [new, *new.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    if dest.exists():
        dest.rename(old)
    new.rename(dest)
    shutil.rmtree(old, ignore_errors=True)
    return True


def probe(run_id: str, expected: bytes, address: tuple[str, int] = ("127.0.0.1", cache.PORT)) -> str | None:
    """Why the cache does not serve the run's bundle (its InRelease, over the loopback), or None."""
    conn = http.client.HTTPConnection(*address, timeout=15)
    try:
        conn.request("GET", f"/{cache.BUNDLES_URL_PATH}/{run_id}/{apt_bundle.INRELEASE}")
        resp = conn.getresponse()
        body = resp.read()
    except (OSError, http.client.HTTPException) as exc:
        return f"no answer from the package cache on port {cache.PORT} ({exc})"
    finally:
        conn.close()
    if resp.status != 200 or body != expected:
        return f"the package cache answered {resp.status} {resp.reason} instead of the bundle's {apt_bundle.INRELEASE}"
    return None


def serve(run: RunState, scenario: Scenario) -> dict[str, str]:
    """Make the scenario's bundle available to the run's nodes (checked, copied, probed); the extra
    vars that point roles/common at it. Empty for a scenario that is not offline."""
    root = bundle_dir(scenario)
    if root is None:
        return {}
    apt_bundle.check_bundle(root)
    dest = served_dir(run.run_id)
    try:
        copied = copy_bundle(root, dest)
    except OSError as exc:
        raise HostError(f"cannot copy the apt bundle {root} to {dest} for the package cache to serve: {exc}") from exc
    why = probe(run.run_id, (dest / apt_bundle.INRELEASE).read_bytes())
    if why:
        raise HostError(
            f"the package cache does not serve apt bundles: {why}. Run `harness host setup` (it configures "
            f"the cache to serve {cache.BUNDLES_DIR} at /{cache.BUNDLES_URL_PATH}/)."
        )
    if copied:
        log.info("serving the apt bundle %s at %s", root, repository_url(run))
    return {
        "common_apt_repository_url": repository_url(run),
        "common_apt_repository_key_file": str(root / apt_bundle.KEY),
    }


def unserve(run_id: str) -> None:
    """Remove what serve copied for a run (nothing there: nothing happens)."""
    for path in (served_dir(run_id), *(served_dir(run_id + suffix) for suffix in (".new", ".old"))):
        shutil.rmtree(path, ignore_errors=True)


def gc(keep: set[str]) -> list[str]:
    """Remove the served bundles of runs that are not in `keep` (the live ones); their run ids."""
    removed = []
    with contextlib.suppress(OSError):
        for path in sorted(cache.BUNDLES_DIR.iterdir()):
            run_id = path.name.removesuffix(".new").removesuffix(".old")
            if run_id not in keep:
                shutil.rmtree(path, ignore_errors=True)
                removed.append(run_id)
    return removed


def live_run_ids() -> set[str]:
    return {run_id for run_id, run in rundir.registered_runs().items() if run is not None and rundir.is_live(run)}
