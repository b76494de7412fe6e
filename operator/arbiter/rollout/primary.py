"""Judge the primary metric and report the secondary ones. Order of judgement row 6 (docs/rollout.md).

The primary metric decides (Win, Loss, Futile, Inconclusive per challenger, multiplicity-corrected across
challengers); secondary metrics are reported with Holm-corrected p-values across metrics and challengers
and never decide. FixedHorizon and GroupSequential plan each metric's sample size once from its own
baseline and MDE, then freeze the plan: re-planning on every look would let the data move the goalposts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from arbiter.api import MetricType, ModelExperimentSpec
from arbiter.api.v1alpha1 import Metric
from arbiter.rollout.observations import SufficientStats
from arbiter.rollout.view import TickView
from arbiter.stats import (
    ChallengerDecision,
    DecisionConfig,
    DecisionState,
    Direction,
    MeanStats,
    ProportionStats,
    TickDecision,
    decide,
    holm,
    sample_size_mean,
    sample_size_proportion,
    variant_interval,
)
from arbiter.stats import Method as StatsMethod
from arbiter.stats import MetricType as StatsMetricType

#: FixedHorizon and GroupSequential plan their sample size from the champion once it has this many samples.
PLANNING_MIN_SAMPLES = 500
#: The plan key of the primary metric; a secondary metric's is ``plannedSampleSize/<name>``.
PRIMARY_PLAN = "plannedSampleSize"


@dataclass(frozen=True)
class MetricReport:
    """The primary metric's decision this tick, what status shows of it, and the state it leaves.

    ``decision`` is None when there is no primary metric or not enough data to compare.
    """

    decision: TickDecision | None = None
    analysis: dict[str, Any] | None = None
    state: DecisionState | None = None
    planned_sizes: Mapping[str, int | None] = field(default_factory=dict)


@dataclass(frozen=True)
class SecondaryReport:
    """Secondary metrics' rows (None: nothing to write), their states and plans."""

    rows: list[dict[str, Any]] | None
    states: Mapping[str, DecisionState]
    planned_sizes: Mapping[str, int | None]


def judge_primary(
    spec: ModelExperimentSpec,
    view: TickView,
    counters: Mapping[str, SufficientStats],
    state: DecisionState | None,
    planned_sizes: Mapping[str, int | None],
) -> MetricReport:
    """Decide the primary metric on the counters since the start."""
    metric = spec.analysis.primary
    champion = spec.champion.name
    challengers = [c.name for c in spec.challengers]
    if metric is None or champion not in counters or not any(c in counters for c in challengers):
        return MetricReport(state=state, planned_sizes=planned_sizes)
    treatments = {c: counters[c] for c in challengers if c in counters}
    elapsed = (view.now - view.started_at).total_seconds() if view.started_at else None
    config, planned = _planned_config(spec, metric, counters[champion], PRIMARY_PLAN, planned_sizes)
    tick = decide(counters[champion], treatments, config, state=state, elapsed_seconds=elapsed)
    analysis = {
        "metric": metric.name,
        "method": config.method.value,
        "error": tick.error,
        "results": [result_dict(d) for d in tick.challengers.values()],
        "variants": variant_rows({champion: counters[champion], **treatments}, config.alpha),
    }
    return MetricReport(tick, analysis, tick.state, planned)


def variant_rows(counters: Mapping[str, SufficientStats], alpha: float) -> list[dict[str, Any]]:
    """Each variant's own rate or mean with its ``1 - alpha`` interval, as ``status.analysis`` shows it.

    For dashboards and the report (a per-variant band); the decision uses the interval of the difference.
    Bounds that cannot be computed (too few samples) are left out.
    """
    rows: list[dict[str, Any]] = []
    for variant, stats in counters.items():
        low, high = variant_interval(stats, alpha)
        row: dict[str, Any] = {"variant": variant, "n": stats.n, "value": _finite(stats.mean)}
        if math.isfinite(low) and math.isfinite(high):
            row["ciLow"], row["ciHigh"] = low, high
        rows.append({k: v for k, v in row.items() if v is not None})
    return rows


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def judge_secondary(
    spec: ModelExperimentSpec,
    counters: Mapping[str, Mapping[str, SufficientStats]],
    states: Mapping[str, DecisionState],
    planned_sizes: Mapping[str, int | None],
) -> SecondaryReport:
    """Secondary metrics: reported with Holm-corrected p-values across metrics and challengers."""
    rows: list[dict[str, Any]] = []
    new_states = dict(states)
    champion = spec.champion.name
    for metric in spec.analysis.secondary:
        stats = counters.get(f"secondary/{metric.name}", {})
        if champion not in stats:
            continue
        treatments = {c.name: stats[c.name] for c in spec.challengers if c.name in stats}
        plan_key = f"{PRIMARY_PLAN}/{metric.name}"
        config, planned_sizes = _planned_config(spec, metric, stats[champion], plan_key, planned_sizes)
        tick = decide(stats[champion], treatments, config, state=new_states.get(metric.name))
        new_states[metric.name] = tick.state
        rows.extend({**result_dict(d), "metric": metric.name} for d in tick.challengers.values())
    p_values = [r["pValue"] for r in rows if r.get("pValue") is not None]
    adjusted = iter(holm(p_values)) if p_values else iter(())
    for row in rows:
        if row.get("pValue") is not None:
            row["pValueFamilyAdjusted"] = next(adjusted)
    written = rows if rows or spec.analysis.secondary else None
    return SecondaryReport(written, new_states, planned_sizes)


