"""mSPRT and group-sequential boundaries against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate
from scipy import stats as sps
from scipy.stats import multivariate_normal

from arbiter.stats import (
    MeanStats,
    ProportionStats,
    SequentialState,
    confidence_sequence,
    crossing_probabilities,
    group_sequential_boundaries,
    msprt_log_likelihood_ratio,
    msprt_p_value,
    msprt_test,
    sequential_inflation_factor,
    spent_alpha,
)


def mixture_lr_by_quadrature(d: float, v: float, tau2: float, side: str) -> float:
    """Integrate the likelihood ratio N(d; theta, V) / N(d; 0, V) over the mixing density directly."""

    def integrand(theta: float) -> float:
        ratio = sps.norm.pdf(d, theta, math.sqrt(v)) / sps.norm.pdf(d, 0.0, math.sqrt(v))
        density = sps.norm.pdf(theta, 0.0, math.sqrt(tau2))
        return ratio * (density if side == "two-sided" else 2.0 * density)

    tau = math.sqrt(tau2)
    if side == "two-sided":
        return integrate.quad(integrand, -12 * tau, 12 * tau, epsabs=0, epsrel=1e-11, limit=200)[0]
    lower, upper = (0.0, 12 * tau) if side == "larger" else (-12 * tau, 0.0)
    return integrate.quad(integrand, lower, upper, epsabs=0, epsrel=1e-11, limit=200)[0]


@pytest.mark.parametrize(
    ("d", "v", "tau2"), [(0.01, 1e-5, 1e-4), (-0.02, 4e-5, 2.25e-4), (0.0, 1e-4, 1e-4), (1.5, 0.4, 1.0)]
)
@pytest.mark.parametrize("side", ["two-sided", "larger", "smaller"])
def test_msprt_likelihood_ratio_matches_numerical_integration(d, v, tau2, side):
    closed = math.exp(float(msprt_log_likelihood_ratio(d, v, tau2, side)))
    assert closed == pytest.approx(mixture_lr_by_quadrature(d, v, tau2, side), rel=1e-6)


@pytest.mark.parametrize("side", ["two-sided", "larger", "smaller"])
def test_confidence_sequence_ends_are_where_the_test_just_rejects(side):
    d, v, tau2, alpha = 0.012, 2e-5, 1e-4, 0.05
    low, high = confidence_sequence(d, v, tau2, alpha, side)
    for end in (low, high):
        if math.isfinite(end):
            assert float(msprt_p_value(d, v, tau2, side, null_value=end)) == pytest.approx(alpha, rel=1e-8)
    assert low < d < high
    if side == "larger":
        assert high == math.inf
    if side == "smaller":
        assert low == -math.inf


def test_msprt_state_round_trips_and_the_p_value_never_increases():
    rng = np.random.default_rng(3)
    control, treatment = ProportionStats(0, 0), ProportionStats(0, 0)
    state = None
    previous = 1.0
    for _ in range(30):
        control += ProportionStats(float(rng.binomial(500, 0.2)), 500)
        treatment += ProportionStats(float(rng.binomial(500, 0.2)), 500)
        result = msprt_test(control, treatment, 0.02**2, 0.05, "two-sided", state)
        assert result.ok and result.p_value <= previous
        assert result.ci_low <= result.absolute_difference <= result.ci_high or result.looks > 1
        previous = result.p_value
        state = SequentialState.from_dict(result.state.to_dict())
    assert state is not None and state.looks == 30 and state.mixing_variance == pytest.approx(4e-4)


def test_msprt_reports_errors_instead_of_raising():
    assert "different kinds" in msprt_test(ProportionStats(1, 10), MeanStats(3, 1, 1), 0.1).error
    assert "mixing variance" in msprt_test(ProportionStats(1, 10), ProportionStats(2, 10), None).error
    assert "identical" in msprt_test(ProportionStats(0, 10), ProportionStats(0, 10), 0.1).error
    assert "exceed" in msprt_test(ProportionStats(11, 10), ProportionStats(2, 10), 0.1).error
    assert msprt_test(MeanStats(1, 1, 1), MeanStats(5, 5, 9), 1.0).error


def test_msprt_stays_below_alpha_under_the_null_when_monitored_often():
    """Always valid: 100 looks at A/A data reject at most alpha of the time (vectorised simulation)."""
    rng = np.random.default_rng(11)
    runs, looks, batch = 4000, 100, 50
    x = rng.normal(size=(runs, looks, batch)).sum(axis=2).cumsum(axis=1)
    y = rng.normal(size=(runs, looks, batch)).sum(axis=2).cumsum(axis=1)
    n = batch * np.arange(1, looks + 1)
    diff = (y - x) / n
    variance = 2.0 / n
    rejected = (msprt_p_value(diff, variance, 0.04).min(axis=1) <= 0.05).mean()
    naive = (np.abs(diff / np.sqrt(variance)) >= 1.96).any(axis=1).mean()
    assert rejected <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / runs)
    assert naive > 0.2  # the simulation is sensitive: naive peeking does inflate the error


def test_obrien_fleming_boundaries_match_published_values():
    """gsDesign's sfLDOF, 5 equal looks, one-sided alpha 0.025: 4.8769 3.3569 2.6803 2.2898 2.0310."""
    design = group_sequential_boundaries([0.2, 0.4, 0.6, 0.8, 1.0], 0.025, sides=1)
    assert design.z == pytest.approx((4.8769, 3.3569, 2.6803, 2.2898, 2.0310), abs=2e-4)
    assert design.cumulative_alpha[-1] == pytest.approx(0.025)


