"""What `kubectl arbiter` prints, rendered from a status the engine wrote and from hand-made ones."""

from __future__ import annotations

import datetime as dt
from typing import Any

from arbiter.cli import _plugin_view as view

NOW = dt.datetime(2026, 1, 1, 0, 12, tzinfo=dt.UTC)
SPEC: dict[str, Any] = {
    "mode": "Canary",
    "champion": {"name": "v1"},
    "challengers": [{"name": "v2"}, {"name": "v3"}],
    "steps": [{"weight": 20}, {"weight": 50}],
    "analysis": {
        "guardrails": [{"name": "latency", "max": 0.2, "failureLimit": 3}],
        "primary": {"name": "conversion", "direction": "Increase"},
        "test": {"alpha": 0.05},
    },
}
STATUS: dict[str, Any] = {
    "phase": "Progressing",
    "currentStep": 1,
    "weights": {"v1": 50, "v2": 25, "v3": 25},
    "startedAt": "2026-01-01T00:00:00Z",
    "stepStartedAt": "2026-01-01T00:10:00Z",
    "decision": {"outcome": "Hold", "reason": "step 1 held: 120s of 600s", "time": "2026-01-01T00:11:00Z"},
    "guardrails": [{"name": "latency", "variant": "v2", "value": 0.25, "breaches": 2, "breached": True}],
    "analysis": {
        "primary": {
            "metric": "conversion",
            "method": "Sequential",
            "results": [
                {
                    "variant": "v2",
                    "verdict": "Inconclusive",
                    "controlValue": 0.1,
                    "treatmentValue": 0.12,
                    "absoluteDifference": 0.02,
                    "relativeLift": 0.2,
                    "ciLow": -0.004,
                    "ciHigh": 0.044,
                    "pValue": 0.08,
                    "pValueAdjusted": 0.16,
                    "nControl": 1200,
                    "nTreatment": 600,
                },
                {"variant": "v3", "verdict": "Inconclusive", "relativeLift": -0.1, "pValue": 0.5},
            ],
            "variants": [
                {"variant": "v1", "n": 1200, "value": 0.1, "ciLow": 0.0845, "ciHigh": 0.118},
                {"variant": "v2", "n": 600, "value": 0.12, "ciLow": 0.097, "ciHigh": 0.147},
                {"variant": "v3", "n": 1, "value": 0.0},
            ],
        },
        "srm": {
            "method": "Sequential",
            "pValue": 0.4,
            "observed": {"v1": 1200, "v2": 600},
            "expected": {"v1": 1190.0},
        },
    },
}
BODY = {"metadata": {"name": "fraud", "namespace": "ml"}, "spec": SPEC, "status": STATUS}


def test_the_view_shows_every_number_the_status_holds() -> None:
    text = view.experiment_view(BODY, NOW)
    assert "Phase:      Progressing" in text
    assert "Step:       1 of 0-1 (50% to the challengers)" in text
    assert "v1 50%, v2 25%, v3 25%" in text
    # lift, difference, the CI at 95% and both p-values of each challenger
    assert "95% confidence" in text
    row = next(line for line in text.splitlines() if line.startswith("v2 ") and "+20.0%" in line)
    assert row.split() == ["v2", "+20.0%", "+0.02", "[-0.004,", "+0.044]", "0.08", "0.16", "Inconclusive"]
    # n per variant, from the primary results when there are no engine counters
    samples_row = next(line for line in text.splitlines() if line.startswith("v1 ") and "champion" in line)
    assert samples_row.split()[:4] == ["v1", "champion", "50%", "1200"]
    # each variant's own interval, at the test's level; none where the status has none
    assert "95% INTERVAL" in text
    assert samples_row.split()[-2:] == ["[0.0845,", "0.118]"]
    v3_row = next(line for line in text.splitlines() if line.startswith("v3 ") and "challenger" in line)
    assert v3_row.split()[-1] == "-"
    assert "latency    v2       0.25" in text and "2/3" in text and "BREACHED" in text
    assert "p = 0.4 (pauses below 0.001), observed v1 1200 (expected 1190), v2 600" in text
    assert "Decision:   Hold (60s ago): step 1 held: 120s of 600s" in text


def test_columns_line_up_whatever_the_length_of_the_names() -> None:
    long = {**BODY, "metadata": {"name": "a-very-long-experiment-name-" + "x" * 40, "namespace": "ml"}}
    text = view.list_table([long, BODY], show_namespace=True, wide=True, now=NOW)
    lines = text.splitlines()
    starts = [line.index("Canary") for line in lines[1:]]
    assert len(set(starts)) == 1 and lines[0].index("MODE") == starts[0]
    assert lines[0].split() == view_header(wide=True)
    assert lines[2].split()[6:10] == ["Hold", "v2", "+20.0%", "0.08"], "v2 leads: the higher lift"


