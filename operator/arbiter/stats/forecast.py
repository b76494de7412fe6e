"""A forecast of the decision: when the configured test would decide, and the conditional power.

For one challenger against control, from the cumulative sufficient statistics, the decision state and the
observed traffic rate per arm, under the sequential design actually configured (mSPRT, group-sequential
or fixed horizon, each with its own boundaries):

- ``seconds_to_decision`` / ``samples_*``: the median time (and samples per arm) until the test reaches a
  final verdict (Win, or Futile/Loss) *if the true effect is the MDE*, given the data so far;
- ``conditional_power``: P(the test ends in Win | the data so far, the true effect is the observed one).

Both come from one computation: the score ``S = d / V`` (``d`` the difference in the improvement
direction, ``V`` its variance) is a Brownian motion with drift ``theta`` in information ``I = 1 / V``.
The future looks are placed at the times the traffic rates give; the design's upper (Win) and lower
(Futile or Loss) boundaries at those looks are turned into boundaries on the increment from the current
score, and the first-crossing probabilities come from the same recursive integration as the
group-sequential boundaries (:func:`crossing_probabilities`). Method and limits: docs/statistics.md.
Pure, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy import stats as sps

from arbiter.stats._types import Direction, JsonResult, Method, Verdict
from arbiter.stats.decision import ChallengerState, DecisionConfig
from arbiter.stats.group_sequential import crossing_probabilities, group_sequential_boundaries
from arbiter.stats.sequential import msprt_one_sided_z_boundary, msprt_z_boundary
from arbiter.stats.sufficient import SufficientStats

#: mSPRT looks are continuous in practice (every tick); the forecast places this many looks up to its horizon.
SEQUENTIAL_LOOKS = 60
#: The smallest step between two looks integrated over, as a share of the last look's information: it
#: bounds the integration grid to a few thousand points.
MIN_LOOK_STEP = 0.002
#: Siegmund's constant -zeta(1/2)/sqrt(2 pi): the overshoot correction between discrete and continuous looks.
_SIEGMUND = 0.5826


@dataclass(frozen=True)
class Forecast(JsonResult):
    """The forecast of one challenger's decision.

    Attributes:
        variant: the challenger.
        method: the test it is judged by.
        mde: the MDE in the metric's units, towards improvement.
        observed_effect: the observed difference in the metric's units, positive = better.
        rate_control, rate_treatment: the traffic rates assumed, units per second per arm.
        seconds_to_decision: median time until a final verdict if the true effect is the MDE (0: decided).
        samples_control, samples_treatment: the further samples per arm in that time.
        conditional_power: P(Win | data so far, true effect = the observed one); 1 or 0 once decided.
        horizon_seconds: the time by which the design decides at the latest (the last look forecast).
        error: why there is no forecast (then the numbers are None).
    """

    variant: str
    method: Method
    mde: float | None = None
    observed_effect: float | None = None
    rate_control: float | None = None
    rate_treatment: float | None = None
    seconds_to_decision: float | None = None
    samples_control: float | None = None
    samples_treatment: float | None = None
    conditional_power: float | None = None
    horizon_seconds: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class _Looks:
    """Future looks: their times (seconds from now) and boundaries on Z (``d / sqrt(V)``) at each."""

    seconds: np.ndarray
    upper: np.ndarray
    lower: np.ndarray


def forecast_decision(
    control: SufficientStats,
    treatment: SufficientStats,
    config: DecisionConfig,
    state: ChallengerState | None = None,
    *,
    rate_control: float,
    rate_treatment: float,
    variant: str = "",
    elapsed_seconds: float | None = None,
    family_size: int = 1,
    assumed_effect: float | None = None,
    look_interval_seconds: float | None = None,
) -> Forecast:
    """Forecast when the test decides (at the MDE) and the probability that it ends in Win.

    Args:
        control, treatment: cumulative sufficient statistics of each arm.
        config: the metric's decision config (method, alpha, sides, MDE, planned size, max duration).
        state: the challenger's decision state (frozen mixing variance, past group-sequential looks,
            a final verdict).
        rate_control, rate_treatment: observed traffic per arm, units per second.
        variant: the challenger's name.
        elapsed_seconds: time since the experiment started (for ``max_duration_seconds``).
        family_size: challengers still competing; the forecast spends ``alpha / family_size`` (Holm's
            first step, conservative for the others).
        assumed_effect: the true effect (metric units, positive = better) for ``conditional_power``;
            default the observed difference.
        look_interval_seconds: how often the test looks (the analysis interval), for the mSPRT's
            continuity correction; None: continuously.

    Returns:
        The forecast; ``error`` says why there is none (it never raises).
    """
    state = state or ChallengerState()
    method = config.method
    base = Forecast(variant=variant, method=method)
    error = config.validation_error()
    if error is None:
        error = _input_error(control, treatment, rate_control, rate_treatment)
    if error is not None:
        return _with(base, error=error)
    sign = 1.0 if config.direction is Direction.INCREASE else -1.0
    observed = sign * (treatment.mean - control.mean)
    baseline = config.baseline if config.baseline is not None else control.mean
    mde = config.mde * abs(baseline) if config.mde_relative else config.mde
    rates = {"rate_control": rate_control, "rate_treatment": rate_treatment}
    base = _with(base, mde=mde, observed_effect=observed, **rates)
    if state.verdict is not None:
        won = 1.0 if state.verdict is Verdict.WIN else 0.0
        return _with(
            base,
            seconds_to_decision=0.0,
            samples_control=0.0,
            samples_treatment=0.0,
            conditional_power=won,
            horizon_seconds=0.0,
        )
    if not (math.isfinite(mde) and mde > 0):
        return _with(base, error="no MDE in the metric's units yet (the control's value is 0)")
    var_c, var_t = control.variance, treatment.variance
    n_c, n_t = control.n, treatment.n

    def variance_at(seconds: np.ndarray) -> np.ndarray:
        result: np.ndarray = var_t / (n_t + rate_treatment * seconds) + var_c / (n_c + rate_control * seconds)
        return result

    try:
        return _forecast(
            base,
            config,
            state,
            observed,
            mde,
            assumed_effect,
            variance_at,
            n_c,
            n_t,
            rate_control,
            rate_treatment,
            elapsed_seconds,
            family_size,
            look_interval_seconds,
        )
    except (ValueError, ArithmeticError) as exc:  # e.g. looks too close for the integration grid
        return _with(base, error=f"cannot forecast: {exc}")


def _forecast(
    base: Forecast,
    config: DecisionConfig,
    state: ChallengerState,
    observed: float,
    mde: float,
    assumed_effect: float | None,
    variance_at: Callable[[np.ndarray], np.ndarray],
    n_c: float,
    n_t: float,
    rate_control: float,
    rate_treatment: float,
    elapsed_seconds: float | None,
    family_size: int,
    look_interval_seconds: float | None,
) -> Forecast:
    method = config.method
    alpha = config.alpha / max(1, family_size)
    if method is Method.SEQUENTIAL:
        looks = _sequential_looks(
            config,
            state,
            mde,
            alpha,
            variance_at,
            n_c,
            n_t,
            rate_control,
            rate_treatment,
            elapsed_seconds,
            look_interval_seconds,
        )
    else:
        if config.planned_sample_size is None:
            return _with(base, error=f"{method.value} has no planned sample size yet")
        looks = _planned_looks(config, state, alpha, n_c, n_t, rate_control, rate_treatment)
    if isinstance(looks, str):
        return _with(base, error=looks)
    now_variance = float(variance_at(np.zeros(1))[0])
    variances = variance_at(looks.seconds)
    at_mde = _crossings(looks, now_variance, variances, observed, mde)
    at_observed = _crossings(
        looks, now_variance, variances, observed, observed if assumed_effect is None else assumed_effect
    )
    seconds = _median_time(looks.seconds, np.cumsum(at_mde[0] + at_mde[1]))
    power = float(np.clip(np.sum(at_observed[0]), 0.0, 1.0))
    return _with(
        base,
        seconds_to_decision=seconds,
        samples_control=rate_control * seconds,
        samples_treatment=rate_treatment * seconds,
        conditional_power=power,
        horizon_seconds=float(looks.seconds[-1]),
    )


def _median_time(seconds: np.ndarray, decided: np.ndarray) -> float:
    """When half the paths have decided, interpolated between the forecast's looks (it looks less often
    than an mSPRT ticks, so the look at or after the median would be biased late)."""
    index = min(int(np.searchsorted(decided, 0.5 - 1e-12)), len(seconds) - 1)
    if len(seconds) == 1 or decided[index] < 0.5:
        return float(seconds[index])
    before_time = float(seconds[index - 1]) if index > 0 else 0.0
    before = float(decided[index - 1]) if index > 0 else 0.0
    share = (0.5 - before) / max(float(decided[index]) - before, 1e-12)
    return before_time + share * (float(seconds[index]) - before_time)


def _with(forecast: Forecast, **changes: Any) -> Forecast:
    return replace(forecast, **changes)


def _input_error(
    control: SufficientStats, treatment: SufficientStats, rate_control: float, rate_treatment: float
) -> str | None:
    if type(control) is not type(treatment):
        return "control and treatment are different kinds of metric"
    if min(control.n, treatment.n) < 2:
        return "fewer than 2 units in an arm"
    if not (control.variance > 0 and treatment.variance > 0):
        return "an arm has no variance yet"
    if not all(math.isfinite(r) and r > 0 for r in (rate_control, rate_treatment)):
        return "no traffic rate observed for both arms yet"
    return None


def _crossings(
    looks: _Looks, now_variance: float, variances: np.ndarray, observed: float, effect: float
) -> tuple[np.ndarray, np.ndarray]:
    """First-crossing probabilities of the upper and lower boundary at each future look, given today's score."""
    score = observed / now_variance
    information = 1.0 / variances
    increments = information - 1.0 / now_variance
    scale = float(increments[-1])
    if not (np.all(np.isfinite(increments)) and np.all(increments > 0) and scale > 0):
        raise ValueError("the traffic adds no measurable information before the last look")
    # The increment W(s) = S(I0 + s) - S(I0) is a Brownian motion with drift `effect` in information s: on
    # the time scale u = s / scale it is sqrt(scale) * (standard BM with drift effect * sqrt(scale)).
    upper = (looks.upper * np.sqrt(information) - score) / np.sqrt(increments)
    lower = (looks.lower * np.sqrt(information) - score) / np.sqrt(increments)
    kept = _thinned(increments / scale)
    ups, downs = np.zeros(len(increments)), np.zeros(len(increments))
    ups[kept], downs[kept] = crossing_probabilities(
        list(increments[kept] / scale), list(upper[kept]), list(lower[kept]), drift=effect * math.sqrt(scale)
    )
    # Whatever is still undecided at the last look ends there (Futile): count it as decided, not won.
    downs = downs.copy()
    downs[-1] = max(0.0, 1.0 - float(np.sum(ups)) - float(np.sum(downs[:-1])))
    return ups, downs


