"""The checks `up` makes before it creates anything: the box, host memory, the storage pool's
free space (DISK_RULE, which `harness doctor` judges by too) and the GPUs to pass through (locked
for the run). Each raises HostError (exit 3) with what to do, or returns what `up` needs next."""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections.abc import Sequence

import libvirt

from harness import box, gpus, host, passthrough
from harness.errors import HostError, ProviderError
from harness.provider import libvirt as lv
from harness.spec import Node, Scenario

log = logging.getLogger(__name__)

HOST_RESERVE_MIB = 1024


def check_resources(scenario: Scenario) -> None:
    need = sum(n.memory for n in scenario.expanded_nodes())
    avail = host.meminfo_mib().get("MemAvailable", 0)
    if need + HOST_RESERVE_MIB > avail:
        raise HostError(
            f"scenario {scenario.name!r} needs {need} MiB for its VMs plus {HOST_RESERVE_MIB} MiB for the host, "
            f"but only {avail} MiB is available: lower nodes[*].memory or free memory."
        )


# The disk rule. A node's disk is a qcow2 overlay on the box image, near empty at first, growing
# with what the guest writes up to nodes[].disk: a converged node a GiB or two (more with a larger
# disk asked for data), and each checkpoint (booted, converged; none with GPUs passed through) up
# to the node's memory. Need per node: a quarter of its disk, at least NODE_DISK_FLOOR_GIB, plus its
# memory per checkpoint; plus the box image once (vagrant-libvirt uploads it to the pool).
NODE_DISK_FLOOR_GIB = 2.0
BOX_IMAGE_GIB = 1.0
DISK_RULE = (
    f"per node: a quarter of its disk, at least {NODE_DISK_FLOOR_GIB:.0f} GiB, plus its memory for each of its "
    f"2 checkpoints; plus {BOX_IMAGE_GIB:.0f} GiB for the box image"
)


def disk_need_gib(nodes: Sequence[Node]) -> float:
    """What a converged cluster of these nodes fills in the storage pool (DISK_RULE)."""
    kept = 0 if any(n.gpus for n in nodes) else 2  # checkpoints booted and converged
    return BOX_IMAGE_GIB + sum(max(NODE_DISK_FLOOR_GIB, n.disk / 4) + kept * n.memory / 1024 for n in nodes)


def pool_free_gib() -> tuple[float, str]:
    """Free GiB in libvirt's storage pool, and its directory. The smaller of libvirt's figure (after
    a refresh) and statvfs's for unprivileged writers: libvirt counts the filesystem's reserved
    blocks, which QEMU may not write. Only statvfs of host.POOL_PATH when libvirt cannot say."""
    path, free = host.POOL_PATH, float("inf")
    try:
        with lv.connect() as conn:
            pool = conn.storagePoolLookupByName(lv.POOL)
            pool.refresh(0)
            free = pool.info()[3] / 1024**3
            path = ET.fromstring(pool.XMLDesc(0)).findtext("target/path") or path
    except (ProviderError, libvirt.libvirtError) as exc:
        log.info("storage pool %s: %s; taking the free space of %s", lv.POOL, exc, path)
    return min(free, host.disk_free_gib(path)), path


def check_disk(scenario: Scenario, free_gib: float, pool_path: str) -> None:
    """HostError (exit 3) unless the converged cluster fits the pool's free space (DISK_RULE)."""
    need = disk_need_gib(scenario.expanded_nodes())
    if need > free_gib:
        raise HostError(
            f"scenario {scenario.name} needs ~{need:.0f} GiB in pool {lv.POOL} ({pool_path}), {free_gib:.1f} GiB "
            f"free: free space or lower nodes[*].disk ({DISK_RULE})."
        )


def check_box(scenario: Scenario) -> dict[str, str | None]:
    """Every box the scenario's nodes use is installed (for a recipe's box: the version its recipe
    builds now, which the Vagrantfile pins). Box name → that version, or None for a box from
    elsewhere; one error naming every box that is missing, with the command that makes it."""
    installed = box.installed_boxes()
    versions: dict[str, str | None] = {}
    problems: list[str] = []
    for name in scenario.boxes():
        try:
            versions[name] = _box_version(
                name, [b.version for b in installed if b.name == name and b.provider == "libvirt"]
            )
        except HostError as exc:
            problems.append(str(exc))
    if problems:
        raise HostError("\n".join(problems))
    return versions


def _box_version(name: str, versions: list[str]) -> str | None:
    recipe = box.recipe_for_box(name)
    if recipe is None:
        if versions:
            return None
        raise HostError(f"box {name!r} is not installed for the libvirt provider: add it with `vagrant box add`.")
    if recipe.version in versions:
        return recipe.version
    state = f"installed versions {', '.join(versions)} are older builds" if versions else "it is not installed"
    source = " --mirror URL --keyring FILE" if recipe.needs_source else ""
    raise HostError(
        f"box {name!r} does not match its recipe vagrant/boxes/{recipe.key} ({state}): "
        f"build it with `harness box build {recipe.key}{source}`."
    )


def preflight_gpus(scenario: Scenario, run_id: str) -> dict[str, list[str]]:
    """Check and lock every GPU the scenario asks for; node → PCI addresses to pass through."""
    requests = passthrough.requests_from_nodes(scenario.expanded_nodes())
    if not any(req for _node, req in requests):
        return {}
    with lv.connect() as conn:
        in_use = lv.hostdevs_in_use(conn)
    alloc = passthrough.allocate(requests, gpus.discover(), in_use, passthrough.default_lockdir(), run_id)
    return alloc.to_json()
