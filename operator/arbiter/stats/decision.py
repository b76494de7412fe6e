"""One analysis tick: per-variant statistics and configuration in, a verdict per challenger out.

``decide`` is pure: everything that must carry over between ticks (running always-valid p-values and
confidence sequences, group-sequential looks, verdicts already reached) lives in ``DecisionState``,
a small JSON-serialisable value the caller stores (in the custom resource's status) and passes back.

The primary metric's challengers form one family: their p-values are Holm-adjusted together
(for ``GroupSequential``, Holm's alpha propagation is applied to the spending levels, after Maurer
and Bretz 2013). Verdicts are sticky: once a challenger is ``Win``, ``Loss`` or ``Futile`` it stays so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from scipy import stats as sps

from arbiter.stats._types import (
    Alternative,
    Direction,
    EffectEstimate,
    JsonResult,
    Method,
    MetricType,
    Spending,
    Verdict,
    alternative_for,
    format_number,
)
from arbiter.stats.fixed import ComparisonResult, compare_fixed, mean_variance
from arbiter.stats.group_sequential import group_sequential_boundaries
from arbiter.stats.multiplicity import holm
from arbiter.stats.sequential import SequentialState, confidence_sequence, msprt_test
from arbiter.stats.sufficient import MeanStats, ProportionStats, SufficientStats


@dataclass(frozen=True)
class DecisionConfig(JsonResult):
    """How a metric is judged.

    Attributes:
        metric: ``Proportion`` or ``Mean``.
        direction: which way is better.
        mde: the minimum detectable effect: relative to the baseline (0.05 = 5%) unless
            ``mde_relative`` is False, then absolute.
        alpha, power, sides: level, power and sidedness (2: a significant change either way decides
            Win or Loss; 1: only improvement is tested, so there is no Loss verdict).
        method: ``Sequential`` (mSPRT, default), ``FixedHorizon`` or ``GroupSequential``.
        planned_sample_size: per arm, for the smaller arm (the planner's ``sample_size_per_variant``).
            Required for FixedHorizon (the horizon) and GroupSequential (information fraction 1);
            optional for Sequential (a maximum: reaching it undecided is Futile).
        baseline: the control's expected value, to turn a relative MDE into the mixing variance;
            default: the control's value at the first valid look (then frozen in the state).
        mixing_variance: override ``tau^2`` of the mSPRT (default: the absolute MDE squared).
        spending: alpha-spending shape for GroupSequential.
        min_sample_size: no verdict before every arm has this many units.
        min_information_increment: GroupSequential only takes a new look once the information fraction
            has grown by this much (the final look at fraction 1 is always taken).
        min_duration_seconds: no verdict before this much time has elapsed.
        max_duration_seconds: undecided after this long means Futile.
    """

    metric: MetricType
    direction: Direction = Direction.INCREASE
    mde: float = 0.05
    mde_relative: bool = True
    alpha: float = 0.05
    power: float = 0.8
    sides: int = 2
    method: Method = Method.SEQUENTIAL
    planned_sample_size: int | None = None
    baseline: float | None = None
    mixing_variance: float | None = None
    spending: Spending = Spending.OBRIEN_FLEMING
    min_sample_size: int = 100
    min_information_increment: float = 0.05
    min_duration_seconds: float = 0.0
    max_duration_seconds: float | None = None

    def __post_init__(self) -> None:
        # Accept plain strings (from YAML/JSON) for the enum fields.
        object.__setattr__(self, "metric", MetricType(self.metric))
        object.__setattr__(self, "direction", Direction(self.direction))
        object.__setattr__(self, "method", Method(self.method))
        object.__setattr__(self, "spending", Spending(self.spending))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DecisionConfig:
        """Build from a dict with the field names; unknown keys are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names})

    def validation_error(self) -> str | None:
        """Why this configuration cannot be used, or None."""
        if not (0.0 < self.alpha < 1.0):
            return f"alpha must be between 0 and 1, got {self.alpha!r}"
        if not (0.0 < self.power < 1.0):
            return f"power must be between 0 and 1, got {self.power!r}"
        if self.sides not in (1, 2):
            return f"sides must be 1 or 2, got {self.sides!r}"
        if not (math.isfinite(self.mde) and self.mde > 0):
            return f"the MDE must be positive, got {self.mde!r}"
        if self.method is not Method.SEQUENTIAL and not self.planned_sample_size:
            return f"method {self.method.value} needs planned_sample_size"
        if self.planned_sample_size is not None and self.planned_sample_size <= 0:
            return "planned_sample_size must be positive"
        if self.mixing_variance is not None and not self.mixing_variance > 0:
            return "mixing_variance must be positive"
        if not (0.0 < self.min_information_increment <= 1.0):
            return "min_information_increment must be in (0, 1]"
        return None

    @property
    def alternative(self) -> Alternative:
        """The alternative hypothesis the direction and sides imply."""
        return alternative_for(self.direction, self.sides)


