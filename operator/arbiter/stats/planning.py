"""Sample-size planning, power, expected duration and the inflation a sequential design needs.

Fixed-horizon sample size (normal approximation, unpooled variances, as most textbooks and online
calculators do): with a fraction ``a`` of the experiment's traffic on the treatment, the variance of the
estimated difference for ``N`` units in total is ``K / N`` with ``K = var_c / (1 - a) + var_t / a``, so

    N = (z_{1 - alpha/sides} + z_{power})^2 K / delta^2,

and the treatment gets ``a N``, the control ``(1 - a) N``. ``variance="pooled"`` uses the pooled rate for
the null variance instead (``N = (z_alpha sqrt(K_0) + z_power sqrt(K_1))^2 / delta^2``), as statsmodels'
``samplesize_proportions_2indep_onetail`` does. Every arm's size is rounded up.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np
from scipy import optimize
from scipy import stats as sps

from arbiter.stats._types import Direction, JsonResult, Method, MetricType, Spending
from arbiter.stats.group_sequential import crossing_probabilities, group_sequential_boundaries
from arbiter.stats.sequential import msprt_one_sided_z_boundary, msprt_z_boundary


@dataclass(frozen=True)
class SampleSize(JsonResult):
    """How many units a fixed-horizon test needs.

    Attributes:
        sample_size_per_variant: units for the smaller arm (each arm when the split is even).
        sample_size_by_variant: ``{"control": n, "treatment": n}``.
        total_sample_size: both arms together.
        exact_per_variant: the unrounded size of the smaller arm.
        days: expected duration at ``daily_traffic`` units a day in the experiment (None without it).
    """

    metric: MetricType
    control_value: float
    treatment_value: float
    absolute_mde: float
    relative_mde: float
    alpha: float
    power: float
    sides: int
    allocation: float
    sample_size_per_variant: int
    sample_size_by_variant: dict[str, int] = field(default_factory=dict)
    total_sample_size: int = 0
    exact_per_variant: float = math.nan
    daily_traffic: float | None = None
    days: float | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Whether a plan could be computed."""
        return self.error is None


def _ceil(value: float) -> int:
    # Guard against 9254.000000000002 becoming 9255.
    return math.ceil(value - 1e-9 * max(1.0, abs(value)))


def _common_error(alpha: float, power: float, sides: int, allocation: float) -> str | None:
    if not (0.0 < alpha < 1.0):
        return f"alpha must be between 0 and 1, got {alpha!r}"
    if not (0.0 < power < 1.0):
        return f"power must be between 0 and 1, got {power!r}"
    if sides not in (1, 2):
        return f"sides must be 1 or 2, got {sides!r}"
    if not (0.0 < allocation < 1.0):
        return f"allocation (the treatment's share of traffic) must be between 0 and 1, got {allocation!r}"
    return None


def _plan(
    metric: MetricType,
    control_value: float,
    treatment_value: float,
    var_null: tuple[float, float],
    var_alt: tuple[float, float],
    alpha: float,
    power: float,
    sides: int,
    allocation: float,
    daily_traffic: float | None,
) -> SampleSize:
    delta = treatment_value - control_value
    z_alpha = float(sps.norm.isf(alpha / sides))
    z_power = float(sps.norm.ppf(power))
    k_null = var_null[0] / (1.0 - allocation) + var_null[1] / allocation
    k_alt = var_alt[0] / (1.0 - allocation) + var_alt[1] / allocation
    total_exact = (z_alpha * math.sqrt(k_null) + z_power * math.sqrt(k_alt)) ** 2 / delta**2
    n_control = _ceil(total_exact * (1.0 - allocation))
    n_treatment = _ceil(total_exact * allocation)
    total = n_control + n_treatment
    days = None
    if daily_traffic is not None and daily_traffic > 0:
        days = total / daily_traffic
    return SampleSize(
        metric=metric,
        control_value=control_value,
        treatment_value=treatment_value,
        absolute_mde=delta,
        relative_mde=delta / control_value if control_value else math.nan,
        alpha=alpha,
        power=power,
        sides=sides,
        allocation=allocation,
        sample_size_per_variant=min(n_control, n_treatment),
        sample_size_by_variant={"control": n_control, "treatment": n_treatment},
        total_sample_size=total,
        exact_per_variant=total_exact * min(allocation, 1.0 - allocation),
        daily_traffic=daily_traffic,
        days=days,
    )


def _failed(
    metric: MetricType, alpha: float, power: float, sides: int, allocation: float, error: str
) -> SampleSize:
    nan = math.nan
    return SampleSize(metric, nan, nan, nan, nan, alpha, power, sides, allocation, 0, error=error)


