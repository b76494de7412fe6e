"""Judge the step: eliminate, hold, advance, promote or conclude. Order of judgement row 7 (docs/rollout.md).

Runs only on a Progressing tick whose data could be read and whose split can be trusted. A step's samples
count from the tick after the data plane was verified to carry its weights; a step ends when its minimum
duration and samples are reached with healthy guardrails; the last step (or an A/B split) waits for the
primary metric's verdict. Losing and futile challengers leave the traffic while the others go on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from arbiter.api import Mode, ModelExperimentSpec, Phase, parse_duration
from arbiter.rollout import geometry
from arbiter.rollout.actions import DecisionOutcome, End, Hold, Rollback, Win
from arbiter.rollout.counters import step_samples
from arbiter.rollout.state import EngineState
from arbiter.rollout.view import TickView
from arbiter.stats import ChallengerDecision, TickDecision, Verdict, format_number


@dataclass(frozen=True)
class Elimination:
    """A challenger leaves the experiment while others go on (posted as an Event)."""

    variant: str
    verdict: Verdict
    message: str


@dataclass(frozen=True)
class NextStep:
    """Move to ``step`` (or from the shadow to the canary's step 0)."""

    step: int
    reason: str
    from_label: str
    label: str | None = None
    event_reason: str = "Advanced"
    condition: bool = True


@dataclass(frozen=True)
class ProgressionReport:
    """The step's verdict.

    Attributes:
        state: the engine state with the step's baseline, eliminations and shadow pass.
        eliminations: challengers that left while others go on.
        weights: weights to route this tick (None: hold the current ones, unless ``touch_traffic`` is
            False because the experiment ended by elimination).
        next_step: a step change.
        action: a decision (hold with its reason, win, rollback or conclusion).
    """

    state: EngineState
    eliminations: tuple[Elimination, ...] = ()
    weights: dict[str, int] | None = None
    touch_traffic: bool = True
    next_step: NextStep | None = None
    action: Hold | Win | Rollback | End | None = None


def judge_progression(
    spec: ModelExperimentSpec,
    view: TickView,
    state: EngineState,
    samples: dict[str, float],
    tick: TickDecision | None,
    guardrails_ok: bool,
) -> ProgressionReport:
    """Advance the experiment by one tick of its mode's step logic."""
    fresh = state.step_baseline is None
    if fresh and view.traffic_in_place(view.weights):
        # The data plane carries this step's weights (verified on the previous tick): its samples count
        # from here, and the step is judged on data collected at its weights only, from the next tick.
        state = replace(state, step_samples=dict(samples))
    results: dict[str, ChallengerDecision] = dict(tick.challengers) if tick else {}
    state, eliminations, ended = _eliminate(spec, state, results)
    if ended is not None:
        return ProgressionReport(state, eliminations, touch_traffic=False, action=ended)
    active = geometry.active_challengers(spec, state)
    winners = [c for c, d in results.items() if d.verdict is Verdict.WIN and c in active]
    winner = max(winners, key=lambda c: results[c].relative_lift or 0.0) if winners else None
    if geometry.in_shadow(spec, state):
        return _shadow(spec, view, state, samples, eliminations, guardrails_ok)
    desired = geometry.desired_weights(spec, state, view.current_step)
    weights = desired if view.weights != desired else None
    if spec.mode is Mode.AB_TEST:
        action: Hold | Win = (
            Win(winner, results[winner].reason) if winner is not None else Hold(hold_reason(spec, tick))
        )
        return ProgressionReport(state, eliminations, weights, action=action)
    # A challenger that left this tick changed the split: the step waits for it to be in place again.
    fresh = fresh or bool(eliminations)
    report = _canary(spec, view, state, samples, winner, results, guardrails_ok and not fresh, tick, fresh)
    return replace(report, eliminations=eliminations, weights=report.weights or weights)


def _eliminate(
    spec: ModelExperimentSpec, state: EngineState, results: Mapping[str, ChallengerDecision]
) -> tuple[EngineState, tuple[Elimination, ...], Rollback | End | None]:
    """Take challengers that lost or cannot win out of the traffic; end when none is left.

    When every challenger is out: roll back if any lost (significant harm); otherwise conclude, keeping the
    champion. A futile challenger showed no improvement worth the MDE, not harm, whatever the sign of its
    estimate: ``RolledBack`` pages people, so it means harm was shown (docs/rollout.md).
    """
    metric = spec.analysis.primary
    challengers = [c.name for c in spec.challengers]
    eliminated = list(state.eliminated or ())
    events: list[Elimination] = []
    for challenger in challengers:
        result = results.get(challenger)
        verdict = result.verdict if result else None
        if verdict in (Verdict.LOSS, Verdict.FUTILE) and challenger not in eliminated:
            assert result is not None and verdict is not None
            eliminated.append(challenger)
            if len(eliminated) < len(challengers):
                message = f"{challenger} leaves the experiment ({verdict.value}): {result.reason}"
                events.append(Elimination(challenger, verdict, message))
                state = state.with_step_unsettled()  # the split changes: count the step's samples anew
    state = replace(state, eliminated=tuple(eliminated))
    if not challengers or len(eliminated) < len(challengers) or metric is None:
        return state, tuple(events), None
    lost = [c for c in challengers if c in results and results[c].verdict is Verdict.LOSS]
    if lost:
        worst = results[lost[0]]
        return (
            state,
            tuple(events),
            Rollback(f"{metric.name}: {worst.reason} (p = {format_number(worst.p_value)})"),
        )
    first = results[challengers[0]]
    reason = f"no improvement worth the MDE: no challenger can reach the minimum detectable effect ({first.reason}); keeping the champion"
    return state, tuple(events), End(Phase.CONCLUDED, DecisionOutcome.CONCLUDE, reason, spec.champion.name)


def hold_conditions(
    spec: ModelExperimentSpec,
    view: TickView,
    state: EngineState,
    samples: dict[str, float],
    weights: Mapping[str, int] | None,
) -> list[str]:
    """What the current step still waits for (empty when it may end), under ``weights``."""
    waiting: list[str] = []
    steps = spec.steps or []
    step = steps[min(view.current_step, len(steps) - 1)] if steps else None
    min_duration = step.min_duration if step else None
    min_samples = step.min_samples if step else None
    shadow = geometry.in_shadow(spec, state)
    if shadow:
        min_duration = spec.analysis.shadow.min_duration
        min_samples = spec.analysis.shadow.min_samples
    if min_duration and view.step_started_at is not None:
        held = (view.now - view.step_started_at).total_seconds()
        need = parse_duration(min_duration)
        if held < need:
            waiting.append(f"{held:.0f}s of {need:.0f}s")
    if min_samples:
        counts = step_samples(samples, dict(state.step_baseline or {}))
        short = [
            f"{v.name} {int(counts.get(v.name, 0))}/{min_samples}"
            for v in spec.variants
            if counts.get(v.name, 0) < min_samples and ((weights or {}).get(v.name, 0) > 0 or shadow)
        ]
        if short:
            waiting.append("samples " + ", ".join(short))
    return waiting


def hold_reason(spec: ModelExperimentSpec, tick: TickDecision | None) -> str:
    """What the primary metric says so far, per challenger."""
    parts = []
    if tick is not None:
        for d in tick.challengers.values():
            lift, p = format_number(d.relative_lift, ".3g"), format_number(d.p_value, ".3g")
            parts.append(f"{d.variant}: {d.verdict.value} (lift {lift}, p = {p})")
    elif spec.analysis.primary is not None:
        parts.append("no primary metric data yet")
    return "collecting data: " + ("; ".join(parts) if parts else "waiting")


def _canary(
    spec: ModelExperimentSpec,
    view: TickView,
    state: EngineState,
    samples: dict[str, float],
    winner: str | None,
    results: Mapping[str, ChallengerDecision],
    guardrails_ok: bool,
    tick: TickDecision | None,
    fresh: bool,
) -> ProgressionReport:
    steps = spec.steps or []
    current = view.current_step
    desired = geometry.desired_weights(spec, state, current)
    waiting = hold_conditions(spec, view, state, samples, desired)
    if fresh:
        waiting.insert(
            0,
            "first look at this step's weights"
            if view.traffic_in_place(desired)
            else "waiting for the data plane to carry this step's weights",
        )
    if waiting or not guardrails_ok:
        why = ", ".join(waiting) if waiting else "guardrails not healthy yet"
        share = geometry.challenger_total(desired, spec)
        return ProgressionReport(state, action=Hold(f"step {current} ({share}% challenger) held: {why}"))
    if current < len(steps) - 1:
        from_label = geometry.phase_label(Phase.PROGRESSING.value, spec, state, current)
        state = state.with_step_unsettled()
        new = geometry.desired_weights(spec, state, current + 1)
        reason = (
            f"step {current} passed: guardrails healthy"
            f"{', ' + hold_reason(spec, tick) if tick else ''}; now {geometry.challenger_total(new, spec)}% to challengers"
        )
        return ProgressionReport(state, weights=new, next_step=NextStep(current + 1, reason, from_label))
    # The last step is done.
    if spec.analysis.primary is None:
        why = "every step passed with healthy guardrails (no primary metric configured)"
        return ProgressionReport(state, action=Win(spec.challengers[0].name, why))
    if winner is not None:
        return ProgressionReport(state, action=Win(winner, results[winner].reason))
    reason = f"last step held until the primary metric decides: {hold_reason(spec, tick)}"
    return ProgressionReport(state, action=Hold(reason))


def _shadow(
    spec: ModelExperimentSpec,
    view: TickView,
    state: EngineState,
    samples: dict[str, float],
    eliminations: tuple[Elimination, ...],
    guardrails_ok: bool,
) -> ProgressionReport:
    waiting = hold_conditions(spec, view, state, samples, view.weights)
    if waiting or not guardrails_ok:
        why = ", ".join(waiting) if waiting else "guardrails not healthy yet"
        return ProgressionReport(state, eliminations, action=Hold(f"judging the shadow: {why}"))
    guardrails = [g.name for g in spec.analysis.guardrails]
    reason = (
        f"shadow judged safe: guardrails {', '.join(guardrails)} healthy"
        if guardrails
        else "shadow judged safe: ran its minimum duration (no guardrails configured)"
    )
    if spec.analysis.shadow.continue_as_canary and spec.steps:
        from_label = geometry.phase_label(Phase.PROGRESSING.value, spec, state, view.current_step)
        state = replace(state.with_step_unsettled(), shadow_passed=True)
        step = NextStep(
            0, f"{reason}; continuing as a canary", from_label, "Progressing(step 0)", "ShadowPassed", False
        )
        return ProgressionReport(
            state, eliminations, geometry.desired_weights(spec, state, 0), next_step=step
        )
    end = End(Phase.CONCLUDED, DecisionOutcome.CONCLUDE, f"{reason}: safe to canary", spec.champion.name)
    return ProgressionReport(state, eliminations, action=end)
