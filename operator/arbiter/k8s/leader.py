"""Leader election through a ``coordination.k8s.io/v1`` Lease, with client-go's rules and defaults.

`arbiter run --leader-election` blocks in :meth:`LeaderElector.acquire` until this replica holds the
Lease, then starts Kopf and renews the Lease from a thread. The protocol is client-go's
(``k8s.io/client-go/tools/leaderelection``), not a new one:

- The Lease names its holder (``spec.holderIdentity``), the time it was last renewed and how long a
  renewal counts (``spec.leaseDurationSeconds``). Every write is a create, or a replace guarded by
  the ``metadata.resourceVersion`` that was read, so of two candidates writing at once exactly one
  wins (the other gets 409 Conflict).
- A candidate may take the Lease over only when it has seen the *same* record, unchanged, for the
  record's lease duration, measured on its own monotonic clock. Clocks of different machines are
  never compared: ``renewTime`` is written for humans, the local observation time decides.
- The leader renews every ``retry_period``. It gives up (``on_lost``) as soon as the Lease names
  another holder, or when no renewal succeeded for ``renew_deadline``; the deadline is shorter
  than the lease duration, so the old leader stops before anyone else may start (client-go's
  defaults: 15 s lease, 10 s renew deadline, 2 s retry).
- Beyond client-go, the leader also watches its Lease: a holder written by anyone else ends
  leadership within milliseconds instead of at the next renewal (up to a retry period later, time
  enough for one more write). Renewals and the deadline still decide when the watch is down.
- :meth:`release` on a clean shutdown empties the holder, so a waiting replica takes over at its
  next poll instead of after the lease duration.

:func:`fence` (in ``fencing.py``, re-exported here) is the write guard: while an elector is installed, the k8s writers refuse to write
unless this replica renewed the Lease within the renew deadline, so even a leader whose renewal
thread is stuck (a partitioned API server, a paused process) cannot write on a stale belief.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from kubernetes import client, watch
from kubernetes.client import ApiClient

from arbiter.k8s.fencing import NotLeaderError, fence, install
from arbiter.k8s.traffic import ConflictError, Resource, TrafficClient

__all__ = [
    "DEFAULT_LEASE_NAME",
    "LEASES",
    "LeaderElector",
    "LeaseConfig",
    "LeaseStore",
    "NotLeaderError",
    "api_store",
    "fence",
    "install",
    "pod_namespace",
    "unique_identity",
]

log = logging.getLogger("arbiter.k8s.leader")

DEFAULT_LEASE_NAME = "arbiter-operator"
LEASES = Resource("coordination.k8s.io/v1", "Lease", "leases")
_SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
# client-go's JitterFactor: polls are spread by up to 20% so candidates do not write in lockstep.
_JITTER = 0.2


@dataclass(frozen=True)
class LeaseConfig:
    """Where the Lease lives, who we are, and the timings (client-go's defaults).

    Args:
        namespace: the Lease's namespace (the operator's own, normally).
        identity: this replica's holder identity; unique per process (see :func:`unique_identity`).
        name: the Lease's name.
        lease_duration: seconds a candidate waits, after the record last changed, before taking over.
        renew_deadline: seconds the leader keeps trying to renew before giving up.
        retry_period: seconds between attempts, for candidates and for the leader's renewals.
    """

    namespace: str
    identity: str
    name: str = DEFAULT_LEASE_NAME
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if not self.identity:
            raise ValueError("the leader election identity must not be empty")
        if not self.lease_duration > self.renew_deadline:
            raise ValueError(
                f"lease duration ({self.lease_duration:g}s) must be longer than the renew deadline "
                f"({self.renew_deadline:g}s): the old leader must stop before a new one may start"
            )
        if not self.renew_deadline > self.retry_period * (1 + _JITTER):
            raise ValueError(
                f"renew deadline ({self.renew_deadline:g}s) must be longer than 1.2 x the retry period "
                f"({self.retry_period:g}s)"
            )
        if not self.retry_period > 0:
            raise ValueError("the retry period must be positive")


class LeaseStore(Protocol):
    """The three Lease calls the elector makes (raw JSON, as the API server stores it)."""

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Lease, or None when it does not exist."""
        ...

    def create(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """Create the Lease; :class:`ConflictError` when it already exists."""
        ...

    def replace(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """Replace the Lease; :class:`ConflictError` when ``metadata.resourceVersion`` is stale."""
        ...

    def watch(self, namespace: str, name: str, stop: threading.Event) -> Iterator[dict[str, Any] | None]:
        """Yield the Lease at every change (None when deleted) until ``stop`` is set or the stream ends."""
        ...


class _ApiLeaseStore(TrafficClient):
    """:class:`LeaseStore` on the API server (POST and a resourceVersion-guarded PUT)."""

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:  # type: ignore[override]
        return super().get(LEASES, namespace, name)

    def create(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        path = LEASES.path(namespace, "x").rsplit("/", 1)[0]
        return self._request("POST", path, body, "application/json", {"fieldManager": self.field_manager})

    def replace(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        path = LEASES.path(namespace, name)
        return self._request("PUT", path, body, "application/json", {"fieldManager": self.field_manager})

    def watch(self, namespace: str, name: str, stop: threading.Event) -> Iterator[dict[str, Any] | None]:
        api = client.CoordinationV1Api(self._api)
        stream = watch.Watch()  # type: ignore[no-untyped-call]
        try:
            for event in stream.stream(  # type: ignore[no-untyped-call]
                api.list_namespaced_lease,
                namespace,
                field_selector=f"metadata.name={name}",
                timeout_seconds=60,
                _request_timeout=(10, 75),
            ):
                if stop.is_set():
                    return
                kind = event.get("type")
                if kind == "DELETED":
                    yield None
                elif kind in ("ADDED", "MODIFIED"):
                    yield event.get("raw_object") or {}
        finally:
            stream.stop()  # type: ignore[no-untyped-call]


def _micro_time(moment: dt.datetime) -> str:
    """A metav1.MicroTime: RFC 3339 with exactly six fractional digits (the API server insists)."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class _Observation:
    """The Lease record as last seen, and when (local monotonic clock) it last changed."""

    record: tuple[Any, ...] = ()
    changed_at: float = 0.0
    holder: str = ""
    duration: float = 0.0


@dataclass
class LeaderElector:
    """Acquire, renew and release one Lease.

    Args:
        config: names and timings.
        store: the Lease API; the API server (through the default kubeconfig) when None.
        monotonic: the clock that measures expiry (never compared across machines).
        now: the wall clock written into ``acquireTime``/``renewTime`` (for humans and tools).
    """

    config: LeaseConfig
    store: LeaseStore | None = None
    monotonic: Callable[[], float] = time.monotonic
    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)
    _observed: _Observation = field(default_factory=_Observation)
    _renewed_at: float | None = None
    _lost: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stopping: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _watcher: threading.Thread | None = None

    def __post_init__(self) -> None:
        if self.store is None:
            # A request may take at most one retry period: a hung call must not eat the renew deadline.
            self.store = _ApiLeaseStore(timeout=max(1.0, self.config.retry_period))

    # -- state -------------------------------------------------------------------------------------

    @property
    def identity(self) -> str:
        """This replica's holder identity."""
        return self.config.identity

    def is_leading(self) -> bool:
        """True while this replica holds the Lease and renewed it within the renew deadline."""
        with self._lock:
            if self._lost is not None or self._renewed_at is None:
                return False
            return self.monotonic() - self._renewed_at < self.config.renew_deadline

    @property
    def observed_holder(self) -> str:
        """The holder named by the Lease when it was last read ("" when free or never read)."""
        return self._observed.holder

    # -- one attempt -------------------------------------------------------------------------------

    def try_acquire_or_renew(self) -> bool:
        """One attempt to take or keep the Lease. Returns True when this replica holds it now.

        Raises:
            KubeError: the API server refused or could not be reached (the caller retries).
        """
        store = self.store
        assert store is not None
        cfg = self.config
        stamp = _micro_time(self.now())
        current = store.get(cfg.namespace, cfg.name)
        if current is None:
            body = {
                "apiVersion": LEASES.api_version,
                "kind": LEASES.kind,
                "metadata": {"name": cfg.name, "namespace": cfg.namespace},
                "spec": self._spec(acquire_time=stamp, renew_time=stamp, transitions=0),
            }
            try:
                created = store.create(cfg.namespace, body)
            except ConflictError:
                return False  # another candidate created it first
            self._observe(created)
            return True
        self._observe(current)
        spec = current.get("spec") or {}
        holder = str(spec.get("holderIdentity") or "")
        if holder and holder != cfg.identity and not self._expired():
            return False
        transitions = int(spec.get("leaseTransitions") or 0)
        if holder == cfg.identity:
            acquire_time = spec.get("acquireTime") or stamp
        else:
            acquire_time = stamp
            transitions += 1
        replacement = {
            **current,
            "spec": self._spec(acquire_time=acquire_time, renew_time=stamp, transitions=transitions),
        }
        try:
            stored = store.replace(cfg.namespace, cfg.name, replacement)
        except ConflictError:
            return False  # changed since we read it: someone else renewed or took it
        self._observe(stored)
        return True

    def _spec(self, *, acquire_time: str, renew_time: str, transitions: int) -> dict[str, Any]:
        return {
            "holderIdentity": self.config.identity,
            "leaseDurationSeconds": max(1, round(self.config.lease_duration)),
            "acquireTime": acquire_time,
            "renewTime": renew_time,
            "leaseTransitions": transitions,
        }

    def _observe(self, lease: dict[str, Any]) -> None:
        spec = lease.get("spec") or {}
        record = (
            spec.get("holderIdentity"),
            spec.get("renewTime"),
            spec.get("acquireTime"),
            spec.get("leaseDurationSeconds"),
            spec.get("leaseTransitions"),
        )
        if record != self._observed.record:
            self._observed = _Observation(
                record=record,
                changed_at=self.monotonic(),
                holder=str(spec.get("holderIdentity") or ""),
                duration=float(spec.get("leaseDurationSeconds") or self.config.lease_duration),
            )

    def _expired(self) -> bool:
        """Whether the holder failed to renew for its lease duration, on our clock."""
        return self.monotonic() >= self._observed.changed_at + self._observed.duration

    # -- the loops ---------------------------------------------------------------------------------

    def acquire(self, stop: threading.Event) -> bool:
        """Block until this replica holds the Lease (True) or ``stop`` is set (False)."""
        cfg = self.config
        waiting_for: str | None = None
        while not stop.is_set():
            # Leadership counts from before the request: the stored renewal is at least that recent.
            attempted_at = self.monotonic()
            try:
                if self.try_acquire_or_renew():
                    with self._lock:
                        self._renewed_at = attempted_at
                        self._lost = None
                    log.info("acquired the leader lease %s/%s as %s", cfg.namespace, cfg.name, cfg.identity)
                    return True
                if self.observed_holder != waiting_for:
                    waiting_for = self.observed_holder
                    log.info(
                        "lease %s/%s is held by %s; waiting to take over (polling every %gs)",
                        cfg.namespace,
                        cfg.name,
                        waiting_for or "nobody",
                        cfg.retry_period,
                    )
            except Exception as err:  # unreachable API server, bad answer: wait and try again
                log.warning("cannot read or write lease %s/%s: %s", cfg.namespace, cfg.name, err)
            stop.wait(cfg.retry_period * (1 + random.random() * _JITTER))
        return False

    def start_renewing(self, on_lost: Callable[[str], None]) -> None:
        """Renew every retry period and watch the Lease, from daemon threads; call ``on_lost(reason)``
        once when leadership ends (a renewal finds another holder or misses the renew deadline, or the
        watch sees the holder change).

        ``on_lost`` runs in one of those threads. The operator exits the process there, so a replica
        that lost the Lease never writes again.
        """
        if self._thread is not None:
            raise RuntimeError("already renewing")
        self._stopping.clear()
        report = self._once(on_lost)
        self._thread = threading.Thread(
            target=self._renew_loop, args=(report,), name="leader-lease-renew", daemon=True
        )
        self._thread.start()
        self._watcher = threading.Thread(
            target=self._watch_loop, args=(report,), name="leader-lease-watch", daemon=True
        )
        self._watcher.start()

    def _once(self, on_lost: Callable[[str], None]) -> Callable[[str], None]:
        reported = threading.Event()

        def report(reason: str) -> None:
            with self._lock:
                self._lost = self._lost or reason
                if reported.is_set():
                    return
                reported.set()
            on_lost(reason)

        return report

    def _watch_loop(self, report: Callable[[str], None]) -> None:
        """Watch the Lease so a change of holder ends leadership within milliseconds, not a retry period.

        Renewals alone notice a new holder only at the next attempt (up to a retry period later), long
        enough for one more write; the watch closes that window. It is an addition to the renewals,
        never a replacement: when the watch fails, renewals and the deadline still decide.
        """
        store = self.store
        assert store is not None
        cfg = self.config
        while not self._stopping.is_set():
            try:
                for lease in store.watch(cfg.namespace, cfg.name, self._stopping):
                    holder = ((lease or {}).get("spec") or {}).get("holderIdentity") if lease else None
                    if self._stopping.is_set():
                        return
                    if holder != cfg.identity:
                        report(
                            f"lease {cfg.namespace}/{cfg.name} was deleted"
                            if lease is None
                            else f"lease {cfg.namespace}/{cfg.name} is now held by {holder or 'nobody'}"
                        )
                        return
                continue  # the server ended the watch (its timeout): watch again at once, no gap
            except Exception as err:  # the watch is an accelerator; renewals still guard leadership
                log.debug("watch of lease %s/%s failed: %s", cfg.namespace, cfg.name, err)
            self._stopping.wait(cfg.retry_period)

    def renew_once(self) -> str | None:
        """One renewal attempt; returns why leadership is lost, or None while it is kept."""
        cfg = self.config
        # Leadership counts from before the request (conservative: never from when the answer came).
        attempted_at = self.monotonic()
        try:
            renewed = self.try_acquire_or_renew()
        except Exception as err:  # any failure is a missed renewal; the deadline decides what follows
            log.warning("renewing lease %s/%s failed: %s", cfg.namespace, cfg.name, err)
            renewed = False
        with self._lock:
            if renewed:
                self._renewed_at = attempted_at
                return None
            holder = self.observed_holder
            if holder and holder != cfg.identity:
                self._lost = f"lease {cfg.namespace}/{cfg.name} is now held by {holder}"
            elif self._renewed_at is None or self.monotonic() - self._renewed_at >= cfg.renew_deadline:
                self._lost = (
                    f"could not renew lease {cfg.namespace}/{cfg.name} within the renew deadline "
                    f"({cfg.renew_deadline:g}s)"
                )
            return self._lost

    def _renew_loop(self, report: Callable[[str], None]) -> None:
        while not self._stopping.wait(self.config.retry_period):
            lost = self.renew_once()
            if lost is not None:
                report(lost)
                return

    def stop_renewing(self) -> None:
        """Stop the renewal thread (leadership is kept until :meth:`release` or expiry)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(self.config.retry_period + 5)
            self._thread = None
        # The watch thread ends at its next event or stream timeout; it is a daemon and acts on nothing
        # once stopping is set.
        self._watcher = None

    def release(self) -> bool:
        """Hand the Lease back (holder emptied) so a waiting replica takes over at once.

        Returns True when released; False when this replica was not the holder (nothing to do) or
        the API server refused (the Lease then expires after its duration, as after a crash).
        """
        self.stop_renewing()
        with self._lock:
            self._lost = "released"
        store = self.store
        assert store is not None
        cfg = self.config
        try:
            current = store.get(cfg.namespace, cfg.name)
            if current is None or (current.get("spec") or {}).get("holderIdentity") != cfg.identity:
                return False
            stamp = _micro_time(self.now())
            spec = {
                **(current.get("spec") or {}),
                "holderIdentity": None,
                "leaseDurationSeconds": 1,
                "renewTime": stamp,
                "acquireTime": stamp,
            }
            store.replace(cfg.namespace, cfg.name, {**current, "spec": spec})
        except Exception as err:  # the Lease then expires after its duration, as after a crash
            log.warning("could not release lease %s/%s: %s", cfg.namespace, cfg.name, err)
            return False
        log.info("released the leader lease %s/%s", cfg.namespace, cfg.name)
        return True


# -- identity and namespace ------------------------------------------------------------------------


def unique_identity(base: str | None = None) -> str:
    """``<pod name or hostname>_<uuid>``: unique even when a restarted pod keeps its name."""
    name = base or os.environ.get("POD_NAME") or socket.gethostname() or "arbiter"
    return f"{name}_{uuid.uuid4()}"


def pod_namespace(default: str = "default") -> str:
    """The namespace this process runs in: the service account's, else $POD_NAMESPACE, else ``default``."""
    try:
        with open(_SERVICE_ACCOUNT_NAMESPACE, encoding="utf-8") as handle:
            found = handle.read().strip()
        if found:
            return found
    except OSError:
        pass
    return os.environ.get("POD_NAMESPACE") or default


def api_store(api: ApiClient | None = None, timeout: float = 2.0) -> LeaseStore:
    """A :class:`LeaseStore` on the API server (for tests and tools that pass their own ApiClient)."""
    return _ApiLeaseStore(api, timeout=timeout)