@dataclass(frozen=True)
class ChallengerState(JsonResult):
    """What one challenger carries between ticks."""

    verdict: Verdict | None = None
    reason: str | None = None
    decided_at_tick: int | None = None
    sequential: SequentialState = field(default_factory=SequentialState)
    information_fractions: tuple[float, ...] = ()
    futility_low: float | None = None
    futility_high: float | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> ChallengerState:
        """Rebuild from ``to_dict()`` output."""
        if not data:
            return cls()
        verdict = data.get("verdict")
        return cls(
            verdict=None if verdict is None else Verdict(verdict),
            reason=data.get("reason"),
            decided_at_tick=data.get("decided_at_tick"),
            sequential=SequentialState.from_dict(data.get("sequential")),
            information_fractions=tuple(float(t) for t in data.get("information_fractions") or ()),
            futility_low=data.get("futility_low"),
            futility_high=data.get("futility_high"),
        )


@dataclass(frozen=True)
class DecisionState(JsonResult):
    """Everything ``decide`` needs from earlier ticks; JSON round-trips through ``to_dict``/``from_dict``."""

    ticks: int = 0
    challengers: dict[str, ChallengerState] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> DecisionState:
        """Rebuild from ``to_dict()`` output; None or {} gives a fresh state."""
        if not data:
            return cls()
        return cls(
            ticks=int(data.get("ticks", 0)),
            challengers={
                str(name): ChallengerState.from_dict(value)
                for name, value in (data.get("challengers") or {}).items()
            },
        )


@dataclass(frozen=True, kw_only=True)
class ChallengerDecision(EffectEstimate):
    """The verdict for one challenger at one tick, with the numbers behind it.

    ``ci_low``/``ci_high`` are for the absolute difference: the fixed-horizon interval, the running
    mSPRT confidence sequence, or the group-sequential repeated confidence interval. ``p_value`` is the
    fixed-horizon p-value, the always-valid p-value, or (GroupSequential) the nominal p-value at the
    look; ``p_value_adjusted`` is Holm-adjusted across the challengers (None for GroupSequential, whose
    multiplicity is handled in the boundaries: compare ``statistic`` with ``boundary``).
    """

    variant: str
    verdict: Verdict
    reason: str
    method: Method
    p_value_adjusted: float
    looks: int
    information_fraction: float | None = None
    boundary: float | None = None


@dataclass(frozen=True)
class TickDecision(JsonResult):
    """The outcome of one analysis tick: a decision per challenger and the state for the next tick."""

    challengers: dict[str, ChallengerDecision]
    state: DecisionState
    error: str | None = None

    @property
    def winners(self) -> list[str]:
        """Challengers judged better than control, best estimated improvement first."""
        wins = [d for d in self.challengers.values() if d.verdict is Verdict.WIN]
        wins.sort(key=lambda d: abs(d.absolute_difference), reverse=True)
        return [d.variant for d in wins]

    @property
    def finished(self) -> bool:
        """Whether every challenger has a final verdict (nothing is Inconclusive)."""
        return all(d.verdict is not Verdict.INCONCLUSIVE for d in self.challengers.values())


