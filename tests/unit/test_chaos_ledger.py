"""The chaos ledger sums runs into the summary `make chaos` prints."""

from __future__ import annotations

from pathlib import Path

import pytest

from chaos_ledger import ChaosRun, record_run, summarize


def test_summary_of_an_absent_ledger_has_zero_runs(tmp_path: Path) -> None:
    summary = summarize(tmp_path / "none.jsonl")
    assert summary["runs"] == 0
    assert summary["handover_seconds_max"] is None
    assert summary["max_divergence_ticks"] == 0


def test_runs_are_counted_by_fault_and_worst_cases_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = tmp_path / "runs.jsonl"
    monkeypatch.setenv("ARBITER_CHAOS_LOG", str(ledger))
    record_run(ChaosRun("operator_sigkill", outcome_differed=False, divergence_ticks=1))
    record_run(ChaosRun("operator_sigkill", outcome_differed=True, steps_lost=1, divergence_ticks=3))
    record_run(ChaosRun("leader_handover", outcome_differed=False, steps_doubled=2, handover_seconds=4.25))
    summary = summarize(ledger)
    assert summary == {
        "runs": 3,
        "faults": {"leader_handover": 1, "operator_sigkill": 2},
        "outcomes_differed": 1,
        "steps_lost": 1,
        "steps_doubled": 2,
        "max_divergence_ticks": 3,
        "handover_seconds_max": 4.25,
    }
