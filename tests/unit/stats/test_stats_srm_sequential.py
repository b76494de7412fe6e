"""The anytime-valid sample-ratio check: scipy oracle, validity under repeated looks, power, edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from arbiter.stats import (
    multinomial_log_likelihood_ratio,
    sample_ratio_mismatch,
    sequential_sample_ratio_mismatch,
)


@pytest.mark.parametrize(
    ("counts", "shares", "concentration"),
    [
        ([5000, 5100], [0.5, 0.5], 100.0),
        ([89500, 10800], [0.9, 0.1], 100.0),
        ([3300, 3350, 3200], [1 / 3, 1 / 3, 1 / 3], 10.0),
        ([700, 200, 100], [0.7, 0.2, 0.1], 1000.0),
        ([0, 12], [0.95, 0.05], 100.0),
    ],
)
def test_likelihood_ratio_matches_scipy_pmfs(counts, shares, concentration):
    """The ratio is scipy's Dirichlet-multinomial pmf over its multinomial pmf at the configured shares."""
    n = sum(counts)
    mixture = sps.dirichlet_multinomial.logpmf(counts, concentration * np.array(shares), n)
    null = sps.multinomial.logpmf(counts, n, shares)
    assert multinomial_log_likelihood_ratio(counts, shares, concentration) == pytest.approx(
        mixture - null, rel=1e-9, abs=1e-9
    )


def test_flags_the_seed_example_at_90_10():
    result = sequential_sample_ratio_mismatch(
        {"stable": 89500, "canary": 10800}, {"stable": 90, "canary": 10}
    )
    assert result.mismatch and result.p_value < 1e-10 and result.method == "Sequential"
    assert result.expected == {"stable": pytest.approx(90270), "canary": pytest.approx(10030)}


def test_a_correct_split_is_not_flagged():
    result = sequential_sample_ratio_mismatch({"a": 5000, "b": 5050}, {"a": 1, "b": 1})
    assert not result.mismatch and result.p_value == 1.0 and result.statistic < 0


def test_p_value_is_the_running_minimum():
    """Passed back, the previous look's p-value caps this one: a split called wrong stays wrong."""
    first = sequential_sample_ratio_mismatch({"a": 6000, "b": 4000}, {"a": 1, "b": 1})
    later = sequential_sample_ratio_mismatch(
        {"a": 6000, "b": 6000}, {"a": 1, "b": 1}, previous_p_value=first.p_value
    )
    alone = sequential_sample_ratio_mismatch({"a": 6000, "b": 6000}, {"a": 1, "b": 1})
    assert first.mismatch and alone.p_value == 1.0
    assert later.p_value == first.p_value and later.mismatch


def test_errors_and_zero_weight_traffic_like_the_chi_square():
    for observed, weights in [
        ({"a": 1, "x": 3}, {"a": 1, "b": 1}),
        ({}, {"a": 1, "b": 1}),
        ({"a": 5}, {"a": 1}),
    ]:
        result = sequential_sample_ratio_mismatch(observed, weights)
        assert result.error == sample_ratio_mismatch(observed, weights).error and result.error
        assert not result.mismatch
    stray = sequential_sample_ratio_mismatch({"a": 100, "b": 3}, {"a": 1, "b": 0})
    assert stray.mismatch and stray.p_value == 0.0
    # A zero-weight variant with no traffic is left out of the test; the rest must still fit.
    rest = sequential_sample_ratio_mismatch({"a": 5000, "b": 0, "c": 5000}, {"a": 1, "b": 0, "c": 1})
    assert not rest.mismatch and rest.df == 1
    with pytest.raises(ValueError, match="concentration"):
        sequential_sample_ratio_mismatch({"a": 1, "b": 1}, {"a": 1, "b": 1}, concentration=0)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(min_value=0, max_value=5000), min_size=2, max_size=4),
    st.lists(st.integers(min_value=1, max_value=100), min_size=4, max_size=4),
)
def test_p_value_is_a_probability_and_agrees_with_the_statistic(counts, raw_weights):
    weights = {f"v{i}": float(w) for i, w in enumerate(raw_weights[: len(counts)])}
    observed = {f"v{i}": float(c) for i, c in enumerate(counts)}
    result = sequential_sample_ratio_mismatch(observed, weights)
    if sum(counts) == 0:
        assert result.error
        return
    assert 0.0 <= result.p_value <= 1.0
    assert result.p_value == pytest.approx(min(1.0, math.exp(-result.statistic)), rel=1e-9)
    assert result.mismatch == (result.p_value < 0.001)


