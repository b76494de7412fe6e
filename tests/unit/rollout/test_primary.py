"""Row 6 of docs/rollout.md: the primary metric decides, secondary metrics are reported (Holm across both)."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import pytest

from arbiter.api import ModelExperimentSpec, Phase, parse_spec
from arbiter.rollout.primary import PRIMARY_PLAN, judge_primary, judge_secondary, result_dict
from arbiter.rollout.view import TickView
from arbiter.stats import (
    ChallengerDecision,
    DecisionState,
    MeanStats,
    Method,
    MetricType,
    ProportionStats,
    Verdict,
    holm,
    sample_size_mean,
    sample_size_proportion,
    variant_interval,
)

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
VIEW = TickView(T0, Phase.PROGRESSING, started_at=T0 - dt.timedelta(hours=1))
CONVERSION = {
    "name": "conversion",
    "type": "Proportion",
    "successes": "s",
    "trials": "t",
    "minimumDetectableEffect": 0.05,
}
REVENUE = {
    "name": "revenue",
    "type": "Mean",
    "count": "c",
    "sum": "s",
    "sumSquares": "q",
    "minimumDetectableEffect": 0.1,
}
CHALLENGERS = ("v2",)


def make_spec(
    primary: dict[str, Any] | None = CONVERSION,
    method: str = "Sequential",
    secondary: tuple[dict[str, Any], ...] = (),
    challengers: tuple[str, ...] = CHALLENGERS,
) -> ModelExperimentSpec:
    analysis: dict[str, Any] = {"test": {"method": method}, "secondary": list(secondary)}
    if primary is not None:
        analysis["primary"] = primary
    return parse_spec(
        {
            "mode": "ABTest",
            "champion": {"name": "v1", "deployment": "d1", "service": "s1"},
            "challengers": [{"name": c, "deployment": c, "service": c} for c in challengers],
            "routing": {"provider": "Router", "router": {"configMap": "routes"}},
            "analysis": analysis,
        }
        if primary is not None
        else {
            "champion": {"name": "v1", "deployment": "d1", "service": "s1"},
            "challengers": [{"name": c, "deployment": c, "service": c} for c in challengers],
            "routing": {"provider": "Router", "router": {"configMap": "routes"}},
            "steps": [{"weight": 10}],
            "analysis": analysis,
        }
    )


def rates(**values: tuple[float, float]) -> dict[str, ProportionStats]:
    return {v: ProportionStats(successes=s, trials=n) for v, (s, n) in values.items()}


def means(n: float, mean: float, sd: float) -> MeanStats:
    return MeanStats(n=n, sum=n * mean, sum_squares=n * (sd**2 + mean**2))


# ------------------------------------------------------------------ nothing to decide

STATE = DecisionState(ticks=4)
PLANS = {PRIMARY_PLAN: 1234}


@pytest.mark.parametrize(
    ("spec", "counters"),
    [
        pytest.param(make_spec(primary=None), rates(v1=(100, 1000), v2=(150, 1000)), id="no-primary-metric"),
        pytest.param(make_spec(), {}, id="no-data"),
        pytest.param(make_spec(), rates(v2=(150, 1000)), id="no-champion-data"),
        pytest.param(make_spec(), rates(v1=(100, 1000)), id="no-challenger-data"),
    ],
)
def test_nothing_to_decide_keeps_the_state(spec: ModelExperimentSpec, counters: dict[str, Any]) -> None:
    report = judge_primary(spec, VIEW, counters, STATE, PLANS)
    assert report.decision is None and report.analysis is None
    assert report.state is STATE and report.planned_sizes is PLANS


# ------------------------------------------------------------------ the sequential decision


@pytest.mark.parametrize(
    ("counters", "direction", "verdict"),
    [
        pytest.param(rates(v1=(1000, 10000), v2=(1500, 10000)), "Increase", Verdict.WIN, id="clearly-better"),
        pytest.param(rates(v1=(1500, 10000), v2=(1000, 10000)), "Increase", Verdict.LOSS, id="clearly-worse"),
        pytest.param(
            rates(v1=(1500, 10000), v2=(1000, 10000)), "Decrease", Verdict.WIN, id="lower-is-better"
        ),
        pytest.param(
            rates(v1=(10, 100), v2=(11, 100)), "Increase", Verdict.INCONCLUSIVE, id="too-little-data"
        ),
    ],
)
def test_sequential_decision(counters: dict[str, Any], direction: str, verdict: Verdict) -> None:
    spec = make_spec(primary={**CONVERSION, "direction": direction})
    report = judge_primary(spec, VIEW, counters, None, {})
    assert report.decision is not None
    assert report.decision.challengers["v2"].verdict is verdict
    assert report.state == report.decision.state and report.state.ticks == 1
    assert report.planned_sizes == {}, "Sequential plans nothing"
    assert report.analysis is not None
    assert (report.analysis["metric"], report.analysis["method"], report.analysis["error"]) == (
        "conversion",
        "Sequential",
        None,
    )
    (row,) = report.analysis["results"]
    assert row["variant"] == "v2" and row["verdict"] == verdict.value
    assert (row["nControl"], row["nTreatment"]) == (counters["v1"].trials, counters["v2"].trials)


def test_the_state_carries_over_and_verdicts_stick() -> None:
    spec = make_spec()
    won = judge_primary(spec, VIEW, rates(v1=(1000, 10000), v2=(1500, 10000)), None, {})
    assert won.state is not None
    # Later data alone would be inconclusive; the stored state keeps the win.
    later = judge_primary(spec, VIEW, rates(v1=(1000, 10000), v2=(1010, 10000)), won.state, {})
    assert later.state is not None and later.state.ticks == 2
    assert later.decision is not None and later.decision.challengers["v2"].verdict is Verdict.WIN


def test_only_challengers_with_data_are_judged() -> None:
    spec = make_spec(challengers=("v2", "v3"))
    report = judge_primary(spec, VIEW, rates(v1=(1000, 10000), v3=(1500, 10000)), None, {})
    assert report.decision is not None and list(report.decision.challengers) == ["v3"]


# ------------------------------------------------------------------ planned sample sizes


def planned_proportion(successes: float, trials: float, mde: float = 0.05) -> int:
    return int(
        sample_size_proportion(
            successes / trials, mde, relative=True, alpha=0.05, power=0.8
        ).sample_size_per_variant
    )


@pytest.mark.parametrize("method", ["FixedHorizon", "GroupSequential"])
@pytest.mark.parametrize(
    ("champion", "stored", "planned"),
    [
        pytest.param((49, 499), {}, None, id="499-samples-too-few"),
        pytest.param((50, 500), {}, planned_proportion(50, 500), id="500-samples-plans"),
        pytest.param(
            (1000, 10000), {PRIMARY_PLAN: None}, planned_proportion(1000, 10000), id="tried-before-plans-now"
        ),
        pytest.param((1000, 10000), {PRIMARY_PLAN: 1234}, 1234, id="frozen"),
        pytest.param((0, 1000), {}, None, id="a-rate-of-zero-cannot-plan"),
        pytest.param((1000, 1000), {}, None, id="a-rate-of-one-cannot-plan"),
    ],
)
def test_the_plan_is_made_once_from_the_champion(
    method: str, champion: tuple[int, int], stored: dict[str, int | None], planned: int | None
) -> None:
    counters = rates(v1=champion, v2=(champion[0], champion[1]))
    report = judge_primary(make_spec(method=method), VIEW, counters, None, stored)
    assert dict(report.planned_sizes) == {PRIMARY_PLAN: planned}


def test_the_proportion_plan_is_the_textbook_size() -> None:
    """p = 0.1, 5% relative MDE, alpha 0.05, power 0.8: (1.96 + 0.84)^2 (0.09 + 0.094) / 0.005^2 ~ 57,700."""
    assert 55_000 < planned_proportion(1000, 10000) < 60_000


def test_a_mean_metric_plans_from_the_champions_mean_and_variance() -> None:
    champion = means(1000, 10.0, 5.0)
    counters = {"v1": champion, "v2": means(1000, 10.0, 5.0)}
    report = judge_primary(make_spec(primary=REVENUE, method="FixedHorizon"), VIEW, counters, None, {})
    expected = sample_size_mean(10.0, champion.variance**0.5, 1.0, relative=False, alpha=0.05, power=0.8)
    assert report.planned_sizes == {PRIMARY_PLAN: int(expected.sample_size_per_variant)}
    # 2 (1.96 + 0.84)^2 sigma^2 / delta^2 with sigma = 5, delta = 10% of 10.
    assert 380 < int(expected.sample_size_per_variant) < 410


def test_the_frozen_plan_is_the_horizon() -> None:
    counters = rates(v1=(1000, 10000), v2=(1500, 10000))
    report = judge_primary(make_spec(method="FixedHorizon"), VIEW, counters, None, {PRIMARY_PLAN: 50_000})
    assert report.decision is not None
    decision = report.decision.challengers["v2"]
    assert decision.verdict is Verdict.INCONCLUSIVE, "a fixed horizon decides only at its planned size"
    assert "fixed horizon at 50000 per arm" in decision.reason
    due = judge_primary(make_spec(method="FixedHorizon"), VIEW, counters, None, {PRIMARY_PLAN: 5_000})
    assert due.decision is not None and due.decision.challengers["v2"].verdict is Verdict.WIN


# ------------------------------------------------------------------ secondary metrics

LATENCY = {**REVENUE, "name": "latency", "direction": "Decrease"}


def test_secondary_rows_are_holm_adjusted_across_metrics_and_challengers() -> None:
    spec = make_spec(secondary=(CONVERSION, LATENCY), challengers=("v2", "v3"))
    counters = {
        "secondary/conversion": rates(v1=(1000, 10000), v2=(1080, 10000), v3=(1010, 10000)),
        "secondary/latency": {
            "v1": means(5000, 10.0, 5.0),
            "v2": means(5000, 9.8, 5.0),
            "v3": means(5000, 10.0, 5.0),
        },
    }
    report = judge_secondary(spec, counters, {}, {"keep": 1})
    assert report.rows is not None
    assert [(r["metric"], r["variant"]) for r in report.rows] == [
        ("conversion", "v2"),
        ("conversion", "v3"),
        ("latency", "v2"),
        ("latency", "v3"),
    ]
    raw = [r["pValue"] for r in report.rows]
    assert [r["pValueFamilyAdjusted"] for r in report.rows] == holm(raw)
    # The family is all four: the smallest p-value is multiplied by 4.
    assert min(r["pValueFamilyAdjusted"] for r in report.rows) == pytest.approx(min(1.0, 4 * min(raw)))
    assert set(report.states) == {"conversion", "latency"}
    assert all(s.ticks == 1 for s in report.states.values())
    assert dict(report.planned_sizes) == {"keep": 1}, "Sequential plans nothing and keeps the primary's plan"


def test_secondary_metrics_plan_their_own_sample_size() -> None:
    spec = make_spec(
        method="FixedHorizon",
        secondary=(CONVERSION, {**CONVERSION, "name": "clicks", "minimumDetectableEffect": 0.2}),
    )
    counters = {
        "secondary/conversion": rates(v1=(1000, 10000), v2=(1000, 10000)),
        "secondary/clicks": rates(v1=(200, 400), v2=(200, 400)),
    }
    report = judge_secondary(spec, counters, {}, {PRIMARY_PLAN: 7})
    assert dict(report.planned_sizes) == {
        PRIMARY_PLAN: 7,
        f"{PRIMARY_PLAN}/conversion": planned_proportion(1000, 10000),
        f"{PRIMARY_PLAN}/clicks": None,  # 400 champion samples: too few to plan yet
    }


@pytest.mark.parametrize(
    ("secondary", "counters", "rows"),
    [
        pytest.param((), {}, None, id="none-configured"),
        pytest.param((CONVERSION,), {}, [], id="configured-without-data"),
        pytest.param((CONVERSION,), {"secondary/conversion": rates(v2=(10, 100))}, [], id="no-champion-data"),
    ],
)
def test_secondary_without_data(
    secondary: tuple[dict[str, Any], ...], counters: dict[str, Any], rows: Any
) -> None:
    previous = {"conversion": DecisionState(ticks=3)}
    report = judge_secondary(make_spec(secondary=secondary), counters, previous, {})
    assert report.rows == rows
    assert dict(report.states) == previous, "a metric without data keeps its state"


def test_secondary_state_carries_over() -> None:
    spec = make_spec(secondary=(CONVERSION,))
    counters = {"secondary/conversion": rates(v1=(1000, 10000), v2=(1010, 10000))}
    report = judge_secondary(spec, counters, {"conversion": DecisionState(ticks=3)}, {})
    assert report.states["conversion"].ticks == 4


# ------------------------------------------------------------------ the status form of a result


def decision(**numbers: float) -> ChallengerDecision:
    nan = math.nan
    fields: dict[str, Any] = {
        "n_control": 100.0,
        "n_treatment": 100.0,
        "control_value": nan,
        "treatment_value": nan,
        "absolute_difference": nan,
        "relative_lift": nan,
        "ci_low": nan,
        "ci_high": nan,
        "relative_ci_low": nan,
        "relative_ci_high": nan,
        "statistic": nan,
        "p_value": nan,
    }
    fields.update(numbers)
    return ChallengerDecision(
        variant="v2",
        verdict=Verdict.INCONCLUSIVE,
        reason="keep collecting",
        method=Method.SEQUENTIAL,
        p_value_adjusted=nan,
        looks=0,
        metric=MetricType.PROPORTION,
        alpha=0.05,
        **fields,
    )


@pytest.mark.parametrize(
    ("numbers", "present"),
    [
        pytest.param({}, set(), id="no-numbers"),
        pytest.param({"p_value": 0.2, "ci_low": -0.1, "ci_high": math.inf}, {"pValue", "ciLow"}, id="some"),
        pytest.param(
            {"relative_lift": 0.0, "absolute_difference": 0.0},
            {"relativeLift", "absoluteDifference"},
            id="zero",
        ),
    ],
)
def test_result_dict_leaves_out_missing_numbers(numbers: dict[str, float], present: set[str]) -> None:
    row = result_dict(decision(**numbers))
    always = {"variant", "verdict", "reason", "nControl", "nTreatment", "looks", "method"}
    assert set(row) == always | present
    assert (row["variant"], row["verdict"], row["method"]) == ("v2", "Inconclusive", "Sequential")
    assert "relativeCiLow" not in row and "statistic" not in row, "not shown in status"


# ------------------------------------------------------------------ each variant's own interval


def test_every_variant_gets_its_own_value_and_interval_at_the_tests_level() -> None:
    spec = make_spec(challengers=("v2", "v3"))
    counters = rates(v1=(100, 1000), v2=(150, 1000), v3=(0, 1))
    report = judge_primary(spec, VIEW, counters, None, {})
    assert report.analysis is not None
    rows = {row["variant"]: row for row in report.analysis["variants"]}
    assert list(rows) == ["v1", "v2", "v3"], "the champion first, then the challengers"
    alpha = spec.analysis.test.alpha
    for variant in ("v1", "v2"):
        stats = counters[variant]
        assert rows[variant]["n"] == stats.trials and rows[variant]["value"] == stats.mean
        assert (rows[variant]["ciLow"], rows[variant]["ciHigh"]) == variant_interval(stats, alpha)
        assert rows[variant]["ciLow"] < stats.mean < rows[variant]["ciHigh"]
    assert rows["v3"]["value"] == 0.0 and rows["v3"]["ciLow"] == 0.0 and rows["v3"]["ciHigh"] > 0.5


def test_a_mean_variant_with_one_sample_has_no_interval() -> None:
    spec = make_spec(primary=REVENUE)
    counters = {"v1": means(500, 10.0, 2.0), "v2": MeanStats(1, 12.0, 144.0)}
    report = judge_primary(spec, VIEW, counters, None, {})
    assert report.analysis is not None
    rows = {row["variant"]: row for row in report.analysis["variants"]}
    assert "ciLow" in rows["v1"] and rows["v1"]["ciLow"] < 10.0 < rows["v1"]["ciHigh"]
    assert rows["v2"] == {"variant": "v2", "n": 1, "value": 12.0}
