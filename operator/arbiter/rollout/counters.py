"""Turn cumulative Prometheus counters into "what happened since the experiment started".

Counters are read as running totals. The experiment only counts what happened after it started
(the champion's counters may carry days of earlier traffic), and a counter that goes down means the
process exporting it restarted: what it had counted before the restart is carried over instead of
being lost or counted twice. The tracker is a small JSON object kept in the CR status.
"""

from __future__ import annotations

from dataclasses import dataclass

from arbiter.rollout.observations import MetricData, Observations, SufficientStats
from arbiter.rollout.state import SAMPLES_KEY, CounterTracker, CounterTrackers
from arbiter.stats import MeanStats, ProportionStats


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
    tracker: CounterTracker | None, current: SufficientStats, *, born_after_start: bool = False
) -> tuple[SufficientStats, CounterTracker]:
    """Add one reading of a cumulative counter to its tracker.

    Args:
        tracker: the stored tracker (totals when tracking began, totals counted before restarts, the
            previous reading), or None on the first reading.
        current: the counter totals read now.
        born_after_start: on a first reading, the series did not exist when the experiment started
            (e.g. a challenger's counters appear with its first request), so everything in it counts.

    Returns:
        The totals since tracking began, and the new tracker.
    """
    now = _fields(current)
    zeros = (0.0,) * len(now)
    if tracker is None:
        if born_after_start:
            return _build(current, now), CounterTracker(zeros, zeros, tuple(now))
        return _build(current, list(zeros)), CounterTracker(tuple(now), zeros, tuple(now))
    base = list(tracker.base)
    carry = list(tracker.carry)
    last = list(tracker.last)
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
    return _build(current, since), CounterTracker(tuple(base), tuple(carry), tuple(now))


def accumulate_count(
    tracker: CounterTracker | None, current: float, *, born_after_start: bool = False
) -> tuple[float, CounterTracker]:
    """:func:`accumulate` for a plain count (e.g. samples)."""
    total, new = accumulate(
        tracker, ProportionStats(successes=0.0, trials=current), born_after_start=born_after_start
    )
    assert isinstance(total, ProportionStats)
    return float(total.trials), new


#: Per source (``primary``, ``secondary/<name>``, ``guardrail/<name>``) and variant: counted since the start.
CounterData = dict[str, dict[str, SufficientStats]]


@dataclass(frozen=True)
class CounterReport:
    """This tick's counters since the experiment (re)started, the sample counts, and the new trackers."""

    data: CounterData
    samples: dict[str, float]
    trackers: CounterTrackers


def read_counters(observations: Observations, trackers: CounterTrackers | None) -> CounterReport:
    """Cumulative counters since the experiment (re)started, per metric and variant.

    The first tick's readings are the baselines. A variant whose series only appears later (a
    challenger's counters are born with its first request) has nothing before the experiment, so
    its first reading counts in full.
    """
    new: dict[str, dict[str, CounterTracker]] = {k: dict(v) for k, v in (trackers or {}).items()}
    if not new and observations.errors():
        # Baselines are taken on a tick where every query answered: a series missing because the
        # query failed must not later look like one born after the start.
        return CounterReport({}, {}, new)
    sources: dict[str, MetricData] = {}
    if observations.primary is not None:
        sources["primary"] = observations.primary
    for name, data in observations.secondary.items():
        sources[f"secondary/{name}"] = data
    for name, data in observations.guardrail_rates.items():
        sources[f"guardrail/{name}"] = data
    result: CounterData = {}
    for key, data in sources.items():
        started = key in new
        metric_trackers = new.setdefault(key, {})
        per_variant: dict[str, SufficientStats] = {}
        for variant, current in data.stats.items():
            per_variant[variant], metric_trackers[variant] = accumulate(
                metric_trackers.get(variant), current, born_after_start=started
            )
        result[key] = per_variant
    samples: dict[str, float] = {}
    started = SAMPLES_KEY in new
    sample_trackers = new.setdefault(SAMPLES_KEY, {})
    for variant, reading in sample_readings(observations).items():
        if reading is not None:
            samples[variant], sample_trackers[variant] = accumulate_count(
                sample_trackers.get(variant), reading, born_after_start=started
            )
    return CounterReport(result, samples, new)


def sample_readings(observations: Observations) -> dict[str, float | None]:
    """Per-variant cumulative sample counts: the sampleCount query, else the primary's trials/count."""
    if observations.samples:
        return {v: r.value if r.has_value else None for v, r in observations.samples.items()}
    if observations.primary is not None:
        return {
            v: float(s.trials if isinstance(s, ProportionStats) else s.n)
            for v, s in observations.primary.stats.items()
        }
    return {}


def step_samples(samples: dict[str, float], baseline: dict[str, float] | None) -> dict[str, float]:
    """Samples counted in the current step: since the step's baseline."""
    base = baseline or {}
    return {v: max(0.0, n - float(base.get(v, 0.0))) for v, n in samples.items()}