def _thinned(times: np.ndarray) -> np.ndarray:
    """Indices of the looks to integrate over: each at least MIN_LOOK_STEP after the one before (and 0).

    The integration grid is as fine as the narrowest step between looks; two looks a hair apart (a
    group-sequential look due now, 1e-9 traffic to one arm) would ask for millions of grid points.
    """
    kept: list[int] = []
    last = 0.0
    for index, time in enumerate(times):
        if time - last >= MIN_LOOK_STEP:
            kept.append(index)
            last = float(time)
    final = len(times) - 1
    if not kept or kept[-1] != final:
        # The last look decides everything, so it stays; the kept look too close before it goes.
        if kept:
            kept.pop()
        kept.append(final)
    return np.asarray(kept, dtype=int)


def _time_to_samples(target: float, n_c: float, n_t: float, rate_c: float, rate_t: float) -> float:
    """Seconds until both arms hold ``target`` units."""
    return max(0.0, (target - n_c) / rate_c, (target - n_t) / rate_t)


def _planned_looks(
    config: DecisionConfig,
    state: ChallengerState,
    alpha: float,
    n_c: float,
    n_t: float,
    rate_c: float,
    rate_t: float,
) -> _Looks | str:
    """FixedHorizon: one look at the planned size. GroupSequential: a look per information increment."""
    planned = float(config.planned_sample_size or 0)
    final = _time_to_samples(planned, n_c, n_t, rate_c, rate_t)
    if final <= 0:
        return "the planned sample size is reached: the test decides at this look"
    if config.method is Method.FIXED_HORIZON:
        z = float(sps.norm.ppf(1 - alpha / config.sides))
        low = -z if config.sides == 2 else -math.inf
        return _Looks(np.array([final]), np.array([z]), np.array([max(low, -z)]))
    past = list(state.information_fractions)
    current = min(n_c, n_t) / planned
    last = past[-1] if past else 0.0
    step = config.min_information_increment
    fractions: list[float] = []
    fraction = max(current, last + step)
    while fraction < 1.0 - 1e-9:
        fractions.append(fraction)
        fraction += step
    fractions.append(1.0)
    bounds = group_sequential_boundaries([*past, *fractions], alpha, config.sides, config.spending)
    if bounds.error is not None:
        return bounds.error
    upper = np.asarray(bounds.z[len(past) :], dtype=float)
    seconds = np.array([_time_to_samples(f * planned, n_c, n_t, rate_c, rate_t) for f in fractions])
    # A look due now is taken at the next tick: keep the times strictly increasing.
    seconds = np.maximum(seconds, np.arange(1, len(seconds) + 1) * 1e-6 * final)
    lower = -upper if config.sides == 2 else np.full_like(upper, -math.inf)
    return _Looks(seconds, upper, lower)


