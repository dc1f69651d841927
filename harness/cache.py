"""The host's package cache: the one way out of a run's VMs.

Runs are air-gapped: the management network has no NAT (`provider/libvirt.network_xml`), so a
VM reaches its own networks and the host, nothing beyond. apt on the nodes goes through this
cache, an apt-cacher-ng instance that the harness starts (`harness host setup`) and that fetches
Debian's archive and security archive from deb.debian.org, nothing else.

Where it listens, and who may connect (the rule):
- apt-cacher-ng listens on port 3142 of every IPv4 address of the host. A node reaches it at its
  management network's gateway, the host's own address on that network's bridge, which is on-link
  for every VM of the run. (A dedicated address on a dummy interface would not do: an isolated
  libvirt network hands out no default route, so a VM has no route to an address outside its
  subnet without routing set up inside the guest.)
- An nftables table of its own, `inet harness_cache`, drops every connection to port 3142 except
  from the loopback and from the management subnets' pool (`network.DEFAULT_POOL`) arriving on a
  libvirt bridge (`virbr*`). The table is loaded before the daemon starts; neither survives a
  reboot (`harness host setup` brings both back, `harness up` refuses to start without them), so
  the cache never listens unguarded.

Its configuration is the harness's own (CONFIG_DIR), not the package's /etc/apt-cacher-ng: that
one remaps Debian URLs to the backends in backends_debian, or backends_debian.default
(ftp.debian.org) when that list is empty, and lets clients tunnel to some hosts (CONNECT). The
package's own instance (its systemd unit, or its init script) is stopped and disabled: it listens
on every address unguarded and would hold the port.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from harness import host, network, proc
from harness.errors import HostError
from harness.provider import libvirt as lv

log = logging.getLogger(__name__)

PORT = 3142
USER = "apt-cacher-ng"  # the package's system user; owns /var/cache/apt-cacher-ng and its log dir
DAEMON = "/usr/sbin/apt-cacher-ng"
CONFIG_DIR = Path("/etc/harness/apt-cacher-ng")
RUN_DIR = Path("/run/harness-cache")
PID_FILE = RUN_DIR / "apt-cacher-ng.pid"
ERROR_LOG = Path("/var/log/apt-cacher-ng/apt-cacher.err")
NFT_TABLE = "harness_cache"
PACKAGE_SERVICE = "apt-cacher-ng.service"
PACKAGE_PID_FILE = Path("/run/apt-cacher-ng/pid")  # the package's init script's instance
# Where the nodes learn about the cache (written over SSH when a cluster comes up).
APT_PROXY_CONF = "/etc/apt/apt.conf.d/01harness-proxy"
# Apt bundles of offline runs (harness.offline), served by the cache itself as plain files:
# http://<gateway>:PORT/BUNDLES_URL_PATH/<run id>/ is BUNDLES_DIR/<run id>/ on the host.
BUNDLES_URL_PATH = "harness-bundles"
BUNDLES_DIR = Path("/var/lib/harness/served-bundles")
# What the cache serves: (repository name, URL prefixes clients use, where it fetches them from).
REPOSITORIES = (
    ("harness-debian", ("deb.debian.org/debian",), "deb.debian.org/debian"),
    (
        "harness-security",
        ("deb.debian.org/debian-security", "security.debian.org/debian-security"),
        "deb.debian.org/debian-security",
    ),
)


def config_text(*, port: int = PORT, pid_file: Path = PID_FILE, run_dir: Path = RUN_DIR) -> str:
    """The harness's apt-cacher-ng configuration (acng.conf in CONFIG_DIR)."""
    remaps = [f"Remap-{name}: {' '.join(prefixes)} ; {target}" for name, prefixes, target in REPOSITORIES]
    return "\n".join(
        [
            "# Written by `harness host setup` (harness/cache.py) and rewritten by it: do not edit.",
            "# The package cache of air-gapped runs: their VMs fetch Debian packages through it.",
            "CacheDir: /var/cache/apt-cacher-ng",
            "LogDir: /var/log/apt-cacher-ng",
            "SupportDir: /usr/lib/apt-cacher-ng",
            f"Port: {port}",
            f"# Every IPv4 address; the nftables table inet {NFT_TABLE} admits only the loopback and the",
            "# run networks (see harness/cache.py).",
            "BindAddress: 0.0.0.0",
            f"PidFile: {pid_file}",
            f"SocketPath: {run_dir / 'socket'}",
            "ForeGround: 0",
            "# Debian's archive and security archive, fetched from deb.debian.org whatever name the",
            "# client used; any other URL is refused (ForceManaged), and so is every tunnel (CONNECT).",
            *remaps,
            "ForceManaged: 1",
            "PassThroughPattern: ^$",
            "# Offline runs: each run's apt bundle, served as plain files (harness/offline.py).",
            f"LocalDirs: {BUNDLES_URL_PATH} {BUNDLES_DIR}",
            "",
        ]
    )


