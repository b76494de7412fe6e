"""decide(): one analysis tick, its verdicts, its state, and the guardrail harm test."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from arbiter.stats import (
    DecisionConfig,
    DecisionState,
    MeanStats,
    ProportionStats,
    Verdict,
    decide,
    guardrail_harm_test,
)
from arbiter.stats.sequential import SequentialState

SEQ = DecisionConfig(metric="Proportion", mde=0.10)


def test_clear_winner_and_clear_loser_in_one_family():
    control = ProportionStats(1500, 10000)
    tick = decide(
        control, {"better": ProportionStats(1750, 10000), "worse": ProportionStats(1250, 10000)}, SEQ
    )
    better, worse = tick.challengers["better"], tick.challengers["worse"]
    assert better.verdict is Verdict.WIN and worse.verdict is Verdict.LOSS
    smaller, larger = sorted([better.p_value, worse.p_value])
    assert min(better.p_value_adjusted, worse.p_value_adjusted) == pytest.approx(2 * smaller)
    assert max(better.p_value_adjusted, worse.p_value_adjusted) == pytest.approx(max(2 * smaller, larger))
    assert better.ci_low > 0 and worse.ci_high < 0
    assert tick.winners == ["better"] and tick.finished


def test_holm_adjusts_across_challengers():
    control = ProportionStats(1500, 10000)
    treatments = {
        "a": ProportionStats(1600, 10000),
        "b": ProportionStats(1520, 10000),
        "c": ProportionStats(1490, 10000),
    }
    tick = decide(
        control,
        treatments,
        DecisionConfig(metric="Proportion", method="FixedHorizon", planned_sample_size=10000),
    )
    p = {k: v.p_value for k, v in tick.challengers.items()}
    ordered = sorted(p, key=p.get)
    assert tick.challengers[ordered[0]].p_value_adjusted == pytest.approx(min(1, 3 * p[ordered[0]]))
    assert tick.challengers[ordered[1]].p_value_adjusted == pytest.approx(
        max(min(1, 3 * p[ordered[0]]), min(1, 2 * p[ordered[1]]))
    )


def test_no_verdict_before_the_minimum_sample_or_duration():
    control, treatment = ProportionStats(5, 50), ProportionStats(30, 50)
    tick = decide(control, {"v2": treatment}, SEQ)
    assert tick.challengers["v2"].verdict is Verdict.INCONCLUSIVE
    assert "at least 100" in tick.challengers["v2"].reason
    big = decide(
        ProportionStats(1500, 10000),
        {"v2": ProportionStats(1800, 10000)},
        DecisionConfig(metric="Proportion", min_duration_seconds=3600),
        elapsed_seconds=60,
    )
    assert (
        big.challengers["v2"].verdict is Verdict.INCONCLUSIVE
        and "minimum duration" in big.challengers["v2"].reason
    )


def test_state_round_trips_through_json_and_keeps_the_running_p_value():
    rng = np.random.default_rng(1)
    control, treatment = ProportionStats(0, 0), ProportionStats(0, 0)
    stored = None
    previous = 1.0
    for _ in range(15):
        control += ProportionStats(float(rng.binomial(400, 0.15)), 400)
        treatment += ProportionStats(float(rng.binomial(400, 0.15)), 400)
        tick = decide(control, {"v2": treatment}, SEQ, stored)
        stored = json.loads(json.dumps(tick.state.to_dict()))
        json.dumps(tick.to_dict(), allow_nan=False)
        p = tick.challengers["v2"].p_value
        assert p <= previous
        previous = p
    assert DecisionState.from_dict(stored).challengers["v2"].sequential.looks == 15


def test_verdicts_are_sticky():
    control = ProportionStats(1500, 10000)
    first = decide(control, {"v2": ProportionStats(1800, 10000)}, SEQ)
    assert first.challengers["v2"].verdict is Verdict.WIN
    later = decide(
        control + ProportionStats(1500, 10000), {"v2": ProportionStats(3300, 20000)}, SEQ, first.state
    )
    assert (
        later.challengers["v2"].verdict is Verdict.WIN
        and "decided at tick 1" in later.challengers["v2"].reason
    )


def test_sequential_futility_when_the_confidence_sequence_excludes_the_mde():
    control, treatment = ProportionStats(15000, 100000), ProportionStats(15010, 100000)
    tick = decide(control, {"v2": treatment}, SEQ)
    assert tick.challengers["v2"].verdict is Verdict.FUTILE
    assert tick.challengers["v2"].ci_high < 0.015


def test_fixed_horizon_waits_for_the_planned_sample_then_decides():
    config = DecisionConfig(metric="Proportion", method="FixedHorizon", planned_sample_size=20000)
    early = decide(ProportionStats(1500, 10000), {"v2": ProportionStats(1800, 10000)}, config)
    assert (
        early.challengers["v2"].verdict is Verdict.INCONCLUSIVE
        and "fixed horizon" in early.challengers["v2"].reason
    )
    done = decide(ProportionStats(3000, 20000), {"v2": ProportionStats(3030, 20000)}, config, early.state)
    assert done.challengers["v2"].verdict is Verdict.FUTILE


def test_group_sequential_takes_looks_at_information_increments():
    config = DecisionConfig(
        metric="Mean",
        direction="Decrease",
        method="GroupSequential",
        planned_sample_size=4000,
        mde=0.02,
        min_information_increment=0.25,
    )
    rng = np.random.default_rng(2)
    control = MeanStats.from_values(rng.normal(100, 10, 1000))
    treatment = MeanStats.from_values(rng.normal(100, 10, 1000))
    first = decide(control, {"v2": treatment}, config)
    assert first.challengers["v2"].looks == 1 and first.challengers["v2"].boundary > 3
    again = decide(control, {"v2": treatment}, config, first.state)
    assert again.challengers["v2"].looks == 1 and "next look" in again.challengers["v2"].reason
    faster = MeanStats.from_values(rng.normal(97, 10, 4000))
    final = decide(
        control + MeanStats.from_values(rng.normal(100, 10, 3000)), {"v2": faster}, config, again.state
    )
    decision = final.challengers["v2"]
    assert decision.looks == 2 and decision.information_fraction == pytest.approx(1.0)
    assert decision.verdict is Verdict.WIN and decision.statistic < -decision.boundary


def test_invalid_input_gives_inconclusive_with_an_error_never_raises():
    bad_config = decide(
        ProportionStats(1, 10), {"v2": ProportionStats(1, 10)}, DecisionConfig(metric="Proportion", alpha=2)
    )
    assert bad_config.error and bad_config.challengers["v2"].verdict is Verdict.INCONCLUSIVE
    wrong_type = decide(MeanStats(10, 1, 1), {"v2": MeanStats(10, 1, 1)}, SEQ)
    assert "ProportionStats" in wrong_type.error
    no_plan = decide(
        ProportionStats(1, 10),
        {"v2": ProportionStats(1, 10)},
        DecisionConfig(metric="Proportion", method="FixedHorizon"),
    )
    assert "planned_sample_size" in no_plan.error
    empty = decide(ProportionStats(0, 0), {"v2": ProportionStats(0, 0)}, SEQ)
    assert (
        empty.error is None
        and empty.challengers["v2"].error
        and empty.challengers["v2"].verdict is Verdict.INCONCLUSIVE
    )
    assert json.dumps(empty.to_dict(), allow_nan=False)


def test_config_from_dict_accepts_strings_in_any_case():
    config = DecisionConfig.from_dict(
        {
            "metric": "mean",
            "direction": "decrease",
            "method": "group-sequential",
            "planned_sample_size": 10,
            "ignored": 1,
        }
    )
    assert config.method.value == "GroupSequential" and config.direction.value == "Decrease"


def test_guardrail_detects_harm_beyond_the_margin_only():
    control = ProportionStats(100, 20000)  # 0.5% errors
    assert guardrail_harm_test(control, ProportionStats(400, 20000), margin=0.005).harm_detected
    within = guardrail_harm_test(control, ProportionStats(150, 20000), margin=0.005)
    assert not within.harm_detected and within.bound < 0.005 and within.limit == pytest.approx(0.01)
    better = guardrail_harm_test(control, ProportionStats(40, 20000), margin=0.0)
    assert not better.harm_detected and better.p_value == 1.0


def test_guardrail_lower_is_worse_and_means():
    rng = np.random.default_rng(4)
    control = MeanStats.from_values(rng.normal(0.90, 0.05, 5000))
    worse = MeanStats.from_values(rng.normal(0.88, 0.05, 5000))
    result = guardrail_harm_test(control, worse, margin=0.005, higher_is_worse=False)
    assert result.harm_detected and result.harm == pytest.approx(control.mean - worse.mean)
    assert result.bound > 0.005
    flipped = guardrail_harm_test(control, worse, margin=0.005, higher_is_worse=True)
    assert not flipped.harm_detected


def test_guardrail_state_keeps_the_running_bound():
    control = ProportionStats(100, 20000)
    first = guardrail_harm_test(control, ProportionStats(400, 20000), margin=0.005)
    state = SequentialState.from_dict(first.state.to_dict())
    second = guardrail_harm_test(control, ProportionStats(100, 20000), margin=0.005, state=state)
    assert second.harm_detected and second.bound == first.bound and second.looks == 2
    assert guardrail_harm_test(control, ProportionStats(1, 2), margin=-1).error
    assert math.isnan(
        guardrail_harm_test(ProportionStats(0, 0), ProportionStats(0, 0), 0.01).p_value_this_look
    )


def test_a_futile_challenger_becomes_a_loss_once_it_is_significantly_worse() -> None:
    """Futility (the confidence sequence rules out the MDE) comes first for a worse challenger; the
    always-valid test may later show significant harm, and Loss is the verdict to act on."""
    from arbiter.stats import DecisionConfig, ProportionStats, Verdict, decide
    from arbiter.stats import MetricType as StatsMetricType

    config = DecisionConfig(metric=StatsMetricType.PROPORTION, mde=0.2)
    state = None
    verdicts = []
    for n in (1000, 2000, 4000, 8000, 16000, 32000):
        tick = decide(ProportionStats(0.15 * n, n), {"v2": ProportionStats(0.13 * n, n)}, config, state)
        state = tick.state
        verdicts.append(tick.challengers["v2"].verdict)
    assert Verdict.FUTILE in verdicts, verdicts
    assert verdicts[-1] is Verdict.LOSS, verdicts
    first_loss = verdicts.index(Verdict.LOSS)
    assert all(v is Verdict.LOSS for v in verdicts[first_loss:]), "Loss is sticky"
    assert Verdict.WIN not in verdicts


# ------------------------------------------------------------------ harm test when every outcome is identical


def test_harm_test_with_no_events_in_either_arm_finds_no_harm() -> None:
    from arbiter.stats import guardrail_harm_test

    result = guardrail_harm_test(ProportionStats(0, 400), ProportionStats(0, 300), margin=0.01, alpha=0.05)
    assert result.error is None and not result.harm_detected
    assert result.harm == 0.0 and result.p_value == 1.0


def test_harm_test_with_every_request_failing_in_the_challenger_finds_harm_once_there_are_enough() -> None:
    from arbiter.stats import guardrail_harm_test

    few = guardrail_harm_test(ProportionStats(0, 2), ProportionStats(2, 2), margin=0.01, alpha=0.05)
    many = guardrail_harm_test(ProportionStats(0, 200), ProportionStats(200, 200), margin=0.01, alpha=0.05)
    assert few.error is None and not few.harm_detected, "two identical outcomes cannot show harm"
    assert many.error is None and many.harm_detected and many.harm == 1.0
