"""Judge webhook gates (``spec.gates``) from the verdicts the handler brought back. Pure, no I/O.

A gate is asked before a traffic change: before the first step (``preRollout``), before each step change
(``step``), before an automatic promotion (``confirmPromotion``); a ``postRollback`` gate is told once
after a rollback and only reported. The engine asks this module, at the point of each action, whether
the gates of that type let it through. Nothing here calls anything: when a gate has not been asked for
this action yet, the report lists a :class:`GateCall`; the handler makes the calls and runs the tick
again with the :class:`GateVerdict` answers (the same inputs, so the same decisions up to that point).

Every answer is kept in ``status.gates`` (one entry per gate, the last answer), so a passed gate is never
asked again for the same action, even across an operator restart: ``preRollout`` once per run, ``step``
once per step, ``confirmPromotion`` once per winner; a failing gate is asked again on the next tick.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from arbiter.api import Phase
from arbiter.api.v1alpha1 import Gate, GateFailure, GateType
from arbiter.rollout.actions import DecisionOutcome, End, Hold
from arbiter.rollout.view import ConditionReport

#: The condition every gate answer sets.
CONDITION = "GatesPassed"


@dataclass(frozen=True)
class GateCall:
    """A gate the handler should call for this tick's pending action.

    Attributes:
        name: the gate's name in ``spec.gates``.
        type: when it is asked.
        action: the pending action in words, e.g. ``advance to step 1 (50% challenger)``.
        step: the step the action leads to (``step`` gates) or the current step.
        target: the challenger the action is about (the winner for ``confirmPromotion``).
    """

    name: str
    type: GateType
    action: str
    step: int | None = None
    target: str | None = None


@dataclass(frozen=True)
class GateVerdict:
    """A gate's answer: 2xx passes; a non-2xx, a timeout or a connection error fails."""

    passed: bool
    code: int | None = None
    message: str = ""


@dataclass(frozen=True)
class GateReport:
    """What the gates of one type say about one pending action.

    Attributes:
        calls: gates not asked yet for this action (the handler calls them and ticks again).
        results: the new ``status.gates`` entries from this tick's answers, by gate name.
        action: what a failing gate asks for: a hold, or an end by rollback (``onFailure: Rollback``).
        condition: the ``GatesPassed`` condition when a gate answered this tick.
        events: ``(type, reason, message)`` for each newly failing or recovered gate.
    """

    calls: tuple[GateCall, ...] = ()
    results: Mapping[str, Mapping[str, Any]] | None = None
    action: Hold | End | None = None
    condition: ConditionReport | None = None
    events: tuple[tuple[str, str, str], ...] = ()

    @property
    def open(self) -> bool:
        """Every gate of the type has passed for this action: the action may go ahead."""
        return not self.calls and self.action is None


