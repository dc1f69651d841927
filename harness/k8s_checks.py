"""What a Kubernetes scenario test asserts, as plain functions over the client's models (nodes,
pods, DaemonSets, events), and `wait_for`, a deadline around a probe that shows why it gave up.

No network here: harness.k8s_fixtures calls the API and passes the answers in, so the unit tests
feed recorded API responses (tests/fixtures/k8s/) through the same functions.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TypeVar

import pytest
from kubernetes.client import CoreV1EventList, V1DaemonSet, V1Node, V1NodeList, V1Pod, V1PodList

T = TypeVar("T")

# A waiting container with one of these reasons will not get better by itself.
IMAGE_PULL_FAILURES = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"})
STUCK_REASONS = IMAGE_PULL_FAILURES | {"CrashLoopBackOff", "CreateContainerConfigError", "CreateContainerError",
                                       "RunContainerError"}  # fmt: skip
GPU_RESOURCE = "nvidia.com/gpu"


def wait_for(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = 3.0,
    diagnose: Callable[[], str] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call `probe` until it returns something truthy (returned) or `timeout` seconds pass; then fail
    the test saying `what` was awaited, the probe's last answer or error, and `diagnose()` (events,
    logs). An exception of the probe (an API error while the cluster settles) is retried."""
    __tracebackhide__ = True
    deadline = clock() + timeout
    last: object = None
    while True:
        try:
            value = probe()
        except Exception as exc:  # retried until the deadline; shown if it is the last answer
            value, last = None, f"{type(exc).__name__}: {exc}"
        else:
            last = value
        if value:
            return value
        if clock() >= deadline:
            break
        sleep(interval)
    details = diagnose() if diagnose is not None else ""
    pytest.fail(f"gave up after {timeout:.0f} s waiting for {what}; last answer: {last!r}\n{details}".rstrip(),
                pytrace=False)  # fmt: skip


def node_ready(node: V1Node) -> bool:
    conditions = (node.status.conditions if node.status else None) or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def node_names(nodes: V1NodeList) -> list[str]:
    return sorted(n.metadata.name for n in nodes.items if n.metadata and n.metadata.name)


def not_ready(nodes: V1NodeList, expected: Iterable[str]) -> list[str]:
    """The expected nodes that are absent or not Ready ('gpu02 (absent)', 'gpu01 (Ready=False: reason)')."""
    by_name = {n.metadata.name: n for n in nodes.items if n.metadata}
    out: list[str] = []
    for name in sorted(expected):
        node = by_name.get(name)
        if node is None:
            out.append(f"{name} (absent)")
        elif not node_ready(node):
            ready = [c for c in (node.status.conditions if node.status else None) or [] if c.type == "Ready"]
            why = f"Ready={ready[0].status}: {ready[0].reason or ''} {ready[0].message or ''}".strip() if ready else ""
            out.append(f"{name} ({why or 'no Ready condition'})")
    return out


def internal_ip(node: V1Node) -> str | None:
    addresses = (node.status.addresses if node.status else None) or []
    return next((a.address for a in addresses if a.type == "InternalIP"), None)


def gpu_allocatable(node: V1Node) -> int:
    """How many nvidia.com/gpu the node offers (0 before the device plugin registered)."""
    allocatable = (node.status.allocatable if node.status else None) or {}
    return int(allocatable.get(GPU_RESOURCE, "0") or 0)


def node_images(node: V1Node) -> list[str]:
    """The image names the node has (every tag and digest name of every image)."""
    return [name for image in (node.status.images if node.status else None) or [] for name in image.names or []]


def pod_name(pod: V1Pod) -> str:
    meta = pod.metadata
    return f"{meta.namespace}/{meta.name}" if meta else "?"


def pod_problems(pods: V1PodList) -> list[str]:
    """Why pods are not healthy: not Running or Succeeded, a container waiting for a reason that does
    not pass by itself (image pull failures, crash loops), or a running container not ready."""
    out: list[str] = []
    for pod in pods.items:
        status = pod.status
        phase = status.phase if status else None
        statuses = [*(status.init_container_statuses or []), *(status.container_statuses or [])] if status else []
        stuck = [
            f"{c.name}: {c.state.waiting.reason}{': ' + c.state.waiting.message if c.state.waiting.message else ''}"
            for c in statuses
            if c.state and c.state.waiting and c.state.waiting.reason in STUCK_REASONS
        ]
        if stuck:
            out.append(f"{pod_name(pod)}: {'; '.join(stuck)}")
        elif phase == "Succeeded":
            continue
        elif phase != "Running":
            out.append(
                f"{pod_name(pod)}: phase {phase}{' (' + status.reason + ')' if status and status.reason else ''}"
            )
        else:
            unready = [c.name for c in status.container_statuses or [] if not c.ready] if status else []
            if unready:
                out.append(f"{pod_name(pod)}: containers not ready: {', '.join(unready)}")
    return out


def image_pull_failures(pods: V1PodList) -> list[str]:
    """'ns/pod: container image: reason' for every container that cannot get its image."""
    out = []
    for pod in pods.items:
        statuses = (
            [*(pod.status.init_container_statuses or []), *(pod.status.container_statuses or [])] if pod.status else []
        )
        out += [
            f"{pod_name(pod)}: {c.name} {c.image}: {c.state.waiting.reason}"
            for c in statuses
            if c.state and c.state.waiting and c.state.waiting.reason in IMAGE_PULL_FAILURES
        ]
    return out


def daemonset_ready(ds: V1DaemonSet, at_least: int = 1) -> bool:
    """Every scheduled pod of the DaemonSet is ready and up to date, on at least `at_least` nodes."""
    st = ds.status
    if st is None:
        return False
    desired = st.desired_number_scheduled or 0
    return desired >= at_least and (st.number_ready or 0) == desired and (st.updated_number_scheduled or 0) == desired


def describe_daemonset(ds: V1DaemonSet) -> str:
    st = ds.status
    name = f"{ds.metadata.namespace}/{ds.metadata.name}" if ds.metadata else "?"
    if st is None:
        return f"{name}: no status yet"
    return (
        f"{name}: desired {st.desired_number_scheduled}, ready {st.number_ready}, "
        f"up to date {st.updated_number_scheduled}, unavailable {st.number_unavailable or 0}"
    )


def format_events(events: CoreV1EventList, limit: int = 30) -> str:
    """The last `limit` events, oldest first: 'Warning Failed pod/x: message (x3)'."""

    def when(e: object) -> str:
        stamp = getattr(e, "last_timestamp", None) or getattr(e, "event_time", None)
        return stamp.isoformat() if stamp is not None else ""

    items = sorted(events.items, key=when)[-limit:]
    lines = []
    for e in items:
        obj = e.involved_object
        count = f" (x{e.count})" if e.count and e.count > 1 else ""
        lines.append(f"{e.type or ''} {e.reason or ''} {(obj.kind or '').lower()}/{obj.name}: {e.message or ''}{count}")
    return "\n".join(lines) if lines else "(no events)"
