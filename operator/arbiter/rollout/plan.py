"""What one tick hands to the handler: the status to store, the Events to post, the traffic to route.

And the webhook gates still to call (:mod:`arbiter.rollout.gates`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from arbiter.rollout.actions import DecisionOutcome
from arbiter.rollout.gates import GateCall
from arbiter.rollout.lifecycle import Event


@dataclass(frozen=True)
class RoutingAction:
    """The traffic the data plane should carry after this tick.

    ``final`` marks a terminal routing (promotion, rollback, conclusion): the provider's ``finalize``.
    """

    weights: dict[str, int]
    mirror: tuple[str, int] | None = None
    final: bool = False
    winner: str | None = None


@dataclass(frozen=True)
class Plan:
    """The result of one tick: the status to store, the Events to post, the traffic to route."""

    status: dict[str, Any]
    events: tuple[Event, ...] = field(default_factory=tuple)
    routing: RoutingAction | None = None
    outcome: str = DecisionOutcome.WAIT
    #: Webhook gates to call before this tick can be decided (the handler calls them and ticks again).
    gate_calls: tuple[GateCall, ...] = ()
