"""Someone else keeps rewriting the route: repair it, but do not fight a GitOps tool in a loop.

A route found not carrying the weights Arbiter set (a hand edit, a GitOps sync, a controller that
reverts it) is put back on the same tick, as before. When that happens on several ticks in a row the
route is *contested*: another writer re-applies its own version after every repair (Argo CD or Flux with
self-heal, typically). Repairing on every tick then only makes the two writers take turns forever, each
write flipping live traffic. So after :data:`REPAIRS_IN_A_ROW` repairs in a row Arbiter backs off: it
tries again on ticks 4, 8, 16 and 32 of the streak and then once every :data:`MAX_BACKOFF_TICKS`
ticks, says so in the condition ``RouteContested=True`` (reason ``OverwrittenRepeatedly``) with a
Warning Event, and points at the fix (docs/routing.md, GitOps: ``ignoreDifferences`` for the fields
Arbiter manages). When a repair holds (the route carries the weights on the next look) the streak ends,
``RouteContested`` turns False (reason ``InPlace``) with a Normal Event, and ticks repair at once again.

The streak lives in ``status.traffic.overwrites`` (ticks in a row that found the route not in place),
so a restarted operator neither forgets a contest nor starts the back-off over.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from arbiter.api.conditions import ConditionStatus
from arbiter.rollout.lifecycle import Event

#: Repairs on consecutive ticks before the route counts as contested and repairs back off.
REPAIRS_IN_A_ROW = 3
#: Once contested, the longest gap between two repair attempts, in ticks.
MAX_BACKOFF_TICKS = 32
CONDITION = "RouteContested"


def should_repair(streak: int) -> bool:
    """Whether a tick that found the route not in place for the ``streak``-th tick in a row repairs it.

    Every tick up to :data:`REPAIRS_IN_A_ROW`; then on powers of two up to :data:`MAX_BACKOFF_TICKS`;
    then every :data:`MAX_BACKOFF_TICKS` ticks. Over ``n`` contested ticks that is about
    ``3 + log2(min(n, 32)) + n / 32`` writes instead of ``n``.
    """
    if streak <= REPAIRS_IN_A_ROW:
        return True
    if streak <= MAX_BACKOFF_TICKS:
        return streak & (streak - 1) == 0
    return streak % MAX_BACKOFF_TICKS == 0


def previous_streak(status: dict[str, Any]) -> int:
    """The streak stored by the last tick (0 when none, or unreadable)."""
    value = (status.get("traffic") or {}).get("overwrites", 0)
    return value if isinstance(value, int) and value >= 0 else 0


@dataclass(frozen=True)
class DriftReport:
    """What a tick's route check means for the condition and the Events."""

    condition: tuple[ConditionStatus, str, str] | None
    """``(status, reason, message)`` of ``RouteContested`` to set, or None to leave it as it is."""
    events: tuple[Event, ...] = ()


def judge_drift(before: int, streak: int, provider: str, reason: str, in_place: bool = True) -> DriftReport:
    """The condition and Events for a streak that went from ``before`` to ``streak`` this tick.

    Args:
        before: the streak stored by the previous tick.
        streak: this tick's streak (0: no overwrite found this tick).
        provider: the routing provider's name, for messages.
        reason: what the provider observed (its verification reason).
        in_place: the provider verified the weights in place (or cannot tell) at the end of the tick; a
            contest is only declared over when they are.
    """
    if streak == 0:
        if before > REPAIRS_IN_A_ROW and in_place:
            message = f"{provider}: the route carries Arbiter's weights again after {before} contested ticks"
            return DriftReport(("False", "InPlace", message), (Event("Normal", "RouteInPlace", message),))
        return DriftReport(None)
    if streak == 1:
        message = f"{provider}: the route was changed by someone else ({reason}); restored"
        return DriftReport(None, (Event("Warning", "RouteOverwritten", message),))
    if streak == REPAIRS_IN_A_ROW + 1:
        message = (
            f"{provider}: the route was overwritten on {streak} ticks in a row ({reason}); another writer "
            "(a GitOps tool with self-heal?) keeps re-applying it. Arbiter now re-applies it only with "
            f"back-off (at most every {MAX_BACKOFF_TICKS} ticks); let that tool ignore the fields Arbiter "
            "manages (docs/routing.md, GitOps)"
        )
        return DriftReport(
            ("True", "OverwrittenRepeatedly", message), (Event("Warning", "RouteContested", message),)
        )
    if streak > REPAIRS_IN_A_ROW:
        message = (
            f"{provider}: the route was overwritten on {streak} ticks in a row ({reason}); re-applied with "
            f"back-off (at most every {MAX_BACKOFF_TICKS} ticks); let the other writer ignore the fields "
            "Arbiter manages (docs/routing.md, GitOps)"
        )
        return DriftReport(("True", "OverwrittenRepeatedly", message))
    return DriftReport(None)
