"""A run's nodes in libvirt: bring-up (after harness.preflight's checks), teardown, status.

`up` either returns a running cluster or leaves nothing behind: any failure, Ctrl-C or SIGTERM
tears down what the run created before the exception goes on. Teardown waits until nothing of
the run can still appear (the process tree is gone, libvirt shows nothing of the run several
times in a row) and records `destroyed` only when the listing is empty.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from harness import (
    accelerator,
    box,
    box_volume,
    cache,
    checkpoints,
    host,
    k8s_bundle,
    network,
    offline,
    passthrough,
    preflight,
    proc,
    reach,
    run_inventory,
    rundir,
    ssh,
    sweep,
)
from harness.errors import DestroyError, HarnessError, HostError, Interrupted, ProviderError, UnreachableError
from harness.provider import libvirt as lv
from harness.render import BOOT_TIMEOUT_S, MAX_BOOT_TIMEOUT_S, build_view, private_ips, render_vagrantfile
from harness.rundir import RunState
from harness.spec import Scenario
from harness.vagrant import VagrantEnvironment

log = logging.getLogger(__name__)

ProgressFn = Callable[[str, str], None]  # (node or phase, message)


def _noop(_a: str, _b: str) -> None:
    pass


def plan_run(
    scenario: Scenario,
    run: RunState,
    accel: accelerator.Accelerator,
    hostdevs: dict[str, list[str]] | None = None,
    box_versions: Mapping[str, str | None] | None = None,
    boot_timeout: int = BOOT_TIMEOUT_S,
) -> str:
    """Choose the run's subnets, create its libvirt networks and render its Vagrantfile."""
    with network.network_lock(), lv.connect() as conn:
        used = lv.libvirt_networks(conn) + network.host_networks()
        private, mgmt = network.choose_subnets(2, used, wanted=[scenario.network.subnet])
        ips = private_ips(private, scenario.expanded_nodes())
        # Air-gapped: no NAT, so the nodes reach the host and nothing beyond; DHCP stays, since
        # vagrant-libvirt finds the VMs by their leases. apt goes through the host's package cache.
        # DNS as at a site: each network's dnsmasq resolves every node's inventory name to its
        # private address (the one roles use for cluster traffic), and nothing else. The nodes ask
        # the management network's (their DHCP's nameserver); the private one answers the same.
        lv.create_network(conn, f"{run.prefix}-mgmt", mgmt, nat=False, dhcp=True, names=ips)
        lv.create_network(conn, f"{run.prefix}-priv", private, nat=False, names=ips)
    run.mgmt_subnet, run.private_subnet = str(mgmt), str(private)
    run.private_ips = ips
    run.accel = accel.reason
    view = build_view(
        scenario,
        run_id=run.run_id,
        prefix=run.prefix,
        run_dir=run.path,
        accel=accel,
        mgmt_subnet=mgmt,
        private_subnet=private,
        hostdevs=hostdevs,
        box_versions=box_versions,
        boot_timeout=boot_timeout,
    )
    text = render_vagrantfile(view)
    (run.path / "Vagrantfile").write_text(text)
    rundir.save(run)
    return text


def install_cluster_key(run: RunState) -> None:
    """Replace Vagrant's per-machine keys with one key made for this cluster; write ssh_config."""
    key = run.path / "ssh" / "id_ed25519"
    key.parent.mkdir(mode=0o700, exist_ok=True)
    if not key.exists():
        result = proc.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"harness-{run.run_id}", "-f", str(key)]
        )
        if not result.ok:
            raise HostError(f"cannot generate the cluster SSH key: {result.describe()}")
    vagrant_cfg = run.path / "vagrant_ssh_config"
    vagrant_cfg.write_text(VagrantEnvironment(run.path, run.log_dir / "vagrant.log").ssh_config())
    pub = key.with_suffix(".pub").read_text()
    for node in run.nodes:
        result = proc.run(
            [
                "ssh",
                "-F",
                str(vagrant_cfg),
                node,
                "umask 077; cat > ~/.ssh/authorized_keys.new && mv ~/.ssh/authorized_keys.new ~/.ssh/authorized_keys",
            ],
            input_text=pub,
            timeout=120,
        )
        if not result.ok:
            raise ProviderError(f"cannot install the cluster key on {node}: {result.describe()}")
    lines = []
    for line in vagrant_cfg.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("IdentityFile"):
            line = f"  IdentityFile {key}"
        elif stripped.startswith(tuple(ssh.NODE_CONFIG)):
            continue
        lines.append(line)
        if stripped.startswith("Host "):
            lines += ssh.config_lines({**ssh.NODE_CONFIG, "ControlPath": ssh.run_control_path(run.run_id)})
    run.ssh_config.write_text("\n".join(lines) + "\n")
    run.ssh_config.chmod(0o600)
    vagrant_cfg.unlink()


