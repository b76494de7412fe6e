"""The one place that writes status: judges' reports become phase, history, conditions, Events and traffic.

:class:`Record` holds this tick's copy of the status and the engine state; the ``apply_*`` functions
turn each judge's report into status in the same way every time.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from arbiter.api import ModelExperimentSpec, OnLoss, OnWin, Phase
from arbiter.api.conditions import ConditionStatus, set_condition
from arbiter.api.timestamps import parse_rfc3339, rfc3339
from arbiter.api.v1alpha1 import MAX_HISTORY
from arbiter.api.weights import split_weights, winner_weights
from arbiter.rollout import dry_run, geometry
from arbiter.rollout.actions import (
    Action,
    DecisionOutcome,
    End,
    Hold,
    Pause,
    PauseReason,
    Rollback,
    Unpause,
    Win,
)
from arbiter.rollout.availability import AvailabilityReport
from arbiter.rollout.controls import ControlReport, GateReport, IdentityReport, Resume, Retry
from arbiter.rollout.counters import CounterReport
from arbiter.rollout.gates import GateCall
from arbiter.rollout.guardrails import GuardrailReport
from arbiter.rollout.lifecycle import Event
from arbiter.rollout.plan import Plan, RoutingAction
from arbiter.rollout.primary import MetricReport, SecondaryReport
from arbiter.rollout.progression import ProgressionReport
from arbiter.rollout.srm import SrmReport
from arbiter.rollout.state import EngineState
from arbiter.rollout.view import ConditionReport, TickView


class Record:
    """This tick's status and engine state, and the primitive ways to change them."""

    def __init__(
        self, spec: ModelExperimentSpec, status: Mapping[str, Any], now: dt.datetime, generation: int | None
    ) -> None:
        self.spec = spec
        self.status: dict[str, Any] = json.loads(json.dumps(dict(status)))  # deep copy, JSON-only
        self.state = EngineState.from_status(self.status)
        self.now = now
        self.now_text = rfc3339(now)
        self.generation = generation
        self.events: list[Event] = []
        self.routing: RoutingAction | None = None
        self.outcome: str = DecisionOutcome.WAIT
        self.champion = spec.champion.name
        self.challengers = [c.name for c in spec.challengers]
        self.gate_calls: list[GateCall] = []

    @property
    def phase(self) -> Phase:
        return Phase(self.status.get("phase") or Phase.PROGRESSING.value)

    @property
    def current_step(self) -> int:
        return int(self.status.get("currentStep", 0))

    def view(self) -> TickView:
        """A snapshot of the status for a judge."""
        return TickView(
            now=self.now,
            phase=self.phase,
            pause_reason=self.status.get("pauseReason"),
            current_step=self.current_step,
            weights=self.status.get("weights"),
            challenger_weight=self.status.get("challengerWeight", 0),
            started_at=parse_rfc3339(self.status.get("startedAt")),
            step_started_at=parse_rfc3339(self.status.get("stepStartedAt")),
            traffic=self.status.get("traffic") or {},
            handled_actions=self.status.get("handledActions") or {},
            guardrails=tuple(self.status.get("guardrails") or ()),
        )

    def plan(self) -> Plan:
        """The finished tick."""
        self.status["engine"] = self.state.to_status()
        self.status["observedGeneration"] = self.generation
        plan = Plan(self.status, tuple(self.events), self.routing, self.outcome, tuple(self.gate_calls))
        return dry_run.would_have(plan, self.spec) if self.spec.dry_run else plan

    # ----------------------------------------------------------------- primitives

    def event(self, type_: str, reason: str, message: str) -> None:
        self.events.append(Event("Warning" if type_ == "Warning" else "Normal", reason, message))

    def decide(self, outcome: DecisionOutcome, reason: str, winner: str | None = None) -> None:
        """Record the decision of this tick (status.decision); its time is kept while it repeats."""
        self.outcome = outcome
        record: dict[str, Any] = {"outcome": outcome.value, "reason": reason, "time": self.now_text}
        if winner is not None:
            record["winner"] = winner
        previous = self.status.get("decision") or {}
        if previous.get("outcome") == outcome and previous.get("reason") == reason:
            record["time"] = previous.get("time", self.now_text)
        self.status["decision"] = record
        self.status["message"] = reason

    def label(self, phase: str) -> str:
        return geometry.phase_label(phase, self.spec, self.state, self.current_step)

    def transition(
        self, to: Phase, reason: str, label: str | None = None, from_label: str | None = None
    ) -> None:
        """Move to another phase (or step, with ``label``) and keep the bounded history."""
        before_label = from_label or self.label(self.status.get("phase") or "New")
        self.status["phase"] = to.value
        after_label = label or self.label(to.value)
        if before_label == after_label:
            return
        entry = {"time": self.now_text, "from": before_label, "to": after_label, "reason": reason}
        self.status["history"] = [*(self.status.get("history") or []), entry][-MAX_HISTORY:]

    def condition(self, report: ConditionReport) -> None:
        status: ConditionStatus = "Unknown" if report.ok is None else ("True" if report.ok else "False")
        self.status["conditions"] = set_condition(
            self.status.get("conditions"),
            report.type,
            status,
            report.reason,
            report.message,
            self.now_text,
            self.generation,
        )

    def set_weights(self, weights: dict[str, int], mirror: tuple[str, int] | None = None) -> None:
        self.status["weights"] = weights
        self.status["challengerWeight"] = sum(weights[c] for c in self.challengers)
        self.routing = RoutingAction(weights=weights, mirror=mirror)

    def hold_weights(self) -> None:
        weights = self.status.get("weights") or split_weights(self.champion, self.challengers, 0)
        self.routing = RoutingAction(weights=dict(weights), mirror=geometry.mirror(self.spec, self.state))

    def start_step(self, step: int) -> None:
        self.status["currentStep"] = step
        self.status["stepStartedAt"] = self.now_text

    def route_step(self) -> None:
        """Route the current step's weights (and the shadow's mirror)."""
        weights = geometry.desired_weights(self.spec, self.state, self.current_step)
        self.set_weights(weights, geometry.mirror(self.spec, self.state))

    def restart_analysis(self) -> None:
        """Forget everything measured: the engine state (but its identity), the analysis and guardrails."""
        self.state = self.state.restarted()
        self.status.pop("analysis", None)
        self.status.pop("guardrails", None)
        self.status.pop("gates", None)  # a new run asks its gates again

    # ----------------------------------------------------------------- actions

    def apply(self, action: Action | None) -> None:
        """Carry out one judge's action."""
        match action:
            case None:
                return
            case Hold(reason):
                self.decide(DecisionOutcome.HOLD, reason)
            case Pause(code, reason):
                self.pause(code, reason)
            case Unpause(reason):
                self.unpause(reason)
            case End(phase, outcome, reason, winner):
                self.end(phase, outcome, reason, winner)
            case Rollback(reason):
                if self.spec.decision.on_loss is OnLoss.PAUSE:
                    self.pause(PauseReason.LOSS, f"{reason}; paused for a human (onLoss: Pause)")
                    self.hold_weights()
                else:
                    self.end(Phase.ROLLED_BACK, DecisionOutcome.ROLLBACK, reason, self.champion)
            case Win(winner, why):
                reason = f"{winner} wins: {why}"
                if self.spec.decision.on_win is not OnWin.PAUSE:
                    self.end(Phase.PROMOTED, DecisionOutcome.PROMOTE, reason, winner)
                    return
                if self.status.get("pauseReason") != PauseReason.AWAITING_PROMOTION:
                    waiting = f"{reason}; waiting for arbiter.dev/promote (onWin: Pause)"
                    self.pause(PauseReason.AWAITING_PROMOTION, waiting)
                self.hold_weights()

    def pause(self, code: PauseReason, reason: str) -> None:
        if self.phase is not Phase.PAUSED or self.status.get("pauseReason") != code:
            self.event("Warning", f"Paused{code.value}", reason)
        self.status["pauseReason"] = code.value
        self.transition(Phase.PAUSED, reason)
        self.decide(DecisionOutcome.PAUSE, reason)
        self.condition(ConditionReport("Progressing", False, f"Paused{code.value}", reason))

    def unpause(self, reason: str) -> None:
        self.status.pop("pauseReason", None)
        self.transition(Phase.PROGRESSING, reason)
        self.event("Normal", "Resumed", reason)
        self.decide(DecisionOutcome.RESUME, reason)
        self.condition(ConditionReport("Progressing", True, "Resumed", reason))

    def end(self, phase: Phase, outcome: DecisionOutcome, reason: str, winner: str) -> None:
        """A terminal decision: route everything to ``winner`` and stop."""
        self.status.pop("pauseReason", None)
        weights = winner_weights(winner, [self.champion, *self.challengers])
        self.status["weights"] = weights
        self.status["challengerWeight"] = sum(weights[c] for c in self.challengers)
        self.routing = RoutingAction(weights=weights, final=True, winner=winner)
        self.transition(phase, reason)
        self.decide(outcome, reason, winner=winner)
        self.condition(ConditionReport("Progressing", False, phase.value, reason))
        self.condition(ConditionReport("Decided", True, outcome.value, reason))
        self.event("Warning" if phase is Phase.ROLLED_BACK else "Normal", phase.value, reason)


