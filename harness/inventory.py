"""The Ansible inventory of a live cluster: written once per run, read by Ansible and testinfra alike.

Connection details come from `vagrant ssh-config`; groups and per-node facts (private IP, GPUs,
CPUs, memory) come from the scenario and the provider. The file is the standard Ansible YAML
inventory format, so `ansible-inventory -i FILE --list` and testinfra's `ansible://` backend
both read it unchanged.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness import proc, ssh, tools
from harness.errors import ProviderError, SpecError
from harness.spec import BUILTIN_GROUPS, Node, load_yaml

log = logging.getLogger(__name__)

SSH_COMMON_ARGS = ssh.command_line(ssh.NODE_TRUST)
PYTHON_INTERPRETER = "/usr/bin/python3"


@dataclass(frozen=True)
class HostConnection:
    """How to reach one node over SSH, as `vagrant ssh-config` reports it."""

    name: str
    host: str
    port: int
    user: str
    private_key: Path


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def _split_option(line: str) -> tuple[str, str]:
    """`Key value`, `Key=value` or `Key = value` → (lowercased key, value)."""
    head, _, rest = line.partition(" ")
    if "=" in head:
        key, _, value = line.partition("=")
    elif rest.lstrip().startswith("="):
        key, value = head, rest.lstrip()[1:]
    else:
        key, value = head, rest
    return key.strip().lower(), _unquote(value)


def parse_ssh_config(text: str) -> dict[str, HostConnection]:
    """Parse `vagrant ssh-config` output into one HostConnection per `Host` block.

    HostName defaults to the host alias and Port to 22; the first IdentityFile wins. A block
    without User or IdentityFile means Vagrant could not describe the machine: ProviderError.
    """
    blocks: list[tuple[str, dict[str, str]]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, value = _split_option(line)
        if key == "host":
            blocks.append((value.split()[0] if value.split() else "", {}))
        elif blocks:
            blocks[-1][1].setdefault(key, value)
    out: dict[str, HostConnection] = {}
    problems: list[str] = []
    for name, opts in blocks:
        if not name or name == "*":
            continue
        missing = [k for k in ("user", "identityfile") if not opts.get(k)]
        if missing:
            problems.append(f"Host {name}: no {' or '.join(missing)} (is the machine running?)")
            continue
        try:
            port = int(opts.get("port", "22"))
        except ValueError:
            problems.append(f"Host {name}: Port {opts['port']!r} is not a number")
            continue
        key_file = Path(os.path.expanduser(opts["identityfile"]))
        out[name] = HostConnection(
            name=name, host=opts.get("hostname", name), port=port, user=opts["user"], private_key=key_file
        )
    if problems:
        raise ProviderError("`vagrant ssh-config` output is incomplete:\n  - " + "\n  - ".join(problems))
    return out


def build_inventory(
    nodes: Iterable[Node],
    connections: Mapping[str, HostConnection],
    private_ips: Mapping[str, str],
    gpus: Mapping[str, list[str]],
    extra_groups: Mapping[str, list[str]] | None,
    cluster_vars: Mapping[str, Any],
) -> dict[str, Any]:
    """The inventory dict for a live cluster.

    Every node needs a connection and a private IP (ProviderError otherwise: the cluster is not
    fully up). Groups are the built-in ones (always present, possibly empty), the groups each
    node lists, and `extra_groups` (group → node names; unknown names are a SpecError).
    """
    nodes = list(nodes)
    names = [n.name for n in nodes]
    missing = [n for n in names if n not in connections]
    no_ip = [n for n in names if n not in private_ips]
    if missing or no_ip:
        parts = []
        if missing:
            parts.append(f"no SSH details for {', '.join(missing)}")
        if no_ip:
            parts.append(f"no private IP for {', '.join(no_ip)}")
        raise ProviderError("; ".join(parts) + ". Is every machine up? Check `vagrant status` in the run directory.")

    hosts: dict[str, dict[str, Any]] = {}
    groups: dict[str, dict[str, dict[str, Any]]] = {g: {} for g in BUILTIN_GROUPS}
    for node in nodes:
        conn = connections[node.name]
        hosts[node.name] = {
            "ansible_host": conn.host,
            "ansible_port": conn.port,
            "ansible_user": conn.user,
            "ansible_ssh_private_key_file": str(conn.private_key),
            "harness_private_ip": private_ips[node.name],
            "harness_gpus": list(gpus.get(node.name, [])),
            "harness_cpus": node.cpus,
            "harness_memory_mib": node.memory,
        }
        for group in node.groups:
            groups.setdefault(group, {})[node.name] = {}

    problems = []
    for group, members in (extra_groups or {}).items():
        unknown = [m for m in members if m not in hosts]
        if unknown:
            problems.append(f"group {group!r}: unknown node(s) {', '.join(unknown)}; nodes are {', '.join(names)}")
        if group in hosts:
            problems.append(f"group {group!r}: a group cannot have the same name as a node")
        for member in members:
            if member in hosts:
                groups.setdefault(group, {})[member] = {}
    if problems:
        raise SpecError("inventory groups", problems)

    all_vars = {
        **cluster_vars,
        "ansible_ssh_common_args": SSH_COMMON_ARGS,
        "ansible_python_interpreter": PYTHON_INTERPRETER,
    }
    children = {g: {"hosts": members} for g, members in groups.items()}
    return {"all": {"vars": all_vars, "hosts": hosts, "children": children}}


def write_inventory(inv: Mapping[str, Any], path: Path) -> Path:
    """Write the inventory as YAML (atomically) and return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "# Written by the harness for this run; Ansible and testinfra both read it.\n"
    text += yaml.safe_dump(dict(inv), sort_keys=False, default_flow_style=False)
    fd, tmp = tempfile.mkstemp(prefix=".inventory-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    log.debug("wrote inventory %s", path)
    return path


def load_inventory(path: Path) -> dict[str, Any]:
    """Read an inventory written by write_inventory (or any YAML inventory with an `all` group)."""
    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SpecError(str(path), [f"cannot read: {exc.strerror}"]) from exc
    except UnicodeDecodeError as exc:
        raise SpecError(str(path), [f"not a YAML text file: byte {exc.start} is not UTF-8 ({exc.reason})"]) from exc
    except yaml.YAMLError as exc:
        raise SpecError(str(path), [f"not valid YAML: {exc}"]) from exc
    if not isinstance(data, dict) or not isinstance(data.get("all"), dict):
        raise SpecError(str(path), ["not an Ansible YAML inventory: expected a mapping with an 'all' group"])
    return data


def known_groups(inv: Mapping[str, Any]) -> list[str]:
    """Every group the inventory defines under `all` (nested ones too), sorted; `all` itself not listed."""
    names: set[str] = set()
    stack: list[Mapping[str, Any]] = [inv.get("all") or {}]
    while stack:
        children = stack.pop().get("children") or {}
        names.update(children)
        stack.extend(c for c in children.values() if isinstance(c, Mapping))
    return sorted(names)


def _group_node(inv: Mapping[str, Any], group: str) -> Mapping[str, Any] | None:
    """Find a group's mapping anywhere under `all` (groups may nest through `children`)."""
    stack: list[Mapping[str, Any]] = [inv.get("all") or {}]
    while stack:
        node = stack.pop()
        children = node.get("children") or {}
        if group in children:
            found = children[group]
            return found if isinstance(found, Mapping) else {}
        stack.extend(c for c in children.values() if isinstance(c, Mapping))
    return None


def _hosts_under(group: Mapping[str, Any]) -> list[str]:
    out = list((group.get("hosts") or {}).keys())
    for child in (group.get("children") or {}).values():
        if isinstance(child, Mapping):
            out.extend(_hosts_under(child))
    return out


def hosts_in_group(inv: Mapping[str, Any], group: str) -> list[str]:
    """Host names in `group` (including nested child groups), in inventory order, no duplicates.

    `all` gives every host; an unknown group gives an empty list, as in Ansible.
    """
    node = (inv.get("all") or {}) if group == "all" else _group_node(inv, group)
    if node is None:
        return []
    return list(dict.fromkeys(_hosts_under(node)))


def _group_tree(listed: Mapping[str, Any], name: str, seen: frozenset[str] = frozenset()) -> dict[str, Any]:
    group = listed.get(name) or {}
    node: dict[str, Any] = {"hosts": {h: {} for h in group.get("hosts") or []}}
    children = [c for c in group.get("children") or [] if c not in seen and c in listed]
    if children:
        node["children"] = {c: _group_tree(listed, c, seen | {name}) for c in children}
    return node


def resolve_inventory(path: Path, limit: str | None = None) -> dict[str, Any]:
    """Any inventory Ansible reads (YAML, INI, a directory with group_vars/ and host_vars/) as
    Ansible resolves it (`ansible-inventory --list`, only the hosts `limit` selects when given), in
    write_inventory's shape: every host under `all.hosts` with its merged variables (group vars
    included; Jinja2 in them left as written), the groups under `all.children`. SpecError when
    Ansible reads no host from it."""
    argv = [tools.find("ansible-inventory"), "-i", str(path), "--list"] + (["--limit", limit] if limit else [])
    result = proc.run(argv, env={"ANSIBLE_VERBOSITY": "0", "ANSIBLE_NOCOLOR": "1"}, timeout=300)
    try:
        listed = json.loads(result.stdout) if result.ok else None
    except ValueError:
        listed = None
    if not isinstance(listed, dict):
        raise SpecError(str(path), [f"ansible-inventory cannot read it: {result.describe()}"])
    hostvars = (listed.get("_meta") or {}).get("hostvars") or {}
    tree = _group_tree(listed, "all")
    children = {g: t for g, t in (tree.get("children") or {}).items() if g != "ungrouped"}
    hosts = list(dict.fromkeys([*_hosts_under(tree), *hostvars]))
    if not hosts:
        why = f"no host matches --limit {limit!r}" if limit else "Ansible reads no host from it (see the warnings)"
        warnings = [line for line in result.stderr.splitlines() if "WARNING" in line][:5]
        raise SpecError(str(path), [why, *warnings])
    return {"all": {"hosts": {h: dict(hostvars.get(h) or {}) for h in hosts}, "children": children}}


def _subscript(hosts: list[str], start: str, end: str | None) -> list[str]:
    """Ansible's `group[i]` and `group[i:j]` (j included, as Ansible counts)."""
    first = int(start)
    if end is None:
        return hosts[first : first + 1 or None]
    return hosts[first : (int(end) + 1 or None) if end else None]


def _pattern_term(inv: Mapping[str, Any], term: str) -> list[str]:
    """The hosts one term of a host pattern names: all, a group, a host, a glob or `~regex`."""
    sliced = None if term[0] == "~" else re.fullmatch(r"(.+?)\[(-?\d+)(?::(-?\d*))?\]", term)
    if sliced:
        return _subscript(_pattern_term(inv, sliced[1]), sliced[2], sliced[3])
    everyone = hosts_in_group(inv, "all")
    if term in ("all", "*"):
        return everyone
    groups = known_groups(inv)
    if term in groups:
        return hosts_in_group(inv, term)
    if term in everyone:
        return [term]
    try:
        regex = re.compile(term[1:]) if term[0] == "~" else None
    except re.error:
        return []

    def matches(name: str) -> bool:
        return regex.search(name) is not None if regex is not None else fnmatch.fnmatchcase(name, term)

    found = [h for g in groups if matches(g) for h in hosts_in_group(inv, g)]
    return list(dict.fromkeys([*found, *(h for h in everyone if matches(h))]))


def hosts_matching(inv: Mapping[str, Any], pattern: str) -> list[str] | None:
    """The hosts an Ansible host pattern (`all:!head`, `compute,login*`, `web:&gpu`, `nodes[0:2]`)
    selects in an inventory of write_inventory's shape, in inventory order; None for a pattern
    that only a run works out (Jinja2 in it)."""
    if "{{" in pattern or "{%" in pattern:
        return None
    terms = [t.strip() for t in (pattern.split(",") if "," in pattern else re.split(r":(?![^\[]*\])", pattern))]
    terms = [t for t in terms if t]
    # As Ansible orders them: the plain terms, then the intersections (&), then the exclusions (!).
    ordered = sorted(terms, key=lambda t: {"&": 1, "!": 2}.get(t[0], 0))
    hosts: list[str] = []
    for term in ordered:
        if term[0] == "&":
            keep = set(_pattern_term(inv, term[1:]))
            hosts = [h for h in hosts if h in keep]
        elif term[0] == "!":
            drop = set(_pattern_term(inv, term[1:]))
            hosts = [h for h in hosts if h not in drop]
        else:
            hosts = list(dict.fromkeys([*hosts, *_pattern_term(inv, term)]))
    return hosts