def describe_tb_caches(run: RunState, wanted: int) -> str:
    """Say whether every domain got the TCG translation cache cap the Vagrantfile asked for (a
    vagrant-libvirt that escaped its `features` would leave QEMU's 1 GiB default: slower to notice)."""
    with lv.connect() as conn:
        got = lv.tb_caches(conn, run.prefix)
    short = [name.removeprefix(run.prefix + "-") for name, mib in sorted(got.items()) if mib != wanted]
    if short:
        log.warning("TCG translation cache not capped at %s MiB on %s", wanted, ", ".join(short))
        return (
            f"warning: {', '.join(short)} run with QEMU's default TCG translation cache (1 GiB), not {wanted} MiB: "
            "this vagrant-libvirt does not pass <features><tcg><tb-cache> through: about 1 GiB more host memory per VM"
        )
    return f"TCG translation cache: {wanted} MiB per VM"


def point_apt_at_cache(run: RunState) -> None:
    """Send apt on every node through the host's package cache (cache.APT_PROXY_CONF): the nodes
    have no route beyond the host. Roles need not know: on real hosts the file is simply absent."""
    conf = cache.apt_proxy_conf(cache.proxy_url(run.mgmt_subnet))
    _on_every_node(
        run, lambda _node: f"sudo tee {cache.APT_PROXY_CONF} >/dev/null", conf, f"write {cache.APT_PROXY_CONF}"
    )


def name_nodes(run: RunState) -> None:
    """Give every node its inventory name as hostname (/etc/hostname and the running kernel's).
    Not Vagrant's hostname step: that maps the name to 127.0.X.1 in /etc/hosts, where the node
    would resolve itself to the loopback while the others resolve it to its private address. The
    names come from the run networks' DNS (plan_run), on the node itself too; /etc/hosts keeps
    the box's lines."""
    _on_every_node(
        run,
        lambda node: f"echo {node} | sudo tee /etc/hostname >/dev/null && sudo hostname {node}",
        None,
        "set the hostname",
    )


def _on_every_node(run: RunState, command: Callable[[str], str], input_text: str | None, what: str) -> None:
    """Run `command(node)` on every node at once over the run's ssh_config; ProviderError naming
    each node where it failed."""

    def one(node: str) -> proc.CommandResult:
        argv = ["ssh", "-F", str(run.ssh_config), node, command(node)]
        return proc.run(argv, input_text=input_text, timeout=120)

    with ThreadPoolExecutor(max_workers=max(1, len(run.nodes))) as pool:
        results = dict(zip(run.nodes, pool.map(one, run.nodes), strict=True))
    failed = [f"{node}: {res.describe()}" for node, res in results.items() if not res.ok]
    if failed:
        raise ProviderError(f"cannot {what} on every node: " + "; ".join(failed))


def boot_timeout_message(run: RunState, silent: list[str], boot_timeout: int) -> str:
    """Why `up` gave up on nodes that never answered SSH: which, how long, how loaded the host was,
    and what their serial consoles said last (a service that failed to start, a device timing out)."""
    lines = [
        f"{', '.join(silent)} did not answer SSH within Vagrant's boot timeout of {boot_timeout} s "
        f"(host load {reach.load_factor():.1f} runnable per core): an infrastructure failure, not the scenario's. "
        "Run it again on a quieter host, or with fewer clusters beside it."
    ]
    for node in silent:
        console = run.path / f"console-{node}.log"
        try:
            text = _ANSI.sub("", console.read_text(errors="replace")).replace("\r", "")
        except OSError:
            continue
        said = [ln.strip() for ln in text.splitlines() if _CONSOLE_TROUBLE.search(ln)]
        if said:
            lines.append(f"  {node} console ({console}): " + " | ".join(list(dict.fromkeys(said))[-4:]))
    return "\n".join(lines)


# Colour codes, also those whose escape character systemd's shortening (…) cut off.
_ANSI = re.compile(r"\x1b?\[[0-9;]*m|\x1b?\[[0-9;]*(?=…)|\x1b\[[0-9;]*[A-Za-z]")
_CONSOLE_TROUBLE = re.compile(r"FAILED|Timed out|DEPEND|panic|Emergency", re.I)


