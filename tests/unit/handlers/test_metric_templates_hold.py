"""An experiment whose template references do not resolve holds with a condition and one Event."""

from __future__ import annotations

from arbiter.api.conditions import get_condition
from arbiter.handlers.metric_templates import CONDITION, hold, mark_resolved
from arbiter.metrics.references import REASON_NOT_FOUND, Resolution, TemplateProblem

MISSING = Resolution(
    {}, problems=(TemplateProblem(REASON_NOT_FOUND, "analysis.primary", "MetricTemplate/x not found"),)
)
RESOLVED = Resolution({}, references={"analysis.primary": "MetricTemplate/x"})


def test_a_new_experiment_holds_pending_with_a_warning_once() -> None:
    status, events = hold({}, MISSING, 1, "t1")
    assert status["phase"] == "Pending"
    condition = get_condition(status["conditions"], CONDITION)
    assert condition is not None
    assert (condition["status"], condition["reason"]) == ("False", REASON_NOT_FOUND)
    assert condition["message"] == "metric templates: analysis.primary: MetricTemplate/x not found"
    assert [(e.type, e.reason) for e in events] == [("Warning", REASON_NOT_FOUND)]
    again, events = hold(status, MISSING, 1, "t2")
    assert events == [], "the same problem is not announced every tick"
    assert again == status


def test_a_running_experiment_keeps_everything_but_the_condition() -> None:
    running = {"phase": "Progressing", "currentStep": 2, "weights": {"v1": 75, "v2": 25}}
    status, _ = hold(running, MISSING, 3, "t1")
    assert {k: v for k, v in status.items() if k != "conditions"} == running


def test_recovery_turns_the_condition_true_with_a_normal_event() -> None:
    held, _ = hold({}, MISSING, 1, "t1")
    status, events = mark_resolved(held, RESOLVED, 1, "t2")
    condition = get_condition(status["conditions"], CONDITION)
    assert condition is not None and condition["status"] == "True"
    assert "analysis.primary from MetricTemplate/x" in condition["message"]
    assert [(e.type, e.reason) for e in events] == [("Normal", CONDITION)]
    assert mark_resolved(status, RESOLVED, 1, "t3")[1] == []


def test_an_experiment_without_templates_gets_no_condition() -> None:
    assert mark_resolved({"phase": "Progressing"}, Resolution({}), 1, "t") == ({"phase": "Progressing"}, [])
