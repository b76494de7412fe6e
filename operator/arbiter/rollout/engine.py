"""The rollout decision core: ``(spec, status, observations, now, controls) -> plan``. Pure, no I/O.

One call is one analysis tick of a Progressing or Paused experiment (admission to Progressing is
:mod:`arbiter.rollout.lifecycle`). Everything the next tick needs is written back into the status, so
a restart at any moment resumes exactly: the handlers keep nothing in memory.

:func:`step` is the order of judgement, and reads like the table in docs/rollout.md. Each row asks one
judge (a pure function in its own module) for a report; :mod:`arbiter.rollout.record` is the one place
that turns reports into status, conditions, history, Events and traffic.

0. Identity (:mod:`~arbiter.rollout.controls`): a new set of variants, mode or primary metric restarts.
1. Manual controls (:mod:`~arbiter.rollout.controls`): a human outranks the machine.
2. ``spec.paused`` and ``maxDuration`` (:mod:`~arbiter.rollout.controls`): never run forever.
3. Metrics availability (:mod:`~arbiter.rollout.availability`) and counters
   (:mod:`~arbiter.rollout.counters`): nothing below acts on a tick whose data could not be read.
4. Guardrails, per challenger (:mod:`~arbiter.rollout.guardrails`): ``critical`` rolls back at once.
5. Sample-ratio mismatch (:mod:`~arbiter.rollout.srm`): a broken split pauses.
6. The primary metric's verdict, secondary metrics reported (:mod:`~arbiter.rollout.primary`).
7. The mode's step logic (:mod:`~arbiter.rollout.progression`): advance, hold, promote, conclude.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from arbiter.api import TERMINAL_PHASES, ModelExperimentSpec, Phase
from arbiter.rollout import geometry, record
from arbiter.rollout.actions import DecisionOutcome, PauseReason
from arbiter.rollout.availability import judge_availability
from arbiter.rollout.controls import (
    Controls,
    identity_hash,
    judge_controls,
    judge_identity,
    judge_spec_pause,
    judge_terminal_controls,
    judge_timeout,
)
from arbiter.rollout.counters import read_counters, step_samples
from arbiter.rollout.forecast import forecast_status
from arbiter.rollout.guardrails import judge_guardrails
from arbiter.rollout.observations import Observations
from arbiter.rollout.plan import Plan, RoutingAction
from arbiter.rollout.primary import judge_primary, judge_secondary
from arbiter.rollout.progression import judge_progression
from arbiter.rollout.record import Record
from arbiter.rollout.srm import judge_srm

__all__ = ["Controls", "DecisionOutcome", "PauseReason", "Plan", "RoutingAction", "identity_hash", "step"]


def step(
    spec: ModelExperimentSpec,
    status: Mapping[str, Any],
    observations: Observations,
    now: dt.datetime,
    controls: Controls | None = None,
    generation: int | None = None,
) -> Plan:
    """Decide one tick for a Progressing, Paused or finished experiment.

    Args:
        spec: the parsed spec.
        status: the stored status (already admitted: phase Progressing or later).
        observations: what was read this tick.
        now: the tick's time (timezone-aware).
        controls: manual control annotations found on the object.
        generation: metadata.generation, recorded as observedGeneration.

    Returns:
        The new status, events to post and the traffic to route.
    """
    controls = controls or Controls()
    rec = Record(spec, status, now, generation)

    # 0-1. Identity, then what a human asked for.
    record.apply_identity(rec, judge_identity(spec, rec.state, rec.phase))
    if rec.phase in TERMINAL_PHASES:
        record.apply_controls(rec, judge_terminal_controls(rec.view(), controls))
        return rec.plan()
    if record.apply_controls(rec, judge_controls(spec, rec.view(), controls)):
        return rec.plan()

    # 2. spec.paused, then maxDuration.
    if record.apply_gate(rec, judge_spec_pause(spec, rec.view())):
        return rec.plan()
    if record.apply_gate(rec, judge_timeout(spec, rec.view())):
        return rec.plan()

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
        step_baseline=rec.state.step_baseline,
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
    record.apply_progression(rec, progression)
    return rec.plan()