def sample_size_proportion(
    baseline: float,
    mde: float,
    relative: bool = True,
    alpha: float = 0.05,
    power: float = 0.8,
    sides: int = 2,
    allocation: float = 0.5,
    direction: Direction | str = Direction.INCREASE,
    daily_traffic: float | None = None,
    variance: str = "unpooled",
) -> SampleSize:
    """Units needed to detect a change of ``mde`` in a rate.

    Args:
        baseline: the control's rate, e.g. 0.15.
        mde: the minimum detectable effect, relative (0.10 = +10%) or absolute (0.015) when
            ``relative`` is False; always positive, ``direction`` says which way.
        alpha, power, sides: the test's level, power and sidedness.
        allocation: the treatment's share of the experiment's traffic (0.05 for a 5% canary).
        direction: whether the treatment's rate is expected to rise or fall.
        daily_traffic: units a day entering the experiment (both arms), for the duration.
        variance: "unpooled" (default) or "pooled" null variance.
    """
    metric = MetricType.PROPORTION
    error = _common_error(alpha, power, sides, allocation)
    if error is None and not (0.0 < baseline < 1.0):
        error = f"the baseline rate must be between 0 and 1, got {baseline!r}"
    if error is None and not (mde > 0 and math.isfinite(mde)):
        error = f"the MDE must be positive, got {mde!r}"
    if error is None and variance not in ("unpooled", "pooled"):
        error = f"variance must be 'unpooled' or 'pooled', got {variance!r}"
    if error:
        return _failed(metric, alpha, power, sides, allocation, error)
    change = baseline * mde if relative else mde
    treatment = baseline + change if Direction(direction) is Direction.INCREASE else baseline - change
    if not (0.0 < treatment < 1.0):
        return _failed(
            metric, alpha, power, sides, allocation, f"the treatment rate {treatment:g} is outside (0, 1)"
        )
    var_alt = (baseline * (1 - baseline), treatment * (1 - treatment))
    var_null = var_alt
    if variance == "pooled":
        pooled = allocation * treatment + (1 - allocation) * baseline
        var_null = (pooled * (1 - pooled), pooled * (1 - pooled))
    return _plan(
        metric, baseline, treatment, var_null, var_alt, alpha, power, sides, allocation, daily_traffic
    )


def sample_size_mean(
    baseline_mean: float,
    baseline_std: float,
    mde: float,
    relative: bool = False,
    alpha: float = 0.05,
    power: float = 0.8,
    sides: int = 2,
    allocation: float = 0.5,
    direction: Direction | str = Direction.INCREASE,
    daily_traffic: float | None = None,
    treatment_std: float | None = None,
) -> SampleSize:
    """Units needed to detect a change of ``mde`` in a mean (normal approximation).

    Args:
        baseline_mean, baseline_std: the control's mean and standard deviation.
        mde: absolute (default) or relative to ``baseline_mean`` when ``relative``; positive.
        treatment_std: the treatment's standard deviation if it differs (default: ``baseline_std``).
        Others as for ``sample_size_proportion``.
    """
    metric = MetricType.MEAN
    error = _common_error(alpha, power, sides, allocation)
    treatment_std = baseline_std if treatment_std is None else treatment_std
    if error is None and not (baseline_std > 0 and treatment_std > 0):
        error = "the standard deviation must be positive"
    if error is None and not (mde > 0 and math.isfinite(mde)):
        error = f"the MDE must be positive, got {mde!r}"
    if error is None and relative and baseline_mean == 0:
        error = "a relative MDE needs a non-zero baseline mean"
    if error:
        return _failed(metric, alpha, power, sides, allocation, error)
    change = abs(baseline_mean) * mde if relative else mde
    treatment = (
        baseline_mean + change if Direction(direction) is Direction.INCREASE else baseline_mean - change
    )
    variances = (baseline_std**2, treatment_std**2)
    return _plan(
        metric, baseline_mean, treatment, variances, variances, alpha, power, sides, allocation, daily_traffic
    )


def power_normal(difference: float, std_error: float, alpha: float = 0.05, sides: int = 2) -> float:
    """Power of a z-test to detect ``difference`` when the estimate has standard error ``std_error``.

    Counts both rejection regions of a two-sided test.
    """
    shift = abs(difference) / std_error
    critical = float(sps.norm.isf(alpha / sides))
    power = float(sps.norm.cdf(shift - critical))
    if sides == 2:
        power += float(sps.norm.cdf(-shift - critical))
    return power


