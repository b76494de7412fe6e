"""Sticky weighted rendezvous hashing: split accuracy, stickiness, monotonicity, independence."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arbiter.router.assign import Assigner, unit_hash

KEYS = [f"user-{i}" for i in range(100_000)]


def shares(assigner: Assigner, keys: list[str]) -> dict[str, float]:
    counts = Counter(assigner.sticky(k) for k in keys)
    return {name: counts[name] / len(keys) for name, _ in assigner.weights}


@pytest.mark.parametrize(
    "weights",
    [
        [("v1", 90), ("v2", 10)],
        [("v1", 50), ("v2", 50)],
        [("a", 50), ("b", 30), ("c", 20)],
        [("a", 1), ("b", 1), ("c", 1), ("d", 7)],  # relative weights, not percentages
    ],
)
def test_split_is_within_one_point_of_the_weights_over_100k_keys(weights: list[tuple[str, float]]) -> None:
    assigner = Assigner("fraud-v2", weights)
    total = sum(w for _, w in weights)
    observed = shares(assigner, KEYS)
    for name, weight in weights:
        assert abs(observed[name] - weight / total) < 0.01, (name, observed)


def test_the_same_key_always_gets_the_same_variant() -> None:
    first = Assigner("e", [("v1", 70), ("v2", 30)])
    second = Assigner("e", [("v1", 70), ("v2", 30)])  # a restart, or another router replica
    assert [first.sticky(k) for k in KEYS[:5000]] == [second.sticky(k) for k in KEYS[:5000]]
    assert [first.sticky(k) for k in KEYS[:5000]] == [first.sticky(k) for k in KEYS[:5000]]


def test_the_order_of_the_variants_does_not_matter() -> None:
    forward = Assigner("e", [("a", 5), ("b", 3), ("c", 2)])
    backward = Assigner("e", [("c", 2), ("b", 3), ("a", 5)])
    assert all(forward.sticky(k) == backward.sticky(k) for k in KEYS[:20_000])


def test_zero_weight_variants_never_serve() -> None:
    assigner = Assigner("e", [("a", 1), ("off", 0), ("b", 1)])
    assert "off" not in {assigner.sticky(k) for k in KEYS[:20_000]}
    assert "off" not in {assigner.draw() for _ in range(20_000)}
    with pytest.raises(ValueError):
        Assigner("e", [("a", 0)])


def test_two_variants_users_only_move_toward_the_growing_challenger() -> None:
    # A canary's usual progression: the challenger only ever moves up, the weights sum to 100.
    steps = [
        [("v1", 99), ("v2", 1)],
        [("v1", 90), ("v2", 10)],
        [("v1", 75), ("v2", 25)],
        [("v1", 50), ("v2", 50)],
    ]
    keys = KEYS[:20_000]
    before = [Assigner("exp", steps[0]).sticky(k) for k in keys]
    for weights in steps[1:]:
        after = [Assigner("exp", weights).sticky(k) for k in keys]
        moves = Counter((b, a) for b, a in zip(before, after, strict=True) if b != a)
        assert set(moves) <= {("v1", "v2")}, f"users moved away from the challenger: {moves}"
        assert moves, "growing the challenger must move someone"
        # The number who move is what the weights say, not more (no churn).
        total_before = sum(1 for b in before if b == "v2")
        total_after = sum(1 for a in after if a == "v2")
        assert moves[("v1", "v2")] == total_after - total_before
        before = after


def test_three_variants_growing_one_challenger_moves_users_only_onto_it() -> None:
    keys = KEYS[:20_000]
    before = [Assigner("exp", [("champ", 80), ("b", 10), ("c", 10)]).sticky(k) for k in keys]
    after = [Assigner("exp", [("champ", 80), ("b", 25), ("c", 10)]).sticky(k) for k in keys]
    moves = Counter((x, y) for x, y in zip(before, after, strict=True) if x != y)
    assert moves, "growing b must move someone"
    assert all(to == "b" for _, to in moves), moves
    assert {frm for frm, _ in moves} == {"champ", "c"}, "b takes its share from everyone in proportion"
    assert all(y == "b" for x, y in zip(before, after, strict=True) if x == "b"), "users on b stay"


def test_adding_a_variant_moves_users_only_onto_it() -> None:
    keys = KEYS[:20_000]
    before = [Assigner("exp", [("a", 50), ("b", 50)]).sticky(k) for k in keys]
    after = [Assigner("exp", [("a", 50), ("b", 50), ("new", 10)]).sticky(k) for k in keys]
    assert all(y in (x, "new") for x, y in zip(before, after, strict=True))


weight_lists = st.lists(st.integers(min_value=1, max_value=1000), min_size=2, max_size=5)


@settings(max_examples=40, deadline=None)
@given(old=weight_lists, data=st.data())
def test_a_user_moves_from_a_to_b_only_if_b_gained_weight_relative_to_a(
    old: list[int], data: st.DataObject
) -> None:
    """The exact monotonicity guarantee, for any number of variants and any change of weights.

    With relative weights no stateless assignment can keep every untouched variant's users in place
    when several weights change at once; this is the strongest guarantee there is: nobody leaves a
    variant for one whose weight fell relative to it.
    """
    new = data.draw(st.lists(st.integers(min_value=1, max_value=1000), min_size=len(old), max_size=len(old)))
    names = [f"v{i}" for i in range(len(old))]
    w_old = dict(zip(names, old, strict=True))
    w_new = dict(zip(names, new, strict=True))
    before = Assigner("prop", list(w_old.items()))
    after = Assigner("prop", list(w_new.items()))
    for key in KEYS[:2000]:
        a, b = before.sticky(key), after.sticky(key)
        if a != b:
            assert w_new[b] / w_new[a] > w_old[b] / w_old[a], (key, a, b, w_old, w_new)


@settings(max_examples=40, deadline=None)
@given(weights=weight_lists, grown=st.integers(min_value=0, max_value=4), factor=st.floats(1.01, 50))
def test_growing_any_one_variant_only_moves_users_onto_it(
    weights: list[int], grown: int, factor: float
) -> None:
    names = [f"v{i}" for i in range(len(weights))]
    grown_name = names[grown % len(names)]
    old = list(zip(names, weights, strict=True))
    new = [(n, w * factor if n == grown_name else w) for n, w in old]
    before, after = Assigner("grow", old), Assigner("grow", new)
    for key in KEYS[:2000]:
        a, b = before.sticky(key), after.sticky(key)
        assert b in (a, grown_name)
        if a == grown_name:
            assert b == grown_name


def test_experiments_are_independent() -> None:
    """Salting by experiment name: being on v2 in one experiment says nothing about another."""
    weights = [("v1", 50), ("v2", 50)]
    one = Assigner("experiment-one", weights)
    two = Assigner("experiment-two", weights)
    same = sum(one.sticky(k) == two.sticky(k) for k in KEYS) / len(KEYS)
    assert abs(same - 0.5) < 0.01
    assert unit_hash("experiment-one", "v1", "k") != unit_hash("experiment-two", "v1", "k")


def test_unit_hash_matches_the_fast_path() -> None:
    """The documented formula (unit_hash) is what the router computes."""
    import math

    weights = [("a", 3.0), ("b", 1.0), ("c", 0.5)]
    assigner = Assigner("doc", weights)
    for key in KEYS[:2000]:
        expected = min(weights, key=lambda nw: -math.log(unit_hash("doc", nw[0], key)) / nw[1])[0]
        assert assigner.sticky(key) == expected


def test_random_draws_follow_the_weights() -> None:
    assigner = Assigner("e", [("a", 80), ("b", 15), ("c", 5)])
    counts = Counter(assigner.draw() for _ in range(100_000))
    for name, share in (("a", 0.80), ("b", 0.15), ("c", 0.05)):
        assert abs(counts[name] / 100_000 - share) < 0.01
