"""split_weights / winner_weights / check_weights: integer percents that always sum to 100."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from arbiter.api.weights import check_weights, split_weights, to_percent, winner_weights


def test_one_challenger_gets_the_whole_share() -> None:
    assert split_weights("v1", ["v2"], 25) == {"v1": 75, "v2": 25}


def test_equal_shares_when_divisible() -> None:
    assert split_weights("v1", ["a", "b", "c"], 30) == {"v1": 70, "a": 10, "b": 10, "c": 10}


def test_remainder_goes_to_the_first_challengers_in_spec_order() -> None:
    assert split_weights("v1", ["a", "b", "c"], 50) == {"v1": 50, "a": 17, "b": 17, "c": 16}
    assert split_weights("v1", ["c", "b", "a"], 50) == {"v1": 50, "c": 17, "b": 17, "a": 16}


def test_small_share_over_many_challengers_leaves_the_last_at_zero() -> None:
    weights = split_weights("v1", [f"c{i}" for i in range(10)], 5)
    assert weights["v1"] == 95
    assert [weights[f"c{i}"] for i in range(10)] == [1, 1, 1, 1, 1, 0, 0, 0, 0, 0]


def test_champion_first_in_the_result() -> None:
    assert list(split_weights("v1", ["z", "a"], 10)) == ["v1", "z", "a"]


@pytest.mark.parametrize("percent", [0, 100])
def test_bounds(percent: int) -> None:
    weights = split_weights("v1", ["v2", "v3"], percent)
    assert weights["v1"] == 100 - percent
    assert sum(weights.values()) == 100


@pytest.mark.parametrize(
    ("champion", "challengers", "percent", "error"),
    [
        ("v1", ["v2"], -1, "0..100"),
        ("v1", ["v2"], 101, "0..100"),
        ("v1", [], 10, "at least one"),
        ("v1", ["v1"], 10, "distinct"),
        ("v1", ["v2", "v2"], 10, "distinct"),
    ],
)
def test_invalid_input(champion: str, challengers: list[str], percent: int, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        split_weights(champion, challengers, percent)


@given(
    n=st.integers(min_value=1, max_value=10),
    percent=st.integers(min_value=0, max_value=100),
)
def test_always_sums_to_100_and_shares_differ_by_at_most_one(n: int, percent: int) -> None:
    challengers = [f"c{i}" for i in range(n)]
    weights = split_weights("champ", challengers, percent)
    assert sum(weights.values()) == 100
    assert weights["champ"] == 100 - percent
    shares = [weights[c] for c in challengers]
    assert max(shares) - min(shares) <= 1
    assert sum(shares) == percent
    assert shares == sorted(shares, reverse=True)


def test_winner_weights() -> None:
    assert winner_weights("v2", ["v1", "v2", "v3"]) == {"v1": 0, "v2": 100, "v3": 0}
    with pytest.raises(ValueError, match="not one of"):
        winner_weights("v9", ["v1", "v2"])


def test_check_weights_completes_missing_variants_in_variant_order() -> None:
    assert check_weights({"v2": 40, "v1": 60}, ["v1", "v2", "v3"]) == {"v1": 60, "v2": 40, "v3": 0}


@pytest.mark.parametrize(
    ("weights", "error"),
    [
        ({"v1": 90, "v9": 10}, "unknown variants"),
        ({"v1": 90, "v2": 5}, "sum to 100"),
        ({"v1": 110, "v2": -10}, "within 0..100"),
        ({"v1": 99.5, "v2": 0.5}, "integer"),
        ({"v1": True, "v2": 99}, "integer"),
    ],
)
def test_check_weights_rejects(weights: dict[str, int], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        check_weights(weights, ["v1", "v2"])


def test_to_percent_of_relative_weights() -> None:
    assert to_percent({"v1": 9, "v2": 1}) == {"v1": 90, "v2": 10}
    assert to_percent({"v1": 0.5, "v2": 0.5}) == {"v1": 50, "v2": 50}


def test_to_percent_largest_remainder_then_earlier_name() -> None:
    assert to_percent({"a": 1, "b": 1, "c": 1}) == {"a": 34, "b": 33, "c": 33}
    assert to_percent({"a": 2, "b": 1}) == {"a": 67, "b": 33}
    assert to_percent({"a": 1, "b": 2}) == {"a": 33, "b": 67}


def test_to_percent_all_zero_means_no_traffic() -> None:
    assert to_percent({"a": 0, "b": 0}) == {"a": 0, "b": 0}
    with pytest.raises(ValueError, match="negative"):
        to_percent({"a": -1, "b": 2})


@given(st.lists(st.integers(min_value=0, max_value=1000), min_size=1, max_size=11))
def test_to_percent_sums_to_100_and_is_within_one_of_exact(shares: list[int]) -> None:
    named = {f"v{i}": share for i, share in enumerate(shares)}
    percents = to_percent(named)
    if sum(shares) == 0:
        assert set(percents.values()) == {0}
        return
    assert sum(percents.values()) == 100
    for name, share in named.items():
        assert abs(percents[name] - share * 100 / sum(shares)) < 1