@dataclass
class _Working:
    """Per-challenger numbers while a tick is being computed."""

    name: str
    fixed: ComparisonResult
    state: ChallengerState
    ci_low: float = math.nan
    ci_high: float = math.nan
    relative_ci_low: float = math.nan
    relative_ci_high: float = math.nan
    p_value: float = math.nan
    p_value_adjusted: float = math.nan
    looks: int = 0
    information_fraction: float | None = None
    boundary: float | None = None
    is_look: bool = False
    significant: bool = False
    error: str | None = None


def _absolute_mde(config: DecisionConfig, baseline: float) -> float:
    return config.mde * abs(baseline) if config.mde_relative else config.mde


def _good_sign(config: DecisionConfig) -> float:
    return 1.0 if config.direction is Direction.INCREASE else -1.0


def decide(
    control: SufficientStats,
    treatments: Mapping[str, SufficientStats],
    config: DecisionConfig,
    state: DecisionState | Mapping[str, Any] | None = None,
    elapsed_seconds: float | None = None,
) -> TickDecision:
    """Judge every challenger against control at one analysis tick.

    Args:
        control: the control's cumulative sufficient statistics.
        treatments: each challenger's cumulative statistics, by variant name.
        config: how the metric is judged.
        state: what the previous tick returned (``TickDecision.state`` or its ``to_dict()``).
        elapsed_seconds: time since the experiment started, for the minimum and maximum durations.

    Returns:
        A decision per challenger and the new state. Invalid input gives Inconclusive verdicts with the
        error in ``reason``/``error`` (and in ``TickDecision.error`` when it concerns the whole tick);
        it never raises.
    """
    if not isinstance(state, DecisionState):
        state = DecisionState.from_dict(state)
    tick = state.ticks + 1
    error = config.validation_error()
    if error is None and not treatments:
        error = "no challengers to compare"
    expected_type = ProportionStats if config.metric is MetricType.PROPORTION else MeanStats
    if error is None and not all(isinstance(s, expected_type) for s in [control, *treatments.values()]):
        error = f"metric {config.metric.value} needs {expected_type.__name__} for every variant"
    if error is not None:
        return _whole_tick_error(control, treatments, config, state, error)

    working: dict[str, _Working] = {}
    for name, treatment in treatments.items():
        challenger_state = state.challengers.get(name, ChallengerState())
        fixed = compare_fixed(control, treatment, config.alpha, config.alternative)
        item = _Working(name=name, fixed=fixed, state=challenger_state, error=fixed.error)
        if config.method is Method.SEQUENTIAL:
            _sequential_look(item, control, treatment, config)
        elif config.method is Method.FIXED_HORIZON:
            _fixed_look(item, config)
        else:
            _group_sequential_prepare(item, control, treatment, config)
        working[name] = item

    if config.method is Method.GROUP_SEQUENTIAL:
        _group_sequential_holm(working, config)
    else:
        adjusted = holm([item.p_value for item in working.values()])
        for item, p_adj in zip(working.values(), adjusted, strict=True):
            item.p_value_adjusted = p_adj
            item.significant = item.error is None and math.isfinite(p_adj) and p_adj <= config.alpha

    decisions: dict[str, ChallengerDecision] = {}
    new_states: dict[str, ChallengerState] = dict(state.challengers)
    for name, item in working.items():
        verdict, reason = _verdict(item, control, treatments[name], config, elapsed_seconds)
        new_state = item.state
        if verdict is not Verdict.INCONCLUSIVE and verdict is not item.state.verdict:
            new_state = replace(new_state, verdict=verdict, reason=reason, decided_at_tick=tick)
        new_states[name] = new_state
        decisions[name] = _decision(item, verdict, reason, config)
    return TickDecision(challengers=decisions, state=DecisionState(ticks=tick, challengers=new_states))


