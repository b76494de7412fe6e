"""A read-only snapshot of the status as one judge sees it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from arbiter.api import Phase

ConditionStatusValue = bool | None


@dataclass(frozen=True)
class TickView:
    """What the status says at the moment a judge is asked (the record builds it fresh each time).

    Attributes:
        now: the tick's time.
        phase: the current phase.
        pause_reason: ``status.pauseReason``.
        current_step: ``status.currentStep``.
        weights: the traffic the engine last set (``status.weights``).
        challenger_weight: the challengers' total share of it.
        started_at: when the experiment started progressing.
        step_started_at: when the current step started.
        traffic: what the provider verified on the previous tick (``status.traffic``).
        handled_actions: annotation values already acted on.
        guardrails: the guardrail checks of the previous tick, as stored.
    """

    now: dt.datetime
    phase: Phase
    pause_reason: str | None = None
    current_step: int = 0
    weights: Mapping[str, int] | None = None
    challenger_weight: int = 0
    started_at: dt.datetime | None = None
    step_started_at: dt.datetime | None = None
    traffic: Mapping[str, Any] = field(default_factory=dict)
    handled_actions: Mapping[str, str] = field(default_factory=dict)
    guardrails: tuple[Mapping[str, Any], ...] = ()

    def traffic_in_place(self, weights: Mapping[str, int] | None) -> bool:
        """Did the previous tick verify that the data plane carries ``weights``?

        "CannotTell" (no observable status, e.g. no Gateway controller) is taken as in place.
        """
        return (
            self.traffic.get("verified") in ("Yes", "CannotTell") and self.traffic.get("weights") == weights
        )


@dataclass(frozen=True)
class ConditionReport:
    """One standard condition a judge reports (True, False or Unknown as None)."""

    type: str
    ok: ConditionStatusValue
    reason: str
    message: str
