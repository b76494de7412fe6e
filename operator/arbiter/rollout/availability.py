"""Judge whether this tick's metrics could be read. Order of judgement row 3 (docs/rollout.md).

Errors are counted; after ``consecutiveErrorLimit`` ticks the experiment pauses and names the failing
query, and it resumes by itself when data returns. Nothing below acts on a tick whose data could not
be read. No data (a series that does not exist yet) is not an error: it is simply inconclusive.
"""

from __future__ import annotations

from dataclasses import dataclass

from arbiter.api import ModelExperimentSpec, Phase
from arbiter.rollout.actions import Hold, Pause, PauseReason, Unpause
from arbiter.rollout.observations import Observations
from arbiter.rollout.view import ConditionReport, TickView


@dataclass(frozen=True)
class AvailabilityReport:
    """Whether every query answered, the error streak, and what follows from it."""

    available: bool
    consecutive_errors: int
    condition: ConditionReport
    action: Hold | Pause | Unpause | None = None


def judge_availability(
    spec: ModelExperimentSpec, view: TickView, observations: Observations, consecutive_errors: int
) -> AvailabilityReport:
    """Count failing ticks; pause at the limit; resume when every query answers again.

    Args:
        spec: the experiment.
        view: the status as it stands.
        observations: what was read this tick.
        consecutive_errors: the streak before this tick.
    """
    errors = observations.errors()
    limit = spec.analysis.consecutive_error_limit
    if errors:
        count = consecutive_errors + 1
        message = f"{count} consecutive tick(s) with failing queries: {errors[0]}"
        if len(errors) > 1:
            message += f" (and {len(errors) - 1} more)"
        condition = ConditionReport("MetricsAvailable", False, "QueryFailed", message)
        action: Hold | Pause | None = None
        if count >= limit and view.phase is not Phase.PAUSED:
            action = Pause(PauseReason.METRICS, f"metrics unavailable for {count} ticks: {errors[0]}")
        elif count < limit:
            action = Hold(f"inconclusive: {message}; nothing is decided on unreadable data")
        return AvailabilityReport(False, count, condition, action)
    condition = ConditionReport("MetricsAvailable", True, "QueriesSucceeded", "every query returned")
    resumes = view.phase is Phase.PAUSED and view.pause_reason == PauseReason.METRICS
    return AvailabilityReport(True, 0, condition, Unpause("metrics are readable again") if resumes else None)
