"""How much longer an inconclusive test must run, and the level a family of challengers plans at.

``extension_needed`` answers the seeds' "extend the test": with the variances observed so far and the
split observed so far, how many units each arm needs for the test to reach its power at the MDE (the
fixed-horizon normal formula of ``planning``, times a sequential design's inflation factor), how many
more that is, and how many days at the observed traffic.

``family_alpha`` is the per-comparison level a plan for ``k`` challengers uses. The engine judges the
primary metric's challengers as one Holm family (``decision.decide``); Holm's strictest step compares
the smallest p-value with ``alpha / k`` (Bonferroni), and a challenger reaches that step whenever the
others are not significant. Planning every comparison at ``alpha / k`` therefore gives each challenger
at least the planned power under Holm, whatever the others do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import stats as sps

from arbiter.stats._types import JsonResult
from arbiter.stats.sufficient import SufficientStats


def family_alpha(alpha: float, challengers: int) -> float:
    """The level each of ``challengers`` comparisons is planned at (Holm's first step, ``alpha / k``)."""
    if challengers < 1:
        raise ValueError("challengers must be at least 1")
    return alpha / challengers


@dataclass(frozen=True)
class Extension(JsonResult):
    """Units the test needs to reach its power at the MDE, and how many more than it has.

    Attributes:
        required_control, required_treatment: units each arm needs in total (at the observed split).
        additional_control, additional_treatment, additional_total: still to collect (0 when reached).
        days: days to collect ``additional_total`` at ``daily_traffic`` (None without a traffic rate).
        reached: the observed sample already gives the planned power (the result is then a real
            "no difference as large as the MDE", not a lack of data).
    """

    absolute_mde: float
    alpha: float
    power: float
    inflation_factor: float
    required_control: int
    required_treatment: int
    additional_control: int
    additional_treatment: int
    additional_total: int
    reached: bool
    daily_traffic: float | None = None
    days: float | None = None
    error: str | None = None


def extension_needed(
    control: SufficientStats,
    treatment: SufficientStats,
    absolute_mde: float,
    alpha: float = 0.05,
    power: float = 0.8,
    sides: int = 2,
    family_size: int = 1,
    inflation_factor: float = 1.0,
    daily_traffic: float | None = None,
) -> Extension:
    """Units the comparison needs for ``power`` at ``absolute_mde``, from the observed variances and split.

    ``N = (z_{1 - alpha/(k sides)} + z_power)^2 (var_c / (1 - a) + var_t / a) / mde^2`` units in the
    two arms together, ``a`` the treatment's observed share, ``k = family_size`` (Holm's first step),
    times ``inflation_factor`` for a sequential design; split by the observed shares.

    Args:
        control, treatment: the cumulative statistics observed so far.
        absolute_mde: the effect the test should detect, in the metric's units (positive).
        daily_traffic: units a day entering the two arms, for ``days``.
    """

    def failed(message: str) -> Extension:
        return Extension(absolute_mde, alpha, power, inflation_factor, 0, 0, 0, 0, 0, False, error=message)

    if not (absolute_mde > 0 and math.isfinite(absolute_mde)):
        return failed(f"the MDE must be positive, got {absolute_mde!r}")
    n_c, n_t = float(control.n), float(treatment.n)
    if n_c < 2 or n_t < 2:
        return failed("each arm needs at least two units to estimate its variance")
    var_c, var_t = float(control.variance), float(treatment.variance)
    if not (math.isfinite(var_c) and math.isfinite(var_t)) or var_c + var_t <= 0:
        return failed("the observed variance is zero or undefined")
    share = n_t / (n_c + n_t)
    z = float(sps.norm.isf(family_alpha(alpha, family_size) / sides) + sps.norm.ppf(power))
    total = z**2 * (var_c / (1.0 - share) + var_t / share) / absolute_mde**2 * inflation_factor
    required_c = math.ceil(total * (1.0 - share) - 1e-9)
    required_t = math.ceil(total * share - 1e-9)
    more_c = max(0, required_c - math.ceil(n_c))
    more_t = max(0, required_t - math.ceil(n_t))
    days = None
    if daily_traffic is not None and daily_traffic > 0 and math.isfinite(daily_traffic):
        days = (more_c + more_t) / daily_traffic
    return Extension(
        absolute_mde=absolute_mde,
        alpha=alpha,
        power=power,
        inflation_factor=inflation_factor,
        required_control=required_c,
        required_treatment=required_t,
        additional_control=more_c,
        additional_treatment=more_t,
        additional_total=more_c + more_t,
        reached=more_c == 0 and more_t == 0,
        daily_traffic=daily_traffic,
        days=days,
    )
