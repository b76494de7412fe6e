"""Provider ``Replicas``: no mesh; the variants' Deployments sit behind one shared Service and the traffic
split follows the number of ready replicas (kube-proxy spreads connections evenly over ready endpoints).

Granularity: weights become replica counts out of a fixed *budget*, the total number of replicas the
experiment found when it first touched the Deployments (the sum of every variant's ``spec.replicas``,
at least 1). The budget is recorded on the champion Deployment in the annotation
``arbiter.dev/replicas-budget`` (``{"experiment": ..., "replicas": N}``) so it survives operator
restarts; edit it to give the experiment more or fewer replicas. :func:`replica_counts`:

1. each variant gets ``floor(weight * budget / 100)`` replicas;
2. every variant with a weight above 0 gets at least 1 (otherwise it would get no traffic at all),
   and the champion keeps at least 1 until :meth:`finalize` (a step at 100% leaves it 1 replica);
3. replicas still unassigned go one each to the largest fractional parts (ties: the earlier variant,
   champion first); if rule 2 overshot the budget, replicas are taken back one each from the most
   over-served variants that have more than their minimum;
4. when there are more variants with a weight above 0 than budget, the total exceeds the budget.

So with a budget of 4, weights 95/5 become 3/1 replicas, i.e. 75%/25% of the traffic: the realised
split is a multiple of 1/budget. ``get_weights`` reports the realised split (ready replicas),
``verify`` answers yes once every Deployment has exactly its computed replicas ready.

What it changes: only ``spec.replicas`` through the ``scale`` subresource (like ``kubectl scale``),
and the budget annotation by server-side apply. Nothing else of the Deployments. A GitOps tool or an
HPA that also sets ``spec.replicas`` fights it: leave ``replicas`` out of the GitOps manifests and do
not put an HPA on the variants during the experiment. No mirroring (``set_weights`` with a mirror
raises :class:`UnsupportedError`) and no stickiness (kube-proxy balances per connection).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from arbiter.api.weights import to_percent
from arbiter.k8s.traffic import DEPLOYMENTS
from arbiter.routing.base import (
    BaseProvider,
    Mirror,
    TargetNotFoundError,
    TrafficState,
    UnsupportedError,
    WeightCheck,
)

BUDGET_ANNOTATION = "arbiter.dev/replicas-budget"

JsonObject = dict[str, Any]


def replica_counts(
    weights: Mapping[str, int], budget: int, champion: str, *, champion_floor: bool = True
) -> dict[str, int]:
    """Turn percent weights into replica counts out of ``budget`` (see the module docstring for the rules).

    Args:
        weights: percent per variant, summing to 100, in variant order (champion first).
        budget: the total replicas to distribute (values below 1 count as 1).
        champion: the champion's name; it keeps at least one replica when ``champion_floor``.
        champion_floor: False only when finalizing: the champion may then go to 0.

    Returns:
        Replicas per variant, in the order of ``weights``.
    """
    budget = max(budget, 1)
    order = list(weights)
    exact = {name: weights[name] * budget / 100 for name in order}
    minimum = {name: 1 if weights[name] > 0 or (champion_floor and name == champion) else 0 for name in order}
    counts = {name: max(math.floor(exact[name]), minimum[name]) for name in order}
    missing = budget - sum(counts.values())
    if missing > 0:
        # Largest fractional part first; Python's sort is stable, so ties keep variant order.
        candidates = sorted(
            (name for name in order if weights[name] > 0), key=lambda name: -(exact[name] - counts[name])
        )
        for name in candidates[:missing]:
            counts[name] += 1
    while missing < 0:
        reducible = [name for name in reversed(order) if counts[name] > minimum[name]]
        if not reducible:
            break  # more serving variants than budget: every one keeps its single replica
        most_over = max(reducible, key=lambda name: counts[name] - exact[name])
        counts[most_over] -= 1
        missing += 1
    return counts


class ReplicasProvider(BaseProvider):
    """Approximates the weights by scaling the variants' Deployments behind one shared Service."""

    name = "Replicas"

    def __init__(self, *args: Any, replicas_budget: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._budget_override = replicas_budget

    def _reconcile(self) -> None:
        self.budget(self._deployments())

    def set_weights(self, weights: Mapping[str, int], mirror: Mirror | None = None) -> None:
        """Scale the Deployments to the replica counts of ``weights``.

        Raises:
            UnsupportedError: a mirror was asked for; replicas cannot mirror traffic.
        """
        if mirror is not None:
            raise UnsupportedError(
                "provider Replicas cannot mirror traffic (mode Shadow needs another provider)"
            )
        super().set_weights(weights, None)

    def _apply(self, weights: dict[str, int], mirror: Mirror | None, *, finalizing: bool) -> None:
        deployments = self._deployments()
        counts = replica_counts(
            weights, self.budget(deployments), self.champion, champion_floor=not finalizing
        )
        for variant in self.variants:
            if (deployments[variant.name].get("spec") or {}).get("replicas") != counts[variant.name]:
                self.client.scale(DEPLOYMENTS, self.namespace, variant.deployment, counts[variant.name])

    def _read(self) -> TrafficState:
        deployments = self._deployments()
        ready = {
            name: int((d.get("status") or {}).get("readyReplicas") or 0) for name, d in deployments.items()
        }
        return TrafficState(to_percent(ready))

    def verify(self, weights: Mapping[str, int], mirror: Mirror | None = None) -> WeightCheck:
        """Yes once every Deployment has exactly its computed replicas, all ready and up to date."""
        expected = self.check(weights, mirror)
        if mirror is not None:
            return WeightCheck.no("provider Replicas cannot mirror traffic")
        try:
            deployments = self._call(self._deployments)
            budget = self._call(lambda: self.budget(deployments, record=False))
        except TargetNotFoundError as err:
            return WeightCheck.no(str(err))
        observed = self._state_of(deployments)
        candidates = [replica_counts(expected, budget, self.champion)]
        if 100 in expected.values():
            # A single variant at 100% is also what finalize leaves, with the champion at 0.
            candidates.append(replica_counts(expected, budget, self.champion, champion_floor=False))
        problems = ""
        for counts in candidates:
            problems = "; ".join(
                p for name, d in deployments.items() if (p := deployment_problem(d, counts[name]))
            )
            if not problems:
                described = ", ".join(f"{n} {c}" for n, c in counts.items())
                return WeightCheck.yes(
                    f"ready replicas match the weights ({described} of budget {budget})", observed
                )
        return WeightCheck.no(problems, observed)

    # -- I/O -----------------------------------------------------------------------------------

    def _deployments(self) -> dict[str, JsonObject]:
        deployments = {}
        for variant in self.variants:
            obj = self.client.get(DEPLOYMENTS, self.namespace, variant.deployment)
            if obj is None:
                raise TargetNotFoundError(
                    f"Deployment {self.namespace}/{variant.deployment} of variant {variant.name} does not exist"
                )
            deployments[variant.name] = obj
        return deployments

    def _state_of(self, deployments: Mapping[str, JsonObject]) -> TrafficState:
        ready = {
            name: int((d.get("status") or {}).get("readyReplicas") or 0) for name, d in deployments.items()
        }
        return TrafficState(to_percent(ready))

    def budget(self, deployments: Mapping[str, JsonObject], *, record: bool = True) -> int:
        """The replica budget: the override, else the recorded one, else the current total (then recorded)."""
        if self._budget_override is not None:
            return max(self._budget_override, 1)
        champion = deployments[self.champion]
        raw = ((champion.get("metadata") or {}).get("annotations") or {}).get(BUDGET_ANNOTATION)
        recorded = parse_budget(raw, self.experiment)
        if recorded is not None:
            return recorded
        total = max(sum(int((d.get("spec") or {}).get("replicas") or 0) for d in deployments.values()), 1)
        if record:
            value = json.dumps({"experiment": self.experiment, "replicas": total}, separators=(",", ":"))
            self.client.apply(
                DEPLOYMENTS,
                self.namespace,
                self.spec.champion.deployment,
                {"metadata": {"annotations": {BUDGET_ANNOTATION: value}}},
            )
        return total


def parse_budget(raw: str | None, experiment: str) -> int | None:
    """The budget recorded for ``experiment``; None when absent, unreadable or another experiment's."""
    if not raw:
        return None
    try:
        data = json.loads(raw)
        if data.get("experiment") != experiment:
            return None
        return max(int(data["replicas"]), 1)
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


def deployment_problem(deployment: Mapping[str, Any], expected: int) -> str:
    """Why ``deployment`` does not (yet) serve with ``expected`` ready replicas; empty when it does."""
    name = (deployment.get("metadata") or {}).get("name")
    spec_replicas = (deployment.get("spec") or {}).get("replicas")
    status = deployment.get("status") or {}
    if spec_replicas != expected:
        return f"{name}: spec.replicas is {spec_replicas}, expected {expected}"
    generation = (deployment.get("metadata") or {}).get("generation")
    if (status.get("observedGeneration") or 0) < (generation or 0):
        return f"{name}: the Deployment controller has not yet observed generation {generation}"
    ready = int(status.get("readyReplicas") or 0)
    current = int(status.get("replicas") or 0)
    if ready != expected or current != expected:
        return f"{name}: {ready} ready of {current} replicas, expected {expected}"
    return ""
