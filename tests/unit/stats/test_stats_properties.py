"""Property tests: symmetry, intervals around estimates, p-values in range, additivity, monotone p-values."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from arbiter.stats import MeanStats, ProportionStats, holm, msprt_test, two_proportion_ztest, welch_ttest

trials = st.integers(min_value=1, max_value=10**6)


@st.composite
def proportions(draw):
    n = draw(trials)
    return ProportionStats(draw(st.integers(min_value=0, max_value=n)), n)


@st.composite
def means(draw):
    values = draw(st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=2, max_size=50))
    return MeanStats.from_values(values)


@settings(max_examples=200, deadline=None)
@given(proportions(), proportions(), st.sampled_from(["two-sided", "larger", "smaller"]))
def test_proportion_test_is_antisymmetric_and_well_formed(a, b, alternative):
    forward = two_proportion_ztest(a, b, 0.05, alternative)
    if not forward.ok:
        return
    mirrored = {"two-sided": "two-sided", "larger": "smaller", "smaller": "larger"}[alternative]
    backward = two_proportion_ztest(b, a, 0.05, mirrored)
    assert math.isclose(forward.absolute_difference, -backward.absolute_difference, abs_tol=1e-15)
    assert math.isclose(forward.statistic, -backward.statistic, rel_tol=1e-9, abs_tol=1e-12)
    assert math.isclose(forward.p_value, backward.p_value, rel_tol=1e-9, abs_tol=1e-15)
    assert 0.0 <= forward.p_value <= 1.0
    assert forward.ci_low <= forward.absolute_difference <= forward.ci_high


@settings(max_examples=150, deadline=None)
@given(means(), means())
def test_welch_is_antisymmetric_and_contains_its_estimate(a, b):
    forward, backward = welch_ttest(a, b), welch_ttest(b, a)
    if not forward.ok:
        return
    assert math.isclose(forward.statistic, -backward.statistic, rel_tol=1e-9, abs_tol=1e-9)
    assert 0.0 <= forward.p_value <= 1.0
    assert forward.ci_low <= forward.absolute_difference <= forward.ci_high
    if math.isfinite(forward.relative_ci_low):
        assert forward.relative_ci_low <= forward.relative_lift <= forward.relative_ci_high


@given(st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 10**6)), min_size=3, max_size=3))
def test_proportion_stats_add_associatively(parts):
    a, b, c = (ProportionStats(min(s, n), n) for s, n in parts)
    assert (a + b) + c == a + (b + c)


@given(st.lists(st.lists(st.integers(-1000, 1000), min_size=1, max_size=20), min_size=3, max_size=3))
def test_mean_stats_add_and_match_the_pooled_data(chunks):
    a, b, c = (MeanStats.from_values(chunk) for chunk in chunks)
    assert (a + b) + c == a + (b + c)
    assert (a + b + c) == MeanStats.from_values([x for chunk in chunks for x in chunk])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 300), st.integers(0, 300)), min_size=2, max_size=25))
def test_sequential_p_value_never_increases(increments):
    control, treatment = ProportionStats(0, 0), ProportionStats(0, 0)
    state, previous = None, 1.0
    for success_c, success_t in increments:
        control += ProportionStats(success_c, 300)
        treatment += ProportionStats(success_t, 300)
        result = msprt_test(control, treatment, 0.01, 0.05, "two-sided", state)
        state = result.state
        assert 0.0 <= result.p_value <= previous
        previous = result.p_value


@given(st.lists(st.floats(0, 1), min_size=1, max_size=10))
def test_holm_never_lowers_a_p_value_and_stays_in_range(p_values):
    for raw, adjusted in zip(p_values, holm(p_values), strict=True):
        assert raw <= adjusted <= 1.0
