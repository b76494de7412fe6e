"""Always-valid inference by the mixture sequential probability ratio test (mSPRT).

Johari, Koomen, Pekelis and Walsh (2017), "Peeking at A/B tests": with the estimated difference
``d`` of two means approximately ``N(theta, V)`` and a normal mixing distribution
``theta ~ N(theta0, tau^2)`` over the alternative, the mixture likelihood ratio is

    Lambda = sqrt(V / (V + tau^2)) * exp(tau^2 (d - theta0)^2 / (2 V (V + tau^2))).

Under the null it is a martingale, so ``P(sup_n Lambda_n >= 1/alpha) <= alpha`` (Ville). The always-valid
p-value is the running minimum of ``1 / Lambda`` and the confidence sequence is the set of ``theta0``
that are not rejected. For a one-sided alternative the mixing distribution is a half-normal on the
alternative side, which multiplies Lambda by ``2 Phi(tau (d - theta0) / sqrt(V (V + tau^2)))``.

The array functions here are vectorised (numpy broadcasting) for simulations; ``msprt_test`` is the
scalar entry point that works on sufficient statistics and carries state between looks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import optimize, special

from arbiter.stats._types import Alternative, EffectEstimate, JsonResult, MetricType
from arbiter.stats.fixed import mean_variance
from arbiter.stats.sufficient import MeanStats, ProportionStats, SufficientStats

FloatArray = npt.NDArray[np.float64]


def msprt_log_likelihood_ratio(
    difference: npt.ArrayLike,
    variance: npt.ArrayLike,
    mixing_variance: npt.ArrayLike,
    alternative: Alternative | str = Alternative.TWO_SIDED,
    null_value: npt.ArrayLike = 0.0,
) -> FloatArray:
    """``log Lambda`` of the mixture SPRT, element-wise.

    Args:
        difference: estimated ``treatment - control``.
        variance: the variance of that estimate (``var_t / n_t + var_c / n_c``); must be positive.
        mixing_variance: ``tau^2``, the variance of the normal mixing distribution (effect units squared).
        alternative: two-sided (normal mixture) or one-sided (half-normal mixture).
        null_value: ``theta0``, the difference under the null.
    """
    alternative = Alternative(alternative)
    d = np.asarray(difference, dtype=np.float64) - np.asarray(null_value, dtype=np.float64)
    v = np.asarray(variance, dtype=np.float64)
    tau2 = np.asarray(mixing_variance, dtype=np.float64)
    total = v + tau2
    log_lr: FloatArray = 0.5 * np.log(v / total) + tau2 * d * d / (2.0 * v * total)
    if alternative is not Alternative.TWO_SIDED:
        signed = d if alternative is Alternative.LARGER else -d
        log_lr = log_lr + math.log(2.0) + special.log_ndtr(signed * np.sqrt(tau2 / (v * total)))
    return log_lr


def msprt_p_value(
    difference: npt.ArrayLike,
    variance: npt.ArrayLike,
    mixing_variance: npt.ArrayLike,
    alternative: Alternative | str = Alternative.TWO_SIDED,
    null_value: npt.ArrayLike = 0.0,
) -> FloatArray:
    """``min(1, 1 / Lambda)`` at one look, element-wise (take the running minimum over looks)."""
    log_lr = msprt_log_likelihood_ratio(difference, variance, mixing_variance, alternative, null_value)
    result: FloatArray = np.exp(-np.maximum(log_lr, 0.0))
    return result


def msprt_z_boundary(variance: npt.ArrayLike, mixing_variance: npt.ArrayLike, alpha: float) -> FloatArray:
    """The two-sided mSPRT rejection boundary on ``|d| / sqrt(V)``, element-wise.

    ``Lambda >= 1/alpha`` exactly when ``Z^2 >= (1 + V/tau^2) (2 log(1/alpha) + log(1 + tau^2/V))``.
    """
    v = np.asarray(variance, dtype=np.float64)
    tau2 = np.asarray(mixing_variance, dtype=np.float64)
    result: FloatArray = np.sqrt((1.0 + v / tau2) * (2.0 * math.log(1.0 / alpha) + np.log1p(tau2 / v)))
    return result


def _one_sided_margin(variance: float, mixing_variance: float, alpha: float) -> float:
    """The distance ``d`` at which the half-normal mixture reaches ``1/alpha`` (it increases in ``d``)."""
    target = math.log(1.0 / alpha)

    def excess(d: float) -> float:
        return float(msprt_log_likelihood_ratio(d, variance, mixing_variance, Alternative.LARGER)) - target

    upper = float(math.sqrt(variance) * msprt_z_boundary(variance, mixing_variance, alpha))
    if excess(upper) < 0:  # pragma: no cover - cannot happen: 2 Phi(x) >= 1 for x >= 0
        upper *= 2.0
    return float(optimize.brentq(excess, 0.0, upper, xtol=1e-14 * max(upper, 1e-300), rtol=1e-12))


def confidence_sequence(
    difference: float,
    variance: float,
    mixing_variance: float,
    alpha: float,
    alternative: Alternative | str = Alternative.TWO_SIDED,
) -> tuple[float, float]:
    """The mSPRT confidence sequence for ``theta`` at this look (intersect over looks for the running one).

    Two-sided: ``d +/- sqrt(2 V (V + tau^2) / tau^2 * (log(1/alpha) + log((V + tau^2) / V) / 2))``.
    One-sided: the bound where the half-normal mixture crosses ``1/alpha``; the other end is infinite.
    """
    alternative = Alternative(alternative)
    if alternative is Alternative.TWO_SIDED:
        half = math.sqrt(variance) * float(msprt_z_boundary(variance, mixing_variance, alpha))
        return difference - half, difference + half
    margin = _one_sided_margin(variance, mixing_variance, alpha)
    if alternative is Alternative.LARGER:
        return difference - margin, math.inf
    return -math.inf, difference + margin


@dataclass(frozen=True)
class SequentialState(JsonResult):
    """What one mSPRT comparison carries from look to look (store it, pass it back next time).

    Attributes:
        looks: how many looks produced a valid statistic so far.
        min_p_value: the running minimum of ``1 / Lambda`` (the always-valid p-value).
        ci_low, ci_high: the running intersection of the confidence sequence (None: unbounded).
        mixing_variance: ``tau^2``, fixed at the first look so that it never drifts with the data.
    """

    looks: int = 0
    min_p_value: float = 1.0
    ci_low: float | None = None
    ci_high: float | None = None
    mixing_variance: float | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> SequentialState:
        """Rebuild the state from ``to_dict()`` output; None or {} gives a fresh state."""
        if not data:
            return cls()

        def optional_float(key: str) -> float | None:
            value = data.get(key)
            return None if value is None else float(value)

        return cls(
            looks=int(data.get("looks", 0)),
            min_p_value=float(data.get("min_p_value", 1.0)),
            ci_low=optional_float("ci_low"),
            ci_high=optional_float("ci_high"),
            mixing_variance=optional_float("mixing_variance"),
        )


@dataclass(frozen=True, kw_only=True)
class SequentialResult(EffectEstimate):
    """One look of an mSPRT comparison.

    ``p_value`` is the always-valid p-value (running minimum over looks); ``p_value_this_look`` is
    ``1 / Lambda`` now. ``ci_low``/``ci_high`` are the running confidence sequence for the absolute
    difference; the relative interval is the confidence sequence of this look for the relative lift
    (delta method, mixing standard deviation scaled by the control mean).
    """

    alternative: Alternative
    std_error: float
    p_value_this_look: float
    mixing_variance: float
    looks: int
    state: SequentialState


def _none_to_inf(value: float | None, sign: float) -> float:
    return sign * math.inf if value is None else value


def msprt_test(
    control: SufficientStats,
    treatment: SufficientStats,
    mixing_variance: float | None,
    alpha: float = 0.05,
    alternative: Alternative | str = Alternative.TWO_SIDED,
    state: SequentialState | None = None,
) -> SequentialResult:
    """One look of the mSPRT on cumulative sufficient statistics.

    Args:
        control, treatment: cumulative statistics of the two arms (both proportions or both means).
        mixing_variance: ``tau^2`` in squared effect units (e.g. the absolute MDE squared). Ignored when
            the state already holds one; required otherwise.
        alpha: the level of the always-valid test and of the confidence sequence.
        alternative: two-sided, or one-sided (half-normal mixture).
        state: what the previous look returned (None at the first look).

    Returns:
        The result; its ``state`` goes to the next look. On invalid input the result has ``error`` set
        and the state is returned unchanged.
    """
    alternative = Alternative(alternative)
    state = state or SequentialState()
    tau2 = state.mixing_variance if state.mixing_variance is not None else mixing_variance
    metric = MetricType.PROPORTION if isinstance(control, ProportionStats) else MetricType.MEAN
    nan = math.nan

    def failed(message: str) -> SequentialResult:
        return SequentialResult(
            metric=metric,
            alternative=alternative,
            alpha=alpha,
            n_control=control.n,
            n_treatment=treatment.n,
            control_value=control.mean if control.n > 0 else nan,
            treatment_value=treatment.mean if treatment.n > 0 else nan,
            absolute_difference=nan,
            relative_lift=nan,
            ci_low=_none_to_inf(state.ci_low, -1.0),
            ci_high=_none_to_inf(state.ci_high, 1.0),
            relative_ci_low=nan,
            relative_ci_high=nan,
            std_error=nan,
            statistic=nan,
            p_value=state.min_p_value,
            p_value_this_look=nan,
            mixing_variance=nan if tau2 is None else tau2,
            looks=state.looks,
            state=state,
            error=message,
        )

    if not (0.0 < alpha < 1.0):
        return failed(f"alpha must be between 0 and 1, got {alpha!r}")
    if type(control) is not type(treatment) or not isinstance(control, ProportionStats | MeanStats):
        return failed("control and treatment statistics are of different kinds")
    error = control.validation_error() or treatment.validation_error()
    if error:
        return failed(error)
    if tau2 is None or not (math.isfinite(tau2) and tau2 > 0):
        return failed(f"the mixing variance must be positive, got {tau2!r}")
    minimum = 1 if isinstance(control, ProportionStats) else 2
    if control.n < minimum or treatment.n < minimum:
        return failed(f"each variant needs at least {minimum} observation(s)")
    var_control, var_treatment = mean_variance(control), mean_variance(treatment)
    variance = var_control + var_treatment
    if not (variance > 0):
        return failed("no variance yet: every outcome is identical")

    difference = treatment.mean - control.mean
    p_now = float(msprt_p_value(difference, variance, tau2, alternative))
    low, high = confidence_sequence(difference, variance, tau2, alpha, alternative)
    running_low = max(low, _none_to_inf(state.ci_low, -1.0))
    running_high = min(high, _none_to_inf(state.ci_high, 1.0))
    p_value = min(state.min_p_value, p_now)
    new_state = replace(
        state,
        looks=state.looks + 1,
        min_p_value=p_value,
        ci_low=running_low if math.isfinite(running_low) else None,
        ci_high=running_high if math.isfinite(running_high) else None,
        mixing_variance=tau2,
    )

    control_mean = control.mean
    rel_low = rel_high = lift = nan
    if control_mean != 0:
        lift = treatment.mean / control_mean - 1.0
        rel_variance = var_treatment / control_mean**2 + treatment.mean**2 * var_control / control_mean**4
        if rel_variance > 0:
            offset_low, offset_high = confidence_sequence(
                0.0, rel_variance, tau2 / control_mean**2, alpha, alternative
            )
            rel_low, rel_high = lift + offset_low, lift + offset_high
    std_error = math.sqrt(variance)
    return SequentialResult(
        metric=metric,
        alternative=alternative,
        alpha=alpha,
        n_control=control.n,
        n_treatment=treatment.n,
        control_value=control_mean,
        treatment_value=treatment.mean,
        absolute_difference=difference,
        relative_lift=lift,
        ci_low=running_low,
        ci_high=running_high,
        relative_ci_low=rel_low,
        relative_ci_high=rel_high,
        std_error=std_error,
        statistic=difference / std_error,
        p_value=p_value,
        p_value_this_look=p_now,
        mixing_variance=tau2,
        looks=new_state.looks,
        state=new_state,
    )


def msprt_one_sided_z_boundary(variance: float, mixing_variance: float, alpha: float) -> float:
    """The one-sided (half-normal mixture) mSPRT boundary on ``d / sqrt(V)`` towards the alternative."""
    return _one_sided_margin(variance, mixing_variance, alpha) / math.sqrt(variance)