# --------------------------------------------------------------------- reports


def apply_identity(record: Record, report: IdentityReport) -> None:
    """Store the identity; a changed one restarts the analysis at step 0."""
    record.state = replace(record.state, identity=report.identity)
    if not report.restart:
        return
    record.restart_analysis()
    record.start_step(0)
    record.status.pop("pauseReason", None)
    record.transition(Phase.PROGRESSING, report.reason)
    record.route_step()
    record.event("Normal", "Restarted", report.reason)
    record.decide(DecisionOutcome.WAIT, report.reason)


def apply_controls(record: Record, report: ControlReport) -> bool:
    """Mark the annotation values handled and act; True when the tick is over."""
    if report.handled is not None:
        record.status["handledActions"] = dict(report.handled)
    for message in report.ignored:
        record.event("Warning", "ActionIgnored", message)
    match report.action:
        case End() as end:
            record.apply(end)
        case Resume(reason, acknowledge):
            if acknowledge is not None:
                record.state = replace(record.state, srm_acknowledged=acknowledge)
            record.unpause(reason)
            record.hold_weights()
        case Retry(reason):
            record.restart_analysis()
            record.status.pop("decision", None)
            record.start_step(0)
            record.status["startedAt"] = record.now_text
            record.transition(Phase.PROGRESSING, reason)
            record.route_step()
            record.condition(ConditionReport("Decided", False, "Retried", reason))
            record.condition(ConditionReport("Progressing", True, "Retried", reason))
            record.event("Normal", "Retried", reason)
            record.decide(DecisionOutcome.RESUME, reason)
        case None:
            return False
    return True


