"""Turn cumulative Prometheus counters into "what happened since the experiment started".

Counters are read as running totals. The experiment only counts what happened after it started
(the champion's counters may carry days of earlier traffic), and a counter that goes down means the
process exporting it restarted: what it had counted before the restart is carried over instead of
being lost or counted twice. The tracker is a small JSON object kept in the CR status.
"""

from __future__ import annotations

from typing import Any

from arbiter.rollout.observations import SufficientStats
from arbiter.stats import MeanStats, ProportionStats

Tracker = dict[str, Any]


def _fields(stats: SufficientStats) -> list[float]:
    if isinstance(stats, ProportionStats):
        return [float(stats.successes), float(stats.trials)]
    return [float(stats.n), float(stats.sum), float(stats.sum_squares)]


def _build(like: SufficientStats, values: list[float]) -> SufficientStats:
    if isinstance(like, ProportionStats):
        return ProportionStats(successes=values[0], trials=values[1])
    return MeanStats(n=values[0], sum=values[1], sum_squares=values[2])


def _monotone(stats: SufficientStats) -> list[bool]:
    """Which fields never go down between restarts (a sum of values may: values can be negative)."""
    if isinstance(stats, ProportionStats):
        return [True, True]
    return [True, False, True]


def _count(stats: SufficientStats) -> float:
    return float(stats.trials if isinstance(stats, ProportionStats) else stats.n)


def accumulate(
    tracker: Tracker | None, current: SufficientStats, *, born_after_start: bool = False
) -> tuple[SufficientStats, Tracker]:
    """Add one reading of a cumulative counter to its tracker.

    Args:
        tracker: the stored tracker (``base``: totals when tracking began; ``carry``: totals counted
            before restarts; ``last``: the previous reading), or None on the first reading.
        current: the counter totals read now.
        born_after_start: on a first reading, the series did not exist when the experiment started
            (e.g. a challenger's counters appear with its first request), so everything in it counts.

    Returns:
        The totals since tracking began, and the new tracker.
    """
    now = _fields(current)
    zeros = [0.0] * len(now)
    if tracker is None:
        if born_after_start:
            return _build(current, now), {"base": zeros, "carry": zeros, "last": now}
        return _build(current, zeros), {"base": now, "carry": zeros, "last": now}
    base = [float(x) for x in tracker["base"]]
    carry = [float(x) for x in tracker["carry"]]
    last = [float(x) for x in tracker["last"]]
    if len(base) != len(now):  # the metric changed type: start over
        return accumulate(None, current)
    # The count (trials or n) going down means the exporter restarted and began again from zero.
    if _count(_build(current, now)) < _count(_build(current, last)):
        carry = [c + lv for c, lv in zip(carry, last, strict=True)]
    elif any(v < lv for v, lv, monotone in zip(now, last, _monotone(current), strict=True) if monotone):
        # A counter went down while the count did not: not a restart but a gap (e.g. the successes
        # series missed a scrape and read as 0). Counters never do that, so this reading is not data:
        # keep the last totals rather than count a drop that would look like a collapse.
        now = last
    since = [
        max(0.0, c + v - b) if monotone else c + v - b
        for c, v, b, monotone in zip(carry, now, base, _monotone(current), strict=True)
    ]
    return _build(current, since), {"base": base, "carry": carry, "last": now}


def accumulate_count(
    tracker: Tracker | None, current: float, *, born_after_start: bool = False
) -> tuple[float, Tracker]:
    """:func:`accumulate` for a plain count (e.g. samples)."""
    total, new = accumulate(
        tracker, ProportionStats(successes=0.0, trials=current), born_after_start=born_after_start
    )
    assert isinstance(total, ProportionStats)
    return float(total.trials), new
