"""Views of a status (samples, leading challenger) read from statuses the real engine wrote."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from arbiter.api import parse_spec
from arbiter.api.status_view import leading_challenger, samples, step_samples
from arbiter.rollout.engine import step
from arbiter.rollout.lifecycle import admit
from arbiter.rollout.observations import MetricData, Observations
from arbiter.stats import ProportionStats

SPEC = parse_spec(
    {
        "champion": {"name": "v1", "deployment": "d1", "service": "s1"},
        "challengers": [{"name": "v2", "deployment": "d2", "service": "s2"}],
        "routing": {"provider": "Router", "router": {"configMap": "routes"}},
        "steps": [{"weight": 50, "minDuration": "1h"}],
        "analysis": {
            "interval": "10s",
            "prometheus": {"url": "http://prometheus:9090"},
            "primary": {
                "name": "conversion",
                "type": "Proportion",
                "successes": "s",
                "trials": "t",
                "minimumDetectableEffect": 0.05,
            },
        },
    }
)
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def run(readings: list[dict[str, tuple[int, int]]]) -> dict[str, Any]:
    """Drive the engine through one tick per reading (cumulative counters), as the operator does."""
    status: dict[str, Any] = admit(
        status={}, generation=1, spec=SPEC, spec_error=None, workload_problems=[], now="t0"
    ).status
    status["startedAt"] = status["stepStartedAt"] = "2026-01-01T00:00:00Z"
    now = T0
    for reading in readings:
        now += dt.timedelta(seconds=10)
        data = MetricData(stats={v: ProportionStats(successes=s, trials=n) for v, (s, n) in reading.items()})
        plan = step(SPEC, status, Observations(primary=data), now)
        status = plan.status
        if plan.routing is not None and not plan.routing.final:
            status["traffic"] = {"verified": "Yes", "weights": plan.routing.weights}
    return status


def test_samples_count_from_the_experiment_start_and_the_step_from_its_baseline() -> None:
    """The champion had 500 trials before the experiment: they are not its samples."""
    status = run(
        [
            {"v1": (50, 500), "v2": (0, 0)},
            {"v1": (60, 600), "v2": (10, 100)},
            {"v1": (150, 1500), "v2": (100, 1000)},
            {"v1": (250, 2500), "v2": (200, 2000)},
        ]
    )
    assert samples(status, ["v1", "v2"]) == {"v1": 2000.0, "v2": 2000.0}
    # The step's samples count from the tick after the split was verified in place (600/100 then).
    base = status["engine"]["stepSamples"]
    assert base is not None
    assert step_samples(status, ["v1", "v2"]) == {
        "v1": 2000.0 - base["v1"],
        "v2": 2000.0 - base["v2"],
    }
    assert step_samples(status, ["v1", "v2"])["v1"] < 2000.0


def test_samples_fall_back_to_the_primary_results_without_engine_counters() -> None:
    status = {"analysis": {"primary": {"results": [{"variant": "v2", "nControl": 90, "nTreatment": 10}]}}}
    assert samples(status, ["v1", "v2"]) == {"v1": 90.0, "v2": 10.0}
    assert step_samples(status, ["v1", "v2"]) == {"v1": 0.0, "v2": 0.0}
    assert samples({}, ["v1", "v2"]) == {}


def results(*rows: tuple[str, float | None, float | None]) -> dict[str, Any]:
    return {
        "analysis": {
            "primary": {
                "results": [
                    {"variant": v, **({"relativeLift": lift} if lift is not None else {}), "pValue": p}
                    for v, lift, p in rows
                ]
            }
        }
    }


def test_the_leader_is_the_best_lift_in_the_metrics_direction() -> None:
    status = results(("v2", 0.05, 0.2), ("v3", -0.10, 0.01), ("v4", None, None))
    assert leading_challenger(status) == {"variant": "v2", "relativeLift": 0.05, "pValue": 0.2}
    assert leading_challenger(status, "Decrease") == {"variant": "v3", "relativeLift": -0.10, "pValue": 0.01}


def test_the_winner_of_a_decision_leads_and_no_results_means_no_leader() -> None:
    status = results(("v2", 0.05, 0.2), ("v3", 0.01, 0.001)) | {"decision": {"winner": "v3"}}
    assert leading_challenger(status) == {"variant": "v3", "relativeLift": 0.01, "pValue": 0.001}
    assert leading_challenger({}) is None
    assert leading_challenger({"analysis": {"primary": {"results": []}}}) is None
    assert leading_challenger(results(("v2", None, None))) == {"variant": "v2"}


@pytest.mark.parametrize("bad", [float("nan"), "0.1", True])
def test_numbers_that_are_not_finite_numbers_are_left_out(bad: Any) -> None:
    assert leading_challenger(results(("v2", bad, bad))) == {"variant": "v2"}
