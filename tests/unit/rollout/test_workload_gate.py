"""A variant's workload missing or not ready mid-experiment holds the tick (row 2 of docs/rollout.md)."""

from __future__ import annotations

import datetime as dt

from test_engine import BAD_10, EQUAL_10, Controls, Run, conversions, grow, make_spec, observe

from arbiter.rollout.controls import judge_workloads
from arbiter.rollout.engine import step

GONE = ["Deployment d2 not found"]


def test_no_problems_no_gate() -> None:
    report = judge_workloads([])
    assert not report.over and report.action is None


def test_a_missing_deployment_holds_and_says_why() -> None:
    report = judge_workloads(GONE)
    assert report.over
    assert report.action is not None and "Deployment d2 not found" in report.action.reason  # type: ignore[union-attr]


def held_tick(run: Run, problems: list[str], after: float = 10) -> None:
    """One tick with workload problems (the handler passes them; the observations are empty then)."""
    run.now += dt.timedelta(seconds=after)
    plan = step(
        run.spec,
        run.status,
        observe(primary=grow(BAD_10, 5)),
        run.now,
        Controls({}),
        1,
        workload_problems=problems,
    )
    run.status = plan.status
    run.plans.append(plan)


def test_a_loss_is_not_rolled_back_while_the_challenger_is_gone() -> None:
    run = Run(make_spec())
    run.tick(observe(primary=conversions(v1=(0, 0), v2=(0, 0))))
    for _ in range(3):
        held_tick(run, GONE)
        assert run.phase == "Progressing"
        assert run.status["decision"]["outcome"] == "Hold"
        assert "waiting for workloads: Deployment d2 not found" in run.status["decision"]["reason"]
        assert run.plans[-1].routing is not None and run.plans[-1].routing.weights == {"v1": 90, "v2": 10}
    # Back: the same data now decides.
    run.tick(observe(primary=grow(BAD_10, 1)))
    assert run.phase == "RolledBack"


def test_no_step_advance_and_no_promotion_while_held() -> None:
    run = Run(make_spec())
    run.tick(observe(primary=conversions(v1=(0, 0), v2=(0, 0))))
    run.tick(observe(primary=conversions(v1=(0, 0), v2=(0, 0))))
    held_tick(run, ["Deployment d2 has 0/1 ready replicas"], after=600)
    assert run.status["currentStep"] == 0 and run.phase == "Progressing"
    run.tick(observe(primary=grow(EQUAL_10, 1)), after=1)
    assert run.status["currentStep"] == 1, "advances once the workload is back"


def test_max_duration_still_ends_a_held_experiment() -> None:
    run = Run(make_spec(decision={"maxDuration": "5m", "onTimeout": "KeepChampion"}))
    run.tick(observe(primary=conversions(v1=(0, 0), v2=(0, 0))))
    held_tick(run, GONE, after=400)
    assert run.phase == "Concluded"
