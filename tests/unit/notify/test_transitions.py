"""Transitions are found from the status a tick read and the status it wrote, once each."""

from __future__ import annotations

from typing import Any

import pytest

from arbiter.notify.transitions import Kind, Severity, detect, state_of

PROGRESSING_0 = {"phase": "Progressing", "currentStep": 0, "message": "step 0"}


def status(phase: str, **fields: Any) -> dict[str, Any]:
    return {"phase": phase, **fields}


@pytest.mark.parametrize(
    ("before", "after", "kind", "severity"),
    [
        ({}, status("Progressing", currentStep=0, message="starting"), Kind.STARTED, Severity.INFO),
        (status("Pending"), status("Progressing", currentStep=0), Kind.STARTED, Severity.INFO),
        (status("RolledBack"), status("Progressing", currentStep=0), Kind.STARTED, Severity.INFO),
        (PROGRESSING_0, status("Progressing", currentStep=1), Kind.ADVANCED, Severity.INFO),
        (PROGRESSING_0, status("Promoted"), Kind.PROMOTED, Severity.INFO),
        (PROGRESSING_0, status("RolledBack"), Kind.ROLLED_BACK, Severity.CRITICAL),
        (PROGRESSING_0, status("Concluded"), Kind.CONCLUDED, Severity.INFO),
        (PROGRESSING_0, status("Paused", pauseReason="Spec"), Kind.PAUSED, Severity.INFO),
        (PROGRESSING_0, status("Paused", pauseReason="Loss"), Kind.PAUSED, Severity.CRITICAL),
        (PROGRESSING_0, status("Paused", pauseReason="AwaitingPromotion"), Kind.PAUSED, Severity.WARNING),
        (
            PROGRESSING_0,
            status("Paused", pauseReason="SampleRatioMismatch"),
            Kind.SAMPLE_RATIO_MISMATCH,
            Severity.CRITICAL,
        ),
        (
            PROGRESSING_0,
            status("Paused", pauseReason="MetricsUnavailable"),
            Kind.METRICS_UNAVAILABLE,
            Severity.WARNING,
        ),
        (status("Paused", pauseReason="Spec"), PROGRESSING_0, Kind.RESUMED, Severity.INFO),
        (
            status("Paused", pauseReason="MetricsUnavailable"),
            PROGRESSING_0,
            Kind.METRICS_RECOVERED,
            Severity.INFO,
        ),
        (status("Pending"), status("Failed", message="invalid spec: x"), Kind.FAILED, Severity.WARNING),
    ],
)
def test_each_transition_is_found_with_its_severity(
    before: dict[str, Any], after: dict[str, Any], kind: Kind, severity: Severity
) -> None:
    (notice,) = detect(before, after)
    assert (notice.kind, notice.severity) == (kind, severity)


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (PROGRESSING_0, {**PROGRESSING_0, "decision": {"outcome": "Hold", "reason": "p=0.3"}}),
        (status("Paused", pauseReason="Spec"), status("Paused", pauseReason="Spec", message="still")),
        (status("Promoted"), status("Promoted", message="again")),
        (status("Pending"), status("Pending", message="waiting for workloads")),
        ({}, status("Pending")),
        # A restarted operator reads back what it wrote: nothing is new.
        (status("RolledBack", message="x"), status("RolledBack", message="x")),
    ],
)
def test_a_write_that_changes_no_phase_or_step_tells_nobody(
    before: dict[str, Any], after: dict[str, Any]
) -> None:
    assert detect(before, after) == []


def test_the_reason_is_the_engines_message_with_its_numbers() -> None:
    after = status("RolledBack", message="guardrail p95 breached: 0.31 > 0.2", decision={"reason": "old"})
    (notice,) = detect(PROGRESSING_0, after)
    assert notice.reason == "guardrail p95 breached: 0.31 > 0.2"


def test_leaving_a_state_names_it_so_its_alert_can_be_resolved() -> None:
    paused = status("Paused", pauseReason="MetricsUnavailable")
    (recovered,) = detect(paused, PROGRESSING_0)
    assert recovered.ended is Kind.METRICS_UNAVAILABLE and recovered.ended_severity is Severity.WARNING
    (rolled_back,) = detect(status("Paused", pauseReason="Loss"), status("RolledBack"))
    assert rolled_back.ended is Kind.PAUSED and rolled_back.ended_severity is Severity.CRITICAL
    (started,) = detect(status("Pending"), PROGRESSING_0)
    assert started.ended is None


def test_a_pause_for_another_reason_is_a_new_pause_that_ends_the_old_one() -> None:
    (notice,) = detect(status("Paused", pauseReason="Spec"), status("Paused", pauseReason="Loss"))
    assert notice.kind is Kind.PAUSED and notice.pause_reason == "Loss"
    assert notice.ended is Kind.PAUSED and notice.ended_severity is Severity.INFO
    (srm,) = detect(status("Paused", pauseReason="Spec"), status("Paused", pauseReason="SampleRatioMismatch"))
    assert srm.kind is Kind.SAMPLE_RATIO_MISMATCH and srm.ended is Kind.PAUSED


def test_state_of() -> None:
    assert state_of(status("Paused", pauseReason="SampleRatioMismatch")) is Kind.SAMPLE_RATIO_MISMATCH
    assert state_of(status("Paused", pauseReason="Timeout")) is Kind.PAUSED
    assert state_of(status("Failed")) is Kind.FAILED
    assert state_of(PROGRESSING_0) is None
