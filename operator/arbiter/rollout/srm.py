"""Judge the split: sample-ratio mismatch. Order of judgement row 5 (docs/rollout.md).

A broken split makes every other number untrustworthy, so a mismatch pauses the experiment until a
human resumes it (which acknowledges the mismatch for that step). The default test is anytime-valid,
so checking every tick stays honest; its running p-value is kept per step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from arbiter.api import ModelExperimentSpec, Phase
from arbiter.api.v1alpha1 import SampleRatioMismatchMethod
from arbiter.rollout.actions import Pause, PauseReason
from arbiter.rollout.state import SrmRunning
from arbiter.rollout.view import ConditionReport, TickView
from arbiter.stats import SRMResult, sample_ratio_mismatch, sequential_sample_ratio_mismatch

#: Minimum units in a step before the sample-ratio check is allowed to speak.
SRM_MIN_TOTAL = 200


@dataclass(frozen=True)
class SrmReport:
    """The split's verdict: ``ok`` is False when the tick must hold (a mismatch, or paused for one).

    Attributes:
        ok: the split can be trusted this tick.
        condition: the SampleRatioMismatch condition (None: left as it is, the step has not settled).
        analysis: ``status.analysis.srm`` (None: not tested this tick).
        running: the anytime-valid test's running state after this tick.
        action: a pause for a new mismatch.
    """

    ok: bool = True
    condition: ConditionReport | None = None
    analysis: dict[str, Any] | None = None
    running: SrmRunning | None = None
    action: Pause | None = None


def _condition(ok: bool | None, reason: str, message: str) -> ConditionReport:
    return ConditionReport("SampleRatioMismatch", ok, reason, message)


def judge_srm(
    spec: ModelExperimentSpec,
    view: TickView,
    *,
    in_shadow: bool,
    step_baseline: Mapping[str, float] | None,
    step_counts: Mapping[str, float],
    acknowledged_step: int | None,
    running: SrmRunning | None,
) -> SrmReport:
    """Test this step's split of samples against its weights.

    Args:
        spec: the experiment.
        view: the status as it stands.
        in_shadow: the experiment mirrors (no split to check).
        step_baseline: the samples when the step's split was verified in place (None: not yet).
        step_counts: samples per variant since that baseline.
        acknowledged_step: the step whose mismatch a human resumed.
        running: the sequential test's running state.
    """
    if in_shadow or view.challenger_weight == 0:
        return SrmReport(
            condition=_condition(False, "NotApplicable", "no split to check yet"), running=running
        )
    if step_baseline is None:
        return SrmReport(running=running)  # the split of this step has not settled yet
    variants = [v.name for v in spec.variants]
    total = sum(step_counts.values())
    if set(step_counts) != set(variants) or total < SRM_MIN_TOTAL:
        condition = _condition(None, "NotEnoughData", f"{int(total)} samples in this step")
        return SrmReport(condition=condition, running=running)
    weights = view.weights or {}
    expected = {v: float(weights.get(v, 0)) for v in variants if weights.get(v, 0) > 0}
    result, running = _test(spec, {v: step_counts[v] for v in expected}, expected, step_baseline, running)
    method = "chi-square" if result.method == SampleRatioMismatchMethod.CHI_SQUARE else "always-valid"
    p_text = f"{method} p = {result.p_value:.3g}"
    analysis = {
        "method": result.method,
        "pValue": result.p_value,
        "mismatch": bool(result.mismatch),
        "observed": {v: int(n) for v, n in result.observed.items()} if result.observed else {},
        "expected": {v: round(float(n), 1) for v, n in result.expected.items()} if result.expected else {},
    }
    if result.error:
        return SrmReport(True, _condition(None, "Error", result.error), analysis, running)
    acknowledged = acknowledged_step == view.current_step
    paused_for_srm = view.phase is Phase.PAUSED and view.pause_reason == PauseReason.SRM
    if paused_for_srm and not result.mismatch:
        # The pause stands until a human resumes it, so the condition keeps saying why.
        message = f"paused on a mismatch in this step; now {p_text}"
        return SrmReport(False, _condition(True, "PausedUntilResumed", message), analysis, running)
    if result.mismatch and not acknowledged:
        shares = ", ".join(f"{v} {int(step_counts[v])}" for v in expected)
        reason = (
            f"sample-ratio mismatch: observed {shares} against weights "
            f"{', '.join(f'{v} {w:g}%' for v, w in expected.items())} ({p_text})"
        )
        pause = None if view.phase is Phase.PAUSED else Pause(PauseReason.SRM, reason)
        return SrmReport(False, _condition(True, "Mismatch", reason), analysis, running, pause)
    if result.mismatch:
        condition = _condition(False, "Acknowledged", f"mismatch in this step resumed by hand ({p_text})")
    else:
        condition = _condition(False, "Matches", p_text)
    return SrmReport(True, condition, analysis, running)


def _test(
    spec: ModelExperimentSpec,
    observed: dict[str, float],
    weights: dict[str, float],
    baseline: Mapping[str, float],
    running: SrmRunning | None,
) -> tuple[SRMResult, SrmRunning | None]:
    """Test with the configured method; the sequential p-value runs over one step's counts.

    It starts over when the step's baseline or weights change.
    """
    config = spec.analysis.sample_ratio_mismatch
    if config.method is SampleRatioMismatchMethod.CHI_SQUARE:
        return sample_ratio_mismatch(observed, weights, threshold=config.p_value_threshold), running
    same_counts = running is not None and running.baseline == baseline and running.weights == weights
    result = sequential_sample_ratio_mismatch(
        observed,
        weights,
        threshold=config.p_value_threshold,
        previous_p_value=running.p_value if same_counts and running is not None else None,
    )
    if result.error is None:
        running = SrmRunning(dict(baseline), weights, result.p_value)
    return result, running
