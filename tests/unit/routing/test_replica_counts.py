"""replica_counts: weights -> replica counts out of a fixed budget (the Replicas provider's granularity)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from arbiter.api.weights import split_weights
from arbiter.routing.replicas import deployment_problem, parse_budget, replica_counts


@pytest.mark.parametrize(
    ("weights", "budget", "expected"),
    [
        ({"v1": 50, "v2": 50}, 4, {"v1": 2, "v2": 2}),
        ({"v1": 95, "v2": 5}, 4, {"v1": 3, "v2": 1}),  # a challenger with traffic gets at least 1
        ({"v1": 90, "v2": 10}, 10, {"v1": 9, "v2": 1}),
        ({"v1": 75, "v2": 25}, 10, {"v1": 8, "v2": 2}),  # 7.5/2.5: tie on .5, the champion first
        ({"v1": 50, "v2": 17, "v3": 17, "v4": 16}, 10, {"v1": 5, "v2": 2, "v3": 2, "v4": 1}),
        ({"v1": 0, "v2": 100}, 4, {"v1": 1, "v2": 3}),  # the champion keeps one until finalize
        ({"v1": 100, "v2": 0}, 4, {"v1": 4, "v2": 0}),
        ({"v1": 98, "v2": 1, "v3": 1}, 2, {"v1": 1, "v2": 1, "v3": 1}),  # more serving variants than budget
        ({"v1": 100, "v2": 0}, 0, {"v1": 1, "v2": 0}),  # budget below 1 counts as 1
        ({"v1": 60, "v2": 40}, 1, {"v1": 1, "v2": 1}),  # both serve: the budget is exceeded
    ],
)
def test_replica_counts(weights: dict[str, int], budget: int, expected: dict[str, int]) -> None:
    assert replica_counts(weights, budget, "v1") == expected


def test_without_champion_floor_the_winner_takes_the_whole_budget() -> None:
    assert replica_counts({"v1": 0, "v2": 100}, 4, "v1", champion_floor=False) == {"v1": 0, "v2": 4}


@given(
    challengers=st.integers(min_value=1, max_value=5),
    percent=st.integers(min_value=0, max_value=100),
    budget=st.integers(min_value=1, max_value=50),
)
def test_invariants(challengers: int, percent: int, budget: int) -> None:
    names = [f"c{i}" for i in range(challengers)]
    weights = split_weights("champ", names, percent)
    counts = replica_counts(weights, budget, "champ")
    serving = sum(1 for name, w in weights.items() if w > 0 or name == "champ")
    assert sum(counts.values()) == max(budget, serving)
    assert counts["champ"] >= 1
    for name, weight in weights.items():
        assert (counts[name] > 0) == (weight > 0 or name == "champ")


@given(budget=st.integers(min_value=1, max_value=100), percent=st.integers(min_value=0, max_value=100))
def test_large_budgets_track_the_weights_within_one_replica(budget: int, percent: int) -> None:
    counts = replica_counts({"v1": 100 - percent, "v2": percent}, budget, "v1")
    if 0 < percent < 100 and budget >= 2:
        assert abs(counts["v2"] - percent * budget / 100) < 1


def test_parse_budget() -> None:
    assert parse_budget('{"experiment":"e","replicas":5}', "e") == 5
    assert parse_budget('{"experiment":"other","replicas":5}', "e") is None
    assert parse_budget("not json", "e") is None
    assert parse_budget('{"experiment":"e"}', "e") is None
    assert parse_budget(None, "e") is None


def test_deployment_problem() -> None:
    ready = {
        "metadata": {"name": "d", "generation": 2},
        "spec": {"replicas": 2},
        "status": {"observedGeneration": 2, "replicas": 2, "readyReplicas": 2},
    }
    assert deployment_problem(ready, 2) == ""
    assert "spec.replicas is 2, expected 3" in deployment_problem(ready, 3)
    stale = {**ready, "status": {**ready["status"], "observedGeneration": 1}}
    assert "generation 2" in deployment_problem(stale, 2)
    starting = {**ready, "status": {**ready["status"], "readyReplicas": 1}}
    assert "1 ready of 2" in deployment_problem(starting, 2)
    surging = {**ready, "status": {**ready["status"], "replicas": 3}}
    assert "2 ready of 3" in deployment_problem(surging, 2)
