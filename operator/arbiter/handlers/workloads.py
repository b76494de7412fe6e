"""What the operator knows about Deployments and Services without asking the API server every tick.

Two Kopf indexes, fed by watches (an informer cache): each Deployment's wanted and ready replicas, and
which Services exist. Every experiment's tick checks its variants against them, so admitting an
experiment costs no API request however many experiments run. Kopf starts the handlers only after
the indexes hold the initial listing, so a missing key means the object really does not exist (or
has not been seen yet, which the next tick corrects).
"""

from __future__ import annotations

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
    wanted = spec.get("replicas")
    ready = status.get("readyReplicas") or 0
    return {(namespace or "", name): (1 if wanted is None else int(wanted), int(ready))}


@kopf.index("v1", "services")
def service_names(namespace: str | None, name: str, **_: Any) -> dict[tuple[str, str], bool]:
    """(namespace, name) of every Service in scope."""
    return {(namespace or "", name): True}


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
