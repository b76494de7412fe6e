"""Row 4 of docs/rollout.md: every guardrail on every challenger, asked of ``judge_guardrails`` directly."""

from __future__ import annotations

from typing import Any

import pytest

from arbiter.api import ModelExperimentSpec, parse_spec
from arbiter.rollout.actions import Rollback
from arbiter.rollout.guardrails import GuardrailCheck, judge_guardrails
from arbiter.rollout.observations import Observations, Reading, SufficientStats
from arbiter.stats import ProportionStats, SequentialState, guardrail_harm_test

V3 = {"name": "v3", "deployment": "d3", "service": "s3"}


def make_spec(*guardrails: dict[str, Any], three: bool = False) -> ModelExperimentSpec:
    challengers = [{"name": "v2", "deployment": "d2", "service": "s2"}, *([V3] if three else [])]
    return parse_spec(
        {
            "champion": {"name": "v1", "deployment": "d1", "service": "s1"},
            "challengers": challengers,
            "routing": {"provider": "Router", "router": {"configMap": "routes"}},
            "steps": [{"weight": 10}],
            "analysis": {"guardrails": list(guardrails)},
        }
    )


def read(name: str, **values: float | str | None) -> Observations:
    """One guardrail's readings: a number, None (no data) or a string (the query failed)."""
    readings = {v: Reading(error=x) if isinstance(x, str) else Reading(value=x) for v, x in values.items()}
    return Observations(guardrails={name: readings})


def previous(name: str, variant: str, breaches: int) -> tuple[dict[str, Any], ...]:
    return ({"name": name, "variant": variant, "breaches": breaches, "breached": breaches > 0},)


MAX = {"name": "latency", "query": "q", "max": 0.2, "failureLimit": 3}
MIN = {"name": "accuracy", "query": "q", "min": 0.9, "failureLimit": 3}
UP = {"name": "errors", "query": "q", "maxIncreaseOverChampion": 0.05, "failureLimit": 3}
DOWN = {"name": "accuracy", "query": "q", "maxDecreaseFromChampion": 0.05, "failureLimit": 3}
BOTH = {"name": "latency", "query": "q", "min": 0.05, "max": 0.2, "failureLimit": 3}

PLAIN_CASES = [
    # (guardrail, readings, breaches before, breached, breaches after, reason)
    pytest.param(
        MAX, {"v2": 0.3}, 0, True, 1, "latency of v2 = 0.3 > max 0.2 (1/3 consecutive)", id="max-breached"
    ),
    pytest.param(
        MAX, {"v2": 0.3}, 1, True, 2, "latency of v2 = 0.3 > max 0.2 (2/3 consecutive)", id="max-counts-up"
    ),
    pytest.param(MAX, {"v2": 0.2}, 0, False, 0, "latency of v2 healthy", id="max-at-the-bound-is-healthy"),
    pytest.param(MAX, {"v2": 0.1}, 2, False, 0, "latency of v2 healthy", id="healthy-resets-the-count"),
    pytest.param(
        MIN, {"v2": 0.8}, 0, True, 1, "accuracy of v2 = 0.8 < min 0.9 (1/3 consecutive)", id="min-breached"
    ),
    pytest.param(MIN, {"v2": 0.95}, 1, False, 0, "accuracy of v2 healthy", id="min-healthy"),
    pytest.param(
        BOTH, {"v2": 0.01}, 0, True, 1, "latency of v2 = 0.01 < min 0.05 (1/3 consecutive)", id="min-of-both"
    ),
    pytest.param(
        UP,
        {"v1": 0.1, "v2": 0.25},
        0,
        True,
        1,
        "errors of v2 exceeds the champion's by 0.15 (allowed 0.05) (1/3 consecutive)",
        id="increase-breached",
    ),
    pytest.param(UP, {"v1": 0.1, "v2": 0.12}, 1, False, 0, "errors of v2 healthy", id="increase-within"),
    pytest.param(
        UP, {"v1": 0.3, "v2": 0.1}, 0, False, 0, "errors of v2 healthy", id="a-decrease-is-fine-for-increase"
    ),
    pytest.param(
        DOWN,
        {"v1": 0.95, "v2": 0.75},
        0,
        True,
        1,
        "accuracy of v2 is below the champion's by 0.2 (allowed 0.05) (1/3 consecutive)",
        id="decrease-breached",
    ),
    pytest.param(DOWN, {"v1": 0.95, "v2": 0.93}, 0, False, 0, "accuracy of v2 healthy", id="decrease-within"),
    pytest.param(MAX, {"v2": None}, 2, False, 2, "latency of v2: no data yet", id="no-data-keeps-the-count"),
    pytest.param(MAX, {}, 1, False, 1, "latency of v2: no data yet", id="no-reading-keeps-the-count"),
    pytest.param(
        MAX, {"v2": "query failed"}, 2, False, 2, "latency of v2: no data yet", id="an-error-keeps-the-count"
    ),
]