def moved_split(record: Record, live: dry_run.LiveSplit | None) -> dict[str, int] | None:
    """The split the data plane carried when the tick began, when it is not the status' weights.

    It happens when a traffic change was routed and its status write was lost (the operator killed in
    between, or the write refused as stale): the status still names the old step while users already
    got the new split, so that step's recent samples are not the old step's.
    """
    if live is None or live.weights is None or record.status.get("weights") is None:
        return None
    variants = [record.champion, *record.challengers]
    observed = {v: int(live.weights.get(v, 0)) for v in variants}
    expected = {v: int(record.status["weights"].get(v, 0)) for v in variants}
    return None if observed == expected or sum(observed.values()) <= 0 else observed


def apply_moved_split(record: Record, observed: Mapping[str, int]) -> None:
    """After deciding on a moved split: keep it if the tick made the same change again, else count anew.

    The same change decided again (the usual case: the same data, the same step rules) is the lost
    write made good, and the new step counts from its own baseline. Anything else puts the status'
    weights back; the step's samples, which mixed both splits, are counted anew once they are in place.
    """
    routed = record.routing
    if routed is not None and (routed.final or dict(routed.weights or {}) == dict(observed)):
        return
    record.state = record.state.with_step_unsettled()
    message = (
        f"the data plane carried {dict(observed)} when this tick began, not the status' "
        f"{record.status.get('weights')} (a traffic change whose status write was lost): the status' "
        "weights are applied again and this step's samples are counted anew"
    )
    record.status["traffic"] = {"verified": "No", "reason": message, "weights": dict(observed)}
    record.event("Warning", "SplitRestored", message)


def apply_gate(record: Record, report: GateReport) -> bool:
    """A spec pause or a timeout; True when the tick is over (the traffic held unless it ended)."""
    record.apply(report.action)
    if report.over and not isinstance(report.action, End):
        record.hold_weights()
    return report.over


def apply_availability(record: Record, report: AvailabilityReport) -> None:
    record.state = replace(record.state, consecutive_errors=report.consecutive_errors)
    record.condition(report.condition)
    record.apply(report.action)


def apply_counters(record: Record, report: CounterReport) -> None:
    record.state = replace(record.state, counters=report.trackers)


def apply_guardrails(record: Record, report: GuardrailReport) -> None:
    record.status["guardrails"] = [check.to_dict() for check in report.checks]
    record.state = replace(record.state, guardrail_tests=report.tests)
    record.condition(report.condition)
    record.apply(report.action)


def apply_srm(record: Record, report: SrmReport) -> None:
    record.state = replace(record.state, srm_running=report.running)
    if report.analysis is not None:
        record.status.setdefault("analysis", {})["srm"] = report.analysis
    if report.condition is not None:
        record.condition(report.condition)
    record.apply(report.action)


def apply_metrics(record: Record, primary: MetricReport, secondary: SecondaryReport) -> None:
    record.state = replace(
        record.state, primary=primary.state, secondary=secondary.states, planned_sizes=secondary.planned_sizes
    )
    if primary.analysis is not None:
        record.status.setdefault("analysis", {})["primary"] = primary.analysis
    if secondary.rows is not None:
        record.status.setdefault("analysis", {})["secondary"] = secondary.rows


def apply_progression(record: Record, report: ProgressionReport) -> None:
    record.state = report.state
    for elimination in report.eliminations:
        warning = "Warning" if elimination.verdict.value == "Loss" else "Normal"
        record.event(warning, "ChallengerEliminated", elimination.message)
    if report.touch_traffic:
        if report.weights is not None and report.next_step is None:
            record.set_weights(report.weights)
        elif report.next_step is None:
            record.hold_weights()
    step = report.next_step
    if step is not None:
        record.start_step(step.step)
        record.set_weights(report.weights or {})
        record.transition(Phase.PROGRESSING, step.reason, label=step.label, from_label=step.from_label)
        record.event("Normal", step.event_reason, step.reason)
        record.decide(DecisionOutcome.ADVANCE, step.reason)
        if step.condition:
            record.condition(ConditionReport("Progressing", True, "Advanced", step.reason))
    record.apply(report.action)
