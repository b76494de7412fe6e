"""A variant's own interval (dashboards, report) against statsmodels/scipy, and its coverage by simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.proportion import proportion_confint
from statsmodels.stats.weightstats import DescrStatsW

from arbiter.stats import MeanStats, ProportionStats, variant_interval


@pytest.mark.parametrize(
    ("successes", "trials", "alpha"),
    [(0, 10, 0.05), (10, 10, 0.05), (3, 40, 0.05), (512, 1000, 0.01), (7, 100_000, 0.001), (1, 1, 0.2)],
)
def test_proportion_interval_is_wilson(successes: int, trials: int, alpha: float) -> None:
    low, high = variant_interval(ProportionStats(successes, trials), alpha)
    expected_low, expected_high = proportion_confint(successes, trials, alpha=alpha, method="wilson")
    assert low == pytest.approx(expected_low, abs=1e-12)
    assert high == pytest.approx(expected_high, abs=1e-12)
    assert 0.0 <= low <= successes / trials <= high <= 1.0


@pytest.mark.parametrize("alpha", [0.05, 0.01])
def test_mean_interval_is_student_t(alpha: float) -> None:
    values = np.random.default_rng(7).gamma(2.0, 30.0, size=57)
    low, high = variant_interval(MeanStats.from_values(values), alpha)
    expected_low, expected_high = DescrStatsW(values).tconfint_mean(alpha=alpha)
    assert low == pytest.approx(expected_low, rel=1e-9)
    assert high == pytest.approx(expected_high, rel=1e-9)


@pytest.mark.parametrize(
    "stats",
    [ProportionStats(0, 0), ProportionStats(5, 3), MeanStats(1, 4.0, 16.0), MeanStats(0, 0.0, 0.0)],
)
def test_no_interval_without_the_data_for_one(stats: ProportionStats | MeanStats) -> None:
    assert all(math.isnan(bound) for bound in variant_interval(stats, 0.05))


def test_bad_alpha_gives_no_interval() -> None:
    assert all(math.isnan(bound) for bound in variant_interval(ProportionStats(3, 10), 1.5))


def test_proportion_interval_covers_the_true_rate_at_its_level() -> None:
    """Simulation: 4,000 experiments at a low rate; coverage within 3 standard errors of 95%."""
    rng = np.random.default_rng(2026)
    rate, trials, alpha, runs = 0.03, 400, 0.05, 4_000
    successes = rng.binomial(trials, rate, size=runs)
    covered = sum(
        low <= rate <= high
        for low, high in (variant_interval(ProportionStats(int(s), trials), alpha) for s in successes)
    )
    margin = 3 * math.sqrt(alpha * (1 - alpha) / runs)
    assert abs(covered / runs - (1 - alpha)) < margin + 0.01


def test_mean_interval_matches_scipy_t_quantile() -> None:
    stats = MeanStats(n=30, sum=300.0, sum_squares=30 * 100.0 + 29 * 4.0)
    low, high = variant_interval(stats, 0.1)
    half = sps.t.ppf(0.95, 29) * math.sqrt(stats.variance / 30)
    assert (low, high) == pytest.approx((10.0 - half, 10.0 + half))
