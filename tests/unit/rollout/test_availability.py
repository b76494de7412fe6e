"""Row 3 of docs/rollout.md: a tick whose queries failed is inconclusive; a streak pauses, data resumes."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from arbiter.api import Phase, parse_spec
from arbiter.rollout.actions import Hold, Pause, PauseReason, Unpause
from arbiter.rollout.availability import judge_availability
from arbiter.rollout.observations import MetricData, Observations, Reading
from arbiter.rollout.view import TickView
from arbiter.stats import ProportionStats

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def spec(limit: int = 3) -> Any:
    return parse_spec(
        {
            "champion": {"name": "v1", "deployment": "d1", "service": "s1"},
            "challengers": [{"name": "v2", "deployment": "d2", "service": "s2"}],
            "routing": {"provider": "Router", "router": {"configMap": "routes"}},
            "steps": [{"weight": 10}],
            "analysis": {
                "guardrails": [{"name": "latency", "query": "q", "max": 0.2}],
                "consecutiveErrorLimit": limit,
            },
        }
    )


def failing(*errors: str) -> Observations:
    """Observations where each message is a distinct failing query (guardrail, primary, samples)."""
    readings = {"v1": Reading(value=0.1), "v2": Reading(error=errors[0])} if errors else {"v1": Reading(0.1)}
    primary = MetricData(
        stats={"v1": ProportionStats(successes=1, trials=10)},
        errors={f"v{i}": e for i, e in enumerate(errors[1:2], start=2)},
    )
    samples = {f"v{i}": Reading(error=e) for i, e in enumerate(errors[2:], start=1)}
    return Observations(guardrails={"latency": readings}, primary=primary, samples=samples)


HEALTHY = failing()

CASES = [
    # (limit, phase, pause reason, streak before, observations, available, streak after, action)
    pytest.param(3, Phase.PROGRESSING, None, 0, HEALTHY, True, 0, None, id="all-queries-answer"),
    pytest.param(3, Phase.PROGRESSING, None, 2, HEALTHY, True, 0, None, id="data-resets-the-streak"),
    pytest.param(3, Phase.PROGRESSING, None, 0, failing("E"), False, 1, Hold, id="first-error-holds"),
    pytest.param(3, Phase.PROGRESSING, None, 1, failing("E"), False, 2, Hold, id="below-the-limit-holds"),
    pytest.param(3, Phase.PROGRESSING, None, 2, failing("E"), False, 3, Pause, id="pauses-at-the-limit"),
    pytest.param(1, Phase.PROGRESSING, None, 0, failing("E"), False, 1, Pause, id="limit-one-pauses-at-once"),
    pytest.param(
        3,
        Phase.PAUSED,
        PauseReason.METRICS,
        3,
        failing("E"),
        False,
        4,
        None,
        id="already-paused-no-second-pause",
    ),
    pytest.param(
        3,
        Phase.PAUSED,
        PauseReason.SRM,
        5,
        failing("E"),
        False,
        6,
        None,
        id="paused-for-srm-not-paused-again",
    ),
    pytest.param(
        3,
        Phase.PAUSED,
        PauseReason.METRICS,
        4,
        HEALTHY,
        True,
        0,
        Unpause,
        id="resumes-when-paused-for-metrics",
    ),
    pytest.param(3, Phase.PAUSED, PauseReason.SRM, 0, HEALTHY, True, 0, None, id="no-resume-of-an-srm-pause"),
    pytest.param(
        3, Phase.PAUSED, PauseReason.SPEC, 0, HEALTHY, True, 0, None, id="no-resume-of-a-spec-pause"
    ),
]


@pytest.mark.parametrize(("limit", "phase", "reason", "before", "obs", "available", "after", "kind"), CASES)
def test_judge_availability(
    limit: int,
    phase: Phase,
    reason: PauseReason | None,
    before: int,
    obs: Observations,
    available: bool,
    after: int,
    kind: type | None,
) -> None:
    report = judge_availability(spec(limit), TickView(T0, phase, pause_reason=reason), obs, before)
    assert report.available is available
    assert report.consecutive_errors == after
    assert report.condition.type == "MetricsAvailable"
    assert report.condition.ok is available
    assert report.condition.reason == ("QueriesSucceeded" if available else "QueryFailed")
    if kind is None:
        assert report.action is None
    else:
        assert isinstance(report.action, kind)
    if isinstance(report.action, Pause):
        assert report.action.reason_code is PauseReason.METRICS
        assert report.action.reason == f"metrics unavailable for {after} ticks: E"
    if isinstance(report.action, Hold):
        assert report.action.reason.startswith("inconclusive: ")
        assert "nothing is decided on unreadable data" in report.action.reason
    if not available:
        assert report.condition.message == f"{after} consecutive tick(s) with failing queries: E"


@pytest.mark.parametrize(
    ("errors", "suffix"),
    [
        pytest.param(("E1",), "E1", id="one"),
        pytest.param(("E1", "E2"), "E1 (and 1 more)", id="two"),
        pytest.param(("E1", "E2", "E3", "E4"), "E1 (and 3 more)", id="four"),
        pytest.param(("E1", "E1", "E1"), "E1", id="the-same-query-counts-once"),
    ],
)
def test_the_message_names_the_first_failing_query_and_counts_the_rest(
    errors: tuple[str, ...], suffix: str
) -> None:
    report = judge_availability(spec(), TickView(T0, Phase.PROGRESSING), failing(*errors), 0)
    assert report.condition.message == f"1 consecutive tick(s) with failing queries: {suffix}"


def test_no_data_is_not_an_error() -> None:
    """A series that does not exist yet is inconclusive, never a failing query."""
    obs = Observations(
        guardrails={"latency": {"v1": Reading(), "v2": Reading()}},
        primary=MetricData(missing={"v1": "no series", "v2": "no series"}),
    )
    report = judge_availability(spec(limit=1), TickView(T0, Phase.PROGRESSING), obs, 0)
    assert report.available and report.consecutive_errors == 0 and report.action is None
