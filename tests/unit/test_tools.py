from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from harness import proc, tools
from harness.errors import HostError


def _exe(path: Path) -> Path:
    path.write_text("#!/bin/sh\necho from-$0\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_own_environment_comes_before_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    venv_bin, other = tmp_path / "venv" / "bin", tmp_path / "other"
    venv_bin.mkdir(parents=True)
    other.mkdir()
    _exe(venv_bin / "ansible-playbook")
    _exe(other / "ansible-playbook")
    monkeypatch.setattr(sys, "executable", str(venv_bin / "python"))
    monkeypatch.setenv("PATH", str(other))
    assert tools.find("ansible-playbook") == str(venv_bin / "ansible-playbook")


def test_tools_are_found_with_a_fresh_root_shells_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # What `.venv/bin/harness` sees from a plain root shell: the venv is not on PATH.
    venv_bin = tmp_path / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    _exe(venv_bin / "ansible-playbook")
    monkeypatch.setattr(sys, "executable", str(venv_bin / "python"))
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    result = proc.run(["ansible-playbook"])
    assert result.ok, result.describe()
    assert "from-" in result.stdout


def test_system_dirs_are_searched_even_when_path_lacks_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    path = tools.search_path().split(os.pathsep)
    assert "/usr/sbin" in path and "/sbin" in path


def test_a_missing_tool_names_what_installs_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(tools, "SYSTEM_DIRS", ())
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(HostError, match=r"debootstrap.*apt package debootstrap"):
        tools.find("debootstrap")
    assert {t.name for t in tools.missing()} == {t.name for t in tools.TOOLS}
