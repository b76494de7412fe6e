"""Fixed-horizon tests: the two-proportion z-test and Welch's t-test, from sufficient statistics."""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import stats as sps

from arbiter.stats._types import Alternative, EffectEstimate, MetricType
from arbiter.stats.sufficient import MeanStats, ProportionStats, SufficientStats


@dataclass(frozen=True, kw_only=True)
class ComparisonResult(EffectEstimate):
    """One treatment-versus-control comparison.

    ``absolute_difference`` is ``treatment - control``; ``relative_lift`` is
    ``treatment / control - 1``. The intervals match the alternative: two-sided, or a one-sided bound
    with the open end at +/-inf (None in ``to_dict()``). ``error`` is set, and the numbers are NaN where
    they cannot be computed, when the input cannot support a test.
    """

    test: str
    alternative: Alternative
    std_error: float
    df: float | None = None


def _check_alpha(alpha: float) -> str | None:
    if not (isinstance(alpha, int | float) and 0.0 < alpha < 1.0):
        return f"alpha must be between 0 and 1, got {alpha!r}"
    return None


def _failed(
    metric: MetricType,
    test: str,
    control: SufficientStats,
    treatment: SufficientStats,
    alternative: Alternative,
    alpha: float,
    error: str,
) -> ComparisonResult:
    nan = math.nan
    control_value = control.mean if control.n > 0 else nan
    treatment_value = treatment.mean if treatment.n > 0 else nan
    return ComparisonResult(
        metric=metric,
        test=test,
        alternative=alternative,
        alpha=alpha,
        n_control=control.n,
        n_treatment=treatment.n,
        control_value=control_value,
        treatment_value=treatment_value,
        absolute_difference=treatment_value - control_value,
        relative_lift=nan,
        ci_low=nan,
        ci_high=nan,
        relative_ci_low=nan,
        relative_ci_high=nan,
        std_error=nan,
        statistic=nan,
        p_value=nan,
        error=error,
    )


def p_value_from_statistic(statistic: float, alternative: Alternative, df: float | None = None) -> float:
    """The p-value of a z statistic (``df`` None) or a t statistic with ``df`` degrees of freedom."""
    dist = sps.norm if df is None else sps.t(df)
    if alternative is Alternative.TWO_SIDED:
        return float(min(1.0, 2.0 * dist.sf(abs(statistic))))
    if alternative is Alternative.LARGER:
        return float(dist.sf(statistic))
    return float(dist.cdf(statistic))


def interval(
    estimate: float, std_error: float, alpha: float, alternative: Alternative, df: float | None = None
) -> tuple[float, float]:
    """A Wald interval: two-sided at ``1 - alpha``, or a one-sided ``1 - alpha`` bound."""
    dist = sps.norm if df is None else sps.t(df)
    if alternative is Alternative.TWO_SIDED:
        half = float(dist.ppf(1.0 - alpha / 2.0)) * std_error
        return estimate - half, estimate + half
    margin = float(dist.ppf(1.0 - alpha)) * std_error
    if alternative is Alternative.LARGER:
        return estimate - margin, math.inf
    return -math.inf, estimate + margin


def relative_lift_interval(
    control_mean: float,
    control_mean_variance: float,
    treatment_mean: float,
    treatment_mean_variance: float,
    alpha: float,
    alternative: Alternative = Alternative.TWO_SIDED,
) -> tuple[float, float, float, float]:
    """Relative lift ``treatment / control - 1`` with a delta-method interval.

    Args:
        control_mean, treatment_mean: the two estimated means.
        control_mean_variance, treatment_mean_variance: the variances of those estimates
            (per-observation variance divided by n).
        alpha: one minus the confidence level.
        alternative: which interval to return (two-sided or one-sided bound).

    Returns:
        ``(lift, std_error, low, high)``; all NaN when the control mean is zero.
    """
    squared = control_mean * control_mean
    if squared == 0 or not math.isfinite(squared):
        return math.nan, math.nan, math.nan, math.nan
    ratio = treatment_mean / control_mean
    lift = ratio - 1.0
    # Var(T/C) ~= (Var(T) + (T/C)^2 Var(C)) / C^2 for independent arms (first-order Taylor expansion).
    variance = (treatment_mean_variance + ratio * ratio * control_mean_variance) / squared
    std_error = math.sqrt(variance) if variance >= 0 else math.nan
    low, high = interval(lift, std_error, alpha, alternative)
    return lift, std_error, low, high