@pytest.mark.parametrize(("guardrail", "values", "before", "breached", "after", "reason"), PLAIN_CASES)
def test_plain_guardrails(
    guardrail: dict[str, Any], values: dict[str, Any], before: int, breached: bool, after: int, reason: str
) -> None:
    name = guardrail["name"]
    report = judge_guardrails(
        make_spec(guardrail), read(name, **values), {}, previous(name, "v2", before), None, True
    )
    (check,) = report.checks
    assert (check.name, check.variant) == (name, "v2")
    assert (check.breached, check.breaches, check.reason) == (breached, after, reason)
    assert report.action is None, "below the failure limit nothing trips"
    assert report.tests is None, "no rate guardrail, no harm test state"
    if breached:
        assert report.healthy is False
        assert (report.condition.ok, report.condition.reason) == (False, "Breaching")
        assert report.condition.message == f"{name}/v2"


@pytest.mark.parametrize(
    ("guardrail", "value", "before", "trips"),
    [
        pytest.param({**MAX, "failureLimit": 2}, 0.3, 0, False, id="first-of-two"),
        pytest.param({**MAX, "failureLimit": 2}, 0.3, 1, True, id="second-of-two"),
        pytest.param({**MAX, "failureLimit": 1}, 0.3, 0, True, id="limit-one"),
        pytest.param(
            {**MAX, "failureLimit": 5, "critical": True}, 0.3, 0, True, id="critical-ignores-the-limit"
        ),
        pytest.param({**MAX, "critical": True}, 0.1, 0, False, id="critical-but-healthy"),
        pytest.param({**MAX, "critical": True}, None, 4, False, id="critical-without-data"),
    ],
)
def test_failure_limit_and_critical(
    guardrail: dict[str, Any], value: float | None, before: int, trips: bool
) -> None:
    report = judge_guardrails(
        make_spec(guardrail),
        read("latency", v1=0.1, v2=value),
        {},
        previous("latency", "v2", before),
        None,
        True,
    )
    assert isinstance(report.action, Rollback) is trips
    if trips:
        assert report.action is not None
        assert report.action.reason == f"guardrail breached: {report.checks[0].reason}"
        assert (report.condition.ok, report.condition.reason) == (False, "GuardrailTripped")
        assert report.condition.message == report.action.reason
        assert not report.healthy


def test_every_challenger_is_judged_and_the_counts_are_kept_apart() -> None:
    spec = make_spec({**MAX, "failureLimit": 2}, three=True)
    before = (
        {"name": "latency", "variant": "v2", "breaches": 1},
        {"name": "latency", "variant": "v3", "breaches": 0},
    )
    report = judge_guardrails(spec, read("latency", v1=0.1, v2=0.1, v3=0.3), {}, before, None, True)
    assert [(c.variant, c.breaches, c.breached) for c in report.checks] == [("v2", 0, False), ("v3", 1, True)]
    assert report.action is None and report.condition.message == "latency/v3"


@pytest.mark.parametrize(
    ("values", "data_ok", "ok", "reason", "message", "healthy"),
    [
        pytest.param(
            {"v1": 0.1, "v2": 0.1}, True, True, "Healthy", "1 guardrail check(s) healthy", True, id="healthy"
        ),
        pytest.param({"v1": 0.1}, True, None, "NoData", "no data yet for: latency/v2", False, id="no-data"),
        pytest.param(
            {"v1": 0.1, "v2": None},
            False,
            None,
            "NoData",
            "no data yet for: latency/v2",
            False,
            id="no-data-and-failing-queries",
        ),
    ],
)
def test_no_data_is_not_healthy(
    values: dict[str, Any], data_ok: bool, ok: bool | None, reason: str, message: str, healthy: bool
) -> None:
    report = judge_guardrails(make_spec(MAX), read("latency", **values), {}, (), None, data_ok)
    assert (report.condition.type, report.condition.ok, report.condition.reason) == (
        "GuardrailsHealthy",
        ok,
        reason,
    )
    assert report.condition.message == message
    assert report.healthy is healthy


