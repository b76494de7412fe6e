"""The forecast of the decision (arbiter.stats.forecast) against independent oracles and a simulation.

Fixed horizon: the conditional power is the textbook B-value formula (scipy's normal) and, from the very
start, statsmodels' power function; the time is the time to the planned sample. Sequential designs:
experiments are simulated look by look and judged by ``decide()`` itself (the engine's referee), and the
forecast made at the first look must match what happened: its median time to a decision, and its
P(win) under the true effect against the share of runs that won.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.power import NormalIndPower

from arbiter.stats import (
    ChallengerState,
    DecisionConfig,
    MeanStats,
    Method,
    MetricType,
    ProportionStats,
    Verdict,
    decide,
)
from arbiter.stats.forecast import forecast_decision


def _mean_stats(mean: float, sd: float, n: int) -> MeanStats:
    """Sufficient statistics with exactly this mean and (ddof 1) standard deviation."""
    total = mean * n
    return MeanStats(n=n, sum=total, sum_squares=sd**2 * (n - 1) + total * mean)


def test_fixed_horizon_conditional_power_is_the_b_value_formula() -> None:
    control, treatment = _mean_stats(10.0, 2.0, 400), _mean_stats(10.15, 2.0, 400)
    planned, rate = 4000, 5.0
    config = DecisionConfig(
        metric=MetricType.MEAN,
        mde=0.2,
        mde_relative=False,
        method=Method.FIXED_HORIZON,
        planned_sample_size=planned,
    )
    forecast = forecast_decision(control, treatment, config, rate_control=rate, rate_treatment=rate)
    assert forecast.error is None
    # Oracle: S = d / V is a Brownian motion in I = 1 / V; Win iff Z_N >= z_(1 - alpha/2).
    variance_now, variance_end = 2 * 4.0 / 400, 2 * 4.0 / planned
    info_now, info_end = 1 / variance_now, 1 / variance_end
    score, effect = 0.15 / variance_now, 0.15
    z = sps.norm.ppf(1 - 0.05 / 2)
    oracle = sps.norm.sf(
        (z * math.sqrt(info_end) - score - effect * (info_end - info_now)) / math.sqrt(info_end - info_now)
    )
    assert forecast.conditional_power == pytest.approx(oracle, abs=2e-3)
    assert forecast.seconds_to_decision == pytest.approx((planned - 400) / rate)
    assert forecast.samples_treatment == pytest.approx(planned - 400)


@pytest.mark.parametrize("effect_sd", [0.05, 0.1, 0.2])
def test_fixed_horizon_power_from_the_start_matches_statsmodels(effect_sd: float) -> None:
    """With data exactly at the assumed effect and 0.1% of the information, P(win) is the design's power."""
    sd, n_now, planned = 1.0, 20, 20_000
    effect = effect_sd * sd
    control, treatment = _mean_stats(0.0, sd, n_now), _mean_stats(effect, sd, n_now)
    config = DecisionConfig(
        metric=MetricType.MEAN,
        mde=effect,
        mde_relative=False,
        method=Method.FIXED_HORIZON,
        planned_sample_size=planned,
    )
    forecast = forecast_decision(control, treatment, config, rate_control=1.0, rate_treatment=1.0)
    oracle = NormalIndPower().power(
        effect_size=effect_sd, nobs1=planned, alpha=0.05, ratio=1.0, alternative="larger"
    )
    # statsmodels' one-sided power at alpha/2 is the two-sided Win probability (the Loss side never wins).
    oracle_two_sided = NormalIndPower().power(
        effect_size=effect_sd, nobs1=planned, alpha=0.025, ratio=1.0, alternative="larger"
    )
    assert forecast.conditional_power is not None
    assert forecast.conditional_power == pytest.approx(oracle_two_sided, abs=0.01)
    assert forecast.conditional_power < oracle or oracle_two_sided == pytest.approx(1.0)


def test_bad_input_is_an_error_not_an_exception() -> None:
    config = DecisionConfig(metric=MetricType.PROPORTION, mde=0.1)
    stats = ProportionStats(10, 100)
    no_rate = forecast_decision(stats, stats, config, rate_control=0.0, rate_treatment=1.0)
    assert (
        no_rate.error == "no traffic rate observed for both arms yet" and no_rate.seconds_to_decision is None
    )
    empty = forecast_decision(ProportionStats(0, 0), stats, config, rate_control=1.0, rate_treatment=1.0)
    assert empty.error is not None
    unplanned = DecisionConfig(metric=MetricType.PROPORTION, mde=0.1, method=Method.GROUP_SEQUENTIAL)
    assert forecast_decision(stats, stats, unplanned, rate_control=1.0, rate_treatment=1.0).error
    won = forecast_decision(
        stats, stats, config, ChallengerState(verdict=Verdict.WIN), rate_control=1.0, rate_treatment=1.0
    )
    assert (won.seconds_to_decision, won.conditional_power) == (0.0, 1.0)


