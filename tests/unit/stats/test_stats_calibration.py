"""`calibrate`: on true A/A data the replay's false-decision rate is the configured alpha.

The replay decides with `decide` and `guardrail_harm_test` exactly as the engine does; these checks
fail if the level, the sides, the planning or the tick-by-tick state were wrong.
"""

from __future__ import annotations

import numpy as np

from arbiter.stats import (
    CellHistory,
    DecisionConfig,
    GuardrailRule,
    MetricType,
    ProportionStats,
    Verdict,
    calibrate,
    decide,
)
from arbiter.stats.calibration import replay_once

TICKS = 20


def independent_requests(rows: int = 40_000, rate: float = 0.15, seed: int = 0) -> CellHistory:
    rng = np.random.default_rng(seed)
    outcome = (rng.random(rows) < rate).astype(float)
    errors = (rng.random(rows) < 0.02).astype(float)
    tick = np.sort(rng.integers(0, TICKS, rows))
    return CellHistory(
        unit=np.arange(rows),
        tick=tick,
        n=np.ones(rows),
        values={"": (outcome, outcome), "errors": (errors, errors)},
        units=rows,
        ticks=TICKS,
    )


def clustered_users(users: int = 4000, seed: int = 0) -> CellHistory:
    """Users whose rates differ a lot, with many requests each, spread over the ticks."""
    rng = np.random.default_rng(seed)
    rates = rng.beta(0.5, 2.8, users)  # mean about 0.15
    requests = rng.geometric(0.08, users)
    unit = np.repeat(np.arange(users), requests)
    outcome = (rng.random(unit.size) < rates[unit]).astype(float)
    tick = rng.integers(0, TICKS, unit.size)
    return CellHistory(
        unit=unit,
        tick=tick,
        n=np.ones(unit.size),
        values={"": (outcome, outcome)},
        units=users,
        ticks=TICKS,
    )


def fixed(alpha: float) -> DecisionConfig:
    return DecisionConfig(metric="Proportion", mde=0.10, alpha=alpha, method="FixedHorizon")


def test_fixed_horizon_on_a_a_data_decides_falsely_at_the_configured_alpha():
    history = independent_requests()
    for alpha, low, high in ((0.05, 0.03, 0.075), (0.20, 0.16, 0.245)):
        result = calibrate(history, fixed(alpha), replicates=800, seed=1)
        assert result.undecided == 0  # the planned size (about 9,300 per arm) is inside the history
        false_decisions = (result.promoted + result.rolled_back_by_loss) / result.replicates
        # Monte Carlo SE at 800 replicates: 0.8 points at 5%, 1.4 points at 20%.
        assert low <= false_decisions <= high, (alpha, false_decisions)
        assert result.rolled_back_by_loss / result.replicates <= alpha / 2 + 0.025


def test_the_interval_covers_the_rate_and_a_futile_challenger_concludes():
    result = calibrate(history := independent_requests(seed=2), fixed(0.05), replicates=400, seed=3)
    assert result.false_rollback_ci_low <= result.false_rollback_rate <= result.false_rollback_ci_high
    assert result.rolled_back == result.rolled_back_by_guardrail + result.rolled_back_by_loss
    # RolledBack means harm was shown: a futile challenger concludes whatever the sign of its estimate,
    # so on A/A data rollbacks stay near the Loss side of alpha while most runs conclude.
    assert result.harm_only_rate == result.false_rollback_rate < 0.08
    assert result.concluded / result.replicates > 0.35
    assert history.ticks == result.ticks


def test_sticky_users_make_the_request_level_test_anti_conservative():
    """The operator counts requests; users assigned stickily make its A/A false decisions far above alpha."""
    history = clustered_users()
    as_requests = CellHistory(
        unit=np.arange(history.unit.size),
        tick=history.tick,
        n=history.n,
        values=history.values,
        units=history.unit.size,
        ticks=TICKS,
    )
    by_user = calibrate(history, fixed(0.05), replicates=300, seed=4)
    by_request = calibrate(as_requests, fixed(0.05), replicates=300, seed=4)
    rate_user = (by_user.promoted + by_user.rolled_back_by_loss) / 300
    rate_request = (by_request.promoted + by_request.rolled_back_by_loss) / 300
    assert rate_request <= 0.085
    assert rate_user >= 0.15


def test_an_always_valid_guardrail_rarely_trips_on_a_a_data():
    rule = GuardrailRule("errors", MetricType.PROPORTION, max_increase=0.0, failure_limit=1)
    config = DecisionConfig(metric="Proportion", mde=0.10)
    result = calibrate(independent_requests(seed=5), config, [rule], replicates=300, seed=6)
    assert result.rolled_back_by_guardrail / 300 <= 0.05 + 0.03
    # Real harm is caught: errors twice as frequent for the units the replay puts on the challenger.
    history = independent_requests(rows=20_000, seed=7)
    arm = (np.arange(history.units) % 2).astype(np.int64)
    errors = (np.random.default_rng(9).random(history.units) < np.where(arm == 1, 0.04, 0.02)).astype(float)
    harmful = CellHistory(
        history.unit,
        history.tick,
        history.n,
        {**history.values, "errors": (errors, errors)},
        history.units,
        TICKS,
    )
    outcome = replay_once(harmful, arm, config, [rule])
    assert outcome["outcome"] == "RolledBack" and outcome["cause"] == "guardrail errors"


def test_one_replay_matches_decide_called_tick_by_tick():
    history = independent_requests(rows=8000, seed=7)
    arm = (np.random.default_rng(8).random(history.units) < 0.5).astype(np.int64)
    config = DecisionConfig(metric="Proportion", mde=0.10)
    outcome = replay_once(history, arm, config, [])
    state = None
    expected = {"outcome": "Undecided", "cause": "history ended", "tick": TICKS}
    outcome_values = history.values[""][0]
    for tick in range(TICKS):
        upto = history.tick <= tick
        control = ProportionStats(
            float(outcome_values[upto & (arm == 0)].sum()), float((upto & (arm == 0)).sum())
        )
        treatment = ProportionStats(
            float(outcome_values[upto & (arm == 1)].sum()), float((upto & (arm == 1)).sum())
        )
        decision = decide(control, {"challenger": treatment}, config, state=state)
        state = decision.state
        verdict = decision.challengers["challenger"].verdict
        if verdict is not Verdict.INCONCLUSIVE:
            expected = {
                Verdict.WIN: {"outcome": "Promoted", "cause": "Win"},
                Verdict.LOSS: {"outcome": "RolledBack", "cause": "Loss"},
                Verdict.FUTILE: {"outcome": "Concluded", "cause": "Futile"},
            }[verdict] | {"tick": tick + 1}
            break
    assert outcome == expected


def test_bad_configuration_is_an_error_not_a_crash():
    history = independent_requests(rows=1000)
    assert calibrate(history, fixed(0.05), treatment_share=1.5).error
    assert calibrate(history, DecisionConfig(metric="Proportion", alpha=2.0)).error
    assert calibrate(history, fixed(0.05), [GuardrailRule("nope", MetricType.PROPORTION, 0.0)]).error


def test_the_default_sequential_test_stays_within_alpha_over_every_tick():
    """The mSPRT is always valid: looking at all 20 ticks keeps false Win/Loss decisions at most alpha."""
    config = DecisionConfig(metric="Proportion", mde=0.10, alpha=0.05)
    result = calibrate(independent_requests(seed=11), config, replicates=300, seed=12)
    assert (result.promoted + result.rolled_back_by_loss) / result.replicates <= 0.05 + 0.03
