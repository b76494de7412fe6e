"""Admission from the Deployment and Service indexes (no API request per tick)."""

from __future__ import annotations

from arbiter.api.v1alpha1 import Variant
from arbiter.handlers.workloads import deployment_replicas, service_names, workload_states

V1 = Variant(name="v1", deployment="fraud-v1", service="fraud-v1")
V2 = Variant(name="v2", deployment="fraud-v2", service="fraud-v2")


def index(*entries: dict[tuple[str, str], object]) -> dict[tuple[str, str], list[object]]:
    """What kopf.Index looks like to a reader: key -> the values stored under it."""
    merged: dict[tuple[str, str], list[object]] = {}
    for entry in entries:
        for key, value in entry.items():
            merged.setdefault(key, []).append(value)
    return merged


def test_the_indexers_record_replicas_and_names() -> None:
    assert deployment_replicas(
        namespace="ml", name="d", spec={"replicas": 3}, status={"readyReplicas": 2}
    ) == {("ml", "d"): (3, 2)}
    # An unset replicas means 1 (the API server's default); a missing status means none ready.
    assert deployment_replicas(namespace="ml", name="d", spec={}, status={}) == {("ml", "d"): (1, 0)}
    assert service_names(namespace="ml", name="s") == {("ml", "s"): True}


def test_ready_variants_have_no_problems() -> None:
    deployments = index({("ml", "fraud-v1"): (2, 2)}, {("ml", "fraud-v2"): (0, 0)})
    services = index({("ml", "fraud-v1"): True}, {("ml", "fraud-v2"): True})
    states = workload_states("ml", [V1, V2], deployments, services)
    assert [s.ready for s in states] == [True, True]


def test_missing_and_unready_objects_are_named() -> None:
    deployments = index({("ml", "fraud-v1"): (3, 1)}, {("other", "fraud-v2"): (1, 1)})
    services = index({("ml", "fraud-v1"): True})
    v1, v2 = workload_states("ml", [V1, V2], deployments, services)
    assert v1.problems == ("Deployment fraud-v1 has 1/3 ready replicas",)
    assert v2.problems == ("Deployment fraud-v2 not found", "Service fraud-v2 not found")


def test_an_object_that_appears_or_goes_away_wakes_the_experiments_naming_it() -> None:
    import asyncio

    from arbiter.handlers import workloads

    wakeup = asyncio.Event()
    workloads.wake_on_change("wake", [V1], wakeup)
    deployment = ("Deployment", "wake", "fraud-v1")
    workloads._observe(deployment, True, initial=True)  # the initial listing wakes nobody
    workloads._observe(("Service", "wake", "fraud-v1"), True, initial=True)
    assert not wakeup.is_set()
    workloads._observe(deployment, True, initial=False)  # modified (replicas, readiness): no wake-up
    assert not wakeup.is_set()
    workloads._observe(deployment, None, initial=False)  # deleted
    assert wakeup.is_set()
    wakeup.clear()
    workloads._observe(deployment, True, initial=False)  # created again
    assert wakeup.is_set()
    wakeup.clear()
    workloads._observe(("Service", "wake", "fraud-v1"), None, initial=False)  # deleted
    assert wakeup.is_set()
    wakeup.clear()
    workloads._observe(("Service", "wake", "other"), None, initial=False)  # not ours
    assert not wakeup.is_set()
