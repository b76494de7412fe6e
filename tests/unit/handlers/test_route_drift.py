"""Repairing a route someone else changed: at once, then with back-off once it is contested."""

from __future__ import annotations

import itertools

from arbiter.handlers import route_drift
from arbiter.handlers.route_drift import MAX_BACKOFF_TICKS, REPAIRS_IN_A_ROW, judge_drift, should_repair


def test_repairs_every_tick_then_backs_off_to_a_bounded_rate() -> None:
    repaired = [n for n in range(1, 1001) if should_repair(n)]
    assert repaired[:REPAIRS_IN_A_ROW] == [1, 2, 3]
    assert repaired[REPAIRS_IN_A_ROW:8] == [4, 8, 16, 32, 64]
    gaps = [b - a for a, b in itertools.pairwise(repaired)]
    assert max(gaps) == MAX_BACKOFF_TICKS, "never longer than the cap between attempts"
    # 1000 contested ticks: a few dozen writes, not a thousand.
    assert len(repaired) <= REPAIRS_IN_A_ROW + 5 + 1000 // MAX_BACKOFF_TICKS


def test_previous_streak_reads_status_defensively() -> None:
    assert route_drift.previous_streak({}) == 0
    assert route_drift.previous_streak({"traffic": {"verified": "Yes"}}) == 0
    assert route_drift.previous_streak({"traffic": {"overwrites": 5}}) == 5
    assert route_drift.previous_streak({"traffic": {"overwrites": "x"}}) == 0
    assert route_drift.previous_streak({"traffic": {"overwrites": -1}}) == 0


def test_a_single_edit_is_a_warning_not_a_contest() -> None:
    report = judge_drift(0, 1, "Router", "weights differ")
    assert report.condition is None
    assert [(e.type, e.reason) for e in report.events] == [("Warning", "RouteOverwritten")]
    assert judge_drift(1, 0, "Router", "").events == ()


def test_a_contest_is_a_condition_and_one_event_then_settles() -> None:
    start = judge_drift(REPAIRS_IN_A_ROW, REPAIRS_IN_A_ROW + 1, "Router", "weights differ")
    assert start.condition is not None and start.condition[:2] == ("True", "OverwrittenRepeatedly")
    assert "docs/routing.md" in start.condition[2] and "back-off" in start.condition[2]
    assert [e.reason for e in start.events] == ["RouteContested"]
    later = judge_drift(10, 11, "Router", "weights differ")
    assert later.condition is not None and later.condition[0] == "True" and later.events == ()
    settled = judge_drift(11, 0, "Router", "")
    assert settled.condition is not None and settled.condition[:2] == ("False", "InPlace")
    assert [(e.type, e.reason) for e in settled.events] == [("Normal", "RouteInPlace")]


def test_a_contest_is_not_declared_over_while_the_route_is_still_wrong() -> None:
    # A planned weight change (a new step) resets the streak; the route may still be someone else's.
    assert judge_drift(11, 0, "Router", "", in_place=False) == route_drift.DriftReport(None)
