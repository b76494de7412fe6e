"""The rollout decision core: ``(spec, status, observations, now, controls) -> plan``. Pure, no I/O.

One call is one analysis tick of a Progressing or Paused experiment (admission to Progressing is
:mod:`arbiter.rollout.lifecycle`). Everything the next tick needs is written back into the status, so
a restart at any moment resumes exactly: the handlers keep nothing in memory.

The order of judgement on every tick, and why:

1. Manual controls (annotations, ``spec.paused``): a human outranks the machine.
2. ``maxDuration``: an experiment never runs forever.
3. Metrics availability: errors are counted; after ``consecutiveErrorLimit`` ticks the experiment pauses
   and names the failing query, and it resumes by itself when data returns. Nothing below acts on a
   tick whose data could not be read.
4. Guardrails, per challenger: breaches count toward ``failureLimit``; ``critical`` rolls back at once.
5. Sample-ratio mismatch: a broken split makes every other number untrustworthy, so it pauses.
6. The primary metric's verdict, then the mode's step logic (advance, hold, promote, conclude).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from arbiter.api import (
    TERMINAL_PHASES,
    MetricType,
    Mode,
    ModelExperimentSpec,
    OnLoss,
    OnTimeout,
    OnWin,
    Phase,
    parse_duration,
)
from arbiter.api.conditions import ConditionStatus, set_condition
from arbiter.api.v1alpha1 import MAX_HISTORY, Guardrail, Metric, SampleRatioMismatchMethod
from arbiter.api.weights import split_weights, winner_weights
from arbiter.rollout.counters import accumulate, accumulate_count
from arbiter.rollout.lifecycle import Event
from arbiter.rollout.observations import MetricData, Observations, SufficientStats
from arbiter.stats import (
    DecisionConfig,
    Direction,
    MeanStats,
    ProportionStats,
    SequentialState,
    SRMResult,
    TickDecision,
    Verdict,
    decide,
    guardrail_harm_test,
    holm,
    sample_ratio_mismatch,
    sample_size_mean,
    sample_size_proportion,
    sequential_sample_ratio_mismatch,
)
from arbiter.stats import Method as StatsMethod
from arbiter.stats import MetricType as StatsMetricType

# Pause reasons (status.pauseReason).
PAUSE_SPEC = "Spec"
PAUSE_SRM = "SampleRatioMismatch"
PAUSE_METRICS = "MetricsUnavailable"
PAUSE_AWAITING_PROMOTION = "AwaitingPromotion"
PAUSE_LOSS = "Loss"
PAUSE_TIMEOUT = "Timeout"

# Decision outcomes (status.decision.outcome).
WAIT = "Wait"
HOLD = "Hold"
ADVANCE = "Advance"
PROMOTE = "Promote"
ROLLBACK = "Rollback"
PAUSE = "Pause"
RESUME = "Resume"
CONCLUDE = "Conclude"

# Manual control annotations: each new value is acted on once.
ACTION_ANNOTATIONS = ("promote", "abort", "retry", "resume")
ANNOTATION_PREFIX = "arbiter.dev/"

#: Minimum units in a step before the sample-ratio check is allowed to speak.
SRM_MIN_TOTAL = 200
#: FixedHorizon and GroupSequential plan their sample size from the champion once it has this many samples.
PLANNING_MIN_SAMPLES = 500
#: Default A/B split when an ABTest gives no steps.
DEFAULT_AB_WEIGHT = 50


@dataclass(frozen=True)
class RoutingAction:
    """The traffic the data plane should carry after this tick.

    ``final`` marks a terminal routing (promotion, rollback, conclusion): the provider's ``finalize``.
    """

    weights: dict[str, int]
    mirror: tuple[str, int] | None = None
    final: bool = False
    winner: str | None = None


@dataclass(frozen=True)
class Plan:
    """The result of one tick."""

    status: dict[str, Any]
    events: tuple[Event, ...] = field(default_factory=tuple)
    routing: RoutingAction | None = None
    outcome: str = WAIT


@dataclass(frozen=True)
class Controls:
    """Manual control annotation values (``arbiter.dev/<action>``) as found on the object."""

    values: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_annotations(cls, annotations: Mapping[str, str] | None) -> Controls:
        """Pick the ``arbiter.dev/{promote,abort,retry,resume}`` annotations."""
        found = {}
        for action in ACTION_ANNOTATIONS:
            value = (annotations or {}).get(ANNOTATION_PREFIX + action)
            if value is not None:
                found[action] = value
        return cls(found)

    def pending(self, status: Mapping[str, Any]) -> dict[str, str]:
        """The actions whose annotation value has not been handled yet."""
        handled = status.get("handledActions") or {}
        return {a: v for a, v in self.values.items() if handled.get(a) != v}


def identity_hash(spec: ModelExperimentSpec) -> str:
    """Hash of what defines the experiment; a change restarts the analysis (see docs/rollout.md)."""
    identity = {
        "mode": spec.mode.value,
        "variants": [v.name for v in spec.variants],
        "primary": spec.analysis.primary.model_dump(mode="json") if spec.analysis.primary else None,
        "method": spec.analysis.test.method.value,
        "sampleCount": spec.analysis.sample_count,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def _ts(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _parse_ts(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _fmt(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}g}"


class _Tick:
    """The working state of one tick; :func:`step` creates one and returns its plan."""

    def __init__(
        self,
        spec: ModelExperimentSpec,
        status: Mapping[str, Any],
        observations: Observations,
        now: dt.datetime,
        controls: Controls,
        generation: int | None,
    ) -> None:
        self.spec = spec
        self.status: dict[str, Any] = json.loads(json.dumps(dict(status)))  # deep copy, JSON-only
        self.obs = observations
        self.now = now
        self.now_text = _ts(now)
        self.controls = controls
        self.generation = generation
        self.events: list[Event] = []
        self.routing: RoutingAction | None = None
        self.outcome = WAIT
        self.champion = spec.champion.name
        self.challengers = [c.name for c in spec.challengers]
        self.variants = [self.champion, *self.challengers]
        self.engine: dict[str, Any] = self.status.setdefault("engine", {})
        self.counters: dict[str, dict[str, SufficientStats]] = {}
        self.samples: dict[str, float] = {}

    # ----------------------------------------------------------------- bookkeeping

    @property
    def phase(self) -> Phase:
        return Phase(self.status.get("phase") or Phase.PROGRESSING.value)

    def event(self, type_: str, reason: str, message: str) -> None:
        self.events.append(Event("Warning" if type_ == "Warning" else "Normal", reason, message))

    def record_decision(self, outcome: str, reason: str, winner: str | None = None) -> None:
        """Record the decision of this tick (status.decision)."""
        self.outcome = outcome
        record: dict[str, Any] = {"outcome": outcome, "reason": reason, "time": self.now_text}
        if winner is not None:
            record["winner"] = winner
        previous = self.status.get("decision") or {}
        if previous.get("outcome") == outcome and previous.get("reason") == reason:
            record["time"] = previous.get("time", self.now_text)
        self.status["decision"] = record
        self.status["message"] = reason

    def transition(
        self, to: Phase, reason: str, label: str | None = None, from_label: str | None = None
    ) -> None:
        """Move to another phase (or step, with ``label``) and keep the bounded history."""
        before = self.status.get("phase") or "New"
        before_label = from_label or self._label(before)
        self.status["phase"] = to.value
        after_label = label or self._label(to.value)
        if before_label == after_label:
            return
        history = [
            *(self.status.get("history") or []),
            {"time": self.now_text, "from": before_label, "to": after_label, "reason": reason},
        ]
        self.status["history"] = history[-MAX_HISTORY:]

    def _label(self, phase: str) -> str:
        if phase == Phase.PROGRESSING.value and not self.in_shadow():
            return f"Progressing(step {self.status.get('currentStep', 0)})"
        return phase

    def condition(self, type_: str, ok: bool | None, reason: str, message: str) -> None:
        status: ConditionStatus = "Unknown" if ok is None else ("True" if ok else "False")
        self.status["conditions"] = set_condition(
            self.status.get("conditions"), type_, status, reason, message, self.now_text, self.generation
        )

    def set_weights(self, weights: dict[str, int], mirror: tuple[str, int] | None = None) -> None:
        self.status["weights"] = weights
        self.status["challengerWeight"] = sum(weights[c] for c in self.challengers)
        self.routing = RoutingAction(weights=weights, mirror=mirror)

    def finalize(self, winner: str) -> None:
        weights = winner_weights(winner, self.variants)
        self.status["weights"] = weights
        self.status["challengerWeight"] = sum(weights[c] for c in self.challengers)
        self.routing = RoutingAction(weights=weights, final=True, winner=winner)

    def pause(self, reason_code: str, reason: str) -> None:
        if self.phase is not Phase.PAUSED or self.status.get("pauseReason") != reason_code:
            self.event("Warning", f"Paused{reason_code}", reason)
        self.status["pauseReason"] = reason_code
        self.transition(Phase.PAUSED, reason)
        self.record_decision(PAUSE, reason)
        self.condition("Progressing", False, f"Paused{reason_code}", reason)

    def unpause(self, reason: str) -> None:
        self.status.pop("pauseReason", None)
        self.transition(Phase.PROGRESSING, reason)
        self.event("Normal", "Resumed", reason)
        self.record_decision(RESUME, reason)
        self.condition("Progressing", True, "Resumed", reason)

    def end(self, phase: Phase, outcome: str, reason: str, winner: str) -> None:
        """A terminal decision: route everything to ``winner`` and stop."""
        self.status.pop("pauseReason", None)
        self.finalize(winner)
        self.transition(phase, reason)
        self.record_decision(outcome, reason, winner=winner)
        self.condition("Progressing", False, phase.value, reason)
        self.condition("Decided", True, outcome, reason)
        self.event("Warning" if phase is Phase.ROLLED_BACK else "Normal", phase.value, reason)

    def rollback(self, reason: str) -> None:
        if self.spec.decision.on_loss is OnLoss.PAUSE:
            self.pause(PAUSE_LOSS, f"{reason}; paused for a human (onLoss: Pause)")
            self.hold_weights()
            return
        self.end(Phase.ROLLED_BACK, ROLLBACK, reason, self.champion)

    def hold_weights(self) -> None:
        weights = self.status.get("weights") or split_weights(self.champion, self.challengers, 0)
        self.routing = RoutingAction(weights=dict(weights), mirror=self._mirror())

    # ----------------------------------------------------------------- mode geometry

    def target_percent(self, step: int) -> int:
        """The challengers' total share at a step (Canary) or throughout (ABTest)."""
        steps = self.spec.steps or []
        if self.spec.mode is Mode.AB_TEST:
            return steps[-1].weight if steps else DEFAULT_AB_WEIGHT
        if self.in_shadow():
            return 0
        return steps[min(step, len(steps) - 1)].weight if steps else 0

    def in_shadow(self) -> bool:
        return self.spec.mode is Mode.SHADOW and not self.engine.get("shadowPassed")

    def _mirror(self) -> tuple[str, int] | None:
        if not self.in_shadow():
            return None
        shadow = self.spec.routing.shadow
        return (self.challengers[0], shadow.percent if shadow else 100)

    def desired_weights(self) -> dict[str, int]:
        """The step's (or A/B split's) weights over the challengers still in the experiment."""
        active = self.active_challengers()
        if not active:
            return split_weights(self.champion, self.challengers, 0)
        weights = split_weights(self.champion, active, self.target_percent(self.status.get("currentStep", 0)))
        return {v: weights.get(v, 0) for v in self.variants}

    # ----------------------------------------------------------------- the tick

    def run(self) -> Plan:
        self.restart_on_identity_change()
        if self.phase in TERMINAL_PHASES:
            self.handle_terminal_controls()
            return self.plan()
        if self.handle_controls():
            return self.plan()
        if self.handle_spec_pause():
            return self.plan()
        if self.handle_timeout():
            return self.plan()
        available = self.handle_metrics_availability()
        data = self.read_counters()
        self.counters = data
        guardrails_ok = self.judge_guardrails(data_ok=available)
        if self.phase in TERMINAL_PHASES:
            return self.plan()
        srm_ok = self.judge_srm(data)
        decision = self.judge_primary(data)
        self.report_secondary(data)
        if self.phase is Phase.PAUSED:
            self.hold_weights()
            return self.plan()
        if not available or not srm_ok:
            self.hold_weights()
            return self.plan()
        self.advance(data, decision, guardrails_ok)
        return self.plan()

    def plan(self) -> Plan:
        self.status["observedGeneration"] = self.generation
        return Plan(self.status, tuple(self.events), self.routing, self.outcome)

    def restart_on_identity_change(self) -> None:
        current = identity_hash(self.spec)
        previous = self.engine.get("identity")
        self.engine["identity"] = current
        if previous is None or previous == current or self.phase in TERMINAL_PHASES:
            return
        reason = "the variants, mode or primary metric changed: the analysis restarts at step 0"
        self.reset_analysis()
        self.status["currentStep"] = 0
        self.status["stepStartedAt"] = self.now_text
        self.status.pop("pauseReason", None)
        self.transition(Phase.PROGRESSING, reason)
        self.set_weights(self.desired_weights(), self._mirror())
        self.event("Normal", "Restarted", reason)
        self.record_decision(WAIT, reason)

    def reset_analysis(self) -> None:
        identity = self.engine.get("identity")
        self.engine.clear()
        self.engine["identity"] = identity
        self.status.pop("analysis", None)
        self.status.pop("guardrails", None)

    # ----------------------------------------------------------------- controls

    def mark_handled(self, action: str) -> None:
        handled = dict(self.status.get("handledActions") or {})
        handled[action] = self.controls.values[action]
        self.status["handledActions"] = handled

    def handle_terminal_controls(self) -> None:
        pending = self.controls.pending(self.status)
        for action in pending:
            self.mark_handled(action)
        if "retry" in pending and self.phase in (Phase.ROLLED_BACK, Phase.CONCLUDED):
            reason = f"retry requested (arbiter.dev/retry={pending['retry']}): starting over at step 0"
            self.reset_analysis()
            self.status.pop("decision", None)
            self.status["currentStep"] = 0
            self.status["startedAt"] = self.now_text
            self.status["stepStartedAt"] = self.now_text
            self.transition(Phase.PROGRESSING, reason)
            self.set_weights(self.desired_weights(), self._mirror())
            self.condition("Decided", False, "Retried", reason)
            self.condition("Progressing", True, "Retried", reason)
            self.event("Normal", "Retried", reason)
            self.record_decision(RESUME, reason)
        elif pending:
            names = ", ".join(sorted(pending))
            self.event("Warning", "ActionIgnored", f"{names} ignored: the experiment is {self.phase.value}")

    def handle_controls(self) -> bool:
        """Act on new annotation values; True when the tick is over."""
        pending = self.controls.pending(self.status)
        for action in pending:
            self.mark_handled(action)
        if "abort" in pending:
            self.end(
                Phase.ROLLED_BACK, ROLLBACK, f"aborted by arbiter.dev/abort={pending['abort']}", self.champion
            )
            return True
        if "promote" in pending:
            target = pending["promote"] if pending["promote"] in self.challengers else None
            if target is None and len(self.challengers) == 1:
                target = self.challengers[0]
            if target is None:
                self.event(
                    "Warning",
                    "ActionIgnored",
                    f"arbiter.dev/promote={pending['promote']} does not name a challenger "
                    f"({', '.join(self.challengers)})",
                )
            else:
                self.end(Phase.PROMOTED, PROMOTE, f"promoted {target} by arbiter.dev/promote", target)
                return True
        if "resume" in pending and self.phase is Phase.PAUSED:
            if self.status.get("pauseReason") == PAUSE_SPEC:
                self.event("Warning", "ActionIgnored", "resume ignored: spec.paused is true")
            else:
                if self.status.get("pauseReason") == PAUSE_SRM:
                    self.engine["srmAcknowledged"] = self.status.get("currentStep", 0)
                self.unpause(f"resumed by arbiter.dev/resume={pending['resume']}")
                self.hold_weights()
                return True
        if "retry" in pending:
            self.event("Warning", "ActionIgnored", "retry only applies after a rollback or conclusion")
        return False

    def handle_spec_pause(self) -> bool:
        if self.spec.paused:
            if self.status.get("pauseReason") != PAUSE_SPEC:
                self.pause(PAUSE_SPEC, "paused by spec.paused")
            self.hold_weights()
            return True
        if self.phase is Phase.PAUSED and self.status.get("pauseReason") == PAUSE_SPEC:
            self.unpause("spec.paused is false again")
            self.hold_weights()
            return True
        return False

    def handle_timeout(self) -> bool:
        started = _parse_ts(self.status.get("startedAt"))
        limit = parse_duration(self.spec.decision.max_duration)
        if started is None or (self.now - started).total_seconds() < limit:
            return False
        reason = f"maxDuration {self.spec.decision.max_duration} reached without a decision"
        if self.spec.decision.on_timeout is OnTimeout.KEEP_CHAMPION:
            self.end(Phase.CONCLUDED, CONCLUDE, f"{reason}; keeping the champion", self.champion)
        else:
            if self.status.get("pauseReason") != PAUSE_TIMEOUT:
                self.pause(PAUSE_TIMEOUT, f"{reason}; paused (onTimeout: Pause)")
            self.hold_weights()
        return True

    # ----------------------------------------------------------------- metrics

    def handle_metrics_availability(self) -> bool:
        errors = self.obs.errors()
        limit = self.spec.analysis.consecutive_error_limit
        if errors:
            count = int(self.engine.get("consecutiveErrors", 0)) + 1
            self.engine["consecutiveErrors"] = count
            message = f"{count} consecutive tick(s) with failing queries: {errors[0]}"
            if len(errors) > 1:
                message += f" (and {len(errors) - 1} more)"
            self.condition("MetricsAvailable", False, "QueryFailed", message)
            if count >= limit and self.phase is not Phase.PAUSED:
                self.pause(PAUSE_METRICS, f"metrics unavailable for {count} ticks: {errors[0]}")
            elif count < limit:
                self.record_decision(HOLD, f"inconclusive: {message}; nothing is decided on unreadable data")
            return False
        self.engine["consecutiveErrors"] = 0
        self.condition("MetricsAvailable", True, "QueriesSucceeded", "every query returned")
        if self.phase is Phase.PAUSED and self.status.get("pauseReason") == PAUSE_METRICS:
            self.unpause("metrics are readable again")
        return True

    def read_counters(self) -> dict[str, dict[str, SufficientStats]]:
        """Cumulative counters since the experiment (re)started, per metric and variant.

        The first tick's readings are the baselines. A variant whose series only appears later (a
        challenger's counters are born with its first request) has nothing before the experiment, so
        its first reading counts in full.
        """
        trackers: dict[str, Any] = self.engine.setdefault("counters", {})
        result: dict[str, dict[str, SufficientStats]] = {}
        if not trackers and self.obs.errors():
            # Baselines are taken on a tick where every query answered: a series missing because the
            # query failed must not later look like one born after the start.
            self.samples = {}
            return result
        sources: dict[str, MetricData] = {}
        if self.obs.primary is not None:
            sources["primary"] = self.obs.primary
        for name, data in self.obs.secondary.items():
            sources[f"secondary/{name}"] = data
        for name, data in self.obs.guardrail_rates.items():
            sources[f"guardrail/{name}"] = data
        for key, data in sources.items():
            started = key in trackers
            per_variant: dict[str, SufficientStats] = {}
            metric_trackers = trackers.setdefault(key, {})
            for variant, current in data.stats.items():
                since, metric_trackers[variant] = accumulate(
                    metric_trackers.get(variant), current, born_after_start=started
                )
                per_variant[variant] = since
            result[key] = per_variant
        samples: dict[str, float] = {}
        started = "samples" in trackers
        sample_trackers = trackers.setdefault("samples", {})
        for variant, reading in self.sample_readings().items():
            if reading is not None:
                samples[variant], sample_trackers[variant] = accumulate_count(
                    sample_trackers.get(variant), reading, born_after_start=started
                )
        self.samples = samples
        return result

    def sample_readings(self) -> dict[str, float | None]:
        """Per-variant cumulative sample counts: the sampleCount query, else the primary's trials/count."""
        if self.obs.samples:
            return {v: r.value if r.has_value else None for v, r in self.obs.samples.items()}
        if self.obs.primary is not None:
            return {
                v: float(s.trials if isinstance(s, ProportionStats) else s.n)
                for v, s in self.obs.primary.stats.items()
            }
        return {}

    def step_samples(self) -> dict[str, float]:
        base = self.engine.get("stepSamples") or {}
        return {v: max(0.0, n - float(base.get(v, 0.0))) for v, n in self.samples.items()}

    # ----------------------------------------------------------------- guardrails

    def judge_guardrails(self, data_ok: bool) -> bool:
        """Evaluate every guardrail on every challenger; roll back on a trip. True when all are healthy."""
        previous = {(g["name"], g["variant"]): g for g in self.status.get("guardrails") or []}
        states: list[dict[str, Any]] = []
        tripped: list[str] = []
        breaching: list[str] = []
        for guardrail in self.spec.analysis.guardrails:
            for variant in self.challengers:
                state = self.judge_one(guardrail, variant, previous.get((guardrail.name, variant)))
                states.append(state)
                if state["breached"]:
                    breaching.append(f"{guardrail.name}/{variant}")
                    if guardrail.critical or state["breaches"] >= guardrail.failure_limit:
                        tripped.append(state["reason"])
        self.status["guardrails"] = states
        if tripped:
            reason = f"guardrail breached: {tripped[0]}"
            self.condition("GuardrailsHealthy", False, "GuardrailTripped", reason)
            self.rollback(reason)
            return False
        if breaching:
            self.condition("GuardrailsHealthy", False, "Breaching", ", ".join(breaching))
            return False
        unknown = [
            f"{s['name']}/{s['variant']}"
            for s in states
            if s.get("value") is None and s.get("pValue") is None
        ]
        if unknown or not data_ok:
            self.condition("GuardrailsHealthy", None, "NoData", "no data yet for: " + ", ".join(unknown))
            return not unknown
        self.condition("GuardrailsHealthy", True, "Healthy", f"{len(states)} guardrail check(s) healthy")
        return True

    def judge_one(
        self, guardrail: Guardrail, variant: str, previous: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        breaches = int((previous or {}).get("breaches", 0))
        state: dict[str, Any] = {
            "name": guardrail.name,
            "variant": variant,
            "breaches": breaches,
            "breached": False,
        }
        verdicts: list[tuple[bool, str]] = []  # (breached, reason) per check with data
        readings = self.obs.guardrails.get(guardrail.name, {})
        value = readings.get(variant)
        champion_value = readings.get(self.champion)
        if value is not None and value.has_value:
            state["value"] = value.value
            if champion_value is not None and champion_value.has_value:
                state["championValue"] = champion_value.value
            assert value.value is not None
            if guardrail.max is not None:
                verdicts.append(
                    (
                        value.value > guardrail.max,
                        f"{guardrail.name} of {variant} = {_fmt(value.value)} > max {_fmt(guardrail.max)}",
                    )
                )
            if guardrail.min is not None:
                verdicts.append(
                    (
                        value.value < guardrail.min,
                        f"{guardrail.name} of {variant} = {_fmt(value.value)} < min {_fmt(guardrail.min)}",
                    )
                )
            if (
                guardrail.relative
                and guardrail.rate is None
                and champion_value is not None
                and champion_value.has_value
            ):
                assert champion_value.value is not None
                delta = value.value - champion_value.value
                if guardrail.max_increase_over_champion is not None:
                    verdicts.append(
                        (
                            delta > guardrail.max_increase_over_champion,
                            f"{guardrail.name} of {variant} exceeds the champion's by {_fmt(delta)} "
                            f"(allowed {_fmt(guardrail.max_increase_over_champion)})",
                        )
                    )
                if guardrail.max_decrease_from_champion is not None:
                    verdicts.append(
                        (
                            -delta > guardrail.max_decrease_from_champion,
                            f"{guardrail.name} of {variant} is below the champion's by {_fmt(-delta)} "
                            f"(allowed {_fmt(guardrail.max_decrease_from_champion)})",
                        )
                    )
        if guardrail.rate is not None:
            verdicts.extend(self.judge_rate(guardrail, variant, state))
        if not verdicts:
            state["reason"] = f"{guardrail.name} of {variant}: no data yet"
            return state  # missing data: inconclusive, the breach count is kept as it is
        failing = [reason for breached, reason in verdicts if breached]
        if failing:
            state["breached"] = True
            state["breaches"] = breaches + 1
            state["reason"] = failing[0] + f" ({state['breaches']}/{guardrail.failure_limit} consecutive)"
        else:
            state["breaches"] = 0
            state["reason"] = f"{guardrail.name} of {variant} healthy"
        return state

    def judge_rate(self, guardrail: Guardrail, variant: str, state: dict[str, Any]) -> list[tuple[bool, str]]:
        """The always-valid one-sided harm test against the champion, per non-inferiority margin."""
        counters = self.counters_for(f"guardrail/{guardrail.name}")
        control, treatment = counters.get(self.champion), counters.get(variant)
        if control is None or treatment is None:
            return []
        tests_state: dict[str, Any] = self.engine.setdefault("guardrailTests", {})
        verdicts: list[tuple[bool, str]] = []
        checks = [
            ("increase", guardrail.max_increase_over_champion, True),
            ("decrease", guardrail.max_decrease_from_champion, False),
        ]
        for label, margin, higher_is_worse in checks:
            if margin is None:
                continue
            key = f"{guardrail.name}/{variant}/{label}"
            result = guardrail_harm_test(
                control,
                treatment,
                margin=margin,
                higher_is_worse=higher_is_worse,
                alpha=self.spec.analysis.test.alpha,
                state=SequentialState.from_dict(tests_state.get(key)),
            )
            if result.error:
                continue
            tests_state[key] = result.state.to_dict()
            state["pValue"] = result.p_value
            state["estimate"] = result.harm
            state["championValue"] = result.control_value
            state["value"] = result.treatment_value
            verdicts.append(
                (
                    bool(result.harm_detected),
                    f"{guardrail.name} of {variant}: harm beyond the margin {_fmt(margin)} detected "
                    f"(always-valid p = {_fmt(result.p_value)})",
                )
            )
        return verdicts

    def counters_for(self, key: str) -> dict[str, SufficientStats]:
        return self.counters.get(key, {})

    # ----------------------------------------------------------------- sample-ratio mismatch

    def judge_srm(self, data: dict[str, dict[str, SufficientStats]]) -> bool:
        if self.in_shadow() or self.status.get("challengerWeight", 0) == 0:
            self.condition("SampleRatioMismatch", False, "NotApplicable", "no split to check yet")
            return True
        if self.engine.get("stepSamples") is None:
            return True  # the split of this step has not settled yet
        observed = self.step_samples()
        weights = self.status.get("weights") or {}
        if set(observed) != set(self.variants) or sum(observed.values()) < SRM_MIN_TOTAL:
            self.condition(
                "SampleRatioMismatch",
                None,
                "NotEnoughData",
                f"{int(sum(observed.values()))} samples in this step",
            )
            return True
        expected_weights = {v: float(weights.get(v, 0)) for v in self.variants if weights.get(v, 0) > 0}
        result = self.srm_test({v: observed[v] for v in expected_weights}, expected_weights)
        p_text = f"{'chi-square' if result.method == SampleRatioMismatchMethod.CHI_SQUARE else 'always-valid'} p = {result.p_value:.3g}"
        analysis = self.status.setdefault("analysis", {})
        analysis["srm"] = {
            "method": result.method,
            "pValue": result.p_value,
            "mismatch": bool(result.mismatch),
            "observed": {v: int(n) for v, n in result.observed.items()} if result.observed else {},
            "expected": {v: round(float(n), 1) for v, n in result.expected.items()}
            if result.expected
            else {},
        }
        if result.error:
            self.condition("SampleRatioMismatch", None, "Error", result.error)
            return True
        acknowledged = self.engine.get("srmAcknowledged") == self.status.get("currentStep", 0)
        paused_for_srm = self.phase is Phase.PAUSED and self.status.get("pauseReason") == PAUSE_SRM
        if paused_for_srm and not result.mismatch:
            # The pause stands until a human resumes it, so the condition keeps saying why.
            self.condition(
                "SampleRatioMismatch",
                True,
                "PausedUntilResumed",
                f"paused on a mismatch in this step; now {p_text}",
            )
            return False
        if result.mismatch and not acknowledged:
            shares = ", ".join(f"{v} {int(observed[v])}" for v in expected_weights)
            reason = (
                f"sample-ratio mismatch: observed {shares} against weights "
                f"{', '.join(f'{v} {w:g}%' for v, w in expected_weights.items())} ({p_text})"
            )
            self.condition("SampleRatioMismatch", True, "Mismatch", reason)
            if self.phase is not Phase.PAUSED:
                self.pause(PAUSE_SRM, reason)
            return False
        if result.mismatch:
            self.condition(
                "SampleRatioMismatch",
                False,
                "Acknowledged",
                f"mismatch in this step resumed by hand ({p_text})",
            )
        else:
            self.condition("SampleRatioMismatch", False, "Matches", p_text)
        return True

    def srm_test(self, observed: dict[str, float], weights: dict[str, float]) -> SRMResult:
        """Test this step's split with the configured method.

        The sequential test's p-value is a running minimum over the looks at one step's counts; it is kept
        in the engine state with the step's baseline and weights, and starts over when either changes.
        """
        config = self.spec.analysis.sample_ratio_mismatch
        if config.method is SampleRatioMismatchMethod.CHI_SQUARE:
            return sample_ratio_mismatch(observed, weights, threshold=config.p_value_threshold)
        running = self.engine.get("srmRunning") or {}
        same_counts = (
            running.get("baseline") == self.engine.get("stepSamples") and running.get("weights") == weights
        )
        result = sequential_sample_ratio_mismatch(
            observed,
            weights,
            threshold=config.p_value_threshold,
            previous_p_value=running.get("pValue") if same_counts else None,
        )
        if result.error is None:
            self.engine["srmRunning"] = {
                "baseline": self.engine.get("stepSamples"),
                "weights": weights,
                "pValue": result.p_value,
            }
        return result

    # ----------------------------------------------------------------- the primary metric

    def decision_config(self, metric: Metric, planned_sample_size: int | None = None) -> DecisionConfig:
        test = self.spec.analysis.test
        return DecisionConfig(
            metric=StatsMetricType(metric.type.value),
            direction=Direction(metric.direction.value),
            mde=metric.minimum_detectable_effect,
            mde_relative=True,
            alpha=test.alpha,
            power=test.power,
            method=StatsMethod(test.method.value),
            planned_sample_size=planned_sample_size,
        )

    def planned_config(self, metric: Metric, control: SufficientStats, plan_key: str) -> DecisionConfig:
        """The metric's decision config with its own sample-size plan (FixedHorizon, GroupSequential).

        Each metric is planned from its own baseline and MDE, once, and the plan is frozen in the engine
        state under ``plan_key``.
        """
        config = self.decision_config(metric, self.engine.get(plan_key))
        if config.method is not StatsMethod.SEQUENTIAL and config.planned_sample_size is None:
            self.engine[plan_key] = _planned_n(metric, control, config)
            config = self.decision_config(metric, self.engine[plan_key])
        return config

    def judge_primary(self, data: dict[str, dict[str, SufficientStats]]) -> TickDecision | None:
        metric = self.spec.analysis.primary
        if metric is None:
            return None
        stats = data.get("primary", {})
        if self.champion not in stats or not any(c in stats for c in self.challengers):
            return None
        treatments = {c: stats[c] for c in self.challengers if c in stats}
        started = _parse_ts(self.status.get("startedAt"))
        elapsed = (self.now - started).total_seconds() if started else None
        config = self.planned_config(metric, stats[self.champion], "plannedSampleSize")
        state_key = "primaryState"
        tick = decide(
            stats[self.champion],
            treatments,
            config,
            state=self.engine.get(state_key),
            elapsed_seconds=elapsed,
        )
        self.engine[state_key] = tick.state.to_dict()
        analysis = self.status.setdefault("analysis", {})
        analysis["primary"] = {
            "metric": metric.name,
            "method": config.method.value,
            "error": tick.error,
            "results": [_result_dict(d) for d in tick.challengers.values()],
        }
        return tick

    def report_secondary(self, data: dict[str, dict[str, SufficientStats]]) -> None:
        """Secondary metrics: reported with Holm-corrected p-values across metrics and challengers."""
        rows: list[dict[str, Any]] = []
        for metric in self.spec.analysis.secondary:
            stats = data.get(f"secondary/{metric.name}", {})
            if self.champion not in stats:
                continue
            treatments = {c: stats[c] for c in self.challengers if c in stats}
            key = f"secondaryState/{metric.name}"
            config = self.planned_config(metric, stats[self.champion], f"plannedSampleSize/{metric.name}")
            tick = decide(stats[self.champion], treatments, config, state=self.engine.get(key))
            self.engine[key] = tick.state.to_dict()
            rows.extend({**_result_dict(d), "metric": metric.name} for d in tick.challengers.values())
        p_values = [r["pValue"] for r in rows if r.get("pValue") is not None]
        adjusted = iter(holm(p_values)) if p_values else iter(())
        for row in rows:
            if row.get("pValue") is not None:
                row["pValueFamilyAdjusted"] = next(adjusted)
        if rows or self.spec.analysis.secondary:
            self.status.setdefault("analysis", {})["secondary"] = rows

    # ----------------------------------------------------------------- steps and verdicts

    def advance(
        self, data: dict[str, dict[str, SufficientStats]], tick: TickDecision | None, guardrails_ok: bool
    ) -> None:
        if self.phase is not Phase.PROGRESSING:
            return
        fresh = self.engine.get("stepSamples") is None
        if fresh and self.traffic_in_place():
            # The data plane carries this step's weights (verified on the previous tick): its samples count
            # from here, and the step is judged on data collected at its weights only, from the next tick.
            self.engine["stepSamples"] = dict(self.samples)
        verdicts = {name: d.verdict for name, d in (tick.challengers.items() if tick else [])}
        results = {name: d for name, d in (tick.challengers.items() if tick else [])}
        if self.eliminate(verdicts, results):
            return
        active = self.active_challengers()
        winners = [c for c, v in verdicts.items() if v is Verdict.WIN and c in active]
        winner = max(winners, key=lambda c: results[c].relative_lift or 0.0) if winners else None

        if self.in_shadow():
            self.advance_shadow(guardrails_ok)
            return
        if self.spec.mode is Mode.AB_TEST:
            desired = self.desired_weights()
            if self.status.get("weights") != desired:
                self.set_weights(desired)
            else:
                self.hold_weights()
            if winner is not None:
                self.win(winner, results[winner].reason)
            else:
                self.record_decision(HOLD, self.hold_reason(tick))
            return
        self.advance_canary(winner, results, guardrails_ok and not fresh, tick, fresh)

    def traffic_in_place(self) -> bool:
        """Did the previous tick verify that the data plane carries the current weights?

        "CannotTell" (no observable status, e.g. no Gateway controller) is taken as in place.
        """
        traffic = self.status.get("traffic") or {}
        return traffic.get("verified") in ("Yes", "CannotTell") and traffic.get("weights") == self.status.get(
            "weights"
        )

    def active_challengers(self) -> list[str]:
        """Challengers still in the experiment (not eliminated by a Loss or Futile verdict)."""
        eliminated = set(self.engine.get("eliminated") or [])
        return [c for c in self.challengers if c not in eliminated]

    def eliminate(self, verdicts: Mapping[str, Verdict], results: Mapping[str, Any]) -> bool:
        """Take challengers that lost or cannot win out of the traffic; end when none is left.

        When every challenger is out: roll back if any lost, or cannot reach the MDE and is estimated
        worse than the champion; otherwise conclude, keeping the champion. Returns True when it ended.
        """
        metric = self.spec.analysis.primary
        eliminated = list(self.engine.get("eliminated") or [])
        for challenger in self.challengers:
            verdict = verdicts.get(challenger)
            if verdict in (Verdict.LOSS, Verdict.FUTILE) and challenger not in eliminated:
                eliminated.append(challenger)
                if len(eliminated) < len(self.challengers):
                    self.event(
                        "Warning" if verdict is Verdict.LOSS else "Normal",
                        "ChallengerEliminated",
                        f"{challenger} leaves the experiment ({verdict.value}): {results[challenger].reason}",
                    )
                    self.engine["stepSamples"] = None  # the split changes: count the step's samples anew
        self.engine["eliminated"] = eliminated
        if not self.challengers or len(eliminated) < len(self.challengers) or metric is None:
            return False
        direction = 1 if metric.direction.value == "Increase" else -1
        bad = [
            c
            for c in self.challengers
            if verdicts.get(c) is Verdict.LOSS
            or (verdicts.get(c) is Verdict.FUTILE and direction * (results[c].absolute_difference or 0.0) < 0)
        ]
        if bad:
            worst = results[bad[0]]
            why = (
                worst.reason
                if verdicts.get(bad[0]) is Verdict.LOSS
                else f"cannot reach the minimum detectable effect and is estimated worse than the champion: {worst.reason}"
            )
            self.rollback(f"{metric.name}: {why} (p = {_fmt(worst.p_value)})")
        else:
            first = results[self.challengers[0]]
            self.end(
                Phase.CONCLUDED,
                CONCLUDE,
                f"no challenger can reach the minimum detectable effect ({first.reason}); keeping the champion",
                self.champion,
            )
        return True

    def hold_conditions(self) -> list[str]:
        """What the current step still waits for (empty when it may end)."""
        waiting: list[str] = []
        steps = self.spec.steps or []
        step = steps[min(self.status.get("currentStep", 0), len(steps) - 1)] if steps else None
        started = _parse_ts(self.status.get("stepStartedAt"))
        min_duration = step.min_duration if step else None
        min_samples = step.min_samples if step else None
        if self.in_shadow():
            min_duration = self.spec.analysis.shadow.min_duration
            min_samples = self.spec.analysis.shadow.min_samples
        if min_duration and started is not None:
            held = (self.now - started).total_seconds()
            need = parse_duration(min_duration)
            if held < need:
                waiting.append(f"{held:.0f}s of {need:.0f}s")
        if min_samples:
            counts = self.step_samples()
            short = [
                f"{v} {int(counts.get(v, 0))}/{min_samples}"
                for v in self.variants
                if counts.get(v, 0) < min_samples
                and (self.status.get("weights", {}).get(v, 0) > 0 or self.in_shadow())
            ]
            if short:
                waiting.append("samples " + ", ".join(short))
        return waiting

    def hold_reason(self, tick: TickDecision | None) -> str:
        parts = []
        if tick is not None:
            for d in tick.challengers.values():
                parts.append(
                    f"{d.variant}: {d.verdict.value} (lift {_fmt(d.relative_lift, 3)}, p = {_fmt(d.p_value, 3)})"
                )
        elif self.spec.analysis.primary is not None:
            parts.append("no primary metric data yet")
        return "collecting data: " + ("; ".join(parts) if parts else "waiting")

    def advance_canary(
        self,
        winner: str | None,
        results: Mapping[str, Any],
        guardrails_ok: bool,
        tick: TickDecision | None,
        fresh: bool = False,
    ) -> None:
        steps = self.spec.steps or []
        current = int(self.status.get("currentStep", 0))
        desired = self.desired_weights()
        if self.status.get("weights") != desired:
            self.set_weights(desired)
        else:
            self.hold_weights()
        waiting = self.hold_conditions()
        if fresh:
            waiting.insert(
                0,
                "first look at this step's weights"
                if self.traffic_in_place()
                else "waiting for the data plane to carry this step's weights",
            )
        if waiting or not guardrails_ok:
            why = ", ".join(waiting) if waiting else "guardrails not healthy yet"
            self.record_decision(
                HOLD, f"step {current} ({desired_total(desired, self.challengers)}% challenger) held: {why}"
            )
            return
        if current < len(steps) - 1:
            from_label = self._label(Phase.PROGRESSING.value)
            self.status["currentStep"] = current + 1
            self.status["stepStartedAt"] = self.now_text
            self.engine["stepSamples"] = None
            new = self.desired_weights()
            self.set_weights(new)
            reason = (
                f"step {current} passed: guardrails healthy"
                f"{', ' + self.hold_reason(tick) if tick else ''}; now {desired_total(new, self.challengers)}% to challengers"
            )
            self.transition(Phase.PROGRESSING, reason, from_label=from_label)
            self.event("Normal", "Advanced", reason)
            self.record_decision(ADVANCE, reason)
            self.condition("Progressing", True, "Advanced", reason)
            return
        # The last step is done.
        if self.spec.analysis.primary is None:
            self.win(
                self.challengers[0],
                "every step passed with healthy guardrails (no primary metric configured)",
            )
        elif winner is not None:
            self.win(winner, results[winner].reason)
        else:
            self.record_decision(
                HOLD, f"last step held until the primary metric decides: {self.hold_reason(tick)}"
            )

    def advance_shadow(self, guardrails_ok: bool) -> None:
        self.hold_weights()
        waiting = self.hold_conditions()
        if waiting or not guardrails_ok:
            why = ", ".join(waiting) if waiting else "guardrails not healthy yet"
            self.record_decision(HOLD, f"judging the shadow: {why}")
            return
        guardrails = [g.name for g in self.spec.analysis.guardrails]
        reason = (
            f"shadow judged safe: guardrails {', '.join(guardrails)} healthy"
            if guardrails
            else "shadow judged safe: ran its minimum duration (no guardrails configured)"
        )
        if self.spec.analysis.shadow.continue_as_canary and self.spec.steps:
            from_label = self._label(Phase.PROGRESSING.value)  # the shadow's, before it has passed
            self.engine["shadowPassed"] = True
            self.engine["stepSamples"] = None
            self.status["currentStep"] = 0
            self.status["stepStartedAt"] = self.now_text
            self.set_weights(self.desired_weights())
            self.transition(
                Phase.PROGRESSING,
                f"{reason}; continuing as a canary",
                label="Progressing(step 0)",
                from_label=from_label,
            )
            self.event("Normal", "ShadowPassed", f"{reason}; continuing as a canary")
            self.record_decision(ADVANCE, f"{reason}; continuing as a canary")
            return
        self.end(Phase.CONCLUDED, CONCLUDE, f"{reason}: safe to canary", self.champion)

    def win(self, winner: str, why: str) -> None:
        reason = f"{winner} wins: {why}"
        if self.spec.decision.on_win is OnWin.PAUSE:
            if self.status.get("pauseReason") != PAUSE_AWAITING_PROMOTION:
                self.pause(
                    PAUSE_AWAITING_PROMOTION, f"{reason}; waiting for arbiter.dev/promote (onWin: Pause)"
                )
            self.hold_weights()
            return
        self.end(Phase.PROMOTED, PROMOTE, reason, winner)


def desired_total(weights: Mapping[str, int], challengers: list[str]) -> int:
    """The challengers' total share in a weight map."""
    return sum(weights.get(c, 0) for c in challengers)


def _result_dict(decision: Any) -> dict[str, Any]:
    raw = decision.to_dict()
    keep = {
        "variant": "variant",
        "verdict": "verdict",
        "reason": "reason",
        "n_control": "nControl",
        "n_treatment": "nTreatment",
        "control_value": "controlValue",
        "treatment_value": "treatmentValue",
        "absolute_difference": "absoluteDifference",
        "relative_lift": "relativeLift",
        "ci_low": "ciLow",
        "ci_high": "ciHigh",
        "p_value": "pValue",
        "p_value_adjusted": "pValueAdjusted",
        "looks": "looks",
        "method": "method",
        "error": "error",
    }
    return {camel: raw.get(snake) for snake, camel in keep.items() if raw.get(snake) is not None}


def _planned_n(metric: Metric, control: SufficientStats, config: DecisionConfig) -> int | None:
    """Per-arm sample size for FixedHorizon/GroupSequential, planned from the champion's baseline.

    The plan is made once, when the champion has PLANNING_MIN_SAMPLES samples in the experiment, and
    then frozen in status: re-planning on every look would let the data move the goalposts.
    """
    if (
        metric.type is MetricType.PROPORTION
        and isinstance(control, ProportionStats)
        and control.trials >= PLANNING_MIN_SAMPLES
    ):
        rate = control.successes / control.trials
        if not 0 < rate < 1:
            return None
        plan = sample_size_proportion(
            rate, metric.minimum_detectable_effect, relative=True, alpha=config.alpha, power=config.power
        )
    elif isinstance(control, MeanStats) and control.n >= PLANNING_MIN_SAMPLES and control.variance > 0:
        plan = sample_size_mean(
            control.mean,
            control.variance**0.5,
            metric.minimum_detectable_effect * abs(control.mean),
            relative=False,
            alpha=config.alpha,
            power=config.power,
        )
    else:
        return None
    n = getattr(plan, "sample_size_per_variant", None)
    return int(n) if n else None


def step(
    spec: ModelExperimentSpec,
    status: Mapping[str, Any],
    observations: Observations,
    now: dt.datetime,
    controls: Controls | None = None,
    generation: int | None = None,
) -> Plan:
    """Decide one tick for a Progressing, Paused or finished experiment.

    Args:
        spec: the parsed spec.
        status: the stored status (already admitted: phase Progressing or later).
        observations: what was read this tick.
        now: the tick's time (timezone-aware).
        controls: manual control annotations found on the object.
        generation: metadata.generation, recorded as observedGeneration.

    Returns:
        The new status, events to post and the traffic to route.
    """
    return _Tick(spec, status, observations, now, controls or Controls(), generation).run()