def _looks(rng: np.random.Generator, runs: int, looks: int, per_look: int, shares: np.ndarray) -> np.ndarray:
    """Cumulative multinomial counts, shape (runs, looks, variants)."""
    return rng.multinomial(per_look, shares, size=(runs, looks)).cumsum(axis=1)


def _ever_flagged(counts: np.ndarray, shares: np.ndarray, threshold: float) -> np.ndarray:
    """Per run: did any look's running-minimum p-value fall below ``threshold``? (vectorised oracle)."""
    from scipy.special import gammaln

    prior = 100.0 * shares
    n = counts.sum(axis=-1)
    log_ratio = (
        gammaln(100.0)
        - gammaln(100.0 + n)
        + (gammaln(prior + counts) - gammaln(prior) - counts * np.log(shares)).sum(axis=-1)
    )
    return (log_ratio > math.log(1 / threshold)).any(axis=1)


def test_vectorised_simulation_agrees_with_the_function():
    rng = np.random.default_rng(3)
    shares = np.array([0.5, 0.5])
    counts = _looks(rng, 20, 30, 200, np.array([0.47, 0.53]))
    flagged = _ever_flagged(counts, shares, 0.01)
    for run in range(20):
        p = None
        for look in range(30):
            result = sequential_sample_ratio_mismatch(
                {"a": counts[run, look, 0], "b": counts[run, look, 1]},
                {"a": 1, "b": 1},
                0.01,
                previous_p_value=p,
            )
            p = result.p_value
        assert result.mismatch == flagged[run]


@pytest.mark.parametrize("shares", [[0.5, 0.5], [0.95, 0.05], [0.4, 0.3, 0.3]])
def test_a_correct_split_watched_for_500_looks_is_rarely_flagged(shares):
    """Validity under continuous monitoring: false alarms <= threshold however often it looks.

    4,000 simulated experiments, 500 looks each, threshold 0.01: the false-alarm rate must stay within
    the threshold plus three Monte Carlo standard errors. Repeated chi-square looks on the same data are
    shown to exceed it, so the simulation can tell the two apart.
    """
    rng = np.random.default_rng(11)
    threshold, runs = 0.01, 4000
    p = np.array(shares)
    counts = _looks(rng, runs, 500, 40, p)
    sequential_rate = _ever_flagged(counts, p, threshold).mean()
    bound = threshold + 3 * math.sqrt(threshold * (1 - threshold) / runs)
    assert sequential_rate <= bound, sequential_rate
    expected = counts.sum(axis=-1, keepdims=True) * p
    chi2 = ((counts - expected) ** 2 / expected).sum(axis=-1)
    naive_rate = (sps.chi2.sf(chi2, len(shares) - 1) < threshold).any(axis=1).mean()
    assert naive_rate > 2 * threshold, naive_rate


def test_detects_a_real_mismatch_about_as_fast_as_one_chi_square_look():
    """Power: a 48/52 split at 50/50 is caught by about the n a single chi-square look needs for 80% power."""
    rng = np.random.default_rng(5)
    p = np.array([0.5, 0.5])
    counts = _looks(rng, 300, 200, 200, np.array([0.48, 0.52]))  # up to 40,000 units
    caught = _ever_flagged(counts, p, 0.001).mean()
    # A single chi-square look at 0.001 needs ~10,700 units for 80% power at 48/52; by 40,000 the
    # sequential test has caught it in nearly every run.
    assert caught > 0.95, caught