def firewall_ruleset(*, port: int = PORT, pool: ipaddress.IPv4Network = network.DEFAULT_POOL) -> str:
    """An `nft -f` script that (re)creates the table guarding the cache's port, atomically."""
    return "\n".join(
        [
            f"table inet {NFT_TABLE}",
            f"delete table inet {NFT_TABLE}",
            f"table inet {NFT_TABLE} {{",
            "  chain input {",
            "    type filter hook input priority filter; policy accept;",
            f'    tcp dport {port} iifname "lo" accept',
            f'    tcp dport {port} iifname "virbr*" ip saddr {pool} accept',
            f"    tcp dport {port} drop",
            "  }",
            "}",
            "",
        ]
    )


def proxy_url(mgmt_subnet: ipaddress.IPv4Network | str, port: int = PORT) -> str:
    """The cache as the nodes of a run reach it: the host's address on their management network."""
    return f"http://{lv.gateway_address(ipaddress.IPv4Network(mgmt_subnet))}:{port}"


def apt_proxy_conf(url: str) -> str:
    """The apt configuration that sends a node's downloads through the cache (APT_PROXY_CONF)."""
    return (
        "// Written by the harness when this node came up: this VM has no route beyond the host, so\n"
        "// apt fetches through the host's package cache (harness/cache.py).\n"
        f'Acquire::http::Proxy "{url}";\n'
        f'Acquire::https::Proxy "{url}";\n'
    )


def running_pid(pid_file: Path = PID_FILE, proc_root: Path = Path("/proc")) -> int | None:
    """The pid of the harness's apt-cacher-ng when it runs (its pid file names a live apt-cacher-ng)."""
    try:
        pid = int(pid_file.read_text().strip())
        comm = (proc_root / str(pid) / "comm").read_text().strip()
    except (OSError, ValueError):
        return None
    return pid if comm == "apt-cacher-ng" else None


def listening(address: str = "127.0.0.1", port: int = PORT, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections on address:port."""
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def firewall_present() -> bool | None:
    """Whether the cache's nftables table is loaded; None when nft cannot be asked (not root, no nft)."""
    result = proc.run(["nft", "list", "table", "inet", NFT_TABLE], timeout=10)
    if result.ok:
        return f"dport {PORT}" in result.stdout
    if result.rc == 127 or "not permitted" in result.stderr.lower():
        return None
    return False


@dataclass(frozen=True)
class CacheStatus:
    pid: int | None  # the harness's apt-cacher-ng, None when it does not run
    listening: bool  # something answers on 127.0.0.1:PORT
    firewall: bool | None  # the nftables table is loaded; None: could not be asked

    @property
    def ok(self) -> bool:
        return self.pid is not None and self.listening and self.firewall is not False

    def describe(self) -> str:
        if self.pid is None:
            taken = f" (port {PORT} is taken by another program)" if self.listening else ""
            return f"apt-cacher-ng is not running{taken}"
        if not self.listening:
            return f"apt-cacher-ng (pid {self.pid}) does not answer on port {PORT}"
        if self.firewall is False:
            return f"apt-cacher-ng (pid {self.pid}) runs, but the nftables table {NFT_TABLE} that guards it is missing"
        guard = "only the loopback and run networks admitted" if self.firewall else "firewall not checked (needs root)"
        return f"apt-cacher-ng (pid {self.pid}) on port {PORT}, nodes use their gateway; {guard}"


def status() -> CacheStatus:
    return CacheStatus(running_pid(), listening(), firewall_present())


def require_running() -> CacheStatus:
    """Preflight of `up`: the nodes will have no other way to packages than the cache."""
    st = status()
    if not st.ok:
        raise HostError(f"the package cache is not ready: {st.describe()}. Run `harness host setup` (it starts it).")
    return st


def _log_tail(lines: int = 5) -> str:
    try:
        tail = ERROR_LOG.read_text(errors="replace").strip().splitlines()[-lines:]
    except OSError:
        return ""
    return f"; {ERROR_LOG} ends with: " + " | ".join(tail) if tail else ""


def _write_config() -> bool:
    """Write the configuration; True when it changed."""
    path = CONFIG_DIR / "acng.conf"
    text = config_text()
    try:
        if path.read_text() == text:
            return False
    except OSError:
        pass
    CONFIG_DIR.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o644)
    return True


