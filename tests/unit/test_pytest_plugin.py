"""The harness pytest plugin's `groups` marker: per-node tests collected only for nodes of the named
groups. Runs a real inner pytest session with testinfra's ssh backend (hosts are never contacted:
collection alone decides)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

pytest_plugins = ["pytester"]

INVENTORY = {
    "all": {
        "hosts": {"login01": {}, "mgmt01": {}, "gpu01": {}, "gpu02": {}},
        "children": {
            "login": {"hosts": {"login01": {}}},
            "mgmt": {"hosts": {"mgmt01": {}}},
            "gpu": {"hosts": {"gpu01": {}, "gpu02": {}}},
            "compute": {"children": {"gpu": {"hosts": {"gpu01": {}, "gpu02": {}}}}},
        },
    }
}
HOSTS = "--hosts=ssh://login01,ssh://mgmt01,ssh://gpu01,ssh://gpu02"


@pytest.fixture
def inner(pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    inv = tmp_path / "inventory.yml"
    inv.write_text(yaml.safe_dump(INVENTORY))
    monkeypatch.setenv("HARNESS_INVENTORY", str(inv))
    return pytester


def _collected(result: pytest.RunResult) -> list[str]:
    return sorted(line.strip() for line in result.outlines if "::" in line and "[ssh://" in line)


def test_marked_tests_are_collected_only_for_nodes_of_their_groups(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        test_x="""
        import pytest

        @pytest.mark.groups("mgmt")
        def test_exports(host): pass

        @pytest.mark.groups("login", "compute")
        def test_mounts(host): pass

        def test_everywhere(host): pass

        @pytest.mark.groups("gpu")
        def test_cluster_level(): pass
        """
    )
    result = inner.runpytest("-p", "harness.pytest_plugin", HOSTS, "--collect-only", "-q")
    ids = _collected(result)
    assert [i for i in ids if "test_exports" in i] == ["test_x.py::test_exports[ssh://mgmt01]"]
    assert sorted(i.split("[")[1] for i in ids if "test_mounts" in i) == [
        "ssh://gpu01]",
        "ssh://gpu02]",
        "ssh://login01]",
    ]
    assert len([i for i in ids if "test_everywhere" in i]) == 4
    # A test without a node (no `host`) is left alone by the marker.
    assert "test_x.py::test_cluster_level" in result.stdout.str()
    result.stdout.fnmatch_lines(["*9/13 tests collected (4 deselected)*"])


def test_an_unknown_group_is_a_usage_error_not_a_silent_deselection(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        test_y="""
        import pytest

        @pytest.mark.groups("gpus")
        def test_typo(host): pass
        """
    )
    result = inner.runpytest("-p", "harness.pytest_plugin", HOSTS, "--collect-only", "-q")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*must name groups of the inventory; it has: all, compute, gpu, login, mgmt*"])