def two_proportion_ztest(
    control: ProportionStats,
    treatment: ProportionStats,
    alpha: float = 0.05,
    alternative: Alternative | str = Alternative.TWO_SIDED,
) -> ComparisonResult:
    """Two-proportion z-test of ``treatment - control``.

    The p-value uses the pooled standard error (the null says both rates are equal); the confidence
    interval uses the unpooled one (it describes the difference where it is).
    """
    alternative = Alternative(alternative)
    test = "two-proportion-z"
    metric = MetricType.PROPORTION
    error = _check_alpha(alpha) or control.validation_error() or treatment.validation_error()
    if error is None and (control.trials <= 0 or treatment.trials <= 0):
        error = "each variant needs at least one trial"
    if error is not None:
        return _failed(metric, test, control, treatment, alternative, alpha, error)
    p_control, p_treatment = control.mean, treatment.mean
    pooled = (control.successes + treatment.successes) / (control.trials + treatment.trials)
    pooled_se = math.sqrt(pooled * (1.0 - pooled) * (1.0 / control.trials + 1.0 / treatment.trials))
    if pooled_se == 0.0:
        return _failed(
            metric, test, control, treatment, alternative, alpha, "no variance: every outcome is identical"
        )
    difference = p_treatment - p_control
    statistic = difference / pooled_se
    var_control = p_control * (1.0 - p_control) / control.trials
    var_treatment = p_treatment * (1.0 - p_treatment) / treatment.trials
    std_error = math.sqrt(var_control + var_treatment)
    ci_low, ci_high = interval(difference, std_error, alpha, alternative)
    lift, _, rel_low, rel_high = relative_lift_interval(
        p_control, var_control, p_treatment, var_treatment, alpha, alternative
    )
    return ComparisonResult(
        metric=metric,
        test=test,
        alternative=alternative,
        alpha=alpha,
        n_control=control.trials,
        n_treatment=treatment.trials,
        control_value=p_control,
        treatment_value=p_treatment,
        absolute_difference=difference,
        relative_lift=lift,
        ci_low=ci_low,
        ci_high=ci_high,
        relative_ci_low=rel_low,
        relative_ci_high=rel_high,
        std_error=std_error,
        statistic=statistic,
        p_value=p_value_from_statistic(statistic, alternative),
    )