def view_header(*, wide: bool) -> list[str]:
    return ["NAMESPACE", *(view.WIDE_HEADER if wide else view.LIST_HEADER)]


def test_the_stored_leading_summary_wins_over_recomputing_it() -> None:
    body = {**BODY, "status": {**STATUS, "leading": {"variant": "v3", "relativeLift": -0.1, "pValue": 0.5}}}
    assert view.leading_of(body)["variant"] == "v3"
    decrease = {
        **BODY,
        "spec": {**SPEC, "analysis": {**SPEC["analysis"], "primary": {"direction": "Decrease"}}},
    }
    assert view.leading_of(decrease)["variant"] == "v3", "for a metric that should go down, -10% leads"


def test_an_empty_status_renders() -> None:
    text = view.experiment_view({"metadata": {"name": "new", "namespace": "ml"}, "spec": SPEC}, NOW)
    assert "Phase:      -" in text and "not looked at it yet" in text
    assert view.list_table([{"metadata": {"name": "new"}}], show_namespace=False, wide=True, now=NOW)


def test_formatting_of_missing_and_odd_numbers() -> None:
    assert view.percent(None) == view.number(float("nan")) == view.signed("x") == view.count(True) == "-"
    assert view.age("2026-01-01T00:00:00Z", NOW) == "12m"
    assert view.age("2025-12-31T21:00:00Z", NOW) == "3h12m"
    assert view.age("garbage", NOW) == "-"


def test_a_dry_run_says_so_in_the_list_and_shows_what_it_would_have_done() -> None:
    spec = {**SPEC, "dryRun": True}
    status = {
        **STATUS,
        "phase": "Promoted",
        "weights": {"v1": 80, "v2": 10, "v3": 10},
        "dryRun": {"wouldRoute": {"v1": 0, "v2": 100, "v3": 0}, "wouldHave": "promoted v2"},
    }
    body = {"metadata": {"name": "watch", "namespace": "ml"}, "spec": spec, "status": status}
    listing = view.list_table([body], show_namespace=False, wide=False, now=NOW).splitlines()
    assert listing[1].split()[:3] == ["watch", "Canary", "(dry"]
    shown = view.experiment_view(body, NOW)
    assert "Mode:       Canary (dry run)" in shown
    assert "would route v1 0%, v2 100%, v3 0%" in shown and "would have promoted v2" in shown
    assert "Traffic:    v1 80%, v2 10%, v3 10%" in shown
    plain = {"metadata": {"name": "real", "namespace": "ml"}, "spec": SPEC, "status": STATUS}
    assert "dry run" not in view.experiment_view(plain, NOW).lower()


def test_gate_answers_are_listed_with_their_step_and_attempts() -> None:
    status = {
        **STATUS,
        "gates": [
            {"name": "smoke", "type": "preRollout", "passed": True, "message": "HTTP 200", "attempts": 1},
            {
                "name": "load",
                "type": "step",
                "step": 1,
                "passed": False,
                "message": "HTTP 503",
                "attempts": 4,
            },
        ],
    }
    shown = view.experiment_view({"metadata": {"name": "g"}, "spec": SPEC, "status": status}, NOW)
    assert "Gates:      smoke (preRollout): passed, HTTP 200 [1x]" in shown
    assert "            load (step, step 1): FAILED, HTTP 503 [4x]" in shown


def test_the_forecast_shows_in_the_wide_list_and_in_status() -> None:
    forecast = {
        "variant": "v2",
        "decisionIn": "~3h",
        "conditionalPower": 0.7034,
        "samplesControl": 21000.0,
        "samplesTreatment": 5250.0,
        "summary": "at this traffic a decision is expected in ~3h (if the true effect is the MDE); "
        "if the true lift is the observed one, P(win) = 0.70",
    }
    body = {**BODY, "status": {**STATUS, "forecast": forecast}}
    wide = view.list_table([body], show_namespace=False, wide=True, now=NOW).splitlines()
    cells = dict(zip(wide[0].split(), wide[1].split(), strict=True))
    assert (cells["DECIDE-IN"], cells["P(WIN)"]) == ("~3h", "0.7")
    text = view.experiment_view(body, NOW)
    assert (
        "Forecast (v2): at this traffic a decision is expected in ~3h (if the true effect is the MDE); if the "
        "true lift is the observed one, P(win) = 0.70 [5250 more v2 and 21000 more champion samples]"
    ) in text
    without = view.list_table([BODY], show_namespace=False, wide=True, now=NOW).splitlines()
    assert dict(zip(without[0].split(), without[1].split(), strict=True))["DECIDE-IN"] == "-"
    assert "Forecast" not in view.experiment_view(BODY, NOW)
