"""A split found off the status' weights when a tick begins (a step change whose status write was lost)."""

from __future__ import annotations

import datetime as dt

from test_engine import EQUAL_10, Controls, Run, conversions, grow, make_spec, observe

from arbiter.rollout.dry_run import LiveSplit
from arbiter.rollout.engine import step


def settled_run() -> Run:
    """A canary at step 0 (90/10) whose step has settled: its samples count from a baseline."""
    # An MDE so small that equal rates stay undecided: only the split is under test here.
    run = Run(make_spec(analysis__primary__minimumDetectableEffect=0.0001))
    run.tick(observe(primary=conversions(v1=(0, 0), v2=(0, 0))))
    run.tick(observe(primary=grow(EQUAL_10, 1)))
    assert run.status["engine"].get("stepSamples"), "the step settled"
    return run


def tick_with_live(run: Run, live: LiveSplit, counts: dict[str, tuple[int, int]], after: float = 10) -> None:
    run.now += dt.timedelta(seconds=after)
    plan = step(
        run.spec, run.status, observe(primary=conversions(**counts)), run.now, Controls({}), 1, live=live
    )
    run.status = plan.status
    run.plans.append(plan)


def test_the_split_the_status_names_changes_nothing() -> None:
    run = settled_run()
    baseline = run.status["engine"]["stepSamples"]
    tick_with_live(run, LiveSplit({"v1": 90, "v2": 10}, "read"), {"v1": (18000, 180000), "v2": (2000, 20000)})
    assert run.status["engine"]["stepSamples"] == baseline
    assert "SplitRestored" not in run.events()


def test_another_split_restarts_the_steps_count_instead_of_judging_it_as_a_mismatch() -> None:
    run = settled_run()
    # Users got 50/50 while the status still says 90/10: counted against 90/10 it would be a mismatch.
    tick_with_live(run, LiveSplit({"v1": 50, "v2": 50}, "read"), {"v1": (14000, 140000), "v2": (6000, 60000)})
    assert run.phase == "Progressing" and run.status.get("pauseReason") is None
    assert run.status["engine"]["stepSamples"] is None, "the step is counted anew"
    assert run.status["traffic"]["verified"] == "No" and run.status["traffic"]["weights"] == {
        "v1": 50,
        "v2": 50,
    }
    assert run.plans[-1].routing is not None and run.plans[-1].routing.weights == {"v1": 90, "v2": 10}
    assert "SplitRestored" in run.events()
    # The status' weights verified back in place: the step counts from there and then advances.
    run.status["traffic"] = {"verified": "Yes", "weights": {"v1": 90, "v2": 10}}
    run.tick(observe(primary=conversions(v1=(18000, 180000), v2=(7000, 70000))), after=1)
    run.tick(observe(primary=conversions(v1=(27000, 270000), v2=(8000, 80000))), after=600)
    assert run.status["currentStep"] == 1 and run.phase == "Progressing"


def test_a_split_that_could_not_be_read_changes_nothing() -> None:
    run = settled_run()
    baseline = run.status["engine"]["stepSamples"]
    tick_with_live(run, LiveSplit(None, "ConfigMap not found"), {"v1": (18000, 180000), "v2": (2000, 20000)})
    assert run.status["engine"]["stepSamples"] == baseline and "SplitRestored" not in run.events()


def test_the_lost_change_decided_again_is_kept_without_judging_the_mixed_split() -> None:
    """Step 0's time is up: the restarted engine advances as the lost tick did, to the split users have."""
    run = settled_run()
    tick_with_live(
        run, LiveSplit({"v1": 50, "v2": 50}, "read"), {"v1": (14000, 140000), "v2": (6000, 60000)}, after=600
    )
    assert run.phase == "Progressing" and run.status.get("pauseReason") is None, "no mismatch judged"
    assert run.status["currentStep"] == 1
    assert run.plans[-1].routing is not None and run.plans[-1].routing.weights == {"v1": 50, "v2": 50}
    assert "SplitRestored" not in run.events() and "Advanced" in run.events()