def test_pocock_boundaries_match_published_values():
    """gsDesign's sfLDPocock, 5 equal looks, one-sided alpha 0.025: 2.4380 2.4268 2.4101 2.3966 2.3859."""
    design = group_sequential_boundaries([0.2, 0.4, 0.6, 0.8, 1.0], 0.05, sides=2, spending="Pocock")
    assert design.z == pytest.approx((2.4380, 2.4268, 2.4101, 2.3966, 2.3859), abs=2e-4)


def test_boundaries_spend_exactly_the_alpha_at_uneven_looks_by_multivariate_normal():
    times = np.array([0.15, 0.55, 1.0])
    design = group_sequential_boundaries(times, 0.05, sides=2)
    corr = np.sqrt(np.minimum.outer(times, times) / np.maximum.outer(times, times))
    for k in range(1, 4):
        bounds = np.array(design.z[:k])
        mvn = multivariate_normal(np.zeros(k), corr[:k, :k], abseps=1e-8, releps=1e-8, maxpts=200_000, seed=1)
        stay = mvn.cdf(bounds, lower_limit=-bounds)
        assert 1 - stay == pytest.approx(design.cumulative_alpha[k - 1], abs=2e-6)
    assert design.cumulative_alpha[1] == pytest.approx(2 * spent_alpha(0.55, 0.025)[()], rel=1e-12)


def test_single_look_boundary_is_the_fixed_horizon_critical_value():
    assert group_sequential_boundaries([1.0], 0.05, 2).z[0] == pytest.approx(sps.norm.isf(0.025), rel=1e-9)
    assert group_sequential_boundaries([1.0], 0.05, 1, "Pocock").z[0] == pytest.approx(
        sps.norm.isf(0.05), rel=1e-9
    )


def test_boundaries_report_bad_looks():
    assert group_sequential_boundaries([0.5, 0.4], 0.05).error
    assert group_sequential_boundaries([], 0.05).error
    assert group_sequential_boundaries([1.2, 1.5], 0.05).error
    assert group_sequential_boundaries([0.5], 1.5).error
    overrun = group_sequential_boundaries([0.5, 1.3], 0.05)
    assert overrun.error is None and overrun.cumulative_alpha[-1] == pytest.approx(0.05)


def test_crossing_probabilities_under_drift_match_monte_carlo():
    times = [0.25, 0.5, 0.75, 1.0]
    design = group_sequential_boundaries(times, 0.05, 2)
    upper, _ = crossing_probabilities(times, design.z, [-z for z in design.z], drift=2.8)
    rng = np.random.default_rng(5)
    increments = rng.normal(2.8 * 0.25, math.sqrt(0.25), size=(100_000, 4))
    z = increments.cumsum(axis=1) / np.sqrt(times)
    crossed = (z >= np.array(design.z)).any(axis=1).mean()
    assert float(upper.sum()) == pytest.approx(crossed, abs=4 * math.sqrt(0.25 / 100_000))


def test_inflation_factors_are_plausible_and_ordered():
    gsd = sequential_inflation_factor("GroupSequential", looks=5, alpha=0.05, power=0.9)
    assert 1.01 < gsd < 1.04  # Jennison & Turnbull: ~1.02-1.03 for O'Brien-Fleming-type, 5 looks
    pocock = sequential_inflation_factor("GroupSequential", looks=5, spending="Pocock", power=0.9)
    msprt = sequential_inflation_factor("Sequential", looks=20)
    assert gsd < pocock < msprt
    assert sequential_inflation_factor("FixedHorizon") == 1.0
