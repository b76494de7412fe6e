"""Judges of what outranks the statistics: manual controls, ``spec.paused``, identity changes, timeout.

Order of judgement rows 0-3 (docs/rollout.md). Each function returns a report; nothing here writes status.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from arbiter.api import TERMINAL_PHASES, ModelExperimentSpec, OnTimeout, Phase, parse_duration
from arbiter.rollout.actions import Action, DecisionOutcome, End, Hold, Pause, PauseReason, Unpause
from arbiter.rollout.state import EngineState
from arbiter.rollout.view import TickView

#: Manual control annotations: each new value is acted on once.
ACTION_ANNOTATIONS = ("promote", "abort", "retry", "resume")
ANNOTATION_PREFIX = "arbiter.dev/"


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

    def pending(self, handled: Mapping[str, str]) -> dict[str, str]:
        """The actions whose annotation value has not been handled yet."""
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


@dataclass(frozen=True)
class IdentityReport:
    """The experiment's identity now, and whether its change restarts the analysis."""

    identity: str
    restart: bool
    reason: str = "the variants, mode or primary metric changed: the analysis restarts at step 0"


def judge_identity(spec: ModelExperimentSpec, state: EngineState, phase: Phase) -> IdentityReport:
    """A running experiment whose variants, mode or primary metric changed starts over."""
    current = identity_hash(spec)
    previous = state.identity
    restart = previous is not None and previous != current and phase not in TERMINAL_PHASES
    return IdentityReport(current, restart)


@dataclass(frozen=True)
class Resume:
    """Resume a pause by hand; a resumed sample-ratio mismatch is acknowledged for its step."""

    reason: str
    acknowledge_srm_step: int | None = None


@dataclass(frozen=True)
class Retry:
    """Start a finished experiment over at step 0."""

    reason: str


@dataclass(frozen=True)
class ControlReport:
    """What the annotations ask for this tick.

    Attributes:
        handled: the new ``status.handledActions`` (None when no annotation value is new).
        ignored: warnings for actions that do not apply, in the order they are posted.
        action: the one action taken (abort and promote end the experiment).
    """

    handled: Mapping[str, str] | None = None
    ignored: tuple[str, ...] = ()
    action: End | Resume | Retry | None = None


def _handled(view: TickView, pending: Mapping[str, str]) -> dict[str, str] | None:
    return {**view.handled_actions, **pending} if pending else None


def judge_terminal_controls(view: TickView, controls: Controls) -> ControlReport:
    """After a decision only ``retry`` applies (after a rollback or conclusion); the rest is ignored."""
    pending = controls.pending(view.handled_actions)
    handled = _handled(view, pending)
    if "retry" in pending and view.phase in (Phase.ROLLED_BACK, Phase.CONCLUDED):
        reason = f"retry requested (arbiter.dev/retry={pending['retry']}): starting over at step 0"
        return ControlReport(handled, action=Retry(reason))
    if pending:
        names = ", ".join(sorted(pending))
        return ControlReport(handled, ignored=(f"{names} ignored: the experiment is {view.phase.value}",))
    return ControlReport(handled)


def judge_controls(spec: ModelExperimentSpec, view: TickView, controls: Controls) -> ControlReport:
    """Abort, promote and resume act at once; the first that applies ends the tick."""
    pending = controls.pending(view.handled_actions)
    handled = _handled(view, pending)
    champion = spec.champion.name
    challengers = [c.name for c in spec.challengers]
    if "abort" in pending:
        reason = f"aborted by arbiter.dev/abort={pending['abort']}"
        return ControlReport(
            handled, action=End(Phase.ROLLED_BACK, DecisionOutcome.ROLLBACK, reason, champion)
        )
    ignored: list[str] = []
    if "promote" in pending:
        target = pending["promote"] if pending["promote"] in challengers else None
        if target is None and len(challengers) == 1:
            target = challengers[0]
        if target is None:
            ignored.append(
                f"arbiter.dev/promote={pending['promote']} does not name a challenger ({', '.join(challengers)})"
            )
        else:
            reason = f"promoted {target} by arbiter.dev/promote"
            return ControlReport(handled, action=End(Phase.PROMOTED, DecisionOutcome.PROMOTE, reason, target))
    if "resume" in pending and view.phase is Phase.PAUSED:
        if view.pause_reason == PauseReason.SPEC:
            ignored.append("resume ignored: spec.paused is true")
        else:
            acknowledge = view.current_step if view.pause_reason == PauseReason.SRM else None
            resume = Resume(f"resumed by arbiter.dev/resume={pending['resume']}", acknowledge)
            return ControlReport(handled, tuple(ignored), resume)
    if "retry" in pending:
        ignored.append("retry only applies after a rollback or conclusion")
    return ControlReport(handled, tuple(ignored))


@dataclass(frozen=True)
class GateReport:
    """A judge that may end the tick before the metrics are read.

    Attributes:
        over: the tick ends here (the traffic is held unless the action ends the experiment).
        action: what to do before that.
    """

    over: bool = False
    action: Action | None = None


def judge_spec_pause(spec: ModelExperimentSpec, view: TickView) -> GateReport:
    """``spec.paused`` freezes the experiment; setting it back to false resumes it."""
    paused_by_spec = view.pause_reason == PauseReason.SPEC
    if spec.paused:
        return GateReport(True, None if paused_by_spec else Pause(PauseReason.SPEC, "paused by spec.paused"))
    if view.phase is Phase.PAUSED and paused_by_spec:
        return GateReport(True, Unpause("spec.paused is false again"))
    return GateReport()


def judge_workloads(problems: Sequence[str]) -> GateReport:
    """A variant's Deployment or Service is missing or not ready: hold everything until it is back.

    A challenger deleted or crash-looping mid-experiment produces no data, or only its own failure's data:
    nothing is advanced, promoted or rolled back on that (``Ready=False``, reason ``WorkloadsNotReady``,
    says why). Manual controls and ``maxDuration`` are judged before this, so a human can still abort and
    an experiment never waits forever.
    """
    if not problems:
        return GateReport()
    return GateReport(True, Hold("held: waiting for workloads: " + "; ".join(problems)))


def judge_timeout(spec: ModelExperimentSpec, view: TickView) -> GateReport:
    """``maxDuration`` reached: keep the champion, or pause for a human (``onTimeout: Pause``)."""
    limit = parse_duration(spec.decision.max_duration)
    if view.started_at is None or (view.now - view.started_at).total_seconds() < limit:
        return GateReport()
    reason = f"maxDuration {spec.decision.max_duration} reached without a decision"
    if spec.decision.on_timeout is OnTimeout.KEEP_CHAMPION:
        end = End(
            Phase.CONCLUDED, DecisionOutcome.CONCLUDE, f"{reason}; keeping the champion", spec.champion.name
        )
        return GateReport(True, end)
    if view.pause_reason == PauseReason.TIMEOUT:
        return GateReport(True)
    return GateReport(True, Pause(PauseReason.TIMEOUT, f"{reason}; paused (onTimeout: Pause)"))
