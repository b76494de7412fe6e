"""Judge the guardrails of every challenger. Order of judgement row 4 (docs/rollout.md).

Three kinds of check, each on one challenger: an absolute bound (``max``/``min``), a bound relative to the
champion's value, and, for ``rate`` guardrails, an always-valid one-sided harm test against the champion.
Breaches count toward ``failureLimit`` (``critical`` trips at once); a tick without data keeps the count.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from arbiter.api import Guardrail, ModelExperimentSpec
from arbiter.rollout.actions import Rollback
from arbiter.rollout.observations import Observations, SufficientStats
from arbiter.rollout.view import ConditionReport
from arbiter.stats import SequentialState, format_number, guardrail_harm_test


@dataclass(frozen=True)
class GuardrailCheck:
    """One guardrail on one challenger at this tick (``status.guardrails[]``)."""

    name: str
    variant: str
    breaches: int = 0
    breached: bool = False
    value: float | None = None
    champion_value: float | None = None
    estimate: float | None = None
    p_value: float | None = None
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The stored form; numbers that were not read are left out."""
        out: dict[str, Any] = {
            "name": self.name,
            "variant": self.variant,
            "breaches": self.breaches,
            "breached": self.breached,
        }
        optional = {
            "value": self.value,
            "championValue": self.champion_value,
            "estimate": self.estimate,
            "pValue": self.p_value,
        }
        out.update({key: value for key, value in optional.items() if value is not None})
        out["reason"] = self.reason
        return out


@dataclass(frozen=True)
class GuardrailReport:
    """Every check of this tick, the harm tests' state, the condition and a rollback when one tripped.

    ``healthy`` is True when every check has data and none breaches: only then may a step end.
    """

    checks: tuple[GuardrailCheck, ...]
    condition: ConditionReport
    healthy: bool
    tests: Mapping[str, Mapping[str, Any]] | None = None
    action: Rollback | None = None


@dataclass
class _Numbers:
    """The numbers one check found (the harm test may overwrite the plain readings)."""

    value: float | None = None
    champion_value: float | None = None
    estimate: float | None = None
    p_value: float | None = None
    verdicts: list[tuple[bool, str]] = field(default_factory=list)  # (breached, reason) per check


def judge_guardrails(
    spec: ModelExperimentSpec,
    observations: Observations,
    counters: Mapping[str, Mapping[str, SufficientStats]],
    previous: tuple[Mapping[str, Any], ...],
    tests: Mapping[str, Mapping[str, Any]] | None,
    data_ok: bool,
) -> GuardrailReport:
    """Evaluate every guardrail on every challenger.

    Args:
        spec: the experiment.
        observations: this tick's readings (plain guardrail values).
        counters: counters since the start, per source (``guardrail/<name>`` for rate guardrails).
        previous: the previous tick's checks, as stored (for the consecutive breach counts).
        tests: the harm tests' sequential state.
        data_ok: every query of this tick answered.
    """
    before = {(g["name"], g["variant"]): g for g in previous}
    new_tests = None if tests is None else dict(tests)
    checks: list[GuardrailCheck] = []
    tripped: list[str] = []
    breaching: list[str] = []
    unjudged: list[str] = []
    champion = spec.champion.name
    for guardrail in spec.analysis.guardrails:
        for challenger in spec.challengers:
            variant = challenger.name
            numbers = _plain_checks(guardrail, variant, champion, observations)
            if guardrail.rate is not None:
                rates = counters.get(f"guardrail/{guardrail.name}", {})
                control, treatment = rates.get(champion), rates.get(variant)
                if control is not None and treatment is not None:
                    new_tests = {} if new_tests is None else new_tests
                    _harm_tests(
                        guardrail, variant, control, treatment, spec.analysis.test.alpha, new_tests, numbers
                    )
            check = _judged(
                guardrail,
                variant,
                numbers,
                int((before.get((guardrail.name, variant)) or {}).get("breaches", 0)),
            )
            checks.append(check)
            if not numbers.verdicts:
                # A reading alone judges nothing (e.g. a relative bound without the champion's value).
                unjudged.append(f"{guardrail.name}/{variant}")
            if check.breached:
                breaching.append(f"{guardrail.name}/{variant}")
                if guardrail.critical or check.breaches >= guardrail.failure_limit:
                    tripped.append(check.reason)
    if tripped:
        reason = f"guardrail breached: {tripped[0]}"
        condition = ConditionReport("GuardrailsHealthy", False, "GuardrailTripped", reason)
        return GuardrailReport(tuple(checks), condition, False, new_tests, Rollback(reason))
    if breaching:
        condition = ConditionReport("GuardrailsHealthy", False, "Breaching", ", ".join(breaching))
        return GuardrailReport(tuple(checks), condition, False, new_tests)
    unknown = unjudged
    if unknown or not data_ok:
        message = (
            "no data yet for: " + ", ".join(unknown)
            if unknown
            else "a query of this tick failed: health is not claimed on it"
        )
        condition = ConditionReport("GuardrailsHealthy", None, "NoData", message)
        return GuardrailReport(tuple(checks), condition, not unknown, new_tests)
    condition = ConditionReport(
        "GuardrailsHealthy", True, "Healthy", f"{len(checks)} guardrail check(s) healthy"
    )
    return GuardrailReport(tuple(checks), condition, True, new_tests)


