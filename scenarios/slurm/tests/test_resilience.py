"""Disruptive checks, marked `disturbing`: `harness verify` runs them after the others (whose quick
verdict comes first) and `--quick` leaves them out. What a cluster must ride out on its own: a job
survives a restart of slurmctld; a rebooted gpu node comes back idle with its NFS mounts; slurmd
stopped marks its node down and, started again, the node returns by itself; the NFS server restarts
under its clients. No test repairs what it checks: a node that needs an admin to come back fails."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from conftest import TEST_USER, as_user, poll

from harness.pytest_plugin import journal

# Each test reboots a node, restarts or stops a daemon: every test of this module disturbs the cluster.
pytestmark = pytest.mark.disturbing

LOGIN = "login01"
# Under TCG (1 vCPU nodes) a reboot takes a minute or two; on real hosts far less.
REBOOT_TIMEOUT = 300
FINISHED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY", "BOOT_FAIL")


def _state(cluster: Any, node: str) -> str:
    res = cluster.run(LOGIN, f"sinfo -h -N -n {node} -o %t")
    return res.stdout.strip() if res.ok else ""


def _job(cluster: Any, job: str) -> dict[str, str]:
    """`scontrol show job` as key → value (JobState, Restarts, ExitCode, ...); {} when unknown."""
    res = cluster.run(LOGIN, f"scontrol show job -o {job}")
    return dict(f.split("=", 1) for f in res.stdout.split() if "=" in f) if res.ok else {}


def _node_report(cluster: Any, node: str) -> str:
    res = cluster.run(LOGIN, f"scontrol show node {node}")
    return res.stdout.strip() if res.ok else res.describe()


def test_a_running_job_survives_a_slurmctld_restart(cluster: Any) -> None:
    mgmt = cluster.group("mgmt")[0]
    name = f"survivor-{uuid.uuid4().hex[:8]}"
    job = cluster.check(LOGIN, as_user(f"sbatch --parsable -N1 -t 5 -o {name}.out --wrap 'sleep 45; echo {name}'"))
    job = job.strip().split(";")[0]
    ok, _ = poll(lambda: _job(cluster, job).get("JobState") == "RUNNING", 120, 2)
    assert ok, f"job {job} never ran: {_job(cluster, job)}"
    cluster.check(mgmt, "sudo systemctl restart slurmctld", timeout=120)
    ok, _ = poll(lambda: "is UP" in cluster.run(LOGIN, "scontrol ping").stdout, 120, 2)
    if not ok:
        pytest.fail(
            "slurmctld did not answer after its restart\n" + journal(cluster.host(mgmt), "slurmctld"), pytrace=False
        )
    during = _job(cluster, job).get("JobState")
    assert during in ("RUNNING", "COMPLETING", "COMPLETED"), f"job {job} after the restart: {_job(cluster, job)}"
    ok, info = poll(lambda: (j := _job(cluster, job)).get("JobState") in FINISHED and j, 180, 3)
    assert ok and info["JobState"] == "COMPLETED" and info.get("ExitCode") == "0:0", f"job {job}: {info}"
    assert info.get("Restarts") == "0", f"job {job} was requeued, not carried through the restart: {info}"
    out = cluster.check(LOGIN, f"sudo cat /home/{TEST_USER}/{name}.out")
    assert out.splitlines() == [name], f"the job's output: {out!r}"


def test_a_rebooted_gpu_node_comes_back_idle_with_its_nfs_mounts(cluster: Any) -> None:
    node = cluster.group("gpu")[0]
    server = cluster.private_ip(cluster.group("mgmt")[0])
    boot_id = cluster.check(node, "cat /proc/sys/kernel/random/boot_id").strip()
    rebooted_at = int(cluster.check(LOGIN, "date +%s"))
    cluster.run(node, "sudo systemd-run --on-active=2 systemctl reboot")  # returns before the node goes

    def new_boot() -> bool:
        res = cluster.run(node, "cat /proc/sys/kernel/random/boot_id", timeout=30)
        return res.ok and res.stdout.strip() != boot_id

    ok, _ = poll(new_boot, REBOOT_TIMEOUT, 10)
    assert ok, f"{node} did not come back within {REBOOT_TIMEOUT} s of its reboot"
    wanted = {path: [f"{server}:{path}", "nfs4"] for path in ("/home", "/shared")}

    def mounts() -> dict[str, list[str]]:
        return {p: cluster.run(node, f"findmnt -n -o SOURCE,FSTYPE {p}").stdout.split() for p in wanted}

    ok, _ = poll(lambda: mounts() == wanted, 90)  # the boot may still be mounting them
    assert ok, f"NFS mounts on {node} 90 s after it answered again: {mounts()}, wanted {wanted}"

    def registered_since_reboot() -> bool:
        started = f"scontrol show node {node} | grep -o 'SlurmdStartTime=[^ ]*' | cut -d= -f2"
        since = cluster.run(LOGIN, f'date -d "$({started})" +%s')
        return since.ok and since.stdout.strip().isdigit() and int(since.stdout) >= rebooted_at

    ok, _ = poll(lambda: registered_since_reboot() and _state(cluster, node) == "idle", 180)
    if not ok:
        pytest.fail(
            f"{node} is {_state(cluster, node)!r} after its reboot, not idle:\n{_node_report(cluster, node)}\n"
            + journal(cluster.host(node), "slurmd"),
            pytrace=False,
        )


def test_stopped_slurmd_marks_the_node_down_and_back(cluster: Any) -> None:
    node = cluster.group("gpu")[-1]
    cluster.check(node, "sudo systemctl stop slurmd")
    try:
        ok, _ = poll(lambda: _state(cluster, node).startswith("down"), 120)
        assert ok, f"{node} still {_state(cluster, node)!r} 120 s after slurmd stopped"
    finally:
        cluster.check(node, "sudo systemctl start slurmd")
    # The node must return by itself (ReturnToService): nobody resumes it here.
    ok, _ = poll(lambda: _state(cluster, node) == "idle", 120)
    if not ok:
        pytest.fail(
            f"{node} is {_state(cluster, node)!r}, not idle, 120 s after slurmd started again "
            f"(it must return without `scontrol update state=resume`):\n{_node_report(cluster, node)}\n"
            + journal(cluster.host(node), "slurmd"),
            pytrace=False,
        )


def test_nfs_mount_survives_a_server_restart(cluster: Any) -> None:
    mgmt = cluster.group("mgmt")[0]
    client = cluster.group("gpu")[0]
    cluster.check(mgmt, "sudo systemctl restart nfs-server")
    name = f"/home/{TEST_USER}/after-restart-{uuid.uuid4().hex[:8]}"
    cluster.check(client, f"sudo -u {TEST_USER} sh -c 'echo survived > {name}'", timeout=240)
    ok, content = poll(lambda: cluster.run(LOGIN, f"sudo cat {name}").stdout.strip(), 120)
    assert ok and content == "survived"
    assert cluster.check(client, "findmnt -n -o FSTYPE /home").strip() == "nfs4"
