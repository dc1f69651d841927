"""roles/common makes every successful apt update touch the stamp that Ansible's apt module reads.

The apt module (`update_cache`, `cache_valid_time`) takes the cache's age from
/var/lib/apt/periodic/update-success-stamp, or without it from the mtime of /var/lib/apt/lists. An
update that finds nothing new (every index a "Hit": a 304 from the package cache or a mirror)
renames nothing into the lists directory, so its mtime stays where it was: after a reset to a
checkpoint more than `cache_valid_time` old (the clocks stepped to the host's), every apt task with
`cache_valid_time` then updated the lists again. Debian installs nothing that writes the stamp;
roles/common installs the hook (as Ubuntu's update-notifier-common does) before its first apt task.
The last test runs the real apt-get against a local HTTP repository (answering 304, or the same
bytes again) and asks the installed apt module's own timestamp function what it sees.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.modules import apt as apt_module

ROLE = Path(__file__).resolve().parents[2] / "roles" / "common"
APT_MODULES = {"apt", "ansible.builtin.apt", "ansible.legacy.apt"}
_BLOCK_KEYS = ("block", "rescue", "always")


def _flatten(items: Any) -> Iterator[dict[str, Any]]:
    for item in items or []:
        if not isinstance(item, dict):
            continue
        if any(k in item for k in _BLOCK_KEYS):
            for key in _BLOCK_KEYS:
                yield from _flatten(item.get(key))
        else:
            yield item


def common_tasks_in_order() -> list[dict[str, Any]]:
    """roles/common's tasks in the order they run (tasks/main.yml's import_tasks followed)."""
    ordered: list[dict[str, Any]] = []
    for task in _flatten(yaml.safe_load((ROLE / "tasks" / "main.yml").read_text())):
        imported = task.get("ansible.builtin.import_tasks")
        if imported:
            ordered += list(_flatten(yaml.safe_load((ROLE / "tasks" / imported).read_text())))
        else:
            ordered.append(task)
    return ordered


def _stamp_task(tasks: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
    found = [
        (i, t["ansible.builtin.copy"])
        for i, t in enumerate(tasks)
        if "_common_apt_update_stamp_conf" in str((t.get("ansible.builtin.copy") or {}).get("dest", ""))
    ]
    assert len(found) == 1, f"roles/common should install the apt update stamp hook once: {found}"
    return found[0]


def stamp_conf_text() -> str:
    return str(_stamp_task(common_tasks_in_order())[1]["content"])


def test_the_hook_is_installed_before_the_first_apt_task() -> None:
    tasks = common_tasks_in_order()
    hook_at, _ = _stamp_task(tasks)
    apt_at = [i for i, t in enumerate(tasks) if APT_MODULES & set(t)]
    assert apt_at, "roles/common has no apt task any more: is this test still needed?"
    assert hook_at < apt_at[0], f"task {tasks[apt_at[0]]['name']!r} runs apt before the stamp hook is there"


def test_the_hook_touches_the_stamp_this_ansible_reads() -> None:
    text = stamp_conf_text()
    stamp = apt_module.APT_UPDATE_SUCCESS_STAMP_PATH
    hooks = re.findall(r'APT::Update::Post-Invoke-Success\s*\{\s*"([^"]*)"\s*;\s*\}\s*;', text)
    assert hooks == [f"touch {stamp} 2>/dev/null || true"], text
    conf = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())["_common_apt_update_stamp_conf"]
    # apt reads a file of apt.conf.d only with no extension or .conf, of [A-Za-z0-9_.-] (apt.conf(5)).
    assert Path(conf).parent == Path("/etc/apt/apt.conf.d"), conf
    assert re.fullmatch(r"[A-Za-z0-9_-]+(\.conf)?", Path(conf).name), conf


class _Quiet(http.server.SimpleHTTPRequestHandler):
    """Answers an unchanged If-Modified-Since with 304, as apt-cacher-ng and mirrors do."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _NoConditional(_Quiet):
    """Ignores If-Modified-Since: the same bytes again, 200 (apt sees they match and counts a Hit)."""

    def send_head(self) -> Any:
        del self.headers["If-Modified-Since"]
        return super().send_head()