def power_welch_t(
    difference: float, std: float, n_control: float, n_treatment: float, alpha: float = 0.05, sides: int = 2
) -> float:
    """Power of a two-sample t-test (common ``std``, ``n_c + n_t - 2`` df) by the noncentral t."""
    df = n_control + n_treatment - 2
    noncentrality = abs(difference) / (std * math.sqrt(1.0 / n_control + 1.0 / n_treatment))
    critical = float(sps.t.isf(alpha / sides, df))
    power = float(sps.nct.sf(critical, df, noncentrality))
    if sides == 2:
        power += float(sps.nct.cdf(-critical, df, noncentrality))
    return power


def sample_size_t_test(
    difference: float, std: float, alpha: float = 0.05, power: float = 0.8, sides: int = 2, ratio: float = 1.0
) -> float:
    """Exact (noncentral t) treatment-arm size for a two-sample t-test, unrounded; control = ``ratio`` x it."""

    def shortfall(n: float) -> float:
        return power_welch_t(difference, std, ratio * n, n, alpha, sides) - power

    low = 2.0 / min(1.0, ratio) + 1e-9
    high = 10.0
    while shortfall(high) < 0:
        high *= 2.0
    return float(optimize.brentq(shortfall, low, high, xtol=1e-10, rtol=1e-13))


def expected_days(total_sample_size: float, daily_traffic: float) -> float:
    """Days to collect ``total_sample_size`` units at ``daily_traffic`` units a day."""
    return total_sample_size / daily_traffic


@functools.lru_cache(maxsize=128)
def _group_sequential_inflation(
    looks: int, alpha: float, power: float, sides: int, spending: Spending
) -> float:
    fractions = [k / looks for k in range(1, looks + 1)]
    design = group_sequential_boundaries(fractions, alpha, sides, spending)
    fixed_drift = float(sps.norm.isf(alpha / sides) + sps.norm.ppf(power))

    def shortfall(drift: float) -> float:
        upper, _ = crossing_probabilities(fractions, design.z, None, drift)
        return float(np.sum(upper)) - power

    drift = float(optimize.brentq(shortfall, fixed_drift * 0.9, fixed_drift * 2.0, xtol=1e-9))
    return (drift / fixed_drift) ** 2


@functools.lru_cache(maxsize=128)
def _sequential_inflation(looks: int, alpha: float, power: float, sides: int, mixing_ratio: float) -> float:
    fixed_drift = float(sps.norm.isf(alpha / sides) + sps.norm.ppf(power))

    def shortfall(horizon: float) -> float:
        times = [horizon * k / looks for k in range(1, looks + 1)]
        # In units of the fixed-horizon design: V / tau^2 = 1 / (mixing_ratio * drift^2 * t).
        bounds = []
        for t in times:
            variance = 1.0 / (fixed_drift**2 * t)
            if sides == 2:
                bounds.append(float(msprt_z_boundary(variance, mixing_ratio, alpha)))
            else:
                bounds.append(msprt_one_sided_z_boundary(variance, mixing_ratio, alpha))
        upper, _ = crossing_probabilities(times, bounds, None, fixed_drift)
        return float(np.sum(upper)) - power

    high = 2.0
    while shortfall(high) < 0:
        high *= 2.0
    return float(optimize.brentq(shortfall, 0.5, high, xtol=1e-6))


def sequential_inflation_factor(
    method: Method | str = Method.SEQUENTIAL,
    looks: int = 20,
    alpha: float = 0.05,
    power: float = 0.8,
    sides: int = 2,
    spending: Spending | str = Spending.OBRIEN_FLEMING,
    mixing_ratio: float = 1.0,
) -> float:
    """How much larger the maximum sample must be than the fixed-horizon n to keep the power.

    Both designs look ``looks`` times at equally spaced sample sizes up to the maximum.

    Args:
        method: ``GroupSequential`` (Lan-DeMets spending with ``spending``) or ``Sequential`` (mSPRT).
        mixing_ratio: for ``Sequential``, the mixing variance ``tau^2`` over the squared MDE (1 means
            ``tau`` = MDE, Arbiter's default).

    Returns:
        The factor; 1.0 for ``FixedHorizon``.
    """
    method = Method(method)
    if method is Method.FIXED_HORIZON:
        return 1.0
    if looks < 1:
        raise ValueError("looks must be at least 1")
    if method is Method.GROUP_SEQUENTIAL:
        return _group_sequential_inflation(looks, alpha, power, sides, Spending(spending))
    return _sequential_inflation(looks, alpha, power, sides, mixing_ratio)
