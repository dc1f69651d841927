"""The cluster as a whole (the `cluster` fixture; run once, not per node): munge across nodes,
Slurm scheduling, jobs writing to NFS, Lmod modules in jobs, Prometheus."""

from __future__ import annotations

import json
import re
import shlex
import uuid
from typing import Any

import pytest
from conftest import TEST_USER, as_user, poll

from harness.pytest_plugin import journal

LOGIN = "login01"
JOB_TIMEOUT = 240


def _job_output(cluster: Any, path: str) -> tuple[bool, str]:
    """Wait for a job's output file in an NFS home, read where the export lives (the mgmt node).
    Polling from an NFS client instead waits out its attribute cache: a client that looked up the
    name before the job wrote it trusts that miss until the directory's cached attributes expire
    (acdirmin 30 s, up to acdirmax 60 s). That is NFS, not the cluster: it made these tests 30-70 s."""
    server = cluster.group("mgmt")[0]
    ok, content = poll(lambda: cluster.run(server, f"sudo cat {path}").stdout.strip(), JOB_TIMEOUT, interval=2.0)
    return ok, str(content or "")


def _node_states(cluster: Any) -> dict[str, str]:
    res = cluster.run(LOGIN, "sinfo -h -N -o '%N %t'")
    return dict(line.split()[:2] for line in res.stdout.splitlines() if len(line.split()) >= 2) if res.ok else {}


def test_munge_credential_decodes_on_another_node(cluster: Any) -> None:
    credential = cluster.check(LOGIN, "munge -n").strip()
    assert credential.startswith("MUNGE:")
    out = cluster.check(cluster.group("gpu")[-1], f"echo {shlex.quote(credential)} | unmunge")
    assert re.search(r"^STATUS:\s+Success \(0\)", out, re.M), out


def test_munge_key_is_the_same_everywhere(cluster: Any) -> None:
    digests = {n: cluster.check(n, "sudo sha256sum /etc/munge/munge.key").split()[0] for n in cluster.nodes}
    assert len(set(digests.values())) == 1, "munge keys differ (digests shown): " + str(digests)


def test_slurm_conf_is_the_same_everywhere(cluster: Any) -> None:
    digests = {n: cluster.check(n, "sha256sum /etc/slurm/slurm.conf").split()[0] for n in cluster.nodes}
    assert len(set(digests.values())) == 1, f"slurm.conf differs: {digests}"


def test_sinfo_shows_every_gpu_node_idle(cluster: Any) -> None:
    gpus = cluster.group("gpu")
    ok, states = poll(lambda: (s := _node_states(cluster)) and all(s.get(n) == "idle" for n in gpus) and s, 120)
    if not ok:
        pytest.fail(
            f"gpu nodes not all idle after 120 s: {_node_states(cluster)}\n"
            + journal(cluster.host(cluster.group("mgmt")[0]), "slurmctld"),
            pytrace=False,
        )
    assert set(gpus) <= set(states)


def test_srun_on_both_gpu_nodes(cluster: Any) -> None:
    gpus = cluster.group("gpu")
    out = cluster.check(LOGIN, as_user(f"srun -N{len(gpus)} -t 5 hostname"), timeout=JOB_TIMEOUT)
    assert sorted(out.split()) == sorted(gpus)


def test_batch_job_writes_to_its_nfs_home(cluster: Any) -> None:
    name = f"job-{uuid.uuid4().hex[:8]}.out"
    node = cluster.group("gpu")[0]
    job = cluster.check(LOGIN, as_user(f"sbatch --parsable -w {node} -t 5 --wrap 'hostname > $HOME/{name}'"))
    path = f"/home/{TEST_USER}/{name}"
    ok, content = _job_output(cluster, path)
    if not ok:
        info = cluster.run(LOGIN, f"scontrol show job {job.strip()}").stdout
        pytest.fail(f"{path} did not appear on the NFS server within {JOB_TIMEOUT} s\n{info}", pytrace=False)
    assert content == node


def test_shared_module_loads_in_a_job(cluster: Any) -> None:
    tag = uuid.uuid4().hex[:8]
    sw = f"/shared/sw/hxtest/{tag}"
    module_file = f"/shared/modules/hxtest/{tag}.lua"
    lua = f'whatis("harness test module")\nsetenv("HXTEST_HOME", "{sw}")\nprepend_path("PATH", "{sw}/bin")\n'
    tool = "#!/bin/sh\necho hxtest-$HXTEST_HOME\n"
    cluster.check(
        LOGIN,
        f"sudo install -d -m 0755 {sw}/bin /shared/modules/hxtest"
        f" && printf %s {shlex.quote(tool)} | sudo tee {sw}/bin/hxtest >/dev/null && sudo chmod 0755 {sw}/bin/hxtest"
        f" && printf %s {shlex.quote(lua)} | sudo tee {module_file} >/dev/null",
    )
    node = cluster.group("gpu")[-1]
    out_name = f"module-{tag}.out"
    script = f"#!/bin/bash -l\nmodule load hxtest/{tag} && hxtest > $HOME/{out_name} 2>&1\n"
    cluster.check(LOGIN, f"printf %s {shlex.quote(script)} | " + as_user(f"sbatch --parsable -w {node} -t 5"))
    path = f"/home/{TEST_USER}/{out_name}"
    ok, content = _job_output(cluster, path)
    assert ok, f"{path} did not appear on the NFS server within {JOB_TIMEOUT} s"
    assert content == f"hxtest-{sw}"


def test_prometheus_sees_every_node_exporter(cluster: Any) -> None:
    mgmt = cluster.group("mgmt")[0]
    targets = {f"{cluster.private_ip(n)}:9100": n for n in cluster.nodes}

    def up() -> dict[str, str]:
        res = cluster.run(mgmt, "curl -sf 'http://localhost:9090/api/v1/query?query=up'")
        if not res.ok:
            return {}
        result = json.loads(res.stdout)["data"]["result"]
        values = {r["metric"]["instance"]: r["value"][1] for r in result}
        return values if all(values.get(t) == "1" for t in targets) else {}

    ok, _ = poll(up, 120)
    if not ok:
        res = cluster.run(mgmt, "curl -s 'http://localhost:9090/api/v1/query?query=up'")
        pytest.fail(
            f"not every exporter is up: {res.stdout}\n" + journal(cluster.host(mgmt), "prometheus"), pytrace=False
        )


def test_job_steps_run_confined_in_their_own_cgroup(cluster: Any) -> None:
    """proctrack/cgroup + task/cgroup: a job step's processes live in the job's cgroup (v2)."""
    out = cluster.check(LOGIN, as_user("srun -N1 -t 5 cat /proc/self/cgroup"), timeout=JOB_TIMEOUT)
    assert re.search(r"^0::/.*/job_\d+/step_\d+", out, re.M), f"job step not in a Slurm job cgroup: {out!r}"