def test_slower_traffic_to_the_challenger_means_a_later_decision() -> None:
    config = DecisionConfig(metric=MetricType.PROPORTION, mde=0.2)
    control, treatment = ProportionStats(100, 1000), ProportionStats(110, 1000)
    even = forecast_decision(control, treatment, config, rate_control=10.0, rate_treatment=10.0)
    canary = forecast_decision(control, treatment, config, rate_control=16.0, rate_treatment=4.0)
    assert even.seconds_to_decision is not None and canary.seconds_to_decision is not None
    # the 4/s arm limits the information: asymptotically 1/(1/16 + 1/4) = 3.2 vs 5 units of information a second
    assert 1.3 * even.seconds_to_decision < canary.seconds_to_decision < 1.6 * even.seconds_to_decision


def _simulate(config: DecisionConfig, truth: float, runs: int, seed: int) -> dict[str, float]:
    """Forecast at the first look, then run each experiment to its verdict with ``decide()``."""
    rng = np.random.default_rng(seed)
    base, start, per_look = 0.10, 1000, 200  # 200 units per arm per second, one look a second
    forecasts, powers, actual, won = [], [], [], []
    for _ in range(runs):
        c_s, t_s, n = rng.binomial(start, base), rng.binomial(start, base + truth), start
        state = decide(ProportionStats(c_s, n), {"v2": ProportionStats(t_s, n)}, config).state
        forecast = forecast_decision(
            ProportionStats(c_s, n),
            ProportionStats(t_s, n),
            config,
            state.challengers["v2"],
            rate_control=per_look,
            rate_treatment=per_look,
            assumed_effect=truth,
            look_interval_seconds=1.0,
        )
        assert forecast.error is None, forecast.error
        forecasts.append(forecast.seconds_to_decision)
        powers.append(forecast.conditional_power)
        for look in range(1, 2000):
            c_s, t_s, n = (
                c_s + rng.binomial(per_look, base),
                t_s + rng.binomial(per_look, base + truth),
                n + per_look,
            )
            tick = decide(ProportionStats(c_s, n), {"v2": ProportionStats(t_s, n)}, config, state)
            state, verdict = tick.state, tick.challengers["v2"].verdict
            if verdict is not Verdict.INCONCLUSIVE:
                actual.append(float(look))
                won.append(verdict is Verdict.WIN)
                break
        else:
            raise AssertionError("an experiment did not decide within 2000 looks")
    return {
        "forecast_median": float(np.median(forecasts)),
        "actual_median": float(np.median(actual)),
        "predicted_win": float(np.mean(powers)),
        "won": float(np.mean(won)),
    }


@pytest.mark.parametrize(
    ("method", "planned"), [(Method.SEQUENTIAL, None), (Method.GROUP_SEQUENTIAL, 3842)], ids=["mSPRT", "OBF"]
)
def test_forecast_matches_simulated_experiments_at_the_mde(method: Method, planned: int | None) -> None:
    """Truth = the MDE (10% -> 12%): the median decision time and P(win) forecast at the first look hold.

    Tolerances: 150 runs give a Monte Carlo SE of ~0.03 on the win share and ~8% on the median; the
    forecast places 60 looks (mSPRT) and corrects them to the simulation's one look a second.
    """
    config = DecisionConfig(
        metric=MetricType.PROPORTION, mde=0.2, baseline=0.10, method=method, planned_sample_size=planned
    )
    result = _simulate(config, truth=0.02, runs=150, seed=7)
    ratio = result["actual_median"] / result["forecast_median"]
    assert 0.8 <= ratio <= 1.2, result
    assert abs(result["predicted_win"] - result["won"]) <= 0.08, result


def test_odd_inputs_give_a_forecast_or_an_error_never_an_exception() -> None:
    rng = np.random.default_rng(3)
    for _ in range(60):
        method = [Method.SEQUENTIAL, Method.GROUP_SEQUENTIAL, Method.FIXED_HORIZON][int(rng.integers(3))]
        n_c, n_t = (int(x) for x in rng.integers(2, 50_000, 2))
        config = DecisionConfig(
            metric=MetricType.PROPORTION,
            mde=float(rng.choice([1e-6, 0.01, 0.5, 3.0])),
            method=method,
            planned_sample_size=int(rng.integers(1, 60_000)),
            sides=int(rng.choice([1, 2])),
        )
        forecast = forecast_decision(
            ProportionStats(int(rng.integers(1, n_c)), n_c),
            ProportionStats(int(rng.integers(1, n_t)), n_t),
            config,
            rate_control=float(rng.choice([1e-9, 0.01, 5.0, 1e6])),
            rate_treatment=float(rng.choice([1e-9, 0.01, 5.0, 1e6])),
            look_interval_seconds=float(rng.choice([0.001, 30.0, 1e5])),
        )
        if forecast.error is None:
            assert forecast.seconds_to_decision is not None and forecast.seconds_to_decision >= 0
            assert forecast.conditional_power is not None and 0.0 <= forecast.conditional_power <= 1.0
