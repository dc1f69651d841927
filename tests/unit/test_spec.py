from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import SpecError
from harness.spec import find_scenario, load_scenario, parse_scenario

FIX = Path(__file__).parent.parent / "fixtures" / "scenarios"


def problems_of(path: Path) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_scenario(path.read_text(), path)
    return info.value.problems


def test_full_scenario_expands_counts_and_resolves_paths() -> None:
    sc = parse_scenario((FIX / "valid" / "full.yml").read_text(), FIX / "valid" / "full.yml")
    nodes = sc.expanded_nodes()
    assert [n.name for n in nodes] == ["login01", "mgmt01", "gpu01", "gpu02"]
    assert nodes[1].groups == ("mgmt", "monitoring") and nodes[1].memory == 2048 and nodes[1].disk == 20
    assert nodes[2].gpus == 2 and nodes[3].groups == ("gpu",)
    assert str(sc.network.subnet) == "10.77.3.0/24"
    assert sc.provision is not None
    assert sc.resolve(sc.provision.playbook) == (FIX / "valid" / "playbook.yml").resolve()
    assert sc.provision.roles_path == [Path("roles")]
    assert sc.provision.extra_vars == {"cluster_domain": "example.test"}


def test_defaults_are_applied_once() -> None:
    sc = parse_scenario((FIX / "valid" / "minimal.yml").read_text(), FIX / "valid" / "minimal.yml")
    (node,) = sc.expanded_nodes()
    assert (node.name, node.cpus, node.memory, node.disk, node.gpus, node.groups) == ("node1", 1, 1024, 8, 0, ())
    assert sc.box == "harness/debian12" and sc.network.subnet is None and sc.provision is None


def test_pci_addresses_are_normalized() -> None:
    sc = parse_scenario((FIX / "valid" / "passthrough.yml").read_text(), FIX / "valid" / "passthrough.yml")
    gpu01, gpu02 = sc.expanded_nodes()[1:]
    assert gpu01.gpus == ["0000:08:00.0", "0000:09:00.0"]
    assert gpu02.gpus == "auto"


def test_every_schema_error_is_reported_with_its_key_path() -> None:
    problems = problems_of(FIX / "invalid" / "many_errors.yml")
    paths = [p.split(":", 1)[0] for p in problems]
    assert paths == [
        "name",
        "nodes[0].memory",
        "nodes[1].cpus",
        "nodes[1].gpus",
        "nodes[1].count",
        "nodes[2].colour",
        "network.subnet",
    ]
    assert any("unknown key" in p for p in problems)
    assert any("'zz:00.0' is not a PCI address" in p for p in problems)


def test_semantic_errors_are_all_reported() -> None:
    problems = problems_of(FIX / "invalid" / "duplicates.yml")
    text = "\n".join(problems)
    assert "nodes[1].name: node 'gpu01' is also defined by nodes[0]" in text
    assert "nodes[2].gpus: only nodes in group 'gpu'" in text
    assert "provision.playbook:" in text and "nope.yml does not exist" in text
    assert "provision.roles_path[0]:" in text and "tests:" in text
    assert len(problems) == 5


def test_yaml_syntax_error_names_the_line() -> None:
    (problem,) = problems_of(FIX / "invalid" / "syntax.yml")
    assert problem.startswith("YAML syntax error at line 5, column 9")


def test_top_level_must_be_a_mapping() -> None:
    assert problems_of(FIX / "invalid" / "not_mapping.yml") == [
        "(top level): expected a mapping with keys name, nodes, ..."
    ]


@pytest.mark.parametrize(
    ("yaml_text", "fragment"),
    [
        ("name: x\nnodes: []\n", "nodes: List should have at least 1 item"),
        ("name: x\nnodes:\n  - name: a\nnetwork:\n  subnet: 10.0.0.0/30\n", "must be /28 or larger"),
        ("name: x\nnodes:\n  - name: a\n    groups: [slurm:master]\n", "group names are letters, digits"),
        ("name: x\nnodes:\n  - name: a\n    groups: [all]\n", "'all' is reserved by Ansible"),
        ("name: x\nnodes:\n  - name: a\n    gpus: 99\n", "between 0 and 16"),
        ("name: x\nsource: y\nnodes:\n  - name: a\n", "source: unknown key"),
    ],
)
def test_single_problems(tmp_path: Path, yaml_text: str, fragment: str) -> None:
    f = tmp_path / "s.yml"
    f.write_text(yaml_text)
    with pytest.raises(SpecError) as info:
        parse_scenario(yaml_text, f)
    assert any(fragment in p for p in info.value.problems), info.value.problems


def test_scenario_names_and_paths_resolve(tmp_path: Path) -> None:
    d = tmp_path / "scenarios" / "demo"
    d.mkdir(parents=True)
    (d / "scenario.yml").write_text("name: demo\nnodes:\n  - name: a\n")
    assert find_scenario("demo", [tmp_path / "scenarios"]) == d / "scenario.yml"
    assert find_scenario(str(d), []) == d / "scenario.yml"
    assert load_scenario(str(d / "scenario.yml"), []).name == "demo"
    with pytest.raises(SpecError) as info:
        find_scenario("nope", [tmp_path / "scenarios"])
    assert "known names: demo" in info.value.problems[0]


def test_dashed_group_names_are_taken_as_ansible_takes_them(tmp_path: Path) -> None:
    text = "name: x\nnodes:\n  - name: a\n    groups: [slurm-master, kube-node]\ngroups:\n  k8s.workers: [a]\n"
    sc = parse_scenario(text, tmp_path / "s.yml")
    assert sc.expanded_nodes()[0].groups == ("slurm-master", "kube-node")
    assert list(sc.groups) == ["k8s.workers"]


def test_side_effect_and_cleanup_playbooks_are_checked_like_prepare(tmp_path: Path) -> None:
    """Molecule's side_effect and cleanup: every missing playbook is named under its key, at once."""
    (tmp_path / "site.yml").write_text("- hosts: all\n")
    (tmp_path / "disturb.yml").write_text("- hosts: all\n")
    text = (
        "name: t\nnodes:\n  - name: a\nprovision:\n  playbook: site.yml\n"
        "  side_effect: [disturb.yml, gone.yml]\n  cleanup: [tidy.yml]\n"
    )
    with pytest.raises(SpecError) as info:
        parse_scenario(text, tmp_path / "s.yml")
    assert len(info.value.problems) == 2
    assert info.value.problems[0].startswith("provision.side_effect[1]: ")
    assert info.value.problems[0].endswith("gone.yml does not exist")
    assert info.value.problems[1].startswith("provision.cleanup[0]: ")
    (tmp_path / "gone.yml").write_text("- hosts: all\n")
    (tmp_path / "tidy.yml").write_text("- hosts: all\n")
    prov = parse_scenario(text, tmp_path / "s.yml").provision
    assert prov is not None and prov.side_effect == [Path("disturb.yml"), Path("gone.yml")]
    assert prov.cleanup == [Path("tidy.yml")]
