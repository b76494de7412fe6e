"""The rollout decision core: ``(spec, status, observations, now, controls) -> plan``. Pure, no I/O.

One call is one analysis tick of a Progressing or Paused experiment (admission to Progressing is
:mod:`arbiter.rollout.lifecycle`). Everything the next tick needs is written back into the status, so
a restart at any moment resumes exactly: the handlers keep nothing in memory.

:func:`step` is the order of judgement, and reads like the table in docs/rollout.md. Each row asks one
judge (a pure function in its own module) for a report; :mod:`arbiter.rollout.record` is the one place
that turns reports into status, conditions, history, Events and traffic.

0. Identity (:mod:`~arbiter.rollout.controls`): a new set of variants, mode or primary metric restarts.
1. Manual controls (:mod:`~arbiter.rollout.controls`): a human outranks the machine.
2. ``spec.paused`` and ``maxDuration`` (:mod:`~arbiter.rollout.controls`): never run forever; then a
   variant's workload missing or not ready holds the tick.
3. Metrics availability (:mod:`~arbiter.rollout.availability`) and counters
   (:mod:`~arbiter.rollout.counters`): nothing below acts on a tick whose data could not be read.
4. Guardrails, per challenger (:mod:`~arbiter.rollout.guardrails`): ``critical`` rolls back at once.
5. Sample-ratio mismatch (:mod:`~arbiter.rollout.srm`): a broken split pauses.
6. The primary metric's verdict, secondary metrics reported (:mod:`~arbiter.rollout.primary`).
7. The mode's step logic (:mod:`~arbiter.rollout.progression`): advance, hold, promote, conclude.

Webhook gates (:mod:`~arbiter.rollout.gates`) stand before the first step (after row 2), before each
step change and before an automatic promotion (row 7), and are told after a rollback; a dry run
(:mod:`~arbiter.rollout.dry_run`) judges the live split it is handed and routes nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from arbiter.api import TERMINAL_PHASES, ModelExperimentSpec, Phase
from arbiter.api.v1alpha1 import GateType
from arbiter.rollout import dry_run, geometry, record, record_gates
from arbiter.rollout.actions import DecisionOutcome, PauseReason, Win
from arbiter.rollout.availability import judge_availability
from arbiter.rollout.controls import (
    Controls,
    identity_hash,
    judge_controls,
    judge_identity,
    judge_spec_pause,
    judge_terminal_controls,
    judge_timeout,
    judge_workloads,
)
from arbiter.rollout.counters import read_counters, step_samples
from arbiter.rollout.dry_run import LiveSplit
from arbiter.rollout.forecast import forecast_status
from arbiter.rollout.gates import GateCall, GateVerdict, judge_gates, judge_post_rollback, stored_results
from arbiter.rollout.guardrails import judge_guardrails
from arbiter.rollout.observations import Observations
from arbiter.rollout.plan import Plan, RoutingAction
from arbiter.rollout.primary import judge_primary, judge_secondary
from arbiter.rollout.progression import ProgressionReport, judge_progression
from arbiter.rollout.record import Record
from arbiter.rollout.srm import judge_srm

__all__ = [
    "Controls",
    "DecisionOutcome",
    "GateVerdict",
    "LiveSplit",
    "PauseReason",
    "Plan",
    "RoutingAction",
    "identity_hash",
    "step",
]


def step(
    spec: ModelExperimentSpec,
    status: Mapping[str, Any],
    observations: Observations,
    now: dt.datetime,
    controls: Controls | None = None,
    generation: int | None = None,
    *,
    gates: Mapping[str, GateVerdict] | None = None,
    live: LiveSplit | None = None,
    workload_problems: Sequence[str] = (),
) -> Plan:
    """Decide one tick for a Progressing, Paused or finished experiment.

    Args:
        spec: the parsed spec.
        status: the stored status (already admitted: phase Progressing or later).
        observations: what was read this tick.
        now: the tick's time (timezone-aware).
        controls: manual control annotations found on the object.
        generation: metadata.generation, recorded as observedGeneration.
        gates: this tick's webhook gate answers by gate name (asked for by a first call's
            ``plan.gate_calls``).
        live: the live split, read by the handler in a dry run; otherwise read on an operator's first
            tick of the experiment and after a tick that may have routed without writing status.
        workload_problems: variants' Deployments or Services missing or not ready (row 2, after the
            timeout: the tick holds).

    Returns:
        The new status, events to post and the traffic to route.
    """
    controls = controls or Controls()
    rec = Record(spec, status, now, generation)
    verdicts = gates or {}

    # 0-1. Identity, then what a human asked for.
    record.apply_identity(rec, judge_identity(spec, rec.state, rec.phase))
    if rec.phase in TERMINAL_PHASES:
        record.apply_controls(rec, judge_terminal_controls(rec.view(), controls))
        if rec.phase is Phase.ROLLED_BACK and spec.gates:
            reason = (rec.status.get("decision") or {}).get("reason", "")
            report = judge_post_rollback(
                spec.gates, stored_results(rec.status), verdicts, rec.now_text, reason
            )
            record_gates.apply_gate_report(rec, report)
        return rec.plan()
    if record.apply_controls(rec, judge_controls(spec, rec.view(), controls)):
        return rec.plan()

    # 2. spec.paused, then maxDuration.
    if record.apply_gate(rec, judge_spec_pause(spec, rec.view())):
        return rec.plan()
    if record.apply_gate(rec, judge_timeout(spec, rec.view())):
        return rec.plan()
    if record.apply_gate(rec, judge_workloads(workload_problems)):
        return rec.plan()
    moved = None
    if spec.dry_run:
        dry_run.observe(rec, live)
    else:
        moved = record.moved_split(rec, live)

    # 2b. preRollout gates: no challenger gets traffic before they pass.
    if spec.gates:
        call = GateCall("", GateType.PRE_ROLLOUT, "start the rollout (first traffic to the challengers)")
        pre = judge_gates(spec.gates, call, stored_results(rec.status), verdicts, rec.now_text, rec.champion)
        if not pre.open:
            record_gates.hold_before_rollout(rec, pre)
            return rec.plan()
        record_gates.apply_gate_report(rec, pre)

    # 3. Could the metrics be read? Counters since the start.
    availability = judge_availability(spec, rec.view(), observations, rec.state.consecutive_errors or 0)
    record.apply_availability(rec, availability)
    counters = read_counters(observations, rec.state.counters)
    record.apply_counters(rec, counters)

    # 4. Guardrails.
    guardrails = judge_guardrails(
        spec,
        observations,
        counters.data,
        rec.view().guardrails,
        rec.state.guardrail_tests,
        data_ok=availability.available,
    )
    record.apply_guardrails(rec, guardrails)
    if rec.phase in TERMINAL_PHASES:
        return rec.plan()

    # 5. The split.
    srm = judge_srm(
        spec,
        rec.view(),
        in_shadow=geometry.in_shadow(spec, rec.state),
        # A split that moved under the status mixes two steps' samples: no sample-ratio verdict on them.
        step_baseline=None if moved else rec.state.step_baseline,
        step_counts=step_samples(counters.samples, dict(rec.state.step_baseline or {})),
        acknowledged_step=rec.state.srm_acknowledged,
        running=rec.state.srm_running,
    )
    record.apply_srm(rec, srm)

    # 6. The primary metric decides; secondary metrics are reported.
    primary = judge_primary(
        spec, rec.view(), counters.data.get("primary", {}), rec.state.primary, rec.state.planned_sizes
    )
    secondary = judge_secondary(spec, counters.data, rec.state.secondary, primary.planned_sizes)
    record.apply_metrics(rec, primary, secondary)
    forecast = forecast_status(
        spec, rec.view(), rec.state, primary, counters.data.get("primary", {}), status.get("forecast")
    )
    if forecast is not None:
        rec.status["forecast"] = forecast
    if rec.phase is not Phase.PROGRESSING or not availability.available or not srm.ok:
        rec.hold_weights()
        return rec.plan()

    # 7. The mode's step logic.
    progression = judge_progression(
        spec, rec.view(), rec.state, counters.samples, primary.decision, guardrails.healthy
    )
    if spec.gates:
        progression = _gated(spec, rec, progression, verdicts)
    record.apply_progression(rec, progression)
    if moved is not None:
        record.apply_moved_split(rec, moved)
    return rec.plan()


def _gated(
    spec: ModelExperimentSpec,
    rec: Record,
    progression: ProgressionReport,
    verdicts: Mapping[str, GateVerdict],
) -> ProgressionReport:
    """Withhold a step change until the ``step`` gates pass, a promotion until ``confirmPromotion`` does."""
    stored = stored_results(rec.status)
    if progression.next_step is not None:
        step = progression.next_step.step
        share = geometry.challenger_total(progression.weights or {}, spec)
        call = GateCall("", GateType.STEP, f"advance to step {step} ({share}% challenger)", step=step)
    elif isinstance(progression.action, Win):
        winner = progression.action.winner
        call = GateCall("", GateType.CONFIRM_PROMOTION, f"promote {winner}", rec.current_step, winner)
    else:
        return progression
    report = judge_gates(spec.gates or (), call, stored, verdicts, rec.now_text, rec.champion)
    return record_gates.gated_progression(rec, progression, report)
