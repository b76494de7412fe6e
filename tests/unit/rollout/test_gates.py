"""Webhook gates in the decision core: the gate judge as a table, then whole ticks through `engine.step`.

The ticks call the engine the way the handler does: a first call; when its plan lists gate calls, the
answers (here from a table the test controls) go into a second call with the same inputs.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest

from arbiter.api import ModelExperimentSpec, parse_spec
from arbiter.api.v1alpha1 import Gate
from arbiter.rollout.actions import End, Hold
from arbiter.rollout.engine import Controls, Plan, step
from arbiter.rollout.gates import GateCall, GateType, GateVerdict, judge_gates, judge_post_rollback
from arbiter.rollout.lifecycle import admit
from arbiter.rollout.observations import Observations

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
NOW = "2026-01-01T00:00:00Z"

SPEC: dict[str, Any] = {
    "mode": "Canary",
    "champion": {"name": "v1", "deployment": "d1", "service": "s1"},
    "challengers": [{"name": "v2", "deployment": "d2", "service": "s2"}],
    "routing": {"provider": "Router", "router": {"configMap": "routes"}},
    "steps": [{"weight": 10, "minDuration": "20s"}, {"weight": 50, "minDuration": "20s"}],
    "analysis": {"interval": "10s", "prometheus": {"url": "http://prometheus:9090"}},
    "decision": {"maxDuration": "10m"},
}


def gate(name: str, type_: str, on_failure: str = "Hold") -> dict[str, Any]:
    return {"name": name, "type": type_, "url": f"http://gates.local/{name}", "onFailure": on_failure}


def make_spec(gates: list[dict[str, Any]], **changes: Any) -> ModelExperimentSpec:
    spec = copy.deepcopy(SPEC)
    spec["gates"] = gates
    spec.update(changes)
    return parse_spec(spec)


def gates_of(*entries: dict[str, Any]) -> list[Gate]:
    return [Gate.model_validate(e) for e in entries]


# ------------------------------------------------------------------------------- the judge, as a table

STEP_1 = GateCall("", GateType.STEP, "advance to step 1 (50% challenger)", step=1)
PASSED_STEP_1 = {"name": "smoke", "type": "step", "passed": True, "step": 1, "attempts": 1}
FAILED_STEP_1 = {
    "name": "smoke",
    "type": "step",
    "passed": False,
    "step": 1,
    "attempts": 2,
    "message": "HTTP 503",
}
PASSED_STEP_0 = {"name": "smoke", "type": "step", "passed": True, "step": 0, "attempts": 1}


@pytest.mark.parametrize(
    ("case", "stored", "verdict", "on_failure", "calls", "action", "condition", "events", "attempts"),
    [
        ("no answer yet: ask", {}, None, "Hold", ["smoke"], None, None, [], None),
        (
            "passed for this step: not asked again",
            {"smoke": PASSED_STEP_1},
            None,
            "Hold",
            [],
            None,
            None,
            [],
            None,
        ),
        (
            "passed for another step: asked",
            {"smoke": PASSED_STEP_0},
            None,
            "Hold",
            ["smoke"],
            None,
            None,
            [],
            None,
        ),
        (
            "a failure last tick: asked again",
            {"smoke": FAILED_STEP_1},
            None,
            "Hold",
            ["smoke"],
            None,
            None,
            [],
            None,
        ),
        ("2xx passes", {}, GateVerdict(True, 200, "HTTP 200"), "Hold", [], None, True, [], 1),
        (
            "non-2xx holds",
            {},
            GateVerdict(False, 503, "HTTP 503"),
            "Hold",
            [],
            Hold,
            False,
            ["GateFailed"],
            1,
        ),
        (
            "timeout holds",
            {},
            GateVerdict(False, None, "no answer within 1s"),
            "Hold",
            [],
            Hold,
            False,
            ["GateFailed"],
            1,
        ),
        (
            "the same failure again: counted, no new Event",
            {"smoke": FAILED_STEP_1},
            GateVerdict(False, 503, "HTTP 503"),
            "Hold",
            [],
            Hold,
            False,
            [],
            3,
        ),
        (
            "a different failure: a new Event",
            {"smoke": FAILED_STEP_1},
            GateVerdict(False, 500, "HTTP 500"),
            "Hold",
            [],
            Hold,
            False,
            ["GateFailed"],
            3,
        ),
        (
            "onFailure Rollback ends the experiment",
            {},
            GateVerdict(False, 503, "HTTP 503"),
            "Rollback",
            [],
            End,
            False,
            ["GateFailed"],
            1,
        ),
        (
            "passing after failures says so",
            {"smoke": FAILED_STEP_1},
            GateVerdict(True, 204, "HTTP 204"),
            "Hold",
            [],
            None,
            True,
            ["GatePassed"],
            3,
        ),
    ],
)
def test_step_gate_table(
    case: str,
    stored: dict[str, Any],
    verdict: GateVerdict | None,
    on_failure: str,
    calls: list[str],
    action: type | None,
    condition: bool | None,
    events: list[str],
    attempts: int | None,
) -> None:
    gates = gates_of(gate("smoke", "step", on_failure), gate("other", "confirmPromotion"))
    verdicts = {"smoke": verdict} if verdict is not None else {}
    report = judge_gates(gates, STEP_1, stored, verdicts, NOW, "v1")
    assert [c.name for c in report.calls] == calls, case
    assert all(c.step == 1 and c.type is GateType.STEP for c in report.calls)
    assert (type(report.action) if report.action else None) is action, case
    assert (report.condition.ok if report.condition else None) is condition, case
    assert [reason for _, reason, _ in report.events] == events, case
    assert report.open is (not calls and action is None)
    if attempts is not None:
        assert report.results is not None
        entry = report.results["smoke"]
        assert entry["attempts"] == attempts and entry["step"] == 1 and entry["passed"] is verdict.passed  # type: ignore[union-attr]
    if action is End:
        assert isinstance(report.action, End) and report.action.winner == "v1"
        assert "gate smoke (step) failed before advance to step 1" in report.action.reason


def test_no_gate_of_the_type_is_open() -> None:
    report = judge_gates(gates_of(gate("smoke", "preRollout")), STEP_1, {}, {}, NOW, "v1")
    assert report.open and not report.calls and not report.results


def test_one_failing_gate_among_passing_ones_holds_and_is_named() -> None:
    gates = gates_of(gate("a", "step"), gate("b", "step"))
    verdicts = {"a": GateVerdict(True, 200, "HTTP 200"), "b": GateVerdict(False, 403, "HTTP 403: no")}
    report = judge_gates(gates, STEP_1, {}, verdicts, NOW, "v1")
    assert isinstance(report.action, Hold)
    assert report.condition is not None and "gate b (step)" in report.condition.message
    assert report.results is not None and report.results["a"]["passed"] and not report.results["b"]["passed"]


def test_a_confirm_promotion_pass_is_for_its_winner_only() -> None:
    gates = gates_of(gate("approve", "confirmPromotion"))
    for_v2 = GateCall("", GateType.CONFIRM_PROMOTION, "promote v2", 1, "v2")
    passed = judge_gates(gates, for_v2, {}, {"approve": GateVerdict(True, 200)}, NOW, "v1").results
    assert passed is not None
    assert judge_gates(gates, for_v2, passed, {}, NOW, "v1").open
    for_v3 = GateCall("", GateType.CONFIRM_PROMOTION, "promote v3", 1, "v3")
    assert [c.name for c in judge_gates(gates, for_v3, passed, {}, NOW, "v1").calls] == ["approve"]


def test_post_rollback_is_told_once_and_only_reported() -> None:
    gates = gates_of(gate("cleanup", "postRollback"))
    first = judge_post_rollback(gates, {}, {}, NOW, "guardrail breached")
    assert [c.name for c in first.calls] == ["cleanup"] and "guardrail breached" in first.calls[0].action
    failed = judge_post_rollback(gates, {}, {"cleanup": GateVerdict(False, 500, "HTTP 500")}, NOW, "x")
    assert failed.action is None and [r for _, r, _ in failed.events] == ["GateFailed"]
    assert failed.results is not None
    assert not judge_post_rollback(gates, failed.results, {}, NOW, "x").calls


# ------------------------------------------------------------------------------- whole ticks

Answer = Callable[[GateCall], GateVerdict]


def passing(_: GateCall) -> GateVerdict:
    return GateVerdict(True, 200, "HTTP 200")


class GatedRun:
    """Ticks as the handler runs them: decide, call the gates the plan asks for, decide again."""

    def __init__(self, spec: ModelExperimentSpec) -> None:
        self.spec = spec
        self.now = T0
        admitted = admit(status={}, generation=1, spec=spec, spec_error=None, workload_problems=[], now="t0")
        self.status: dict[str, Any] = admitted.status
        self.status["startedAt"] = self.status["stepStartedAt"] = NOW
        self.calls: list[GateCall] = []
        self.plans: list[Plan] = []

    def tick(self, answer: Answer = passing, after: float = 10) -> Plan:
        self.now += dt.timedelta(seconds=after)
        plan = step(self.spec, self.status, Observations(), self.now, Controls(), 1)
        if plan.gate_calls:
            self.calls.extend(plan.gate_calls)
            verdicts = {c.name: answer(c) for c in plan.gate_calls}
            plan = step(self.spec, self.status, Observations(), self.now, Controls(), 1, gates=verdicts)
            assert not plan.gate_calls, "the second call has every answer it asked for"
        self.status = plan.status
        if plan.routing is not None and not plan.routing.final:
            self.status["traffic"] = {"verified": "Yes", "weights": plan.routing.weights}
        self.plans.append(plan)
        return plan

    def until(
        self, predicate: Callable[[dict[str, Any]], bool], answer: Answer = passing, ticks: int = 30
    ) -> None:
        for _ in range(ticks):
            self.tick(answer)
            if predicate(self.status):
                return
        raise AssertionError(f"never reached: {self.status.get('phase')} {self.status.get('decision')}")

    def called(self, name: str) -> list[GateCall]:
        return [c for c in self.calls if c.name == name]

    def events(self) -> list[str]:
        return [e.reason for p in self.plans for e in p.events]


def failing(code: int = 503) -> Answer:
    return lambda _: GateVerdict(False, code, f"HTTP {code}")


def test_a_failing_pre_rollout_gate_keeps_all_traffic_on_the_champion_until_it_passes() -> None:
    run = GatedRun(make_spec([gate("smoke", "preRollout")]))
    for _ in range(3):
        plan = run.tick(failing())
        assert plan.routing is not None and plan.routing.weights == {"v1": 100, "v2": 0}
        assert plan.routing.mirror is None
    assert run.status["phase"] == "Progressing"
    assert "gate smoke (preRollout) failed" in run.status["decision"]["reason"]
    gates_passed = next(c for c in run.status["conditions"] if c["type"] == "GatesPassed")
    assert gates_passed["status"] == "False" and "smoke" in gates_passed["message"]
    assert run.events().count("GateFailed") == 1, "one Event for a failure that repeats"
    assert run.status["gates"][0]["attempts"] == 3
    plan = run.tick(passing)
    assert plan.routing is not None and plan.routing.weights == {"v1": 90, "v2": 10}
    calls = len(run.called("smoke"))
    for _ in range(3):
        run.tick(passing)
    assert len(run.called("smoke")) == calls, "a passed preRollout gate is not asked again"


def test_step_gates_are_asked_once_per_step_and_hold_the_step_while_failing() -> None:
    run = GatedRun(make_spec([gate("load", "step")]))
    run.until(lambda _: bool(run.called("load")), answer=failing(500))
    assert [c.step for c in run.called("load")] == [1], "asked before step 1, never before step 0"
    for _ in range(2):
        run.tick(failing(500))
    assert run.status["currentStep"] == 0 and run.status["weights"] == {"v1": 90, "v2": 10}
    assert "failed before advance to step 1 (50% challenger)" in run.status["decision"]["reason"]
    run.tick(passing)
    assert run.status["currentStep"] == 1 and run.status["weights"] == {"v1": 50, "v2": 50}
    asked = len(run.called("load"))
    run.tick(passing)
    assert len(run.called("load")) == asked, "not asked again for the step it passed"


def test_confirm_promotion_holds_the_winner_until_it_passes() -> None:
    run = GatedRun(make_spec([gate("approve", "confirmPromotion")]))
    run.until(lambda s: s["currentStep"] == 1)
    run.tick(failing(409))
    run.tick(failing(409))
    run.tick(failing(409))
    assert run.status["phase"] == "Progressing" and run.status["weights"] == {"v1": 50, "v2": 50}
    assert "failed before promote v2" in run.status["decision"]["reason"]
    run.tick(passing)
    assert run.status["phase"] == "Promoted" and run.status["decision"]["winner"] == "v2"
    assert run.called("approve")[-1].target == "v2"


def test_on_failure_rollback_rolls_back_and_post_rollback_is_told_once() -> None:
    run = GatedRun(
        make_spec([gate("approve", "confirmPromotion", "Rollback"), gate("cleanup", "postRollback")])
    )
    run.until(lambda s: s["currentStep"] == 1)
    run.until(lambda s: s["phase"] != "Progressing", answer=failing(403))
    assert run.status["phase"] == "RolledBack" and run.status["weights"] == {"v1": 100, "v2": 0}
    assert "(onFailure: Rollback)" in run.status["decision"]["reason"]
    assert not run.called("cleanup"), "told after the rollback was routed, on the next tick"
    run.tick(failing(500))
    run.tick(passing)
    run.tick(passing)
    assert len(run.called("cleanup")) == 1
    cleanup = next(g for g in run.status["gates"] if g["name"] == "cleanup")
    assert cleanup["passed"] is False and cleanup["code"] == 500
    assert run.status["phase"] == "RolledBack"


def test_max_duration_ends_an_experiment_held_by_a_gate() -> None:
    run = GatedRun(make_spec([gate("approve", "confirmPromotion")], decision={"maxDuration": "2m"}))
    run.until(lambda s: s["phase"] != "Progressing", answer=failing(503), ticks=20)
    assert run.status["phase"] == "Concluded"
    assert "maxDuration 2m reached" in run.status["decision"]["reason"]


def test_a_restarted_operator_resumes_from_status_without_asking_passed_gates_again() -> None:
    run = GatedRun(make_spec([gate("smoke", "preRollout"), gate("load", "step")]))
    run.until(lambda s: s["currentStep"] == 1)
    stored = copy.deepcopy(run.status)  # all an operator restart keeps
    again = GatedRun(run.spec)
    again.status, again.now = stored, run.now
    again.tick()
    assert not again.calls
    assert again.status["currentStep"] == 1


def test_gates_run_again_after_a_retry() -> None:
    spec = make_spec([gate("smoke", "preRollout"), gate("approve", "confirmPromotion", "Rollback")])
    run = GatedRun(spec)
    run.until(lambda s: s["phase"] == "RolledBack", answer=lambda c: GateVerdict(c.name == "smoke", 500))
    assert run.status["gates"]
    now = run.now + dt.timedelta(seconds=10)
    plan = step(spec, run.status, Observations(), now, Controls({"retry": "1"}), 1)
    assert plan.status["phase"] == "Progressing" and "gates" not in plan.status


def test_a_shadow_is_not_mirrored_before_its_pre_rollout_gate_passes() -> None:
    spec = make_spec(
        [gate("smoke", "preRollout")],
        mode="Shadow",
        steps=None,
        analysis={**SPEC["analysis"], "shadow": {"minDuration": "10m"}},
        routing={"provider": "Router", "router": {"configMap": "routes"}, "shadow": {"percent": 50}},
    )
    run = GatedRun(spec)
    held = run.tick(failing())
    assert held.routing is not None and held.routing.mirror is None
    mirrored = run.tick(passing)
    assert mirrored.routing is not None and mirrored.routing.mirror == ("v2", 50)
