"""Which transitions one status write made: the before/after comparison notifications are sent from.

Pure, no I/O. The handler calls :func:`detect` with the status a tick read and the status it stored
(only after the write succeeded, and the write carries the resourceVersion it read), so every
transition is found exactly once: a restarted operator reads the stored status, and a tick whose write
was refused as stale found nothing. A crash between the write and the send loses that notification
(at most once), it never repeats one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from arbiter.api.v1alpha1 import NotificationEvent, NotificationSeverity

Severity = NotificationSeverity
Kind = NotificationEvent
SEVERITY_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}


#: The kinds that are a state the experiment stays in (an alert that fires until it ends).
STATE_KINDS = frozenset({Kind.PAUSED, Kind.SAMPLE_RATIO_MISMATCH, Kind.METRICS_UNAVAILABLE, Kind.FAILED})

_PAUSE_KIND = {
    "SampleRatioMismatch": Kind.SAMPLE_RATIO_MISMATCH,
    "MetricsUnavailable": Kind.METRICS_UNAVAILABLE,
}
#: Severity of a Paused transition by ``status.pauseReason``: harm shown pages, waiting for a human warns.
_PAUSE_SEVERITY = {
    "Spec": Severity.INFO,
    "AwaitingPromotion": Severity.WARNING,
    "Timeout": Severity.WARNING,
    "Loss": Severity.CRITICAL,
    "SampleRatioMismatch": Severity.CRITICAL,
    "MetricsUnavailable": Severity.WARNING,
}
_TERMINAL = {
    "Promoted": (Kind.PROMOTED, Severity.INFO),
    "RolledBack": (Kind.ROLLED_BACK, Severity.CRITICAL),
    "Concluded": (Kind.CONCLUDED, Severity.INFO),
}
_RUNNING = ("Progressing", "Paused")


@dataclass(frozen=True)
class Notice:
    """One transition to tell receivers about.

    Attributes:
        kind: what happened.
        severity: how loud.
        reason: why, in the engine's words (with its numbers).
        ended: the state this transition left (e.g. MetricsUnavailable on MetricsRecovered), so an
            alert about it can be resolved.
        pause_reason: ``status.pauseReason`` of a Paused transition.
        ended_severity: the severity the ended state was announced with.
    """

    kind: Kind
    severity: Severity
    reason: str
    ended: Kind | None = None
    pause_reason: str | None = None
    ended_severity: Severity | None = None


#: How a dry run's notices start: nothing they tell about happened to the traffic.
DRY_RUN_PREFIX = "dry run, no traffic changed: "


def as_dry_run(notice: Notice) -> Notice:
    """A dry run's notice: Info (a dry run pages nobody), its reason saying nothing was done."""
    return replace(
        notice,
        severity=Severity.INFO,
        reason=notice.reason if notice.reason.startswith(DRY_RUN_PREFIX) else DRY_RUN_PREFIX + notice.reason,
        ended_severity=Severity.INFO if notice.ended_severity is not None else None,
    )


def state_of(status: Mapping[str, Any]) -> Kind | None:
    """The lasting state a status is in (Paused for which reason, Failed), or None."""
    phase = status.get("phase")
    if phase == "Failed":
        return Kind.FAILED
    if phase == "Paused":
        return _PAUSE_KIND.get(str(status.get("pauseReason")), Kind.PAUSED)
    return None


def state_severity(status: Mapping[str, Any]) -> Severity | None:
    """The severity a lasting state is announced with (None when not in one)."""
    state = state_of(status)
    if state is None:
        return None
    if state is Kind.FAILED:
        return Severity.WARNING
    return _PAUSE_SEVERITY.get(str(status.get("pauseReason") or ""), Severity.WARNING)


def detect(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[Notice]:
    """The transitions from the stored status ``before`` to the written status ``after``.

    Returns:
        At most one notice per write, in the order they happened (empty when nothing changed that a
        receiver is told about: a Hold, a new p-value, a condition).
    """
    was, now = before.get("phase"), after.get("phase")
    reason = _reason(after)
    old_state, new_state = state_of(before), state_of(after)
    left = old_state != new_state or before.get("pauseReason") != after.get("pauseReason")
    ended = old_state if old_state is not None and left else None
    ended_severity = state_severity(before) if ended is not None else None
    if now in _TERMINAL and was != now:
        kind, severity = _TERMINAL[now]
        return [Notice(kind, severity, reason, ended, None, ended_severity)]
    if now == "Failed" and was != "Failed":
        return [Notice(Kind.FAILED, Severity.WARNING, reason, ended, None, ended_severity)]
    if now == "Paused" and (was != "Paused" or before.get("pauseReason") != after.get("pauseReason")):
        code = str(after.get("pauseReason") or "")
        assert new_state is not None
        severity = _PAUSE_SEVERITY.get(code, Severity.WARNING)
        return [Notice(new_state, severity, reason, ended, code or None, ended_severity)]
    if now == "Progressing" and was == "Paused":
        kind = Kind.METRICS_RECOVERED if old_state is Kind.METRICS_UNAVAILABLE else Kind.RESUMED
        return [Notice(kind, Severity.INFO, reason, ended, None, ended_severity)]
    if now == "Progressing" and was not in _RUNNING:
        return [Notice(Kind.STARTED, Severity.INFO, reason, ended, None, ended_severity)]
    if now == "Progressing" and _step(after) < _step(before):
        # A spec change that asks a different question restarts the analysis at step 0.
        return [Notice(Kind.STARTED, Severity.INFO, reason)]
    if now == "Progressing" and (_step(after) > _step(before) or _new_history(before, after)):
        # A step passed, or a shadow judged safe continues as a canary (a new history entry, same step).
        return [Notice(Kind.ADVANCED, Severity.INFO, reason)]
    return []


def _new_history(before: Mapping[str, Any], after: Mapping[str, Any]) -> bool:
    """Whether the write added a history entry (compared by the last one: the history is bounded)."""
    old, new = before.get("history") or [], after.get("history") or []
    return bool(new) and (not old or old[-1] != new[-1])


def _step(status: Mapping[str, Any]) -> int:
    try:
        return int(status.get("currentStep") or 0)
    except (TypeError, ValueError):
        return 0


def _reason(status: Mapping[str, Any]) -> str:
    decision = status.get("decision") or {}
    history = status.get("history") or []
    last = history[-1].get("reason") if history and isinstance(history[-1], Mapping) else None
    return str(status.get("message") or decision.get("reason") or last or "")
