"""Guardrail harm test: an always-valid, one-sided test that the treatment is worse than allowed.

Harm is the difference in the bad direction, ``harm = treatment - control`` when higher is worse
(error rate, latency) or ``control - treatment`` when lower is worse (accuracy). With a non-inferiority
margin ``m`` (absolute, e.g. 0.005 for "error rate at most control + 0.5 points") the test is

    H0: harm <= m   against   H1: harm > m,

run as a one-sided mSPRT (half-normal mixture) so that it may be checked at every tick. It is a safety
check, not a claim of success, so it is deliberately not corrected for multiplicity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from arbiter.stats._types import Alternative, JsonResult
from arbiter.stats.fixed import mean_variance
from arbiter.stats.sequential import SequentialState, msprt_one_sided_z_boundary, msprt_p_value
from arbiter.stats.sufficient import MeanStats, ProportionStats, SufficientStats


@dataclass(frozen=True)
class GuardrailResult(JsonResult):
    """One look of the harm test.

    Attributes:
        harm_detected: the always-valid p-value is at most alpha (equivalently ``bound > margin``).
        p_value: always-valid p-value for ``H0: harm <= margin`` (running minimum over looks).
        bound: the always-valid lower confidence bound on harm (running maximum over looks).
        harm: the estimated harm now (positive = treatment worse).
        limit: the worst treatment value the margin allows at the control's current value.
        state: pass it back at the next look.
    """

    harm_detected: bool
    p_value: float
    p_value_this_look: float
    bound: float
    harm: float
    margin: float
    higher_is_worse: bool
    control_value: float
    treatment_value: float
    limit: float
    n_control: float
    n_treatment: float
    alpha: float
    mixing_variance: float
    looks: int
    state: SequentialState
    error: str | None = None


def guardrail_harm_test(
    control: SufficientStats,
    treatment: SufficientStats,
    margin: float = 0.0,
    higher_is_worse: bool = True,
    alpha: float = 0.05,
    mixing_sd: float | None = None,
    state: SequentialState | None = None,
) -> GuardrailResult:
    """Is the treatment worse than control by more than ``margin``? (always valid; one look).

    Args:
        control, treatment: cumulative statistics (both proportions or both means).
        margin: the allowed absolute degradation (>= 0), in the metric's units.
        higher_is_worse: True for error rates and latencies, False for accuracy or revenue.
        alpha: the level; harm is declared when the always-valid p-value reaches it.
        mixing_sd: the standard deviation of the mixing distribution over harm beyond the margin. Default:
            the margin itself, or a tenth of the control's value when the margin is zero. Fixed at the
            first look (kept in the state) so it never drifts with the data.
        state: what the previous look returned.
    """
    state = state or SequentialState()
    nan = math.nan
    sign = 1.0 if higher_is_worse else -1.0
    control_value = control.mean if control.n > 0 else nan
    treatment_value = treatment.mean if treatment.n > 0 else nan
    tau2 = state.mixing_variance

    def result(
        p_now: float, harm: float, new_state: SequentialState, mixing: float, error: str | None = None
    ) -> GuardrailResult:
        bound = new_state.ci_low if new_state.ci_low is not None else -math.inf
        return GuardrailResult(
            harm_detected=error is None and new_state.min_p_value <= alpha,
            p_value=new_state.min_p_value,
            p_value_this_look=p_now,
            bound=bound,
            harm=harm,
            margin=margin,
            higher_is_worse=higher_is_worse,
            control_value=control_value,
            treatment_value=treatment_value,
            limit=control_value + sign * margin,
            n_control=control.n,
            n_treatment=treatment.n,
            alpha=alpha,
            mixing_variance=mixing,
            looks=new_state.looks,
            state=new_state,
            error=error,
        )

    def failed(message: str) -> GuardrailResult:
        return result(nan, nan, state, nan if tau2 is None else tau2, message)

    if not (0.0 < alpha < 1.0):
        return failed(f"alpha must be between 0 and 1, got {alpha!r}")
    if not (math.isfinite(margin) and margin >= 0):
        return failed(f"the margin must be a non-negative number, got {margin!r}")
    if type(control) is not type(treatment) or not isinstance(control, ProportionStats | MeanStats):
        return failed("control and treatment statistics are of different kinds")
    error = control.validation_error() or treatment.validation_error()
    if error:
        return failed(error)
    minimum = 1 if isinstance(control, ProportionStats) else 2
    if control.n < minimum or treatment.n < minimum:
        return failed(f"each variant needs at least {minimum} observation(s)")
    if tau2 is None:
        if mixing_sd is not None:
            tau2 = mixing_sd**2
        elif margin > 0:
            tau2 = margin**2
        elif control_value != 0:
            tau2 = (0.1 * control_value) ** 2
    if tau2 is None or not (math.isfinite(tau2) and tau2 > 0):
        return failed("cannot choose a mixing variance yet: give mixing_sd, a margin, or wait for data")
    variance = mean_variance(control) + mean_variance(treatment)
    if not variance > 0 and isinstance(control, ProportionStats) and isinstance(treatment, ProportionStats):
        # Every outcome identical (e.g. no errors at all in either arm) is data, not its absence: judge it
        # with the rates shrunk half an event towards 1/2, so no errors on both sides reads healthy and a
        # handful of identical outcomes cannot show harm on its own.
        variance = _smoothed_mean_variance(control) + _smoothed_mean_variance(treatment)
    if not variance > 0:
        return failed("no variance yet: every outcome is identical")

    harm = sign * (treatment_value - control_value)
    p_now = float(msprt_p_value(harm, variance, tau2, Alternative.LARGER, null_value=margin))
    low = harm - msprt_one_sided_z_boundary(variance, tau2, alpha) * math.sqrt(variance)
    previous_low = state.ci_low if state.ci_low is not None else -math.inf
    new_state = SequentialState(
        looks=state.looks + 1,
        min_p_value=min(state.min_p_value, p_now),
        ci_low=max(low, previous_low),
        ci_high=None,
        mixing_variance=tau2,
    )
    return result(p_now, harm, new_state, tau2)


def _smoothed_mean_variance(stats_: ProportionStats) -> float:
    """The variance of a rate's estimate with the rate taken as ``(successes + 1/2) / (trials + 1)``."""
    rate = (stats_.successes + 0.5) / (stats_.trials + 1.0)
    return rate * (1.0 - rate) / stats_.trials