def decision_config(
    spec: ModelExperimentSpec, metric: Metric, planned_sample_size: int | None = None
) -> DecisionConfig:
    """The statistics' configuration of one metric under the experiment's test."""
    test = spec.analysis.test
    return DecisionConfig(
        metric=StatsMetricType(metric.type.value),
        direction=Direction(metric.direction.value),
        mde=metric.minimum_detectable_effect,
        mde_relative=True,
        alpha=test.alpha,
        power=test.power,
        method=StatsMethod(test.method.value),
        planned_sample_size=planned_sample_size,
    )


def _planned_config(
    spec: ModelExperimentSpec,
    metric: Metric,
    control: SufficientStats,
    plan_key: str,
    planned_sizes: Mapping[str, int | None],
) -> tuple[DecisionConfig, Mapping[str, int | None]]:
    """The metric's config with its own frozen sample-size plan (FixedHorizon, GroupSequential)."""
    config = decision_config(spec, metric, planned_sizes.get(plan_key))
    if config.method is not StatsMethod.SEQUENTIAL and config.planned_sample_size is None:
        planned = _planned_n(metric, control, config)
        planned_sizes = {**planned_sizes, plan_key: planned}
        config = decision_config(spec, metric, planned)
    return config, planned_sizes


def _planned_n(metric: Metric, control: SufficientStats, config: DecisionConfig) -> int | None:
    """Per-arm sample size planned from the champion's baseline, once it has PLANNING_MIN_SAMPLES."""
    if (
        metric.type is MetricType.PROPORTION
        and isinstance(control, ProportionStats)
        and control.trials >= PLANNING_MIN_SAMPLES
    ):
        rate = control.successes / control.trials
        if not 0 < rate < 1:
            return None
        plan = sample_size_proportion(
            rate, metric.minimum_detectable_effect, relative=True, alpha=config.alpha, power=config.power
        )
    elif isinstance(control, MeanStats) and control.n >= PLANNING_MIN_SAMPLES and control.variance > 0:
        plan = sample_size_mean(
            control.mean,
            control.variance**0.5,
            metric.minimum_detectable_effect * abs(control.mean),
            relative=False,
            alpha=config.alpha,
            power=config.power,
        )
    else:
        return None
    n = getattr(plan, "sample_size_per_variant", None)
    return int(n) if n else None


#: ChallengerDecision fields shown in status, by their status (camelCase) names.
_RESULT_FIELDS = {
    "variant": "variant",
    "verdict": "verdict",
    "reason": "reason",
    "n_control": "nControl",
    "n_treatment": "nTreatment",
    "control_value": "controlValue",
    "treatment_value": "treatmentValue",
    "absolute_difference": "absoluteDifference",
    "relative_lift": "relativeLift",
    "ci_low": "ciLow",
    "ci_high": "ciHigh",
    "p_value": "pValue",
    "p_value_adjusted": "pValueAdjusted",
    "looks": "looks",
    "method": "method",
    "error": "error",
}


def result_dict(decision: ChallengerDecision) -> dict[str, Any]:
    """One challenger's result as ``status.analysis`` shows it (numbers that do not exist are left out)."""
    raw = decision.to_dict()
    return {camel: raw.get(snake) for snake, camel in _RESULT_FIELDS.items() if raw.get(snake) is not None}