def test_a_failing_query_elsewhere_makes_the_condition_unknown_but_keeps_the_checks() -> None:
    """Every check has data and none breaches, but some query of the tick failed: the condition cannot say
    Healthy, while the checks themselves are judged as usual."""
    report = judge_guardrails(make_spec(MAX), read("latency", v1=0.1, v2=0.1), {}, (), None, data_ok=False)
    assert (report.condition.ok, report.condition.reason) == (None, "NoData")
    assert report.checks[0].reason == "latency of v2 healthy"


def test_no_guardrails_is_healthy() -> None:
    report = judge_guardrails(make_spec(), Observations(), {}, (), None, True)
    assert report.checks == () and report.healthy and report.condition.reason == "Healthy"


# ------------------------------------------------------------------ the statistical (rate) guardrail

RATE = {
    "name": "errors",
    "maxIncreaseOverChampion": 0.005,
    "rate": {"type": "Proportion", "successes": "e", "trials": "n"},
}


def rates(v1: tuple[int, int], v2: tuple[int, int]) -> dict[str, dict[str, SufficientStats]]:
    return {
        "guardrail/errors": {
            v: ProportionStats(successes=s, trials=n) for v, (s, n) in (("v1", v1), ("v2", v2))
        }
    }


@pytest.mark.parametrize(
    ("v1", "v2", "harm"),
    [
        pytest.param((1000, 100_000), (3000, 100_000), True, id="harm-far-beyond-the-margin"),
        pytest.param((1000, 100_000), (1040, 100_000), False, id="noise-within-the-margin"),
        pytest.param((1000, 100_000), (500, 100_000), False, id="better-than-the-champion"),
    ],
)
def test_rate_guardrail_runs_the_harm_test(v1: tuple[int, int], v2: tuple[int, int], harm: bool) -> None:
    counters = rates(v1, v2)
    report = judge_guardrails(make_spec(RATE), Observations(), counters, (), None, True)
    (check,) = report.checks
    expected = guardrail_harm_test(
        counters["guardrail/errors"]["v1"], counters["guardrail/errors"]["v2"], margin=0.005, alpha=0.05
    )
    assert check.breached is harm is expected.harm_detected
    assert check.p_value == expected.p_value
    assert check.value == pytest.approx(v2[0] / v2[1]) and check.champion_value == pytest.approx(
        v1[0] / v1[1]
    )
    assert check.estimate == pytest.approx(v2[0] / v2[1] - v1[0] / v1[1])
    assert report.tests is not None and set(report.tests) == {"errors/v2/increase"}
    assert report.tests["errors/v2/increase"]["looks"] == 1
    if harm:
        assert check.reason.startswith(
            "errors of v2: harm beyond the margin 0.005 detected (always-valid p = "
        )
        assert isinstance(report.action, Rollback), "failureLimit 1 by default"
    else:
        assert check.reason == "errors of v2 healthy" and report.healthy


def test_rate_guardrail_state_carries_the_running_minimum() -> None:
    spec = make_spec(RATE)
    harmful = judge_guardrails(spec, Observations(), rates((1000, 100_000), (3000, 100_000)), (), None, True)
    assert harmful.tests is not None
    first_p = harmful.tests["errors/v2/increase"]["min_p_value"]
    # The next look sees no harm at all, but the always-valid p-value is a running minimum.
    calm = judge_guardrails(
        spec, Observations(), rates((2000, 200_000), (2000, 200_000)), (), harmful.tests, True
    )
    assert calm.tests is not None
    state = SequentialState.from_dict(dict(calm.tests["errors/v2/increase"]))
    assert state.looks == 2 and state.min_p_value == first_p
    assert calm.checks[0].p_value == first_p


