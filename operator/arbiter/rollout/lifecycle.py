"""Admission of an experiment: is the spec valid and are its workloads ready? Pure, no I/O.

This is the part of the state machine before any traffic moves: ``Pending`` until every Deployment
and Service exists and is ready, then ``Progressing`` at step 0 with the champion at 100%; ``Failed``
(with the validation message) when the spec cannot be parsed, and back to ``Pending`` once it is fixed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from arbiter.api import TERMINAL_PHASES, ModelExperimentSpec, Phase
from arbiter.api.conditions import get_condition, set_condition
from arbiter.api.v1alpha1 import MAX_HISTORY

READY = "Ready"
REASON_INVALID_SPEC = "InvalidSpec"
REASON_WORKLOADS_NOT_READY = "WorkloadsNotReady"
REASON_WORKLOADS_READY = "WorkloadsReady"


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to post about the experiment."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True)
class Admission:
    """The status to store and the events to post after one look at the experiment."""

    status: dict[str, Any]
    events: tuple[Event, ...] = field(default_factory=tuple)

    def changed(self, before: dict[str, Any]) -> bool:
        """True when the status differs from ``before`` (so a patch is needed)."""
        return self.status != before


def admit(
    *,
    status: dict[str, Any],
    generation: int | None,
    spec: ModelExperimentSpec | None,
    spec_error: str | None,
    workload_problems: list[str],
    now: str,
) -> Admission:
    """Decide the admission part of the status for one tick.

    Args:
        status: the stored status (may be empty).
        generation: metadata.generation of the object.
        spec: the parsed spec, or None when it failed to parse.
        spec_error: the validation message when the spec failed to parse.
        workload_problems: what is missing or unready (empty when all is ready).
        now: RFC 3339 timestamp for transitions.

    Returns:
        The new status (a full copy) and the events to post.
    """
    new = dict(status)
    phase = _phase(status.get("phase"))
    if phase in TERMINAL_PHASES and not _failed_for_invalid_spec(status):
        return Admission(new)
    new["observedGeneration"] = generation
    events: list[Event] = []

    if spec is None:
        message = f"invalid spec: {spec_error}"
        if phase is not Phase.FAILED or _ready_message(status) != message:
            events.append(Event("Warning", REASON_INVALID_SPEC, message))
        _transition(new, Phase.FAILED, message, now)
        new["conditions"] = set_condition(
            new.get("conditions"), READY, "False", REASON_INVALID_SPEC, message, now, generation
        )
        return Admission(new, tuple(events))

    if workload_problems:
        message = "waiting for workloads: " + "; ".join(workload_problems)
        if phase in (None, Phase.PENDING, Phase.FAILED):
            if phase is not Phase.PENDING:
                events.append(Event("Normal", REASON_WORKLOADS_NOT_READY, message))
            _transition(new, Phase.PENDING, message, now)
        elif _ready_status(status) != "False":
            events.append(Event("Warning", REASON_WORKLOADS_NOT_READY, message))
        new["conditions"] = set_condition(
            new.get("conditions"), READY, "False", REASON_WORKLOADS_NOT_READY, message, now, generation
        )
        return Admission(new, tuple(events))

    message = "all Deployments and Services are ready"
    if phase in (None, Phase.PENDING, Phase.FAILED):
        weights = {spec.champion.name: 100, **{c.name: 0 for c in spec.challengers}}
        new.update(
            {
                "currentStep": 0,
                "weights": weights,
                "challengerWeight": 0,
                "startedAt": now,
                "stepStartedAt": now,
            }
        )
        _transition(
            new,
            Phase.PROGRESSING,
            f"{message}; starting at step 0 with the champion at 100%",
            now,
            label=Phase.PROGRESSING.value if spec.mode.value == "Shadow" else "Progressing(step 0)",
        )
        events.append(Event("Normal", Phase.PROGRESSING.value, new["message"]))
    elif _ready_status(status) == "False":
        events.append(Event("Normal", REASON_WORKLOADS_READY, message))
    new["conditions"] = set_condition(
        new.get("conditions"), READY, "True", REASON_WORKLOADS_READY, message, now, generation
    )
    return Admission(new, tuple(events))


def _phase(value: Any) -> Phase | None:
    try:
        return Phase(value) if value else None
    except ValueError:
        return None


def _ready_status(status: dict[str, Any]) -> str | None:
    condition = get_condition(status.get("conditions"), READY)
    return None if condition is None else str(condition.get("status"))


def _ready_message(status: dict[str, Any]) -> str | None:
    condition = get_condition(status.get("conditions"), READY)
    return None if condition is None else str(condition.get("message"))


def _failed_for_invalid_spec(status: dict[str, Any]) -> bool:
    condition = get_condition(status.get("conditions"), READY)
    return status.get("phase") == Phase.FAILED.value and bool(
        condition and condition.get("reason") == REASON_INVALID_SPEC
    )


def _transition(status: dict[str, Any], to: Phase, reason: str, now: str, label: str | None = None) -> None:
    """Set phase and message, and record the transition in the bounded history (``label`` names ``to``)."""
    before = status.get("phase") or "New"
    status["message"] = reason
    if before == to.value:
        return
    status["phase"] = to.value
    history = [
        *(status.get("history") or []),
        {"time": now, "from": before, "to": label or to.value, "reason": reason},
    ]
    status["history"] = history[-MAX_HISTORY:]