def _plain_checks(guardrail: Guardrail, variant: str, champion: str, observations: Observations) -> _Numbers:
    """Absolute bounds, and bounds relative to the champion's reading (not for rate guardrails)."""
    numbers = _Numbers()
    readings = observations.guardrails.get(guardrail.name, {})
    reading, champion_reading = readings.get(variant), readings.get(champion)
    if reading is None or reading.value is None or not reading.has_value:
        return numbers
    value = reading.value
    numbers.value = value
    champion_value = (
        champion_reading.value if champion_reading is not None and champion_reading.has_value else None
    )
    numbers.champion_value = champion_value
    name, fmt = guardrail.name, format_number
    if guardrail.max is not None:
        numbers.verdicts.append(
            (value > guardrail.max, f"{name} of {variant} = {fmt(value)} > max {fmt(guardrail.max)}")
        )
    if guardrail.min is not None:
        numbers.verdicts.append(
            (value < guardrail.min, f"{name} of {variant} = {fmt(value)} < min {fmt(guardrail.min)}")
        )
    if guardrail.relative and guardrail.rate is None and champion_value is not None:
        delta = value - champion_value
        if guardrail.max_increase_over_champion is not None:
            allowed = guardrail.max_increase_over_champion
            numbers.verdicts.append(
                (
                    delta > allowed,
                    f"{name} of {variant} exceeds the champion's by {fmt(delta)} (allowed {fmt(allowed)})",
                )
            )
        if guardrail.max_decrease_from_champion is not None:
            allowed = guardrail.max_decrease_from_champion
            numbers.verdicts.append(
                (
                    -delta > allowed,
                    f"{name} of {variant} is below the champion's by {fmt(-delta)} (allowed {fmt(allowed)})",
                )
            )
    return numbers


def _harm_tests(
    guardrail: Guardrail,
    variant: str,
    control: SufficientStats,
    treatment: SufficientStats,
    alpha: float,
    tests: dict[str, Mapping[str, Any]],
    numbers: _Numbers,
) -> None:
    """The always-valid one-sided harm test against the champion, per non-inferiority margin."""
    checks = [
        ("increase", guardrail.max_increase_over_champion, True),
        ("decrease", guardrail.max_decrease_from_champion, False),
    ]
    for label, margin, higher_is_worse in checks:
        if margin is None:
            continue
        key = f"{guardrail.name}/{variant}/{label}"
        previous = tests.get(key)
        result = guardrail_harm_test(
            control,
            treatment,
            margin=margin,
            higher_is_worse=higher_is_worse,
            alpha=alpha,
            state=SequentialState.from_dict(dict(previous) if previous else None),
        )
        if result.error:
            continue
        tests[key] = result.state.to_dict()
        numbers.p_value = result.p_value
        numbers.estimate = result.harm
        numbers.champion_value = result.control_value
        numbers.value = result.treatment_value
        numbers.verdicts.append(
            (
                bool(result.harm_detected),
                f"{guardrail.name} of {variant}: harm beyond the margin {format_number(margin)} detected "
                f"(always-valid p = {format_number(result.p_value)})",
            )
        )


def _judged(guardrail: Guardrail, variant: str, numbers: _Numbers, breaches: int) -> GuardrailCheck:
    """Count a breach, reset on health, keep the count when nothing could be judged."""
    check = GuardrailCheck(
        guardrail.name,
        variant,
        breaches,
        False,
        numbers.value,
        numbers.champion_value,
        numbers.estimate,
        numbers.p_value,
    )
    if not numbers.verdicts:
        # Missing data: inconclusive, the breach count is kept as it is.
        return replace(check, reason=f"{guardrail.name} of {variant}: no data yet")
    failing = [reason for breached, reason in numbers.verdicts if breached]
    if failing:
        count = breaches + 1
        reason = failing[0] + f" ({count}/{guardrail.failure_limit} consecutive)"
        return replace(check, breached=True, breaches=count, reason=reason)
    return replace(check, breaches=0, reason=f"{guardrail.name} of {variant} healthy")
