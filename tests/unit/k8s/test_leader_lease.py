"""The Lease loop's rules at the API boundary: an in-memory Lease store with the API server's
resourceVersion semantics (create conflicts when it exists, a replace with a stale version gets 409) and
a hand-driven monotonic clock. The same elector against the real API server, with real processes, is in
tests/integration/test_leader_election.py.
"""

from __future__ import annotations

import copy
import threading
from typing import Any

import pytest

from arbiter.k8s import fencing
from arbiter.k8s.leader import LeaderElector, LeaseConfig, NotLeaderError, fence, install
from arbiter.k8s.traffic import ConflictError, KubeError


class MemoryLeaseStore:
    """One namespace's Leases, versioned like the API server stores them."""

    def __init__(self) -> None:
        self.leases: dict[str, dict[str, Any]] = {}
        self.version = 100
        self.fail: Exception | None = None
        self.writes = 0

    def _check(self) -> None:
        if self.fail is not None:
            raise self.fail

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        self._check()
        found = self.leases.get(name)
        return copy.deepcopy(found) if found else None

    def create(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        self._check()
        name = body["metadata"]["name"]
        if name in self.leases:
            raise ConflictError(409, "AlreadyExists", "exists")
        return self._store(name, body)

    def replace(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        self._check()
        current = self.leases.get(name)
        if current is None:
            raise KubeError(404, "NotFound", "gone")
        if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
            raise ConflictError(409, "Conflict", "stale resourceVersion")
        return self._store(name, body)

    def _store(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        self.writes += 1
        stored = copy.deepcopy(body)
        stored["metadata"]["resourceVersion"] = str(self.version)
        self.leases[name] = stored
        return copy.deepcopy(stored)

    def holder(self, name: str = "arbiter-operator") -> str | None:
        return self.leases[name]["spec"].get("holderIdentity")


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def elector(store: MemoryLeaseStore, clock: Clock, identity: str, **timing: float) -> LeaderElector:
    return LeaderElector(LeaseConfig(namespace="ns", identity=identity, **timing), store, monotonic=clock)


def test_the_first_candidate_creates_the_lease_and_the_second_waits() -> None:
    store, clock = MemoryLeaseStore(), Clock()
    a, b = elector(store, clock, "a"), elector(store, clock, "b")
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    assert store.holder() == "a"
    spec = store.leases["arbiter-operator"]["spec"]
    assert spec["leaseDurationSeconds"] == 15
    assert spec["leaseTransitions"] == 0
    # MicroTime: six fractional digits and a Z, which the API server requires.
    assert spec["renewTime"].endswith("Z") and len(spec["renewTime"].split(".")[1]) == 7


def test_a_waiting_candidate_takes_over_only_after_the_record_stood_still_for_the_lease_duration() -> None:
    store, clock = MemoryLeaseStore(), Clock()
    a, b = elector(store, clock, "a"), elector(store, clock, "b")
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()  # b first sees the record now
    clock.t += 10
    assert a.try_acquire_or_renew()  # a renews: the record changes
    clock.t += 10
    assert not b.try_acquire_or_renew()  # b sees a new record; its 15 s start again
    clock.t += 14.9
    assert not b.try_acquire_or_renew()
    clock.t += 0.2
    assert b.try_acquire_or_renew()
    spec = store.leases["arbiter-operator"]["spec"]
    assert spec["holderIdentity"] == "b"
    assert spec["leaseTransitions"] == 1


def test_of_two_candidates_writing_the_same_version_exactly_one_wins() -> None:
    store, clock = MemoryLeaseStore(), Clock()
    a, b, c = elector(store, clock, "a"), elector(store, clock, "b"), elector(store, clock, "c")
    assert a.try_acquire_or_renew()
    for candidate in (b, c):
        assert not candidate.try_acquire_or_renew()
    clock.t += 16
    # Both read the same expired record; b writes first, c's replace carries a stale resourceVersion.
    stale = store.get("ns", "arbiter-operator")
    assert b.try_acquire_or_renew()
    original_get = store.get
    store.get = lambda namespace, name: copy.deepcopy(stale)  # type: ignore[method-assign]
    assert not c.try_acquire_or_renew()
    store.get = original_get  # type: ignore[method-assign]
    assert store.holder() == "b"


def test_a_released_lease_is_taken_at_the_next_poll_without_waiting() -> None:
    store, clock = MemoryLeaseStore(), Clock()
    a, b = elector(store, clock, "a"), elector(store, clock, "b")
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    assert a.release()
    assert store.holder() is None
    assert b.try_acquire_or_renew()
    assert store.holder() == "b"
    assert not a.release()  # no longer the holder: nothing written
    assert store.holder() == "b"


def test_the_leader_gives_up_at_once_when_another_holder_appears() -> None:
    store, clock = MemoryLeaseStore(), Clock()
    a = elector(store, clock, "a")
    assert a.acquire(threading.Event())
    assert a.is_leading()
    lease = store.get("ns", "arbiter-operator")
    assert lease is not None
    lease["spec"]["holderIdentity"] = "thief"
    store.replace("ns", "arbiter-operator", lease)
    reason = a.renew_once()
    assert reason is not None and "thief" in reason
    assert not a.is_leading()


def test_the_leader_gives_up_when_renewals_fail_for_the_renew_deadline() -> None:
    store, clock = MemoryLeaseStore(), Clock()
    a = elector(store, clock, "a")
    assert a.acquire(threading.Event())
    store.fail = KubeError(0, "ConnectionError", "API server unreachable")
    clock.t += 1
    assert a.renew_once() is None
    store.fail = ValueError("an answer that is not JSON")  # type: ignore[assignment]
    clock.t -= 1
    clock.t += 2
    assert a.renew_once() is None  # one failed renewal is not a loss yet
    assert a.is_leading()
    clock.t += 8.1
    assert not a.is_leading()  # the fence closes at the deadline, before the next renewal runs
    reason = a.renew_once()
    assert reason is not None and "renew deadline" in reason


def test_the_fence_refuses_writes_once_leadership_is_in_doubt() -> None:
    store, clock = MemoryLeaseStore(), Clock()
    a = elector(store, clock, "a")
    install(a)
    try:
        with pytest.raises(NotLeaderError):
            fence("status")  # installed but not yet leading
        assert a.acquire(threading.Event())
        fence("status")
        clock.t += 10
        with pytest.raises(NotLeaderError, match="not the leader"):
            fence("status")
    finally:
        install(None)
    fence("status")  # no elector: leader election off, every write allowed
    assert fencing._installed is None


def test_acquire_returns_false_when_stopped_while_waiting() -> None:
    store, clock = MemoryLeaseStore(), Clock()
    a, b = elector(store, clock, "a", retry_period=0.05, renew_deadline=1, lease_duration=2), None
    assert a.try_acquire_or_renew()
    b = elector(store, clock, "b", retry_period=0.05, renew_deadline=1, lease_duration=2)
    stop = threading.Event()
    timer = threading.Timer(0.2, stop.set)
    timer.start()
    assert not b.acquire(stop)
    assert store.holder() == "a"


@pytest.mark.parametrize(
    ("timing", "message"),
    [
        ({"lease_duration": 10, "renew_deadline": 10}, "longer than the renew deadline"),
        ({"renew_deadline": 2, "retry_period": 2}, "1.2 x the retry period"),
    ],
)
def test_timings_that_would_let_two_leaders_overlap_are_refused(
    timing: dict[str, float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        LeaseConfig(namespace="ns", identity="a", **timing)