def stored_results(status: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """``status.gates`` by gate name."""
    return {
        str(entry.get("name")): entry for entry in status.get("gates") or () if isinstance(entry, Mapping)
    }


def _same_action(record: Mapping[str, Any] | None, call: GateCall) -> bool:
    return (
        record is not None
        and record.get("type") == call.type.value
        and record.get("step") == call.step
        and record.get("target") == call.target
    )


def judge_gates(
    gates: Sequence[Gate],
    call: GateCall,
    stored: Mapping[str, Mapping[str, Any]],
    verdicts: Mapping[str, GateVerdict],
    now: str,
    champion: str,
) -> GateReport:
    """May the pending action (described by ``call``, whose name is ignored) go ahead?

    Args:
        gates: ``spec.gates``.
        call: the pending action; its ``type`` selects the gates asked.
        stored: ``status.gates`` by name (:func:`stored_results`).
        verdicts: this tick's answers by gate name.
        now: the tick's time (RFC 3339).
        champion: who gets all traffic on a rollback.

    Returns:
        Calls still to make, the answers to store, and the hold or rollback a failure asks for. With no
        gate of the type, an open report.
    """
    calls: list[GateCall] = []
    results: dict[str, Mapping[str, Any]] = {}
    events: list[tuple[str, str, str]] = []
    failed: list[tuple[Gate, dict[str, Any]]] = []
    answered: list[str] = []
    for gate in gates:
        if gate.type is not call.type:
            continue
        asked = GateCall(gate.name, call.type, call.action, call.step, call.target)
        before = stored.get(gate.name)
        verdict = verdicts.get(gate.name)
        if verdict is None:
            if _same_action(before, asked) and before is not None and before.get("passed"):
                continue
            calls.append(asked)
            continue
        answered.append(gate.name)
        retried = _same_action(before, asked) and before is not None and not before.get("passed")
        attempts = int(before.get("attempts", 1)) + 1 if retried and before is not None else 1
        entry = _entry(gate, asked, verdict, now, attempts)
        results[gate.name] = entry
        if verdict.passed:
            if retried:
                events.append(
                    (
                        "Normal",
                        "GatePassed",
                        f"gate {gate.name} ({gate.type.value}) passed: {entry['message']}",
                    )
                )
        else:
            failed.append((gate, entry))
            if not retried or (before is not None and before.get("message") != entry["message"]):
                events.append(("Warning", "GateFailed", _failure(gate, call, entry)))
    if failed:
        worst, worst_entry = next(
            ((g, e) for g, e in failed if g.on_failure is GateFailure.ROLLBACK), failed[0]
        )
        reason = _failure(worst, call, worst_entry)
        failing = ConditionReport(CONDITION, False, "GateFailed", reason)
        if worst.on_failure is GateFailure.ROLLBACK:
            end = End(
                Phase.ROLLED_BACK, DecisionOutcome.ROLLBACK, f"{reason} (onFailure: Rollback)", champion
            )
            return GateReport(tuple(calls), results, end, failing, tuple(events))
        return GateReport(
            tuple(calls), results, Hold(f"{reason}; holding (onFailure: Hold)"), failing, tuple(events)
        )
    condition: ConditionReport | None = None
    if answered and not calls:
        names = ", ".join(answered)
        condition = ConditionReport(CONDITION, True, "GatesPassed", f"{names} passed before: {call.action}")
    if calls and not answered:
        return GateReport(tuple(calls))
    return GateReport(tuple(calls), results, None, condition, tuple(events))


def judge_post_rollback(
    gates: Sequence[Gate],
    stored: Mapping[str, Mapping[str, Any]],
    verdicts: Mapping[str, GateVerdict],
    now: str,
    reason: str,
) -> GateReport:
    """After a rollback, each ``postRollback`` gate is told once; its answer is only reported.

    Args:
        reason: why the experiment rolled back (passed on in the call's action).
    """
    call = GateCall("", GateType.POST_ROLLBACK, f"rolled back: {reason}")
    calls: list[GateCall] = []
    results: dict[str, Mapping[str, Any]] = {}
    events: list[tuple[str, str, str]] = []
    for gate in gates:
        if gate.type is not GateType.POST_ROLLBACK or gate.name in stored:
            continue
        verdict = verdicts.get(gate.name)
        asked = GateCall(gate.name, call.type, call.action)
        if verdict is None:
            calls.append(asked)
            continue
        entry = _entry(gate, asked, verdict, now, 1)
        results[gate.name] = entry
        if verdict.passed:
            events.append(("Normal", "GateNotified", f"postRollback gate {gate.name}: {entry['message']}"))
        else:
            events.append(
                ("Warning", "GateFailed", f"postRollback gate {gate.name} failed: {entry['message']}")
            )
    return GateReport(tuple(calls), results, None, None, tuple(events))


def _entry(gate: Gate, call: GateCall, verdict: GateVerdict, now: str, attempts: int) -> dict[str, Any]:
    """The ``status.gates`` entry for one answer."""
    entry: dict[str, Any] = {
        "name": gate.name,
        "type": gate.type.value,
        "passed": verdict.passed,
        "message": verdict.message[:512] or ("passed" if verdict.passed else "failed"),
        "time": now,
        "attempts": attempts,
        "action": call.action,
    }
    if call.step is not None:
        entry["step"] = call.step
    if call.target is not None:
        entry["target"] = call.target
    if verdict.code is not None:
        entry["code"] = verdict.code
    return entry


def _failure(gate: Gate, call: GateCall, entry: Mapping[str, Any]) -> str:
    return f"gate {gate.name} ({gate.type.value}) failed before {call.action}: {entry['message']}"