def _apply_firewall() -> None:
    result = proc.run(["nft", "-f", "-"], input_text=firewall_ruleset(), timeout=30)
    if not result.ok:
        raise HostError(
            f"cannot load the nftables table {NFT_TABLE} that guards the package cache: {result.describe()}"
        )


def _disable_package_service() -> str | None:
    """The package's own apt-cacher-ng (started and enabled at install, by its systemd unit or its
    init script) listens on every address unguarded and would hold the port: stop it, and keep it
    from starting at boot. Returns what was done, or None."""
    if host.systemd_is_init():
        enabled = proc.run(["systemctl", "is-enabled", "--quiet", PACKAGE_SERVICE], timeout=30).ok
        active = proc.run(["systemctl", "is-active", "--quiet", PACKAGE_SERVICE], timeout=30).ok
        if not (enabled or active):
            return None
        result = proc.run(["systemctl", "disable", "--now", PACKAGE_SERVICE], timeout=60)
        if not result.ok:
            raise HostError(f"cannot stop the package's own {PACKAGE_SERVICE}: {result.describe()}")
        return f"stopped and disabled {PACKAGE_SERVICE} (it listens on every address)"
    done = []
    pid = running_pid(PACKAGE_PID_FILE)
    if pid is not None:
        _stop(pid, PACKAGE_PID_FILE)
        done.append(f"stopped the package's own apt-cacher-ng (pid {pid}; it listens on every address)")
    if any(Path("/etc").glob("rc[2-5].d/S*apt-cacher-ng")):
        result = proc.run(["update-rc.d", "apt-cacher-ng", "disable"], timeout=60)
        if not result.ok:
            raise HostError(f"cannot disable the package's own apt-cacher-ng init script: {result.describe()}")
        done.append("disabled the package's init script /etc/init.d/apt-cacher-ng")
    return "; ".join(done) or None


def _wait_listening(timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not listening():
        if time.monotonic() > deadline:
            raise HostError(f"apt-cacher-ng did not answer on port {PORT} within {timeout:.0f}s{_log_tail()}")
        time.sleep(0.3)


def _stop(pid: int, pid_file: Path = PID_FILE) -> None:
    argv = ["start-stop-daemon", "--stop", "--quiet", "--retry", "TERM/10/KILL/5", "--pidfile", str(pid_file)]
    result = proc.run([*argv, "--exec", DAEMON], timeout=60)
    if not result.ok:
        raise HostError(f"cannot stop apt-cacher-ng (pid {pid}): {result.describe()}")


def _start() -> None:
    RUN_DIR.mkdir(mode=0o755, exist_ok=True)
    BUNDLES_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    shutil.chown(RUN_DIR, USER, USER)
    argv = ["start-stop-daemon", "--start", "--quiet", "--chuid", f"{USER}:{USER}", "--pidfile", str(PID_FILE)]
    result = proc.run([*argv, "--exec", DAEMON, "--", "-c", str(CONFIG_DIR)], timeout=60)
    if not result.ok:
        raise HostError(f"cannot start apt-cacher-ng: {result.describe()}{_log_tail()}")
    _wait_listening()


def ensure_running() -> str:
    """Start the package cache and its firewall when needed (idempotent). Returns what it did, in words.

    Already running with the current configuration: the firewall is reloaded (atomically) and
    nothing else happens. A changed configuration restarts the daemon."""
    if os.geteuid() != 0:
        raise HostError("starting the package cache needs root: run `sudo harness host setup`.")
    changed = _write_config()
    _apply_firewall()  # before the daemon listens: it binds every address
    notes = [n for n in (_disable_package_service(),) if n]
    pid = running_pid()
    if pid is not None and not changed:
        _wait_listening()
        done = "already running"
    else:
        if pid is not None:
            _stop(pid)
        elif listening():
            raise HostError(
                f"port {PORT} is taken by another program (`ss -ltnp 'sport = {PORT}'` names it): stop it, "
                "the harness runs its own apt-cacher-ng there."
            )
        _start()
        done = "restarted (configuration changed)" if pid is not None else "started"
    what = f"apt-cacher-ng {done} on port {PORT}, guarded by nftables table {NFT_TABLE}"
    return "; ".join([what, *notes])