def _whole_tick_error(
    control: SufficientStats,
    treatments: Mapping[str, SufficientStats],
    config: DecisionConfig,
    state: DecisionState,
    error: str,
) -> TickDecision:
    decisions = {}
    for name, treatment in treatments.items():
        item = _Working(name=name, fixed=_empty_fixed(control, treatment, config), state=ChallengerState())
        item.error = error
        decisions[name] = _decision(item, Verdict.INCONCLUSIVE, error, config)
    return TickDecision(challengers=decisions, state=state, error=error)


def _empty_fixed(
    control: SufficientStats, treatment: SufficientStats, config: DecisionConfig
) -> ComparisonResult:
    nan = math.nan
    return ComparisonResult(
        metric=config.metric,
        test="none",
        alternative=config.alternative,
        alpha=config.alpha,
        n_control=getattr(control, "n", nan),
        n_treatment=getattr(treatment, "n", nan),
        control_value=nan,
        treatment_value=nan,
        absolute_difference=nan,
        relative_lift=nan,
        ci_low=nan,
        ci_high=nan,
        relative_ci_low=nan,
        relative_ci_high=nan,
        std_error=nan,
        statistic=nan,
        p_value=nan,
    )


def _sequential_look(
    item: _Working, control: SufficientStats, treatment: SufficientStats, config: DecisionConfig
) -> None:
    seq_state = item.state.sequential
    if min(control.n, treatment.n) < config.min_sample_size:
        # Too few units for the normal approximation (a 0/5 arm even has a plug-in variance of 0): such a
        # look must not enter the running p-value nor the intersected confidence sequence, or one early
        # degenerate look would pin the sequence for ever.
        item.p_value = seq_state.min_p_value
        item.looks = seq_state.looks
        if seq_state.ci_low is not None and seq_state.ci_high is not None:
            item.ci_low, item.ci_high = seq_state.ci_low, seq_state.ci_high
        return
    tau2 = config.mixing_variance
    if tau2 is None and seq_state.mixing_variance is None:
        baseline = config.baseline if config.baseline is not None else control.mean
        if config.mde_relative and not (math.isfinite(baseline) and baseline != 0):
            item.error = "cannot set the mixing variance from a relative MDE yet: the control's value is 0"
            item.p_value = seq_state.min_p_value
            return
        tau2 = _absolute_mde(config, baseline) ** 2
    result = msprt_test(control, treatment, tau2, config.alpha, config.alternative, seq_state)
    item.looks = result.looks
    item.p_value = result.p_value
    item.ci_low, item.ci_high = result.ci_low, result.ci_high
    item.relative_ci_low, item.relative_ci_high = result.relative_ci_low, result.relative_ci_high
    item.error = result.error
    futility_low, futility_high = item.state.futility_low, item.state.futility_high
    if result.error is None:
        if config.sides == 2:
            futility_low, futility_high = result.ci_low, result.ci_high
        else:
            # A one-sided test bounds only one end; futility needs the other, from the two-sided sequence.
            variance = mean_variance(control) + mean_variance(treatment)
            low, high = confidence_sequence(
                result.absolute_difference, variance, result.mixing_variance, config.alpha
            )
            futility_low = max(low, -math.inf if futility_low is None else futility_low)
            futility_high = min(high, math.inf if futility_high is None else futility_high)
    item.state = replace(
        item.state, sequential=result.state, futility_low=futility_low, futility_high=futility_high
    )


def _fixed_look(item: _Working, config: DecisionConfig) -> None:
    fixed = item.fixed
    item.p_value = fixed.p_value
    item.ci_low, item.ci_high = fixed.ci_low, fixed.ci_high
    item.relative_ci_low, item.relative_ci_high = fixed.relative_ci_low, fixed.relative_ci_high
    item.looks = 1
    assert config.planned_sample_size is not None
    item.information_fraction = min(fixed.n_control, fixed.n_treatment) / config.planned_sample_size


