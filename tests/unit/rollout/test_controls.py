"""The judges of what outranks the statistics (rows 0-2 of docs/rollout.md), each asked directly."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import pytest

from arbiter.api import ModelExperimentSpec, Phase, parse_spec
from arbiter.rollout.actions import DecisionOutcome, End, Pause, PauseReason, Unpause
from arbiter.rollout.controls import (
    Controls,
    Resume,
    Retry,
    identity_hash,
    judge_controls,
    judge_identity,
    judge_spec_pause,
    judge_terminal_controls,
    judge_timeout,
)
from arbiter.rollout.state import EngineState
from arbiter.rollout.view import TickView

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

BASE: dict[str, Any] = {
    "mode": "Canary",
    "champion": {"name": "v1", "deployment": "d1", "service": "s1"},
    "challengers": [{"name": "v2", "deployment": "d2", "service": "s2"}],
    "routing": {"provider": "Router", "router": {"configMap": "routes"}},
    "steps": [{"weight": 10, "minDuration": "60s"}, {"weight": 50}],
    "analysis": {
        "guardrails": [{"name": "latency", "query": "q", "max": 0.2}],
        "primary": {
            "name": "conversion",
            "type": "Proportion",
            "successes": "s",
            "trials": "t",
            "minimumDetectableEffect": 0.05,
        },
    },
}


def make_spec(**changes: Any) -> ModelExperimentSpec:
    """BASE with dotted (``a__b``) changes; None deletes the key."""
    raw = copy.deepcopy(BASE)
    for path, value in changes.items():
        *parents, last = path.split("__")
        node = raw
        for key in parents:
            node = node.setdefault(key, {})
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return parse_spec(raw)


def view(phase: Phase = Phase.PROGRESSING, **fields: Any) -> TickView:
    return TickView(now=T0, phase=phase, **fields)


THREE = [
    {"name": "v2", "deployment": "d2", "service": "s2"},
    {"name": "v3", "deployment": "d3", "service": "s3"},
]

# ------------------------------------------------------------------ annotations


@pytest.mark.parametrize(
    ("annotations", "expected"),
    [
        pytest.param(None, {}, id="no-annotations"),
        pytest.param({"arbiter.dev/promote": "1"}, {"promote": "1"}, id="one"),
        pytest.param(
            {"arbiter.dev/abort": "a", "arbiter.dev/retry": "r", "arbiter.dev/resume": "s"},
            {"abort": "a", "retry": "r", "resume": "s"},
            id="several",
        ),
        pytest.param(
            {"arbiter.dev/pause": "1", "example.com/promote": "1", "promote": "1", "arbiter.dev/promote": ""},
            {"promote": ""},
            id="only-arbiter-actions-even-empty-values",
        ),
    ],
)
def test_from_annotations_picks_the_control_annotations(
    annotations: dict[str, str] | None, expected: dict[str, str]
) -> None:
    assert dict(Controls.from_annotations(annotations).values) == expected


@pytest.mark.parametrize(
    ("values", "handled", "pending"),
    [
        pytest.param({"abort": "1"}, {}, {"abort": "1"}, id="never-handled"),
        pytest.param({"abort": "1"}, {"abort": "1"}, {}, id="same-value-handled"),
        pytest.param({"abort": "2"}, {"abort": "1"}, {"abort": "2"}, id="new-value"),
        pytest.param({"abort": "1", "retry": "x"}, {"abort": "1"}, {"retry": "x"}, id="per-action"),
        pytest.param({}, {"abort": "1"}, {}, id="handled-but-gone"),
    ],
)
def test_pending_is_what_has_a_new_value(
    values: dict[str, str], handled: dict[str, str], pending: dict[str, str]
) -> None:
    assert Controls(values).pending(handled) == pending


# ------------------------------------------------------------------ identity


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"mode": "ABTest"}, id="mode"),
        pytest.param(
            {"challengers": [{"name": "v3", "deployment": "d2", "service": "s2"}]}, id="variant-name"
        ),
        pytest.param({"challengers": THREE}, id="another-challenger"),
        pytest.param({"analysis__primary__minimumDetectableEffect": 0.1}, id="primary-mde"),
        pytest.param({"analysis__primary__trials": "other"}, id="primary-query"),
        pytest.param({"analysis__primary__direction": "Decrease"}, id="primary-direction"),
        pytest.param({"analysis__primary": None}, id="primary-removed"),
        pytest.param({"analysis__test": {"method": "FixedHorizon"}}, id="test-method"),
        pytest.param({"analysis__sampleCount": "samples"}, id="sample-count"),
    ],
)
def test_identity_changes_with_what_defines_the_experiment(changes: dict[str, Any]) -> None:
    assert identity_hash(make_spec(**changes)) != identity_hash(make_spec())


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"steps": [{"weight": 5}, {"weight": 20}, {"weight": 80}]}, id="steps"),
        pytest.param(
            {"analysis__guardrails": [{"name": "latency", "query": "q", "max": 0.5}]}, id="threshold"
        ),
        pytest.param({"analysis__guardrails": []}, id="guardrails"),
        pytest.param({"analysis__interval": "1m"}, id="interval"),
        pytest.param({"analysis__test": {"alpha": 0.01}}, id="alpha"),
        pytest.param({"analysis__sampleRatioMismatch": {"method": "ChiSquare"}}, id="srm-method"),
        pytest.param(
            {
                "analysis__secondary": [
                    {
                        "name": "m",
                        "type": "Mean",
                        "count": "c",
                        "sum": "s",
                        "sumSquares": "q",
                        "minimumDetectableEffect": 0.1,
                    }
                ]
            },
            id="secondary",
        ),
        pytest.param({"decision": {"onWin": "Pause", "maxDuration": "2h"}}, id="decision-policy"),
        pytest.param({"paused": True}, id="paused"),
        pytest.param({"champion": {"name": "v1", "deployment": "other", "service": "s1"}}, id="deployment"),
    ],
)
def test_identity_ignores_what_takes_effect_without_a_restart(changes: dict[str, Any]) -> None:
    assert identity_hash(make_spec(**changes)) == identity_hash(make_spec())


OTHER = identity_hash(make_spec(mode="ABTest"))


@pytest.mark.parametrize(
    ("stored", "phase", "restart"),
    [
        pytest.param(None, Phase.PROGRESSING, False, id="first-tick"),
        pytest.param("same", Phase.PROGRESSING, False, id="unchanged"),
        pytest.param(OTHER, Phase.PROGRESSING, True, id="changed-progressing"),
        pytest.param(OTHER, Phase.PAUSED, True, id="changed-paused"),
        pytest.param(OTHER, Phase.PROMOTED, False, id="changed-after-promotion"),
        pytest.param(OTHER, Phase.ROLLED_BACK, False, id="changed-after-rollback"),
        pytest.param(OTHER, Phase.CONCLUDED, False, id="changed-after-conclusion"),
    ],
)
def test_judge_identity(stored: str | None, phase: Phase, restart: bool) -> None:
    spec = make_spec()
    current = identity_hash(spec)
    report = judge_identity(spec, EngineState(identity=current if stored == "same" else stored), phase)
    assert report.identity == current
    assert report.restart is restart


# ------------------------------------------------------------------ manual controls while running


def ended(phase: Phase, outcome: DecisionOutcome, winner: str) -> Any:
    def check(action: Any) -> None:
        assert isinstance(action, End)
        assert (action.phase, action.outcome, action.winner) == (phase, outcome, winner)

    return check


def resumed(acknowledge: int | None) -> Any:
    def check(action: Any) -> None:
        assert isinstance(action, Resume)
        assert action.acknowledge_srm_step == acknowledge
        assert "arbiter.dev/resume" in action.reason

    return check


def nothing(action: Any) -> None:
    assert action is None


ONE = make_spec()
TWO = make_spec(challengers=THREE)
PAUSED_SRM = {"phase": Phase.PAUSED, "pause_reason": PauseReason.SRM, "current_step": 2}

CONTROL_CASES = [
    # (spec, view fields, annotation values, handled before, expected action check, ignored substrings)
    pytest.param(ONE, {}, {}, {}, nothing, [], id="nothing-asked"),
    pytest.param(
        ONE, {}, {"abort": "1"}, {}, ended(Phase.ROLLED_BACK, DecisionOutcome.ROLLBACK, "v1"), [], id="abort"
    ),
    pytest.param(
        ONE,
        {},
        {"abort": "1", "promote": "1"},
        {},
        ended(Phase.ROLLED_BACK, DecisionOutcome.ROLLBACK, "v1"),
        [],
        id="abort-outranks-promote",
    ),
    pytest.param(ONE, {}, {"abort": "1"}, {"abort": "1"}, nothing, [], id="abort-already-handled"),
    pytest.param(
        ONE,
        {},
        {"promote": "now"},
        {},
        ended(Phase.PROMOTED, DecisionOutcome.PROMOTE, "v2"),
        [],
        id="promote-the-only-challenger",
    ),
    pytest.param(
        TWO,
        {},
        {"promote": "v3"},
        {},
        ended(Phase.PROMOTED, DecisionOutcome.PROMOTE, "v3"),
        [],
        id="promote-named-challenger",
    ),
    pytest.param(
        TWO,
        {},
        {"promote": "now"},
        {},
        nothing,
        ["promote=now does not name a challenger (v2, v3)"],
        id="promote-unnamed-among-several",
    ),
    pytest.param(
        TWO,
        {},
        {"promote": "v1"},
        {},
        nothing,
        ["does not name a challenger"],
        id="promote-the-champion",
    ),
    pytest.param(
        ONE,
        {"phase": Phase.PAUSED, "pause_reason": PauseReason.METRICS, "current_step": 1},
        {"resume": "1"},
        {},
        resumed(None),
        [],
        id="resume-metrics-pause",
    ),
    pytest.param(ONE, PAUSED_SRM, {"resume": "1"}, {}, resumed(2), [], id="resume-srm-acknowledges-step"),
    pytest.param(
        ONE,
        {"phase": Phase.PAUSED, "pause_reason": PauseReason.TIMEOUT, "current_step": 1},
        {"resume": "1"},
        {},
        resumed(None),
        [],
        id="resume-timeout-pause",
    ),
    pytest.param(
        ONE,
        {"phase": Phase.PAUSED, "pause_reason": PauseReason.AWAITING_PROMOTION},
        {"promote": "yes"},
        {},
        ended(Phase.PROMOTED, DecisionOutcome.PROMOTE, "v2"),
        [],
        id="promote-when-awaiting-promotion",
    ),
    pytest.param(
        ONE,
        {"phase": Phase.PAUSED, "pause_reason": PauseReason.SPEC},
        {"abort": "1"},
        {},
        ended(Phase.ROLLED_BACK, DecisionOutcome.ROLLBACK, "v1"),
        [],
        id="abort-even-under-spec-paused",
    ),
    pytest.param(
        ONE,
        {"phase": Phase.PAUSED, "pause_reason": PauseReason.SPEC},
        {"resume": "1"},
        {},
        nothing,
        ["resume ignored: spec.paused is true"],
        id="resume-under-spec-paused",
    ),
    pytest.param(ONE, {}, {"resume": "1"}, {}, nothing, [], id="resume-while-progressing"),
    pytest.param(
        ONE,
        {},
        {"retry": "1"},
        {},
        nothing,
        ["retry only applies after a rollback or conclusion"],
        id="retry-while-running",
    ),
    pytest.param(
        TWO,
        PAUSED_SRM,
        {"promote": "x", "resume": "1"},
        {},
        resumed(2),
        ["does not name a challenger"],
        id="unnamed-promote-ignored-then-resume",
    ),
    pytest.param(
        TWO,
        {},
        {"promote": "x", "retry": "1"},
        {},
        nothing,
        ["does not name a challenger", "retry only applies"],
        id="ignored-in-order",
    ),
]


@pytest.mark.parametrize(("spec", "fields", "values", "handled", "check", "ignored"), CONTROL_CASES)
def test_judge_controls(
    spec: ModelExperimentSpec,
    fields: dict[str, Any],
    values: dict[str, str],
    handled: dict[str, str],
    check: Any,
    ignored: list[str],
) -> None:
    report = judge_controls(spec, view(**{**fields, "handled_actions": handled}), Controls(values))
    check(report.action)
    assert len(report.ignored) == len(ignored)
    for message, expected in zip(report.ignored, ignored, strict=True):
        assert expected in message
    new = Controls(values).pending(handled)
    # Every new value is recorded as handled (so it fires once), and nothing else changes.
    assert report.handled == ({**handled, **new} if new else None)


# ------------------------------------------------------------------ after the end


@pytest.mark.parametrize(
    ("phase", "values", "retry", "ignored"),
    [
        pytest.param(Phase.ROLLED_BACK, {"retry": "1"}, True, None, id="retry-after-rollback"),
        pytest.param(Phase.CONCLUDED, {"retry": "1"}, True, None, id="retry-after-conclusion"),
        pytest.param(
            Phase.PROMOTED,
            {"retry": "1"},
            False,
            "retry ignored: the experiment is Promoted",
            id="retry-after-promotion",
        ),
        pytest.param(
            Phase.ROLLED_BACK,
            {"resume": "1", "abort": "2"},
            False,
            "abort, resume ignored: the experiment is RolledBack",
            id="other-actions-sorted",
        ),
        pytest.param(Phase.CONCLUDED, {}, False, None, id="nothing-asked"),
    ],
)
def test_judge_terminal_controls(
    phase: Phase, values: dict[str, str], retry: bool, ignored: str | None
) -> None:
    report = judge_terminal_controls(view(phase), Controls(values))
    assert isinstance(report.action, Retry) is retry
    if retry:
        assert report.action is not None and "starting over at step 0" in report.action.reason
    assert report.ignored == ((ignored,) if ignored else ())
    assert report.handled == (dict(values) if values else None)


def test_a_handled_retry_does_not_fire_again() -> None:
    report = judge_terminal_controls(
        view(Phase.ROLLED_BACK, handled_actions={"retry": "1"}), Controls({"retry": "1"})
    )
    assert report.action is None and report.handled is None and report.ignored == ()


# ------------------------------------------------------------------ spec.paused and maxDuration


@pytest.mark.parametrize(
    ("paused", "fields", "over", "action"),
    [
        pytest.param(True, {}, True, Pause(PauseReason.SPEC, "paused by spec.paused"), id="pauses"),
        pytest.param(
            True, {"phase": Phase.PAUSED, "pause_reason": PauseReason.SPEC}, True, None, id="stays-paused"
        ),
        pytest.param(
            True,
            {"phase": Phase.PAUSED, "pause_reason": PauseReason.SRM},
            True,
            Pause(PauseReason.SPEC, "paused by spec.paused"),
            id="takes-over-another-pause",
        ),
        pytest.param(
            False,
            {"phase": Phase.PAUSED, "pause_reason": PauseReason.SPEC},
            True,
            Unpause("spec.paused is false again"),
            id="resumes",
        ),
        pytest.param(
            False,
            {"phase": Phase.PAUSED, "pause_reason": PauseReason.SRM},
            False,
            None,
            id="leaves-other-pauses-alone",
        ),
        pytest.param(False, {}, False, None, id="not-paused"),
    ],
)
def test_judge_spec_pause(paused: bool, fields: dict[str, Any], over: bool, action: Any) -> None:
    report = judge_spec_pause(make_spec(paused=paused), view(**fields))
    assert (report.over, report.action) == (over, action)


HOUR = dt.timedelta(hours=1)


@pytest.mark.parametrize(
    ("on_timeout", "started", "fields", "over", "kind"),
    [
        pytest.param("KeepChampion", None, {}, False, None, id="not-started"),
        pytest.param(
            "KeepChampion", T0 - HOUR + dt.timedelta(seconds=1), {}, False, None, id="one-second-left"
        ),
        pytest.param("KeepChampion", T0 - HOUR, {}, True, End, id="keep-champion-at-the-limit"),
        pytest.param("Pause", T0 - 2 * HOUR, {}, True, Pause, id="pause"),
        pytest.param(
            "Pause",
            T0 - 2 * HOUR,
            {"phase": Phase.PAUSED, "pause_reason": PauseReason.TIMEOUT},
            True,
            None,
            id="already-paused-for-timeout",
        ),
        pytest.param(
            "Pause",
            T0 - 2 * HOUR,
            {"phase": Phase.PAUSED, "pause_reason": PauseReason.METRICS},
            True,
            Pause,
            id="paused-for-another-reason",
        ),
    ],
)
def test_judge_timeout(
    on_timeout: str, started: dt.datetime | None, fields: dict[str, Any], over: bool, kind: type | None
) -> None:
    spec = make_spec(decision={"maxDuration": "1h", "onTimeout": on_timeout})
    report = judge_timeout(spec, view(started_at=started, **fields))
    assert report.over is over
    if kind is None:
        assert report.action is None
        return
    assert isinstance(report.action, kind)
    assert "maxDuration 1h reached without a decision" in report.action.reason
    if isinstance(report.action, End):
        assert (report.action.phase, report.action.outcome, report.action.winner) == (
            Phase.CONCLUDED,
            DecisionOutcome.CONCLUDE,
            "v1",
        )
    if isinstance(report.action, Pause):
        assert report.action.reason_code is PauseReason.TIMEOUT