def _sequential_looks(
    config: DecisionConfig,
    state: ChallengerState,
    mde: float,
    alpha: float,
    variance_at: Callable[[np.ndarray], np.ndarray],
    n_c: float,
    n_t: float,
    rate_c: float,
    rate_t: float,
    elapsed_seconds: float | None,
    look_interval_seconds: float | None,
) -> _Looks | str:
    """mSPRT: Win when the always-valid p-value reaches alpha, Futile when the two-sided confidence
    sequence rules out the MDE (Loss is inside that region); looks up to the time its radius is MDE/2,
    when every path has decided, or an earlier planned size or maxDuration (Futile there)."""
    mixing = state.sequential.mixing_variance or config.mixing_variance or mde**2

    def radius(variance: float) -> float:
        return math.sqrt(variance) * float(msprt_z_boundary(variance, mixing, alpha))

    # Find the time at which the radius falls to MDE / 2 (the radius decreases with time).
    high = 1.0
    while radius(float(variance_at(np.array([high]))[0])) > mde / 2:
        high *= 2.0
        if high > 1e12:
            return "the traffic is too small for the test ever to decide"
    low = 0.0
    for _ in range(60):
        middle = (low + high) / 2
        if radius(float(variance_at(np.array([middle]))[0])) > mde / 2:
            low = middle
        else:
            high = middle
    horizon = high
    if config.planned_sample_size is not None:
        horizon = min(horizon, _time_to_samples(config.planned_sample_size, n_c, n_t, rate_c, rate_t))
    if config.max_duration_seconds is not None and elapsed_seconds is not None:
        horizon = min(horizon, config.max_duration_seconds - elapsed_seconds)
    if horizon <= 0:
        return "the design's horizon is reached: the test decides at this look"
    # Denser early: the horizon holds 4x the information at which the radius is the MDE, where most
    # paths decide; quadratic spacing puts half the looks before a quarter of the horizon.
    seconds = horizon * (np.arange(1, SEQUENTIAL_LOOKS + 1) / SEQUENTIAL_LOOKS) ** 2
    variances = np.asarray(variance_at(seconds), dtype=float)
    if config.sides == 2:
        upper = np.array([float(msprt_z_boundary(v, mixing, alpha)) for v in variances])
    else:
        upper = np.array([msprt_one_sided_z_boundary(float(v), mixing, alpha) for v in variances])
    radii = np.sqrt(variances) * np.array([float(msprt_z_boundary(v, mixing, alpha)) for v in variances])
    lower = (mde - radii) / np.sqrt(variances)
    # The operator looks every tick (``look_interval_seconds``; None: continuously), the forecast at
    # sparser looks. Siegmund's correction for discrete monitoring: a boundary b watched continuously
    # behaves like b + 0.5826 sqrt(step) watched at information steps of `step`; so the forecast's
    # boundaries move by 0.5826 (sqrt(its step) - sqrt(the operator's step)) (on the Z scale).
    information = 1.0 / variances
    times = np.concatenate([[0.0], seconds])
    steps = np.diff(np.concatenate([[1.0 / float(variance_at(np.zeros(1))[0])], information]))
    operator_steps = (
        np.zeros_like(steps)
        if look_interval_seconds is None
        else steps / np.diff(times) * look_interval_seconds
    )
    shift = _SIEGMUND * (np.sqrt(steps) - np.sqrt(operator_steps)) / np.sqrt(information)
    upper, lower = upper - shift, lower + shift
    lower = np.minimum(lower, upper)
    lower[-1] = upper[-1]  # the last look decides everything: Win above, Futile below
    return _Looks(seconds, upper, lower)