def _group_sequential_prepare(
    item: _Working, control: SufficientStats, treatment: SufficientStats, config: DecisionConfig
) -> None:
    assert config.planned_sample_size is not None
    fractions = item.state.information_fractions
    fraction = min(control.n, treatment.n) / config.planned_sample_size
    item.information_fraction = fraction
    item.p_value = item.fixed.p_value
    item.looks = len(fractions)
    if item.error is not None or item.state.verdict is not None:
        return
    if min(control.n, treatment.n) < config.min_sample_size:
        return
    last = fractions[-1] if fractions else 0.0
    if last >= 1.0:
        return
    if fraction >= 1.0 or fraction - last >= config.min_information_increment:
        item.is_look = True
        item.state = replace(item.state, information_fractions=(*fractions, fraction))
        item.looks = len(fractions) + 1


def _group_sequential_holm(working: dict[str, _Working], config: DecisionConfig) -> None:
    family = len(working)
    rejected = {name for name, item in working.items() if item.state.verdict in (Verdict.WIN, Verdict.LOSS)}
    good = _good_sign(config)
    while True:
        level = config.alpha / max(family - len(rejected), 1)
        newly = set()
        for name, item in working.items():
            if name in rejected or not item.is_look:
                continue
            design = group_sequential_boundaries(
                item.state.information_fractions, level, config.sides, config.spending
            )
            if design.error:
                item.error = design.error
                continue
            bound = design.z[-1]
            item.boundary = bound
            statistic = item.fixed.statistic
            crossed = abs(statistic) >= bound if config.sides == 2 else good * statistic >= bound
            if crossed:
                newly.add(name)
            se = item.fixed.std_error
            diff = item.fixed.absolute_difference
            item.ci_low, item.ci_high = diff - bound * se, diff + bound * se
            if config.sides == 1:
                item.ci_low, item.ci_high = (item.ci_low, math.inf) if good > 0 else (-math.inf, item.ci_high)
            if item.fixed.control_value and math.isfinite(item.fixed.relative_lift):
                rel_se = (item.fixed.relative_ci_high - item.fixed.relative_ci_low) / (
                    2 * float(sps.norm.isf(config.alpha / 2))
                )
                if config.sides == 2 and math.isfinite(rel_se):
                    item.relative_ci_low = item.fixed.relative_lift - bound * rel_se
                    item.relative_ci_high = item.fixed.relative_lift + bound * rel_se
            item.significant = crossed
        if not newly:
            return
        rejected |= newly