@pytest.fixture(params=[_Quiet, _NoConditional], ids=["304", "200-same-bytes"])
def repository(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A flat apt repository served over HTTP on the loopback."""
    repo = tmp_path / "repo"
    repo.mkdir()
    packages = "Package: harness-dummy\nVersion: 1.0\nArchitecture: all\nFilename: ./dummy.deb\nSize: 1\n\n"
    (repo / "Packages").write_text(packages)
    digest = hashlib.sha256(packages.encode()).hexdigest()
    (repo / "Release").write_text(
        f"Date: {time.strftime('%a, %d %b %Y %H:%M:%S UTC', time.gmtime())}\n"
        f"SHA256:\n {digest} {len(packages)} Packages\n"
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(request.param, directory=str(repo)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def _apt_root(tmp_path: Path, url: str, hook: str | None) -> tuple[dict[str, str], Path]:
    """An apt configuration of its own under tmp_path (nothing of the host's /etc/apt or /var/lib/apt)."""
    root = tmp_path / "apt"
    for d in ("lists/partial", "cache/archives/partial", "etc/apt.conf.d", "etc/sources.list.d", "log"):
        (root / d).mkdir(parents=True)
    (root / "status").write_text("")
    (root / "etc" / "sources.list").write_text(f"deb [trusted=yes] {url} ./\n")
    if hook is not None:
        (root / "etc" / "apt.conf.d" / "15common-update-stamp").write_text(hook)
    user = os.environ.get("USER") or "root"
    (root / "apt.conf").write_text(
        "\n".join(
            [
                f'Dir::State "{root}";',
                f'Dir::State::Lists "{root}/lists";',
                f'Dir::State::status "{root}/status";',
                f'Dir::Cache "{root}/cache";',
                f'Dir::Etc "{root}/etc";',
                f'Dir::Etc::parts "{root}/etc/apt.conf.d";',
                f'Dir::Etc::preferencesparts "{root}/etc/preferences.d";',
                f'Dir::Log "{root}/log";',
                f'APT::Sandbox::User "{user if os.geteuid() != 0 else "root"}";',
                'Debug::NoLocking "true";',
                'Acquire::Languages "none";',
                'Acquire::http::Proxy "DIRECT";',
                "",
            ]
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env["APT_CONFIG"] = str(root / "apt.conf")
    return env, root


def _update(env: dict[str, str]) -> None:
    out = subprocess.run(["apt-get", "update"], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0 and "Err:" not in out.stdout, out.stdout + out.stderr


def _module_cache_time(root: Path, stamp: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    """What the installed apt module takes for the cache's age, pointed at this apt root."""
    monkeypatch.setattr(apt_module, "APT_UPDATE_SUCCESS_STAMP_PATH", str(stamp))
    monkeypatch.setattr(apt_module, "APT_LISTS_PATH", str(root / "lists"))
    return int(apt_module.get_updated_cache_time()[1])


@pytest.mark.skipif(shutil.which("apt-get") is None, reason="needs apt-get (a Debian-like host)")
@pytest.mark.parametrize("with_hook", [False, True], ids=["debian-as-shipped", "with-the-role-hook"])
def test_an_update_that_finds_nothing_new_is_seen_only_through_the_stamp(
    tmp_path: Path, repository: str, with_hook: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    stamp = tmp_path / "update-success-stamp"
    hook = stamp_conf_text().replace(apt_module.APT_UPDATE_SUCCESS_STAMP_PATH, str(stamp)) if with_hook else None
    env, root = _apt_root(tmp_path, repository, hook)
    _update(env)
    assert any(p.name.endswith("_Packages") for p in (root / "lists").iterdir()), "the first update fetched nothing"
    # The checkpoint is two hours old and the clock was stepped: lists (and stamp) look old.
    two_hours_ago = time.time() - 7200
    os.utime(root / "lists", (two_hours_ago, two_hours_ago))
    if stamp.exists():
        os.utime(stamp, (two_hours_ago, two_hours_ago))
    before = time.time()
    _update(env)  # nothing new: every index a "Hit", nothing renamed into lists/
    seen = _module_cache_time(root, stamp, monkeypatch)
    if with_hook:
        assert seen >= int(before) - 1, "the stamp was not touched: the next task would update again"
    else:
        assert seen <= int(two_hours_ago) + 1, "lists/ moved: apt now renames into it on a Hit, the hook is moot"
