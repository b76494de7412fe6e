"""``spec.dryRun``: decide exactly as usual, route nothing, and say what would have been done. Pure.

A dry run watches a split someone else manages (their own tooling, a mesh config, a replica count).
At the start of a tick the handler reads the live split from the routing provider and hands it over as
a :class:`LiveSplit`; :func:`observe` makes it the split the analysis believes in (``status.weights``
and a verified ``status.traffic``), so the sample-ratio check and each step's sample counts are judged
against the traffic users really get, and a change of the live split starts the step's counting anew.
Then the engine decides as it always does, and :func:`would_have` takes the traffic out of the plan:
the weights it would have routed go to ``status.dryRun.wouldRoute``, the traffic change to
``status.dryRun.wouldHave``, the decision is marked ``dryRun: true`` and the Events of traffic changes
are renamed ``DryRun<Reason>`` (Normal: a dry run pages nobody).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from arbiter.api import ModelExperimentSpec
from arbiter.rollout.actions import DecisionOutcome
from arbiter.rollout.lifecycle import Event
from arbiter.rollout.plan import Plan

if TYPE_CHECKING:
    from arbiter.rollout.record import Record

#: Events that announce a traffic change: in a dry run they say it would have happened.
TRAFFIC_EVENTS = frozenset(
    {
        "Advanced",
        "Promoted",
        "RolledBack",
        "Concluded",
        "ShadowPassed",
        "ChallengerEliminated",
        "Restarted",
        "Retried",
    }
)
PREFIX = "dry run, no traffic changed: "


@dataclass(frozen=True)
class LiveSplit:
    """The split the data plane carries, as read from the routing provider (never written in a dry run).

    Attributes:
        weights: percent per variant, or None when it could not be read.
        note: how it was read, or why it could not be.
    """

    weights: Mapping[str, int] | None
    note: str


def observe(rec: Record, live: LiveSplit | None) -> None:
    """Make the live split the one the analysis judges; a changed split starts the step's count anew."""
    if live is None:
        return
    record: dict[str, Any] = rec.status.setdefault("dryRun", {})
    record["observed"] = live.note
    variants = [rec.champion, *rec.challengers]
    weights = {v: int((live.weights or {}).get(v, 0)) for v in variants}
    if live.weights is None or sum(weights.values()) <= 0:
        record.pop("observedWeights", None)
        rec.status["traffic"] = {
            "verified": "CannotTell",
            "reason": f"dry run: {live.note}",
            "weights": rec.status.get("weights"),
        }
        return
    previous = record.get("observedWeights")
    if previous is not None and previous != weights:
        rec.state = rec.state.with_step_unsettled()
    record["observedWeights"] = weights
    rec.status["weights"] = weights
    rec.status["challengerWeight"] = sum(weights[c] for c in rec.challengers)
    rec.status["traffic"] = {
        "verified": "Yes",
        "reason": f"dry run: the live split ({live.note})",
        "weights": weights,
    }


def would_have(plan: Plan, spec: ModelExperimentSpec) -> Plan:
    """The plan with its traffic taken out and recorded as what would have been done."""
    status = plan.status
    record: dict[str, Any] = status.setdefault("dryRun", {})
    if plan.routing is not None:
        record["wouldRoute"] = dict(plan.routing.weights)
    observed = record.get("observedWeights")
    if observed:
        status["weights"] = dict(observed)
        status["challengerWeight"] = sum(observed.get(c.name, 0) for c in spec.challengers)
    decision = status.get("decision")
    if isinstance(decision, dict):
        decision["dryRun"] = True
        described = _describe(decision, status, spec)
        if described is not None and plan.outcome == decision.get("outcome"):
            record["wouldHave"] = described
    message = status.get("message")
    if isinstance(message, str) and not message.startswith("dry run"):
        status["message"] = f"dry run: {message}"
    events = tuple(_renamed(e) for e in plan.events)
    return replace(plan, status=status, events=events, routing=None)


def _describe(
    decision: Mapping[str, Any], status: Mapping[str, Any], spec: ModelExperimentSpec
) -> str | None:
    outcome = decision.get("outcome")
    winner = decision.get("winner")
    if outcome == DecisionOutcome.PROMOTE:
        return f"promoted {winner}"
    if outcome == DecisionOutcome.ROLLBACK:
        return f"rolled back to {winner or spec.champion.name}"
    if outcome == DecisionOutcome.CONCLUDE:
        return f"concluded, keeping {winner or spec.champion.name}"
    if outcome == DecisionOutcome.ADVANCE:
        return f"advanced to step {status.get('currentStep', 0)}"
    return None


def _renamed(event: Event) -> Event:
    if event.reason not in TRAFFIC_EVENTS:
        return event
    return Event("Normal", f"DryRun{event.reason}", PREFIX + event.message)