def _verdict(
    item: _Working,
    control: SufficientStats,
    treatment: SufficientStats,
    config: DecisionConfig,
    elapsed_seconds: float | None,
) -> tuple[Verdict, str]:
    if item.state.verdict is not None:
        upgrade = (
            item.state.verdict is Verdict.FUTILE
            and config.method is Method.SEQUENTIAL
            and item.error is None
            and item.significant
            and _good_sign(config) * item.fixed.absolute_difference < 0
        )
        if not upgrade:
            return item.state.verdict, f"{item.state.reason} (decided at tick {item.state.decided_at_tick})"
        # Futile ("cannot win") may still become Loss ("significantly worse"): the always-valid p-value
        # may be read at any look, and the stronger statement is the one to act on.
        return Verdict.LOSS, (
            f"{item.name} {format_number(item.fixed.treatment_value)} vs control {format_number(item.fixed.control_value)} "
            f"(diff {format_number(item.fixed.absolute_difference)}) is significantly worse: p={format_number(item.p_value)}, "
            f"Holm-adjusted p={format_number(item.p_value_adjusted)} (futile since tick {item.state.decided_at_tick})"
        )
    n_min = min(control.n, treatment.n)
    if item.error is not None:
        return Verdict.INCONCLUSIVE, f"keep collecting: {item.error}"
    if n_min < config.min_sample_size:
        return Verdict.INCONCLUSIVE, (
            f"keep collecting: {n_min:g} units in the smaller arm, need at least {config.min_sample_size}"
        )
    if elapsed_seconds is not None and elapsed_seconds < config.min_duration_seconds:
        return Verdict.INCONCLUSIVE, (
            f"keep collecting: minimum duration {config.min_duration_seconds:g}s not reached"
        )
    good = _good_sign(config)
    diff = item.fixed.absolute_difference
    p_text = (
        f"p={format_number(item.p_value)}, Holm-adjusted p={format_number(item.p_value_adjusted)}"
        if config.method is not Method.GROUP_SEQUENTIAL
        else f"z={format_number(item.fixed.statistic)} vs boundary {format_number(item.boundary or math.nan)}"
    )
    effect = (
        f"{item.name} {format_number(item.fixed.treatment_value)} vs control {format_number(item.fixed.control_value)} "
        f"(diff {format_number(diff)}, CI [{format_number(item.ci_low)}, {format_number(item.ci_high)}])"
    )
    fixed_horizon_due = (
        config.method is Method.FIXED_HORIZON
        and config.planned_sample_size is not None
        and n_min >= config.planned_sample_size
    )
    if item.significant and (config.method is not Method.FIXED_HORIZON or fixed_horizon_due):
        if good * diff > 0:
            return Verdict.WIN, f"{effect} is significantly better: {p_text}"
        return Verdict.LOSS, f"{effect} is significantly worse: {p_text}"
    if config.method is Method.FIXED_HORIZON:
        if fixed_horizon_due:
            return Verdict.FUTILE, f"planned sample size reached without a significant difference: {effect}"
        return Verdict.INCONCLUSIVE, (
            f"keep collecting: fixed horizon at {config.planned_sample_size} per arm, now {n_min:g}"
        )
    if config.method is Method.GROUP_SEQUENTIAL:
        if item.state.information_fractions and item.state.information_fractions[-1] >= 1.0:
            return Verdict.FUTILE, f"final look reached without crossing the boundary: {effect}, {p_text}"
        if not item.is_look:
            return Verdict.INCONCLUSIVE, (
                f"keep collecting: information {format_number(item.information_fraction or 0.0)}, "
                f"next look after +{config.min_information_increment:g}"
            )
        return Verdict.INCONCLUSIVE, f"keep collecting: boundary not crossed ({p_text})"
    # Sequential: futile once the confidence sequence rules out an improvement as large as the MDE.
    mde = _absolute_mde(config, config.baseline if config.baseline is not None else item.fixed.control_value)
    low, high = item.state.futility_low, item.state.futility_high
    if good > 0 and high is not None and high < mde:
        return (
            Verdict.FUTILE,
            f"the confidence sequence rules out an improvement of {format_number(mde)}: {effect}",
        )
    if good < 0 and low is not None and low > -mde:
        return (
            Verdict.FUTILE,
            f"the confidence sequence rules out an improvement of {format_number(mde)}: {effect}",
        )
    if config.planned_sample_size is not None and n_min >= config.planned_sample_size:
        return Verdict.FUTILE, f"maximum sample size {config.planned_sample_size} reached undecided: {effect}"
    if (
        elapsed_seconds is not None
        and config.max_duration_seconds is not None
        and elapsed_seconds >= config.max_duration_seconds
    ):
        return Verdict.FUTILE, f"maximum duration reached undecided: {effect}"
    return Verdict.INCONCLUSIVE, f"keep collecting: {p_text}"


def _decision(item: _Working, verdict: Verdict, reason: str, config: DecisionConfig) -> ChallengerDecision:
    fixed = item.fixed
    return ChallengerDecision(
        variant=item.name,
        verdict=verdict,
        reason=reason,
        method=config.method,
        metric=config.metric,
        n_control=fixed.n_control,
        n_treatment=fixed.n_treatment,
        control_value=fixed.control_value,
        treatment_value=fixed.treatment_value,
        absolute_difference=fixed.absolute_difference,
        relative_lift=fixed.relative_lift,
        ci_low=item.ci_low,
        ci_high=item.ci_high,
        relative_ci_low=item.relative_ci_low,
        relative_ci_high=item.relative_ci_high,
        statistic=fixed.statistic,
        p_value=item.p_value,
        p_value_adjusted=item.p_value_adjusted,
        alpha=config.alpha,
        looks=item.looks,
        information_fraction=item.information_fraction,
        boundary=item.boundary,
        error=item.error,
    )
