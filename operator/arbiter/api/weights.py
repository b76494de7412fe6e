"""Traffic weights: how a challenger share is split across variants, and what a valid weight map is.

Pure functions shared by the rollout core (which decides the challenger share) and the routing
providers (which apply it). A weight map is integer percent per variant name, summing to exactly 100.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = ["check_weights", "split_weights", "to_percent", "winner_weights"]


def split_weights(champion: str, challengers: Sequence[str], challenger_percent: int) -> dict[str, int]:
    """Split ``challenger_percent`` equally across the challengers; the champion gets the rest.

    Each challenger gets ``challenger_percent // len(challengers)``; the remainder (fewer percent
    than there are challengers) goes one percent each to the first challengers in the given (spec)
    order, so the result is deterministic and sums to exactly 100. With a small share and many
    challengers, the last challengers may get 0 (e.g. 5% over 10 challengers: five get 1%).

    Args:
        champion: the champion's variant name.
        challengers: the challengers' names, in spec order; at least one, unique, none equal to
            the champion.
        challenger_percent: the challengers' total share, 0 to 100.

    Returns:
        Percent per variant, the champion first, then the challengers in the given order.

    Raises:
        ValueError: the share is out of range or the names are not distinct.
    """
    if not 0 <= challenger_percent <= 100:
        raise ValueError(f"challenger_percent must be within 0..100, got {challenger_percent}")
    if not challengers:
        raise ValueError("at least one challenger is needed")
    names = [champion, *challengers]
    if len(set(names)) != len(names):
        raise ValueError(f"variant names must be distinct: {names}")
    share, remainder = divmod(challenger_percent, len(challengers))
    weights = {champion: 100 - challenger_percent}
    for index, name in enumerate(challengers):
        weights[name] = share + (1 if index < remainder else 0)
    return weights


def winner_weights(winner: str, variants: Sequence[str]) -> dict[str, int]:
    """Return the weights that send all traffic to ``winner`` and none to the other variants.

    Raises:
        ValueError: ``winner`` is not one of ``variants``.
    """
    if winner not in variants:
        raise ValueError(f"{winner!r} is not one of the variants {list(variants)}")
    return {name: 100 if name == winner else 0 for name in variants}


def check_weights(weights: Mapping[str, int], variants: Sequence[str]) -> dict[str, int]:
    """Validate a weight map against the experiment's variants and complete it.

    Variants missing from ``weights`` get 0.

    Args:
        weights: percent per variant name.
        variants: every variant of the experiment, the champion first.

    Returns:
        Percent for every variant, in ``variants`` order.

    Raises:
        ValueError: an unknown name, a weight outside 0..100 or not an integer, or a sum other than 100.
    """
    unknown = sorted(set(weights) - set(variants))
    if unknown:
        raise ValueError(f"unknown variants {unknown}; the experiment has {list(variants)}")
    for name, weight in weights.items():
        if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 100:
            raise ValueError(f"weight of {name!r} must be an integer percent within 0..100, got {weight!r}")
    total = sum(weights.values())
    if total != 100:
        raise ValueError(f"weights must sum to 100, got {total}: {dict(weights)}")
    return {name: weights.get(name, 0) for name in variants}


def to_percent(shares: Mapping[str, float]) -> dict[str, int]:
    """Turn relative shares (router weights, replica counts) into integer percents summing to 100.

    Largest-remainder rounding: every name gets the floor of its exact percent, and the percents
    still missing go one each to the largest fractional parts (ties: the earlier name). All zeros
    stay all zeros: nothing carries traffic.

    Raises:
        ValueError: a negative share.
    """
    if any(share < 0 for share in shares.values()):
        raise ValueError(f"shares must not be negative: {dict(shares)}")
    total = sum(shares.values())
    if total <= 0:
        return dict.fromkeys(shares, 0)
    exact = {name: share * 100 / total for name, share in shares.items()}
    percents = {name: int(value) for name, value in exact.items()}
    missing = 100 - sum(percents.values())
    order = sorted(exact, key=lambda name: -(exact[name] - percents[name]))
    for name in order[:missing]:
        percents[name] += 1
    return percents
