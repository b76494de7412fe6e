"""Cumulative counters turned into "since the experiment started": baselines, restarts and gaps."""

from __future__ import annotations

from arbiter.rollout.counters import accumulate
from arbiter.stats import MeanStats, ProportionStats


def run(readings: list[tuple[float, float]], *, born_after_start: bool = False) -> list[tuple[float, float]]:
    """Feed (successes, trials) readings through one tracker; return the totals after each."""
    tracker = None
    totals = []
    for successes, trials in readings:
        since, tracker = accumulate(
            tracker, ProportionStats(successes=successes, trials=trials), born_after_start=born_after_start
        )
        assert isinstance(since, ProportionStats)
        totals.append((since.successes, since.trials))
    return totals


def test_what_was_counted_before_the_start_is_the_baseline() -> None:
    assert run([(150, 1000), (160, 1100), (175, 1250)]) == [(0, 0), (10, 100), (25, 250)]


def test_a_series_born_after_the_start_counts_in_full() -> None:
    assert run([(3, 20), (5, 40)], born_after_start=True) == [(3, 20), (5, 40)]


def test_an_exporter_restart_carries_over_what_it_had_counted() -> None:
    # Counted 10/100 since the start, then the process restarted at 0 and counted 2/30 more.
    assert run([(150, 1000), (160, 1100), (2, 30), (4, 50)])[-2:] == [(12, 130), (14, 150)]


def test_a_field_that_drops_while_the_count_grows_is_a_gap_not_a_collapse() -> None:
    """The successes series missed a scrape (read as 0) while trials went on: the tick keeps the last
    totals, and when the series is back nothing is counted twice."""
    totals = run([(150, 1000), (160, 1100), (0, 1200), (180, 1300)])
    assert totals[2] == (10, 100), "the gap keeps the last totals"
    assert totals[3] == (30, 300), "back again: counted once"


def mean_run(readings: list[tuple[float, float, float]]) -> list[tuple[float, float, float]]:
    tracker = None
    totals = []
    for n, total, squares in readings:
        since, tracker = accumulate(tracker, MeanStats(n=n, sum=total, sum_squares=squares))
        assert isinstance(since, MeanStats)
        totals.append((since.n, since.sum, since.sum_squares))
    return totals


def test_a_mean_whose_sum_of_squares_drops_is_a_gap() -> None:
    totals = mean_run([(10, 50, 300), (20, 100, 600), (25, 120, 0), (30, 150, 900)])
    assert totals == [(0, 0, 0), (10, 50, 300), (10, 50, 300), (20, 100, 600)]


def test_a_sum_of_values_may_go_down_negative_values_are_data() -> None:
    """Refunds: the sum falls while n grows. That is data, not a gap."""
    totals = mean_run([(10, 50, 300), (20, 100, 600), (30, 40, 4200)])
    assert totals[-1] == (20, -10, 3900)