@pytest.mark.parametrize(
    ("guardrail", "key"),
    [
        pytest.param(RATE, "errors/v2/increase", id="increase"),
        pytest.param(
            {**RATE, "maxIncreaseOverChampion": None, "maxDecreaseFromChampion": 0.01},
            "errors/v2/decrease",
            id="decrease",
        ),
    ],
)
def test_rate_guardrail_keys_its_state_by_direction(guardrail: dict[str, Any], key: str) -> None:
    spec = make_spec({k: v for k, v in guardrail.items() if v is not None})
    report = judge_guardrails(
        spec, Observations(), rates((1000, 10_000), (1000, 10_000)), (), {"other": {}}, True
    )
    assert report.tests is not None and set(report.tests) == {"other", key}


def test_rate_guardrail_without_the_champions_counters_has_no_data() -> None:
    spec = make_spec(RATE)
    counters = {"guardrail/errors": {"v2": ProportionStats(successes=10, trials=100)}}
    report = judge_guardrails(spec, Observations(), counters, previous("errors", "v2", 1), None, True)
    assert report.tests is None
    assert (report.checks[0].breaches, report.checks[0].reason) == (1, "errors of v2: no data yet")
    assert report.condition.reason == "NoData" and not report.healthy


def test_rate_guardrail_with_no_events_in_either_arm_is_healthy() -> None:
    """No errors at all on both sides is data, not its absence: the guardrail passes and the count resets."""
    spec = make_spec(RATE)
    report = judge_guardrails(
        spec, Observations(), rates((0, 50), (0, 50)), previous("errors", "v2", 1), {}, True
    )
    assert report.tests is not None and len(report.tests) == 1
    check = report.checks[0]
    assert (check.breaches, check.breached, check.reason) == (0, False, "errors of v2 healthy")
    assert check.estimate == 0.0 and check.p_value == 1.0 and report.healthy


# ------------------------------------------------------------------ the stored form


@pytest.mark.parametrize(
    ("check", "expected"),
    [
        pytest.param(
            GuardrailCheck("latency", "v2", reason="latency of v2: no data yet"),
            {
                "name": "latency",
                "variant": "v2",
                "breaches": 0,
                "breached": False,
                "reason": "latency of v2: no data yet",
            },
            id="nothing-read",
        ),
        pytest.param(
            GuardrailCheck("latency", "v2", 2, True, value=0.3, reason="r"),
            {
                "name": "latency",
                "variant": "v2",
                "breaches": 2,
                "breached": True,
                "value": 0.3,
                "reason": "r",
            },
            id="value-only",
        ),
        pytest.param(
            GuardrailCheck("e", "v2", 0, False, 0.02, 0.01, 0.01, 0.5, "ok"),
            {
                "name": "e",
                "variant": "v2",
                "breaches": 0,
                "breached": False,
                "value": 0.02,
                "championValue": 0.01,
                "estimate": 0.01,
                "pValue": 0.5,
                "reason": "ok",
            },
            id="everything",
        ),
        pytest.param(
            GuardrailCheck("e", "v2", value=0.0, champion_value=0.0, reason="ok"),
            {
                "name": "e",
                "variant": "v2",
                "breaches": 0,
                "breached": False,
                "value": 0.0,
                "championValue": 0.0,
                "reason": "ok",
            },
            id="zero-is-a-number",
        ),
    ],
)
def test_to_dict_leaves_unread_numbers_out(check: GuardrailCheck, expected: dict[str, Any]) -> None:
    assert check.to_dict() == expected


def test_a_relative_bound_without_the_champions_reading_is_not_healthy() -> None:
    """Found by these tests: the challenger's reading alone judged nothing, yet counted as data."""
    report = judge_guardrails(make_spec(UP), read("errors", v2=0.5), {}, (), None, data_ok=True)
    (check,) = report.checks
    assert check.reason == "errors of v2: no data yet" and not check.breached
    assert report.healthy is False
    assert (report.condition.ok, report.condition.reason) == (None, "NoData")
    assert report.condition.message == "no data yet for: errors/v2"


def test_healthy_checks_on_a_tick_with_a_failed_query_say_why_health_is_not_claimed() -> None:
    report = judge_guardrails(make_spec(MAX), read("latency", v1=0.1, v2=0.1), {}, (), None, data_ok=False)
    assert report.healthy is True, "every check has data; only the condition stays Unknown"
    assert report.condition.ok is None
    assert report.condition.message == "a query of this tick failed: health is not claimed on it"
