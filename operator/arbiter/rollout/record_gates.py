"""Gate reports into status: the gates' part of :mod:`arbiter.rollout.record`, kept in its own module.

``status.gates`` holds one entry per gate (its last answer, in ``spec.gates`` order); the
``GatesPassed`` condition and the Events come from the report, and the calls still to make go to the
plan for the handler.
"""

from __future__ import annotations

from dataclasses import replace

from arbiter.api.weights import split_weights
from arbiter.rollout.actions import Hold
from arbiter.rollout.gates import GateReport
from arbiter.rollout.plan import RoutingAction
from arbiter.rollout.progression import ProgressionReport
from arbiter.rollout.record import Record


def apply_gate_report(rec: Record, report: GateReport) -> None:
    """Store the answers, set the condition, post the Events and pass the calls on to the handler."""
    if report.results:
        entries = {str(e.get("name")): e for e in rec.status.get("gates") or ()}
        entries.update({name: dict(entry) for name, entry in report.results.items()})
        order = [g.name for g in rec.spec.gates or ()]
        rec.status["gates"] = [entries[n] for n in order if n in entries]
    if report.condition is not None:
        rec.condition(report.condition)
    for type_, reason, message in report.events:
        rec.event(type_, reason, message)
    rec.gate_calls.extend(report.calls)


def waiting(report: GateReport) -> Hold:
    """The hold while gates are being asked (the handler ticks again with their answers)."""
    names = ", ".join(c.name for c in report.calls)
    action = report.calls[0].action if report.calls else "the next action"
    return Hold(f"asking gate {names} before: {action}")


def hold_before_rollout(rec: Record, report: GateReport) -> None:
    """A ``preRollout`` gate keeps the challengers out: the current weights, no mirror."""
    apply_gate_report(rec, report)
    rec.apply(report.action or waiting(report))
    if rec.routing is None:  # not ended by a rollback
        weights = rec.status.get("weights") or split_weights(rec.champion, rec.challengers, 0)
        rec.routing = RoutingAction(weights=dict(weights))


def gated_progression(rec: Record, progression: ProgressionReport, report: GateReport) -> ProgressionReport:
    """The step's verdict with its step change or promotion withheld until the gates pass."""
    apply_gate_report(rec, report)
    if report.open:
        return progression
    # Back to the state before the step change was computed (the step's samples keep counting).
    state = replace(
        progression.state, step_samples=rec.state.step_samples, shadow_passed=rec.state.shadow_passed
    )
    return replace(
        progression, state=state, weights=None, next_step=None, action=report.action or waiting(report)
    )
