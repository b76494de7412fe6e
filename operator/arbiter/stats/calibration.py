"""Calibration: how often would the configured test and guardrails roll back a challenger that is no different?

A history of A/A data (one model's prediction log, or an A/A experiment's) is reduced to cells of
(unit, tick): requests, outcome sum and sum of squares for the primary metric and for every guardrail.
Each replicate re-assigns the units at random to champion and challenger at the configured share —
users when the units are users, exactly as a sticky router assigns them — and replays the experiment
tick by tick on the cumulative, request-level counters the operator reads from Prometheus: ``decide``
for the primary metric (the state carried between ticks as the operator stores it) and
``guardrail_harm_test`` for each guardrail margin, with ``failureLimit`` consecutive breaches (or one,
``critical``) tripping a rollback. Every replicate is an experiment in which the challenger is the
champion, so every rollback is a false one; the share of replicates that roll back, with a
Clopper-Pearson interval, estimates the false-rollback rate before the configuration is enforced.

Outcomes follow the engine (docs/rollout.md, "Verdicts and what follows"): a guardrail trip or a
``Loss`` rolls back (harm was shown); ``Win`` promotes (a false promotion); ``Futile`` concludes keeping
the champion, whatever the sign of its estimate ("no improvement worth the MDE"); otherwise the history
ends undecided.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats as sps

from arbiter.stats._types import JsonResult, Method, MetricType, Verdict
from arbiter.stats.decision import DecisionConfig, DecisionState, decide
from arbiter.stats.guardrail import guardrail_harm_test
from arbiter.stats.planning import sample_size_mean, sample_size_proportion
from arbiter.stats.sequential import SequentialState
from arbiter.stats.sufficient import MeanStats, ProportionStats, SufficientStats

#: FixedHorizon and GroupSequential plan from the champion once it has this many samples (as the engine).
PLANNING_MIN_SAMPLES = 500

Array = npt.NDArray[np.float64]


@dataclass(frozen=True)
class GuardrailRule:
    """A guardrail judged by the always-valid harm test against the champion (a ``rate`` guardrail).

    Attributes:
        max_increase, max_decrease: the non-inferiority margins (absolute units); at least one.
        failure_limit: consecutive breaching ticks that roll back; ``critical``: the first one does.
    """

    name: str
    metric: MetricType
    max_increase: float | None = None
    max_decrease: float | None = None
    failure_limit: int = 1
    critical: bool = False


@dataclass(frozen=True)
class CellHistory:
    """The history reduced to (unit, tick) cells; ``values[name] = (sum, sum_squares)`` per cell.

    ``values`` holds the primary metric under the key ``""`` and each guardrail under its name; every
    cell's request count ``n`` is shared by all of them.
    """

    unit: npt.NDArray[np.int64]
    tick: npt.NDArray[np.int64]
    n: Array
    values: Mapping[str, tuple[Array, Array]]
    units: int
    ticks: int
    tick_seconds: Sequence[float] | None = None


def _rate_ci(count: int, total: int, alpha: float = 0.05) -> tuple[float, float]:
    """Clopper-Pearson interval for a binomial rate."""
    if total == 0:
        return math.nan, math.nan
    low = 0.0 if count == 0 else float(sps.beta.ppf(alpha / 2, count, total - count + 1))
    high = 1.0 if count == total else float(sps.beta.isf(alpha / 2, count + 1, total - count))
    return low, high


@dataclass(frozen=True)
class CalibrationResult(JsonResult):
    """Outcomes of the replicates and the estimated false-rollback rate with its 95% interval."""

    replicates: int
    rolled_back: int
    false_rollback_rate: float
    false_rollback_ci_low: float
    false_rollback_ci_high: float
    rolled_back_by_guardrail: int
    rolled_back_by_loss: int
    harm_only_rate: float
    promoted: int
    false_promotion_rate: float
    concluded: int
    undecided: int
    median_rollback_tick: float | None
    ticks: int
    outcomes: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


def _stats(metric: MetricType, n: float, total: float, squares: float) -> SufficientStats:
    return ProportionStats(total, n) if metric is MetricType.PROPORTION else MeanStats(n, total, squares)


def _planned(config: DecisionConfig, control: SufficientStats) -> int | None:
    """The engine's plan: from the champion's value once it has PLANNING_MIN_SAMPLES (rollout/primary.py)."""
    if control.n < PLANNING_MIN_SAMPLES:
        return None
    if isinstance(control, ProportionStats):
        rate = control.mean
        if not 0 < rate < 1:
            return None
        plan = sample_size_proportion(rate, config.mde, relative=True, alpha=config.alpha, power=config.power)
    else:
        if not control.variance > 0:
            return None
        plan = sample_size_mean(
            control.mean,
            control.variance**0.5,
            config.mde * abs(control.mean),
            relative=False,
            alpha=config.alpha,
            power=config.power,
        )
    return int(plan.sample_size_per_variant) if plan.sample_size_per_variant else None


def _per_tick(history: CellHistory, arm: npt.NDArray[np.int64], weights: Array) -> Array:
    """Cumulative per-arm totals: shape (2, ticks), arm 0 the champion."""
    ticks = history.ticks
    slot = history.tick + ticks * arm[history.unit]
    sums = np.bincount(slot, weights=weights, minlength=2 * ticks).reshape(2, ticks)
    return np.cumsum(sums, axis=1)


def replay_once(
    history: CellHistory,
    arm: npt.NDArray[np.int64],
    config: DecisionConfig,
    guardrails: Sequence[GuardrailRule],
) -> dict[str, Any]:
    """One pseudo-experiment: the first tick at which it would have ended, and how."""
    n = _per_tick(history, arm, history.n)
    primary = [_per_tick(history, arm, v) for v in history.values[""]]
    rails = {g.name: [_per_tick(history, arm, v) for v in history.values[g.name]] for g in guardrails}
    state: DecisionState | None = None
    planned = config.planned_sample_size
    harm_states: dict[str, SequentialState] = {}
    breaches = dict.fromkeys((g.name for g in guardrails), 0)
    for tick in range(history.ticks):
        if min(n[0, tick], n[1, tick]) == 0:
            continue
        for rule in guardrails:
            total, squares = rails[rule.name]
            control = _stats(rule.metric, n[0, tick], total[0, tick], squares[0, tick])
            treatment = _stats(rule.metric, n[1, tick], total[1, tick], squares[1, tick])
            breached = False
            judged = False
            for label, margin, higher_is_worse in (
                ("increase", rule.max_increase, True),
                ("decrease", rule.max_decrease, False),
            ):
                if margin is None:
                    continue
                key = f"{rule.name}/{label}"
                result = guardrail_harm_test(
                    control,
                    treatment,
                    margin=margin,
                    higher_is_worse=higher_is_worse,
                    alpha=config.alpha,
                    state=harm_states.get(key),
                )
                if result.error:
                    continue
                judged = True
                harm_states[key] = result.state
                breached = breached or bool(result.harm_detected)
            if not judged:
                continue  # no data: the breach count is kept, as the engine does
            breaches[rule.name] = breaches[rule.name] + 1 if breached else 0
            if breached and (rule.critical or breaches[rule.name] >= rule.failure_limit):
                return {"outcome": "RolledBack", "cause": f"guardrail {rule.name}", "tick": tick + 1}
        total, squares = primary
        control = _stats(config.metric, n[0, tick], total[0, tick], squares[0, tick])
        treatment = _stats(config.metric, n[1, tick], total[1, tick], squares[1, tick])
        if config.method is not Method.SEQUENTIAL and planned is None:
            planned = _planned(config, control)
            if planned is None:
                continue
        tick_config = replace(config, planned_sample_size=planned)
        elapsed = history.tick_seconds[tick] if history.tick_seconds is not None else None
        decision = decide(
            control, {"challenger": treatment}, tick_config, state=state, elapsed_seconds=elapsed
        )
        state = decision.state
        verdict = decision.challengers["challenger"]
        if verdict.verdict is Verdict.WIN:
            return {"outcome": "Promoted", "cause": "Win", "tick": tick + 1}
        if verdict.verdict is Verdict.LOSS:
            return {"outcome": "RolledBack", "cause": "Loss", "tick": tick + 1}
        if verdict.verdict is Verdict.FUTILE:
            return {"outcome": "Concluded", "cause": "Futile", "tick": tick + 1}
    return {"outcome": "Undecided", "cause": "history ended", "tick": history.ticks}


def calibrate(
    history: CellHistory,
    config: DecisionConfig,
    guardrails: Sequence[GuardrailRule] = (),
    treatment_share: float = 0.5,
    replicates: int = 200,
    seed: int = 0,
) -> CalibrationResult:
    """Replay ``replicates`` pseudo-experiments on A/A history and count the false rollbacks.

    Args:
        history: the A/A history as (unit, tick) cells.
        config: the primary metric's test, as the operator would build it.
        guardrails: rate guardrails judged by the harm test.
        treatment_share: the challenger's share of units (the step's weight).
        replicates: pseudo-experiments (random re-assignments of the units).
        seed: for the re-assignments; the same seed gives the same answer.
    """

    def failed(message: str) -> CalibrationResult:
        nan = math.nan
        return CalibrationResult(
            0, 0, nan, nan, nan, 0, 0, nan, 0, nan, 0, 0, None, history.ticks, error=message
        )

    error = config.validation_error()
    if error and "planned_sample_size" in error:
        error = None  # planned from the champion's data, as the engine does
    if error:
        return failed(error)
    if not (0.0 < treatment_share < 1.0):
        return failed(f"the challenger's share must be between 0 and 1, got {treatment_share!r}")
    if replicates < 1:
        return failed("replicates must be at least 1")
    if history.units < 2 or history.ticks < 1:
        return failed("the history needs at least two units and one tick")
    if "" not in history.values or any(g.name not in history.values for g in guardrails):
        return failed("the history has no values for the primary metric or a guardrail")
    rng = np.random.default_rng(seed)
    outcomes = []
    for _ in range(replicates):
        arm = (rng.random(history.units) < treatment_share).astype(np.int64)
        outcomes.append(replay_once(history, arm, config, guardrails))
    rolled = [o for o in outcomes if o["outcome"] == "RolledBack"]
    by_guardrail = sum(1 for o in rolled if o["cause"].startswith("guardrail"))
    by_loss = sum(1 for o in rolled if o["cause"] == "Loss")
    promoted = sum(1 for o in outcomes if o["outcome"] == "Promoted")
    low, high = _rate_ci(len(rolled), replicates)
    return CalibrationResult(
        replicates=replicates,
        rolled_back=len(rolled),
        false_rollback_rate=len(rolled) / replicates,
        false_rollback_ci_low=low,
        false_rollback_ci_high=high,
        rolled_back_by_guardrail=by_guardrail,
        rolled_back_by_loss=by_loss,
        harm_only_rate=(by_guardrail + by_loss) / replicates,
        promoted=promoted,
        false_promotion_rate=promoted / replicates,
        concluded=sum(1 for o in outcomes if o["outcome"] == "Concluded"),
        undecided=sum(1 for o in outcomes if o["outcome"] == "Undecided"),
        median_rollback_tick=float(np.median([o["tick"] for o in rolled])) if rolled else None,
        ticks=history.ticks,
        outcomes=outcomes,
    )
