"""The vocabulary judges use to ask for a transition; :mod:`arbiter.rollout.record` carries it out.

A judge never writes status: it returns a report, and the report names at most one of these actions.
The record turns it into phase, history, conditions, the decision, Events and traffic, the same way
for every judge.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from arbiter.api import Phase


class PauseReason(StrEnum):
    """Why an experiment is Paused (``status.pauseReason``)."""

    SPEC = "Spec"
    SRM = "SampleRatioMismatch"
    METRICS = "MetricsUnavailable"
    AWAITING_PROMOTION = "AwaitingPromotion"
    LOSS = "Loss"
    TIMEOUT = "Timeout"


class DecisionOutcome(StrEnum):
    """What one tick decided (``status.decision.outcome``)."""

    WAIT = "Wait"
    HOLD = "Hold"
    ADVANCE = "Advance"
    PROMOTE = "Promote"
    ROLLBACK = "Rollback"
    PAUSE = "Pause"
    RESUME = "Resume"
    CONCLUDE = "Conclude"


@dataclass(frozen=True)
class Pause:
    """Pause (an Event only when newly paused or for another reason), holding the traffic."""

    reason_code: PauseReason
    reason: str


@dataclass(frozen=True)
class Unpause:
    """Back to Progressing."""

    reason: str


@dataclass(frozen=True)
class End:
    """A terminal decision: all traffic to ``winner``."""

    phase: Phase
    outcome: DecisionOutcome
    reason: str
    winner: str


@dataclass(frozen=True)
class Rollback:
    """Harm shown: roll back, or pause for a human when ``onLoss: Pause``."""

    reason: str


@dataclass(frozen=True)
class Win:
    """A challenger won: promote, or wait for ``arbiter.dev/promote`` when ``onWin: Pause``."""

    winner: str
    why: str


@dataclass(frozen=True)
class Hold:
    """Nothing changes this tick; the decision says why."""

    reason: str


Action = Pause | Unpause | End | Rollback | Win | Hold
