"""Row 5 of docs/rollout.md: this step's samples against its weights, asked of ``judge_srm`` directly."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from arbiter.api import ModelExperimentSpec, Phase, parse_spec
from arbiter.rollout.actions import Pause, PauseReason
from arbiter.rollout.srm import SRM_MIN_TOTAL, SrmReport, judge_srm
from arbiter.rollout.state import SrmRunning
from arbiter.rollout.view import TickView
from arbiter.stats import sample_ratio_mismatch, sequential_sample_ratio_mismatch

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
SPLIT = {"v1": 90, "v2": 10}
BASELINE = {"v1": 5000.0, "v2": 600.0}


def make_spec(method: str = "Sequential", challengers: tuple[str, ...] = ("v2",)) -> ModelExperimentSpec:
    return parse_spec(
        {
            "champion": {"name": "v1", "deployment": "d1", "service": "s1"},
            "challengers": [{"name": c, "deployment": c, "service": c} for c in challengers],
            "routing": {"provider": "Router", "router": {"configMap": "routes"}},
            "steps": [{"weight": 10}, {"weight": 50}],
            "analysis": {"sampleRatioMismatch": {"method": method, "pValueThreshold": 0.001}},
        }
    )


def judge(
    counts: dict[str, float],
    *,
    method: str = "Sequential",
    phase: Phase = Phase.PROGRESSING,
    pause_reason: str | None = None,
    weights: dict[str, int] | None = None,
    challenger_weight: int | None = None,
    in_shadow: bool = False,
    baseline: dict[str, float] | None = BASELINE,
    acknowledged: int | None = None,
    running: SrmRunning | None = None,
) -> SrmReport:
    weights = SPLIT if weights is None else weights
    share = (
        sum(w for v, w in weights.items() if v != "v1") if challenger_weight is None else challenger_weight
    )
    view = TickView(
        T0, phase, pause_reason=pause_reason, current_step=1, weights=weights, challenger_weight=share
    )
    return judge_srm(
        make_spec(method, tuple(v for v in weights if v != "v1") or ("v2",)),
        view,
        in_shadow=in_shadow,
        step_baseline=baseline,
        step_counts=counts,
        acknowledged_step=acknowledged,
        running=running,
    )


FITS = {"v1": 900.0, "v2": 100.0}  # exactly 90/10
BROKEN = {"v1": 500.0, "v2": 500.0}  # 50/50 under 90/10
PAUSED = {"phase": Phase.PAUSED, "pause_reason": PauseReason.SRM}
OLD = SrmRunning({"v1": 1.0, "v2": 1.0}, {"v1": 90.0, "v2": 10.0}, 1e-9)

CASES = [
    # (counts, judge arguments, ok, condition (ok, reason) or None, pauses)
    pytest.param(FITS, {"in_shadow": True}, True, (False, "NotApplicable"), False, id="shadow"),
    pytest.param(
        FITS,
        {"weights": {"v1": 100, "v2": 0}},
        True,
        (False, "NotApplicable"),
        False,
        id="no-challenger-weight",
    ),
    pytest.param(FITS, {"baseline": None}, True, None, False, id="step-not-settled"),
    pytest.param({"v1": 900.0}, {}, True, (None, "NotEnoughData"), False, id="a-variant-without-samples"),
    pytest.param(
        {"v1": 179.0, "v2": 20.0}, {}, True, (None, "NotEnoughData"), False, id="one-below-the-minimum"
    ),
    pytest.param(FITS, {}, True, (False, "Matches"), False, id="matches"),
    pytest.param(FITS, {"method": "ChiSquare"}, True, (False, "Matches"), False, id="matches-chi-square"),
    pytest.param(BROKEN, {}, False, (True, "Mismatch"), True, id="mismatch-pauses"),
    pytest.param(BROKEN, {"method": "ChiSquare"}, False, (True, "Mismatch"), True, id="mismatch-chi-square"),
    pytest.param(
        BROKEN, PAUSED, False, (True, "Mismatch"), False, id="mismatch-while-paused-no-second-pause"
    ),
    pytest.param(
        BROKEN,
        {"phase": Phase.PAUSED, "pause_reason": PauseReason.METRICS},
        False,
        (True, "Mismatch"),
        False,
        id="mismatch-while-paused-for-metrics",
    ),
    pytest.param(
        BROKEN, {"acknowledged": 1}, True, (False, "Acknowledged"), False, id="mismatch-acknowledged"
    ),
    pytest.param(
        BROKEN, {"acknowledged": 0}, False, (True, "Mismatch"), True, id="acknowledged-another-step"
    ),
    pytest.param(FITS, PAUSED, False, (True, "PausedUntilResumed"), False, id="paused-until-resumed"),
    pytest.param(
        FITS, {"weights": {"v1": 100}, "challenger_weight": 10}, True, (None, "Error"), False, id="untestable"
    ),
]


@pytest.mark.parametrize(("counts", "arguments", "ok", "condition", "pauses"), CASES)
def test_judge_srm(
    counts: dict[str, float],
    arguments: dict[str, Any],
    ok: bool,
    condition: tuple[Any, str] | None,
    pauses: bool,
) -> None:
    report = judge(counts, **arguments)
    assert report.ok is ok
    if condition is None:
        assert report.condition is None, "the condition is left as it is"
    else:
        assert report.condition is not None and report.condition.type == "SampleRatioMismatch"
        assert (report.condition.ok, report.condition.reason) == condition
    assert isinstance(report.action, Pause) is pauses
    if pauses:
        assert report.action is not None and report.action.reason_code is PauseReason.SRM
        assert report.action.reason.startswith(
            "sample-ratio mismatch: observed v1 500, v2 500 against weights v1 90%, v2 10% ("
        )


def test_not_enough_data_says_how_many_samples() -> None:
    report = judge({"v1": 150.0, "v2": 20.0})
    assert report.condition is not None and report.condition.message == "170 samples in this step"
    assert report.analysis is None, "nothing was tested"
    assert SRM_MIN_TOTAL == 200


@pytest.mark.parametrize(
    ("method", "test"),
    [
        pytest.param(
            "ChiSquare", lambda obs: sample_ratio_mismatch(obs, SPLIT, threshold=0.001), id="chi-square"
        ),
        pytest.param(
            "Sequential",
            lambda obs: sequential_sample_ratio_mismatch(obs, SPLIT, threshold=0.001),
            id="sequential",
        ),
    ],
)
def test_the_analysis_shows_the_test_that_ran(method: str, test: Any) -> None:
    counts = {"v1": 880.0, "v2": 120.0}
    report = judge(counts, method=method)
    expected = test(counts)
    assert report.analysis == {
        "method": expected.method,
        "pValue": expected.p_value,
        "mismatch": False,
        "observed": {"v1": 880, "v2": 120},
        "expected": {"v1": 900.0, "v2": 100.0},
    }
    word = "chi-square" if method == "ChiSquare" else "always-valid"
    assert report.condition is not None and report.condition.message == f"{word} p = {expected.p_value:.3g}"


def test_a_variant_without_weight_is_left_out_of_the_test() -> None:
    """An eliminated challenger (weight 0) has no expected share: only the variants with traffic are tested."""
    report = judge({"v1": 450.0, "v2": 50.0, "v3": 0.0}, weights={"v1": 90, "v2": 10, "v3": 0})
    assert report.analysis is not None and set(report.analysis["observed"]) == {"v1", "v2"}
    assert report.ok


# ------------------------------------------------------------------ the running minimum of the sequential test


@pytest.mark.parametrize(
    ("running", "kept"),
    [
        pytest.param(
            SrmRunning(BASELINE, {"v1": 90.0, "v2": 10.0}, 1e-9), True, id="same-step-keeps-the-minimum"
        ),
        pytest.param(
            SrmRunning({"v1": 1.0, "v2": 1.0}, {"v1": 90.0, "v2": 10.0}, 1e-9), False, id="new-baseline"
        ),
        pytest.param(SrmRunning(BASELINE, {"v1": 50.0, "v2": 50.0}, 1e-9), False, id="new-weights"),
        pytest.param(None, False, id="first-look"),
    ],
)
def test_sequential_running_minimum(running: SrmRunning | None, kept: bool) -> None:
    """A p-value of 1e-9 earlier in this step stays (a mismatch once seen is not forgotten by later looks);
    a new baseline or new weights is a new step: the test starts over on fitting counts and matches."""
    report = judge(FITS, running=running)
    fresh = sequential_sample_ratio_mismatch(FITS, SPLIT, threshold=0.001).p_value
    assert fresh > 0.001
    assert report.running == SrmRunning(BASELINE, {"v1": 90.0, "v2": 10.0}, 1e-9 if kept else fresh)
    assert report.analysis is not None and report.analysis["pValue"] == (1e-9 if kept else fresh)
    assert report.ok is not kept


@pytest.mark.parametrize(
    ("counts", "arguments"),
    [
        pytest.param(FITS, {"method": "ChiSquare"}, id="chi-square-keeps-no-state"),
        pytest.param(FITS, {"in_shadow": True}, id="shadow"),
        pytest.param(FITS, {"baseline": None}, id="unsettled"),
        pytest.param({"v1": 10.0, "v2": 1.0}, {}, id="not-enough-data"),
    ],
)
def test_the_running_state_is_passed_through_when_not_tested_sequentially(
    counts: dict[str, float], arguments: dict[str, Any]
) -> None:
    assert judge(counts, running=OLD, **arguments).running is OLD