def libvirtd_restart(
    before: int | None, wait_s: float = 30.0, sleep: Callable[[float], None] = time.sleep
) -> str | None:
    """After a failure: how libvirtd changed since it ran as pid `before` (`pid 1 -> 2`, `stopped`),
    or None when the same libvirtd answers. A daemon still shutting down keeps its pid but takes no
    connection: wait (up to `wait_s`) until it is gone or answers."""
    deadline = time.monotonic() + wait_s
    while True:
        now = host.libvirtd_pid()
        if now != before:
            return f"pid {before} -> {now}" if now is not None else f"pid {before} stopped"
        if lv.answers() or time.monotonic() >= deadline:
            return None
        sleep(1.0)


def up(
    scenario: Scenario, on_progress: ProgressFn = _noop, *, keep: bool = True, bundle_checked: bool = False
) -> RunState:
    """Bring a scenario's cluster up. On any failure or interrupt, remove everything it made.

    `keep`: the cluster outlives this process (`harness up`, `run --keep`); otherwise it is this
    process's, and `gc` removes it once the process is gone (a harness killed with SIGKILL).
    `bundle_checked`: the caller already checked a Kubernetes scenario's bundle
    (lifecycle.check_playbook, before `run`), so it is not read and hashed twice."""
    if not bundle_checked:
        k8s_bundle.preflight(scenario)
    box_versions = preflight.check_box(scenario)
    preflight.check_resources(scenario)
    preflight.check_disk(scenario, *preflight.pool_free_gib())
    cache.require_running()
    accel = accelerator.host_accelerator()
    on_progress("up", f"accelerator: {accel.reason}")
    run_id = rundir.new_run_id(scenario)
    hostdevs = preflight.preflight_gpus(scenario, run_id)
    try:
        run = rundir.new_run(scenario, run_id)
    except BaseException:
        passthrough.release_locks(passthrough.default_lockdir(), run_id)
        raise
    proc.mark_children(run.run_id)  # gc finds what this run started, should this process be killed
    on_progress("up", f"run {run.run_id} in {run.path}")
    libvirtd = host.libvirtd_pid()
    try:
        boot_timeout = reach.connect_timeout(BOOT_TIMEOUT_S, cap=MAX_BOOT_TIMEOUT_S)
        plan_run(scenario, run, accel, hostdevs, box_versions, boot_timeout)
        on_progress("up", f"networks: management {run.mgmt_subnet}, private {run.private_subnet}")
        for box_name, box_version in (box_versions or {}).items():
            if box_version is not None:  # Vagrant's own copy into the pool races with other runs
                box_volume.ensure(box_name, box_version, lambda msg: on_progress("up", msg))
        try:
            VagrantEnvironment(run.path, run.log_dir / "vagrant.log").up(on_progress)
        except ProviderError as exc:
            restart = libvirtd_restart(libvirtd)
            if restart is not None:
                raise ProviderError(
                    f"libvirtd restarted during up ({restart}): Vagrant lost its connection to libvirt, so the "
                    f"run is torn down; run it again. {exc}"
                ) from exc
            silent = VagrantEnvironment(run.path, run.log_dir / "vagrant.log").not_booted(run.nodes)
            if silent:
                raise UnreachableError(boot_timeout_message(run, silent, boot_timeout)) from exc
            raise
        if accel.is_tcg and accel.tb_cache_mib:
            on_progress("up", describe_tb_caches(run, accel.tb_cache_mib))
        on_progress("up", "installing the cluster SSH key")
        install_cluster_key(run)
        name_nodes(run)
        on_progress("up", "hostnames set; every node's name resolves to its private address from the run's DNS")
        if scenario.offline is None:
            point_apt_at_cache(run)
            on_progress("up", f"apt on the nodes goes through the package cache at {cache.proxy_url(run.mgmt_subnet)}")
        else:  # no proxy: the converge points apt at the scenario's bundle only (harness.offline)
            on_progress("up", f"offline: apt on the nodes gets the bundle {offline.bundle_dir(scenario)} only")
        run_inventory.write(run, scenario, hostdevs)
        if not hostdevs:  # passed-through GPUs cannot save memory state: no checkpoint for them
            started = time.monotonic()
            checkpoints.save(run, checkpoints.BOOTED)
            on_progress("up", f"checkpoint {checkpoints.BOOTED!r} saved in {time.monotonic() - started:.1f}s")
        run.state, run.keep = "up", keep
        rundir.save(run)
        return run
    except KeyboardInterrupt as exc:
        on_progress("up", "interrupted: removing what this run created")
        teardown(run, graceful=False)
        raise Interrupted(f"interrupted; run {run.run_id} removed everything it had created") from exc
    except BaseException:
        on_progress("up", "failed: removing what this run created")
        teardown(run, graceful=False)
        raise