def welch_ttest(
    control: MeanStats,
    treatment: MeanStats,
    alpha: float = 0.05,
    alternative: Alternative | str = Alternative.TWO_SIDED,
) -> ComparisonResult:
    """Welch's t-test of ``treatment - control`` with Welch-Satterthwaite degrees of freedom."""
    alternative = Alternative(alternative)
    test = "welch-t"
    metric = MetricType.MEAN
    error = _check_alpha(alpha) or control.validation_error() or treatment.validation_error()
    if error is None and (control.n < 2 or treatment.n < 2):
        error = "each variant needs at least two observations"
    if error is not None:
        return _failed(metric, test, control, treatment, alternative, alpha, error)
    var_control = control.variance / control.n
    var_treatment = treatment.variance / treatment.n
    std_error = math.sqrt(var_control + var_treatment)
    if std_error == 0.0:
        return _failed(metric, test, control, treatment, alternative, alpha, "no variance in either variant")
    # Welch-Satterthwaite, written with variance shares so tiny variances cannot underflow to 0/0.
    share_control = var_control / (var_control + var_treatment)
    share_treatment = var_treatment / (var_control + var_treatment)
    df = 1.0 / (share_control**2 / (control.n - 1) + share_treatment**2 / (treatment.n - 1))
    difference = treatment.mean - control.mean
    statistic = difference / std_error
    ci_low, ci_high = interval(difference, std_error, alpha, alternative, df)
    lift, _, rel_low, rel_high = relative_lift_interval(
        control.mean, var_control, treatment.mean, var_treatment, alpha, alternative
    )
    return ComparisonResult(
        metric=metric,
        test=test,
        alternative=alternative,
        alpha=alpha,
        n_control=control.n,
        n_treatment=treatment.n,
        control_value=control.mean,
        treatment_value=treatment.mean,
        absolute_difference=difference,
        relative_lift=lift,
        ci_low=ci_low,
        ci_high=ci_high,
        relative_ci_low=rel_low,
        relative_ci_high=rel_high,
        std_error=std_error,
        statistic=statistic,
        p_value=p_value_from_statistic(statistic, alternative, df),
        df=df,
    )


def compare_fixed(
    control: SufficientStats,
    treatment: SufficientStats,
    alpha: float = 0.05,
    alternative: Alternative | str = Alternative.TWO_SIDED,
) -> ComparisonResult:
    """The fixed-horizon test that fits the statistics: z-test for proportions, Welch for means."""
    if isinstance(control, ProportionStats) and isinstance(treatment, ProportionStats):
        return two_proportion_ztest(control, treatment, alpha, alternative)
    if isinstance(control, MeanStats) and isinstance(treatment, MeanStats):
        return welch_ttest(control, treatment, alpha, alternative)
    metric = MetricType.PROPORTION if isinstance(control, ProportionStats) else MetricType.MEAN
    return _failed(
        metric,
        "none",
        control,
        treatment,
        Alternative(alternative),
        alpha,
        "control and treatment statistics are of different kinds",
    )


def mean_variance(stats_: SufficientStats) -> float:
    """The variance of the estimated mean (per-observation variance divided by n)."""
    return stats_.variance / stats_.n if stats_.n > 0 else math.nan


def variant_interval(stats: SufficientStats, alpha: float) -> tuple[float, float]:
    """A two-sided ``1 - alpha`` interval for one variant's own rate or mean (for display, not decisions).

    Proportions use the Wilson score interval, which stays inside [0, 1] and keeps its coverage at
    small counts and rates near 0 or 1 where the Wald interval collapses; means use Student's t
    interval. The interval is pointwise (valid at one look), unlike the always-valid interval of a
    Sequential test's difference.

    Returns:
        ``(low, high)``; NaN where the data cannot support an interval (no trials, one observation,
        bad counts or alpha).
    """
    if _check_alpha(alpha) is not None or stats.validation_error() is not None:
        return math.nan, math.nan
    if isinstance(stats, ProportionStats):
        trials = stats.trials
        if trials <= 0:
            return math.nan, math.nan
        rate = stats.successes / trials
        z = float(sps.norm.ppf(1.0 - alpha / 2.0))
        z2_n = z * z / trials
        centre = (rate + z2_n / 2.0) / (1.0 + z2_n)
        half = z * math.sqrt(rate * (1.0 - rate) / trials + z2_n / (4.0 * trials)) / (1.0 + z2_n)
        # At a rate of exactly 0 or 1 the Wilson bound is exactly 0 or 1; rounding must not move it inside.
        low = 0.0 if stats.successes == 0 else max(centre - half, 0.0)
        high = 1.0 if stats.successes == trials else min(centre + half, 1.0)
        return low, high
    if stats.n < 2:
        return math.nan, math.nan
    half = float(sps.t.ppf(1.0 - alpha / 2.0, stats.n - 1)) * math.sqrt(stats.variance / stats.n)
    return stats.mean - half, stats.mean + half
