"""`harness doctor`: every host check in one report."""

from __future__ import annotations

from harness import accelerator, cache, capabilities, host, preflight, tools
from harness.host import Check, DoctorReport
from harness.spec import Scenario


def run_doctor(scenario: Scenario | None = None) -> DoctorReport:
    report = DoctorReport()
    checks = report.checks
    from harness.errors import ProviderError
    from harness.provider import libvirt as lv

    try:
        with lv.connect() as conn:
            v = conn.getLibVersion()
            checks.append(Check("libvirt", True, f"reachable, version {v // 1_000_000}.{v // 1000 % 1000}.{v % 1000}"))
            _capability_check(checks, conn)
            try:
                conn.storagePoolLookupByName(lv.POOL)
                checks.append(Check("storage pool", True, f"{lv.POOL} exists"))
            except Exception:
                checks.append(Check("storage pool", False, f"{lv.POOL} missing", "run `harness host setup`"))
    except ProviderError as exc:
        checks.append(Check("libvirt", False, "not reachable", str(exc)))
    missing = tools.missing()
    if not missing:
        names = ", ".join(t.name for t in tools.TOOLS)
        checks.append(Check("programs", True, f"all {len(tools.TOOLS)} found ({names})"))
    for tool in missing:
        checks.append(Check(tool.name, False, f"not found (needed for {tool.needed_for})", tool.hint))
    vv = host.vagrant_version()
    checks.append(Check("vagrant", vv is not None, vv or "not installed", "" if vv else "run `harness host setup`"))
    pv = host.vagrant_libvirt_version() if vv else None
    checks.append(
        Check("vagrant-libvirt", pv is not None, pv or "not installed", "" if pv else "run `harness host setup`")
    )
    mem = host.meminfo_mib()
    need = sum(n.memory for n in scenario.expanded_nodes()) + 1024 if scenario else 3 * 1024 + 1024
    what = f"scenario {scenario.name}" if scenario else "a 3-node cluster of 1 GiB nodes"
    avail = mem.get("MemAvailable", 0)
    checks.append(
        Check(
            "memory",
            avail >= need,
            f"{avail} MiB available, {need} MiB needed for {what}",
            "" if avail >= need else "free memory or shrink the scenario's nodes",
        )
    )
    checks.append(disk_check(scenario, *preflight.pool_free_gib()))
    groups = host.iommu_groups()
    checks.append(
        Check(
            "iommu",
            True,
            f"{groups} IOMMU groups" if groups else "off (no IOMMU groups)",
            "" if groups else "GPU passthrough needs intel_iommu=on / amd_iommu=on iommu=pt (roles/vfio_host)",
        )
    )
    kvm = accelerator.probe_kvm()
    checks.append(
        Check(
            "kvm",
            True,
            ("usable: " if kvm.usable else "unusable: ") + kvm.detail,
            "" if kvm.usable else "VMs will run under TCG (slow but correct)",
        )
    )
    tcg = accelerator.probe_accel("tcg")
    checks.append(
        Check("tcg", tcg.usable, tcg.detail, "" if tcg.usable else "install qemu-system-x86 (`harness host setup`)")
    )
    accel = accelerator.host_accelerator()
    report.accelerator = accel.reason
    _cache_check(checks)
    _passthrough_checks(checks)
    return report


def _cache_check(checks: list[Check]) -> None:
    """The package cache: a run's nodes have no other way to packages (harness/cache.py)."""
    st = cache.status()
    hint = "" if st.ok else "run `harness host setup` (it starts apt-cacher-ng behind its nftables table)"
    checks.append(Check("package cache", st.ok, st.describe(), hint))


def disk_check(scenario: Scenario | None, free_gib: float, pool_path: str) -> Check:
    """The storage pool's free space against what the scenario (or 3 default nodes) fills, by the
    rule `harness up` refuses a scenario with (preflight.DISK_RULE)."""
    from harness.provider import libvirt as lv

    sc = scenario or Scenario.model_validate({"name": "default", "nodes": [{"name": "node", "count": 3}]})
    need = preflight.disk_need_gib(sc.expanded_nodes())
    what = f"scenario {sc.name}" if scenario else "a 3-node cluster of default nodes"
    ok = free_gib >= need
    detail = f"{free_gib:.1f} GiB free in pool {lv.POOL} ({pool_path}), ~{need:.0f} GiB needed for {what}"
    return Check("disk", ok, detail, "" if ok else f"free space or lower nodes[*].disk ({preflight.DISK_RULE})")


def _passthrough_checks(checks: list[Check]) -> None:
    try:
        from harness.gpus import discover
    except ImportError:  # pragma: no cover
        return
    disc = discover()
    gpus = [d for d in disc.devices if d.kind == "gpu"]
    if not gpus:
        checks.append(
            Check("gpu passthrough", True, "no NVIDIA GPU on this host", "GPU scenarios will be refused; others run")
        )
        return
    ready = [d for d in gpus if d.passthrough_ready]
    problems = "; ".join(p for d in gpus for p in d.problems)
    checks.append(Check("gpu passthrough", bool(ready), f"{len(ready)}/{len(gpus)} GPU(s) ready", problems))


def _capability_check(checks: list[Check], conn: object) -> None:
    """Two capability queries in a row: slow both times means libvirt re-probes QEMU each time."""
    try:
        timing = capabilities.time_capability_queries(conn)
    except Exception as exc:  # libvirt raises libvirtError; doctor reports, never crashes
        checks.append(Check("libvirt capabilities", False, f"query failed: {exc}", "see libvirtd's log"))
        return
    dev = capabilities.kvm_device()
    if not timing.reprobing:
        checks.append(Check("libvirt capabilities", True, f"cached (queries took {timing.describe()})"))
        return
    hint = "libvirt re-probes QEMU on every query, so each domain costs seconds to define"
    if dev.exists and not dev.group_ok:
        hint += f": {dev.describe()} (no udev); `harness host setup` gives it to group kvm, 0660, as udev does"
    else:
        hint += "; see libvirtd's log (virt-admin daemon-log-filters 1:qemu.qemu_capabilities)"
    checks.append(Check("libvirt capabilities", False, f"re-probed on every query ({timing.describe()})", hint))
