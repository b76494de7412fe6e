"""What the operator knows about Deployments and Services without asking the API server every tick.

Two Kopf indexes, fed by watches (an informer cache): each Deployment's wanted and ready replicas, and
which Services exist. Every experiment's tick checks its variants against them, so admitting an
experiment costs no API request however many experiments run. Kopf starts the handlers only after
the indexes hold the initial listing, so a missing key means the object really does not exist (or
has not been seen yet, which the next tick corrects).

A Deployment or Service that appears or disappears wakes the loops of the experiments naming it
(:func:`wake_on_change`), so they react at once rather than at their next tick. Readiness changes do
not wake anyone: the Replicas provider changes replica counts itself at every step, and a tick woken
by each Pod becoming ready would judge a rollout in the middle of its own scaling.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import kopf

from arbiter.api import Variant


@kopf.index("apps", "v1", "deployments")
def deployment_replicas(
    namespace: str | None, name: str, spec: kopf.Spec, status: kopf.Status, **_: Any
) -> dict[tuple[str, str], tuple[int, int]]:
    """(namespace, name) -> (wanted replicas, ready replicas) of every Deployment in scope."""
    return {(namespace or "", name): _replicas(spec, status)}


def _replicas(spec: Mapping[str, Any], status: Mapping[str, Any]) -> tuple[int, int]:
    """A Deployment's wanted replicas (1 when unset, the API server's default) and ready replicas."""
    wanted = spec.get("replicas")
    return (1 if wanted is None else int(wanted)), int(status.get("readyReplicas") or 0)


@kopf.index("v1", "services")
def service_names(namespace: str | None, name: str, **_: Any) -> dict[tuple[str, str], bool]:
    """(namespace, name) of every Service in scope."""
    return {(namespace or "", name): True}


# (kind, namespace, name) -> the wake-up events of the experiment loops that name the object. Weak, so a
# finished loop's event (held by its Kopf memo) goes away with it.
_watchers: dict[tuple[str, str, str], weakref.WeakSet[asyncio.Event]] = {}
# (kind, namespace, name) of the objects seen to exist.
_seen: dict[tuple[str, str, str], bool] = {}


def wake_on_change(namespace: str, variants: list[Variant], wakeup: asyncio.Event) -> None:
    """Set ``wakeup`` whenever one of these variants' Deployments or Services appears or goes away."""
    for variant in variants:
        keys = [("Deployment", namespace, variant.deployment)]
        if variant.service is not None:
            keys.append(("Service", namespace, variant.service))
        for key in keys:
            _watchers.setdefault(key, weakref.WeakSet()).add(wakeup)


def _observe(key: tuple[str, str, str], state: bool | None, initial: bool) -> None:
    """Record an object's state (None: deleted) and wake its watchers if it changed."""
    before = _seen.pop(key, None) if state is None else _seen.get(key)
    if state is not None:
        _seen[key] = state
    if initial or before == state:
        return
    for wakeup in list(_watchers.get(key, ())):
        wakeup.set()


@kopf.on.event("apps", "v1", "deployments")
async def deployment_changed(type: str | None, namespace: str | None, name: str, **_: Any) -> None:
    """Wake the experiments whose Deployment appeared or went away."""
    _observe(("Deployment", namespace or "", name), None if type == "DELETED" else True, initial=type is None)


@kopf.on.event("v1", "services")
async def service_changed(type: str | None, namespace: str | None, name: str, **_: Any) -> None:
    """Wake the experiments whose Service appeared or went away."""
    _observe(("Service", namespace or "", name), None if type == "DELETED" else True, initial=type is None)


@dataclass(frozen=True)
class WorkloadState:
    """Whether one variant's Deployment and Service exist and are ready."""

    variant: str
    problems: tuple[str, ...]

    @property
    def ready(self) -> bool:
        """True when nothing is missing or unready."""
        return not self.problems


def workload_states(
    namespace: str,
    variants: list[Variant],
    deployments: Mapping[Any, Any],
    services: Mapping[Any, Any],
) -> list[WorkloadState]:
    """Check every variant's Deployment (exists, all replicas ready) and Service (exists).

    Args:
        namespace: the experiment's namespace.
        variants: the experiment's variants.
        deployments: the :func:`deployment_replicas` index (``kopf.Index``: key -> store of values).
        services: the :func:`service_names` index.
    """
    states = []
    for variant in variants:
        problems: list[str] = []
        replicas = list(deployments.get((namespace, variant.deployment), ()))
        if not replicas:
            problems.append(f"Deployment {variant.deployment} not found")
        else:
            wanted, ready = replicas[0]
            if wanted > 0 and ready < wanted:
                problems.append(f"Deployment {variant.deployment} has {ready}/{wanted} ready replicas")
        if variant.service is not None and not list(services.get((namespace, variant.service), ())):
            problems.append(f"Service {variant.service} not found")
        states.append(WorkloadState(variant.name, tuple(problems)))
    return states