def teardown(run: RunState, *, graceful: bool = True) -> None:
    """Remove the run's domains, volumes and networks and verify that nothing is left.

    Vagrant first when the run got that far (graceful); otherwise, or after, every process the
    harness started is stopped and waited for, then libvirt is swept until it stays empty. Only an
    empty listing records `destroyed`; otherwise DestroyError (exit 14) says what is left.

    This process owns the run from the start (rundir.claim_for_teardown: `gc` leaves it alone, and
    UsageError here when another live process creates or destroys it)."""
    rundir.claim_for_teardown(run)
    proc.mark_children(run.run_id)  # a Vagrant this teardown starts is the run's too, for gc
    try:
        _remove(run, graceful=graceful)
    finally:
        proc.unmark_children(run.run_id)


def _remove(run: RunState, *, graceful: bool) -> None:
    if graceful and (run.path / "Vagrantfile").exists() and (run.path / ".vagrant").exists():
        VagrantEnvironment(run.path, run.log_dir / "vagrant.log").destroy()
    # Waits until they are gone: no client of the run is left. Only the run's own processes (its
    # mark, proc.RUN_ENV), never another child of this process (a test runner's).
    proc.end_run_processes(run.run_id)
    offline.unserve(run.run_id)
    left = sweep.sweep_when_libvirt_answers(run.prefix)
    if not left.empty():
        run.state = "failed"
        rundir.save(run)
        raise DestroyError(
            f"run {run.run_id}: {left.describe()} still exist after teardown; `harness gc` removes them "
            f"(it only touches objects named hx-{run.run_id}-...). Log: {run.log_dir}"
        )
    passthrough.release_locks(passthrough.default_lockdir(), run.run_id)
    run.state = "destroyed"
    rundir.save(run)
    rundir.forget(run.run_id)


def destroy(scenario: Scenario) -> RunState:
    """Tear down the scenario's newest cluster: one that is up, or one whose teardown was cut off
    (`destroying`; UsageError while another process still runs it)."""
    run = rundir.active_run(scenario, (*rundir.ACTIVE_STATES, "destroying")) or rundir.require_active_run(scenario)
    teardown(run)
    return run


def status(scenario: Scenario) -> tuple[RunState | None, list[lv.DomainStatus]]:
    run = rundir.active_run(scenario)
    if run is None:
        return None, []
    with lv.connect() as conn:
        return run, lv.domain_statuses(conn, run.prefix)


def ssh_argv(scenario: Scenario, node: str, command: list[str]) -> list[str]:
    run = rundir.require_active_run(scenario)
    if node not in run.nodes:
        raise HarnessError(f"no node {node!r} in run {run.run_id}; nodes: {', '.join(run.nodes)}")
    if not run.ssh_config.exists():
        raise HarnessError(f"run {run.run_id} has no ssh_config yet (is it still coming up?)")
    return ["ssh", "-F", str(run.ssh_config), node, *command]


def run_on(run: RunState, node: str, command: str, timeout: float = 300) -> proc.CommandResult:
    """Run a shell command line on a node over the run's ssh_config."""
    return proc.run(["ssh", "-F", str(run.ssh_config), node, command], timeout=timeout)


def rendered(scenario: Scenario) -> str:
    """The Vagrantfile a run of this scenario would get, with placeholder run values."""
    accel = accelerator.host_accelerator()
    return render_vagrantfile(
        build_view(
            scenario,
            run_id=f"{scenario.name}-000000",
            prefix=f"hx-{scenario.name}-000000",
            run_dir=Path(".harness/runs") / f"{scenario.name}-000000",
            accel=accel,
            mgmt_subnet=ipaddress.IPv4Network("10.213.0.0/24"),
            private_subnet=scenario.network.subnet or ipaddress.IPv4Network("10.213.1.0/24"),
            box_versions={
                name: recipe.version if (recipe := box.recipe_for_box(name)) else None for name in scenario.boxes()
            },
        )
    )
