"""Admission: Pending until workloads are ready, then Progressing; Failed on an invalid spec, and back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from arbiter.api import ModelExperimentSpec, parse_spec
from arbiter.api.conditions import get_condition
from arbiter.api.v1alpha1 import MAX_HISTORY
from arbiter.rollout.lifecycle import admit

EXAMPLE = Path(__file__).parents[3] / "examples" / "canary.yaml"


@pytest.fixture
def spec() -> ModelExperimentSpec:
    docs = [d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d and d["kind"] == "ModelExperiment"]
    return parse_spec(docs[0]["spec"])


def look(
    status: dict[str, Any], spec: ModelExperimentSpec | None, problems: list[str], now: str = "t", **kw: Any
):
    return admit(
        status=status,
        generation=kw.get("generation", 1),
        spec=spec,
        spec_error=kw.get("spec_error"),
        workload_problems=problems,
        now=now,
    )


def test_new_experiment_waits_for_workloads(spec: ModelExperimentSpec) -> None:
    outcome = look({}, spec, ["Deployment fraud-v2 has 0/2 ready replicas"])
    assert outcome.status["phase"] == "Pending"
    assert "fraud-v2 has 0/2" in outcome.status["message"]
    ready = get_condition(outcome.status["conditions"], "Ready")
    assert ready is not None and ready["status"] == "False" and ready["reason"] == "WorkloadsNotReady"
    assert [e.reason for e in outcome.events] == ["WorkloadsNotReady"]
    again = look(outcome.status, spec, ["Deployment fraud-v2 has 0/2 ready replicas"], now="t2")
    assert not again.changed(outcome.status), "a repeated look with nothing new must not patch"
    assert again.events == ()


def test_ready_workloads_start_progressing_at_step_zero(spec: ModelExperimentSpec) -> None:
    pending = look({}, spec, ["x"], now="t1").status
    outcome = look(pending, spec, [], now="t2")
    status = outcome.status
    assert status["phase"] == "Progressing"
    assert status["currentStep"] == 0
    assert status["weights"] == {"v1": 100, "v2": 0}
    assert status["challengerWeight"] == 0
    assert status["startedAt"] == status["stepStartedAt"] == "t2"
    assert status["observedGeneration"] == 1
    assert [(h["from"], h["to"]) for h in status["history"]] == [
        ("New", "Pending"),
        ("Pending", "Progressing(step 0)"),
    ]
    assert [e.reason for e in outcome.events] == ["Progressing"]
    ready = get_condition(status["conditions"], "Ready")
    assert ready is not None and ready["status"] == "True"


def test_progressing_is_not_restarted_by_another_look(spec: ModelExperimentSpec) -> None:
    progressing = look({}, spec, [], now="t1").status
    progressing["currentStep"] = 2
    outcome = look(progressing, spec, [], now="t9")
    assert outcome.status["currentStep"] == 2
    assert outcome.status["startedAt"] == "t1"
    assert outcome.events == ()


def test_workloads_lost_while_progressing_warn_once(spec: ModelExperimentSpec) -> None:
    progressing = look({}, spec, [], now="t1").status
    lost = look(progressing, spec, ["Service fraud-v2 not found"], now="t2")
    assert lost.status["phase"] == "Progressing"
    assert [(e.type, e.reason) for e in lost.events] == [("Warning", "WorkloadsNotReady")]
    assert look(lost.status, spec, ["Service fraud-v2 not found"], now="t3").events == ()
    back = look(lost.status, spec, [], now="t4")
    assert [e.reason for e in back.events] == ["WorkloadsReady"]


def test_invalid_spec_fails_with_the_message_and_recovers_when_fixed(spec: ModelExperimentSpec) -> None:
    failed = look({}, None, [], spec_error="spec.steps: step weights must be strictly increasing")
    assert failed.status["phase"] == "Failed"
    assert "strictly increasing" in failed.status["message"]
    assert [(e.type, e.reason) for e in failed.events] == [("Warning", "InvalidSpec")]
    fixed = look(failed.status, spec, [], generation=2)
    assert fixed.status["phase"] == "Progressing"
    assert fixed.status["observedGeneration"] == 2


@pytest.mark.parametrize("phase", ["Promoted", "RolledBack", "Concluded"])
def test_terminal_phases_are_left_alone(spec: ModelExperimentSpec, phase: str) -> None:
    status = {"phase": phase, "weights": {"v1": 0, "v2": 100}}
    outcome = look(status, spec, ["Deployment gone"])
    assert outcome.status == status
    assert outcome.events == ()


def test_history_is_bounded(spec: ModelExperimentSpec) -> None:
    status: dict[str, Any] = {}
    for i in range(MAX_HISTORY + 10):
        status = look(status, None if i % 2 else spec, ["x"], now=f"t{i}", spec_error="bad").status
    assert len(status["history"]) == MAX_HISTORY
    assert status["history"][-1]["time"] == f"t{MAX_HISTORY + 9}"
