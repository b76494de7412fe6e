"""The delta method for per-user ratio metrics, and the extension of an inconclusive test.

Oracles: the spread of the ratio over many simulated experiments (Monte Carlo), A/A simulations with
clustered users (the request-level test is anti-conservative, the user-level one holds its alpha), and
statsmodels' power solver for the extension's sample size.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from statsmodels.stats.power import NormalIndPower

from arbiter.stats import (
    MeanStats,
    ProportionStats,
    RatioStats,
    compare_fixed,
    extension_needed,
    family_alpha,
)


def clustered_users(rng: np.random.Generator, users: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-user successes and requests: heavy users, and rates that differ a lot between users."""
    requests = rng.geometric(0.08, users)
    rates = rng.beta(0.6, 3.0, users)
    return rng.binomial(requests, rates).astype(float), requests.astype(float)


def test_ratio_stats_add_like_the_other_sufficient_statistics():
    rng = np.random.default_rng(3)
    y, n = clustered_users(rng, 300)
    whole = RatioStats.from_units(y, n)
    parts = RatioStats.from_units(y[:120], n[:120]) + RatioStats.from_units(y[120:], n[120:])
    for name in ("units", "sum_y", "sum_n", "sum_yy", "sum_nn", "sum_yn"):
        assert getattr(parts, name) == pytest.approx(getattr(whole, name))
    assert whole.ratio == pytest.approx(y.sum() / n.sum())


def test_linearised_values_match_the_delta_method_written_out():
    """``as_mean_stats`` is the textbook linearisation, computed here from the raw per-user values."""
    rng = np.random.default_rng(4)
    y, n = clustered_users(rng, 500)
    ratio = y.sum() / n.sum()
    linearised = ratio + (y - ratio * n) / n.mean()
    stats = RatioStats.from_units(y, n).as_mean_stats()
    assert stats.mean == pytest.approx(ratio)
    assert stats.variance == pytest.approx(np.var(linearised, ddof=1), rel=1e-9)


def test_delta_method_variance_matches_the_spread_over_many_experiments():
    """Monte Carlo oracle: the variance of the ratio across 4,000 simulated samples of 400 users."""
    rng = np.random.default_rng(5)
    ratios = []
    estimates = []
    for _ in range(4000):
        y, n = clustered_users(rng, 400)
        stats = RatioStats.from_units(y, n)
        ratios.append(stats.ratio)
        estimates.append(stats.ratio_variance)
    empirical = float(np.var(ratios, ddof=1))
    # The Monte Carlo variance itself is known to about 2.2% (sqrt(2/4000)); allow 8%.
    assert float(np.mean(estimates)) == pytest.approx(empirical, rel=0.08)
    # The naive binomial variance of a request-level rate is far too small for such users.
    naive = float(np.mean([r * (1 - r) for r in ratios])) / (400 / 0.08)
    assert naive < 0.5 * empirical


def test_with_clustered_users_the_request_test_is_anti_conservative_and_the_user_test_holds_alpha():
    rng = np.random.default_rng(6)
    runs = 1500
    request_rejections = user_rejections = 0
    for _ in range(runs):
        yc, nc = clustered_users(rng, 300)
        yt, nt = clustered_users(rng, 300)
        requests = compare_fixed(ProportionStats(yc.sum(), nc.sum()), ProportionStats(yt.sum(), nt.sum()))
        users = compare_fixed(
            RatioStats.from_units(yc, nc).as_mean_stats(), RatioStats.from_units(yt, nt).as_mean_stats()
        )
        request_rejections += requests.p_value <= 0.05
        user_rejections += users.p_value <= 0.05
    # Binomial SE of a 5% rate over 1500 runs is 0.56 points: [3%, 7.2%] is about +-3.5 SE.
    assert 0.03 <= user_rejections / runs <= 0.072
    assert request_rejections / runs > 0.2


def test_extension_matches_statsmodels_power_solver():
    """Equal arms, equal variances: the required size per arm is statsmodels' NormalIndPower answer."""
    control = MeanStats.from_values(np.random.default_rng(7).normal(10.0, 2.0, 1000))
    treatment = MeanStats(1000, control.sum, control.sum_squares)  # the same variance, so one sigma
    mde = 0.2
    for family in (1, 3):
        extension = extension_needed(control, treatment, mde, alpha=0.05, power=0.8, family_size=family)
        expected = NormalIndPower().solve_power(
            effect_size=mde / math.sqrt(control.variance), alpha=0.05 / family, power=0.8, ratio=1.0
        )
        assert extension.required_control == math.ceil(expected)
        assert extension.additional_control == math.ceil(expected) - 1000
    assert family_alpha(0.05, 4) == 0.0125


def test_extension_days_and_a_test_that_already_has_its_power():
    control, treatment = ProportionStats(15_000, 100_000), ProportionStats(15_100, 100_000)
    done = extension_needed(control, treatment, 0.015, daily_traffic=20_000)
    assert done.reached and done.additional_total == 0 and done.days == 0
    small = extension_needed(ProportionStats(150, 1000), ProportionStats(160, 1000), 0.015, daily_traffic=400)
    assert not small.reached
    assert small.days == pytest.approx(small.additional_total / 400)
    assert extension_needed(control, treatment, -1.0).error
    assert extension_needed(ProportionStats(0, 1), treatment, 0.01).error
