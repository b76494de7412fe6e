"""``status.engine`` is read and written exactly as stored, so an upgraded operator resumes mid-experiment."""

from __future__ import annotations

import gzip
import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from arbiter.rollout.state import NOT_RECORDED, CounterTracker, EngineState, SrmRunning
from arbiter.stats import DecisionState

GOLDEN = Path(__file__).parent / "golden" / "ticks.json.gz"


@cache
def recorded() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(gzip.decompress(GOLDEN.read_bytes()))
    return data


def exact(value: Any) -> str:
    """A canonical JSON text: equal texts mean equal values of equal JSON types (1 and 1.0 differ)."""
    return json.dumps(value, sort_keys=True)


def recorded_engines() -> list[dict[str, Any]]:
    return [t["status"]["engine"] for t in recorded()["ticks"] if "engine" in t["status"]]


def test_every_recorded_engine_state_round_trips_exactly() -> None:
    engines = recorded_engines()
    assert len(engines) > 1000
    mismatched = [
        i
        for i, raw in enumerate(engines)
        if exact(EngineState.from_status({"engine": raw}).to_status()) != exact(raw)
    ]
    assert mismatched == []


def test_the_recording_covers_the_states_worth_round_tripping() -> None:
    """The round trip above is only as good as its inputs: each shape below occurs in the recording."""
    engines = recorded_engines()

    def some(predicate: Any) -> bool:
        return any(predicate(e) for e in engines)

    assert some(lambda e: "stepSamples" not in e)
    assert some(lambda e: "stepSamples" in e and e["stepSamples"] is None)
    assert some(lambda e: isinstance(e.get("stepSamples"), dict))
    assert some(lambda e: e.get("plannedSampleSize", 0) is None), "a plan tried too early is stored as null"
    assert some(lambda e: isinstance(e.get("plannedSampleSize"), int))
    assert some(lambda e: any(k.startswith("secondaryState/") for k in e))
    assert some(lambda e: e.get("srmRunning"))
    assert some(lambda e: e.get("guardrailTests"))
    assert some(lambda e: e.get("shadowPassed") is True)
    assert some(lambda e: "srmAcknowledged" in e)
    assert some(lambda e: e.get("eliminated"))
    assert some(
        lambda e: any(
            t.get("carry") != t.get("base") for s in e.get("counters", {}).values() for t in s.values()
        )
    )


def test_a_status_without_engine_state_reads_as_fresh() -> None:
    state = EngineState.from_status({"phase": "Progressing"})
    assert state == EngineState()
    assert state.to_status() == {}


@pytest.mark.parametrize(
    "engine",
    [
        pytest.param({}, id="empty"),
        pytest.param({"identity": "abc"}, id="identity-only"),
        pytest.param({"consecutiveErrors": 0}, id="zero-errors-is-recorded"),
        pytest.param({"srmAcknowledged": 0}, id="step-zero-acknowledged"),
        pytest.param({"eliminated": []}, id="nobody-eliminated-yet"),
        pytest.param({"guardrailTests": {}}, id="no-harm-test-yet"),
        pytest.param({"shadowPassed": True, "routed": True}, id="flags"),
        pytest.param({"plannedSampleSize": None, "plannedSampleSize/clicks": 5120}, id="plans"),
        pytest.param(
            {"srmRunning": {"baseline": None, "weights": {"v1": 90.0, "v2": 10.0}, "pValue": 0.5}}, id="srm"
        ),
        pytest.param(
            {"counters": {"samples": {"v1": {"base": [1.0], "carry": [0.0], "last": [3.0]}}}}, id="counters"
        ),
        pytest.param({"secondaryState/latency": DecisionState(ticks=2).to_dict()}, id="secondary"),
    ],
)
def test_absent_keys_stay_absent(engine: dict[str, Any]) -> None:
    assert exact(EngineState.from_status({"engine": engine}).to_status()) == exact(engine)


@pytest.mark.parametrize(
    ("engine", "stored", "baseline"),
    [
        pytest.param({}, NOT_RECORDED, None, id="absent"),
        pytest.param({"stepSamples": None}, None, None, id="null-the-step-has-not-settled"),
        pytest.param({"stepSamples": {"v1": 10.0}}, {"v1": 10.0}, {"v1": 10.0}, id="settled"),
    ],
)
def test_step_samples_null_and_absent_are_kept_apart(
    engine: dict[str, Any], stored: Any, baseline: Any
) -> None:
    state = EngineState.from_status({"engine": engine})
    assert state.step_samples == stored
    assert state.step_baseline == baseline
    assert ("stepSamples" in state.to_status()) is ("stepSamples" in engine)
    assert state.with_step_unsettled().to_status()["stepSamples"] is None


def full_state() -> EngineState:
    return EngineState(
        identity="abc",
        consecutive_errors=2,
        counters={"samples": {"v1": CounterTracker((1.0,), (0.0,), (2.0,))}},
        step_samples={"v1": 1.0},
        eliminated=("v3",),
        shadow_passed=True,
        srm_acknowledged=1,
        srm_running=SrmRunning({"v1": 1.0}, {"v1": 90.0, "v2": 10.0}, 0.2),
        guardrail_tests={"errors/v2/increase": {"looks": 1}},
        primary=DecisionState(ticks=3),
        secondary={"latency": DecisionState(ticks=3)},
        planned_sizes={"plannedSampleSize": 100},
        routed=True,
    )


@pytest.mark.parametrize(
    "state",
    [
        pytest.param(full_state(), id="everything-set"),
        pytest.param(EngineState(identity="abc"), id="only-identity"),
        pytest.param(EngineState(), id="nothing"),
    ],
)
def test_restarted_keeps_only_the_identity(state: EngineState) -> None:
    fresh = state.restarted()
    assert fresh == EngineState(identity=state.identity)
    assert fresh.to_status() == ({} if state.identity is None else {"identity": state.identity})


def test_every_field_is_written() -> None:
    """The fully populated state writes each of its keys, and reads back to itself."""
    written = full_state().to_status()
    assert set(written) == {
        "identity",
        "consecutiveErrors",
        "counters",
        "stepSamples",
        "eliminated",
        "shadowPassed",
        "srmAcknowledged",
        "srmRunning",
        "guardrailTests",
        "primaryState",
        "secondaryState/latency",
        "plannedSampleSize",
        "routed",
    }
    assert EngineState.from_status({"engine": written}) == full_state()
