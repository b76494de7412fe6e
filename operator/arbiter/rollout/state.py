"""The engine's typed memory between ticks, kept in ``status.engine`` so a restart resumes exactly.

:class:`EngineState` reads and writes the same JSON the engine has always stored (a status written by an
earlier version resumes unchanged; ``tests/unit/rollout/test_golden.py`` proves it). A key the engine
never wrote stays absent, so ``to_status(from_status(x)) == x`` for every stored ``x``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final

from arbiter.stats import DecisionState


class _NotRecorded:
    """Marks a key absent from the stored state (as opposed to stored as null)."""

    def __repr__(self) -> str:
        return "NOT_RECORDED"


NOT_RECORDED: Final = _NotRecorded()

#: The samples tracker's key among the counter trackers.
SAMPLES_KEY = "samples"


@dataclass(frozen=True)
class CounterTracker:
    """One cumulative counter's memory: totals when tracking began, carried over restarts, and last read."""

    base: tuple[float, ...]
    carry: tuple[float, ...]
    last: tuple[float, ...]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CounterTracker:
        """Rebuild from the stored ``{"base", "carry", "last"}`` lists."""
        return cls(*(tuple(float(x) for x in data[key]) for key in ("base", "carry", "last")))

    def to_dict(self) -> dict[str, list[float]]:
        """The stored form."""
        return {"base": list(self.base), "carry": list(self.carry), "last": list(self.last)}


#: Trackers per source (``primary``, ``secondary/<name>``, ``guardrail/<name>``, ``samples``) and variant.
CounterTrackers = Mapping[str, Mapping[str, CounterTracker]]


@dataclass(frozen=True)
class SrmRunning:
    """The running minimum of the anytime-valid SRM p-value over one step's looks."""

    baseline: Mapping[str, float] | None
    weights: Mapping[str, float]
    p_value: float

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> SrmRunning | None:
        """Rebuild from the stored form; None when nothing is stored."""
        if not data:
            return None
        return cls(data.get("baseline"), data.get("weights") or {}, float(data["pValue"]))

    def to_dict(self) -> dict[str, Any]:
        """The stored form."""
        baseline = None if self.baseline is None else dict(self.baseline)
        return {"baseline": baseline, "weights": dict(self.weights), "pValue": self.p_value}


@dataclass(frozen=True)
class EngineState:
    """Everything the engine remembers between ticks.

    Attributes:
        identity: hash of what defines the experiment; a change restarts the analysis.
        consecutive_errors: ticks in a row with failing queries (None before the first judgement).
        counters: cumulative counter trackers (None before the first reading).
        step_samples: the sample counts when the current step's split was verified in place; None
            (or NOT_RECORDED) while the step has not settled.
        eliminated: challengers taken out of the traffic (None before the first step judgement).
        shadow_passed: a Shadow experiment that continues as a canary has passed its shadow phase.
        srm_acknowledged: the step whose sample-ratio mismatch a human resumed.
        srm_running: the anytime-valid SRM test's running state.
        guardrail_tests: sequential harm-test state per ``guardrail/variant/direction``.
        primary: the primary metric's sequential decision state.
        secondary: each secondary metric's decision state.
        planned_sizes: frozen FixedHorizon/GroupSequential sample sizes, per plan key (a value of None
            is stored: the plan was tried and the baseline could not support it yet).
        routed: written by the handler once the provider was reconciled for the first time.
    """

    identity: str | None = None
    consecutive_errors: int | None = None
    counters: CounterTrackers | None = None
    step_samples: Mapping[str, float] | _NotRecorded | None = NOT_RECORDED
    eliminated: tuple[str, ...] | None = None
    shadow_passed: bool = False
    srm_acknowledged: int | None = None
    srm_running: SrmRunning | None = None
    guardrail_tests: Mapping[str, Mapping[str, Any]] | None = None
    primary: DecisionState | None = None
    secondary: Mapping[str, DecisionState] = field(default_factory=dict)
    planned_sizes: Mapping[str, int | None] = field(default_factory=dict)
    routed: bool = False

    @property
    def step_baseline(self) -> Mapping[str, float] | None:
        """The step's sample baseline, or None while the step has not settled."""
        return None if isinstance(self.step_samples, _NotRecorded) else self.step_samples

    def restarted(self) -> EngineState:
        """A fresh state that keeps only the identity (the analysis starts over)."""
        return EngineState(identity=self.identity)

    def with_step_unsettled(self) -> EngineState:
        """The split changes: the step's samples are counted anew once it is verified in place."""
        return replace(self, step_samples=None)

    @classmethod
    def from_status(cls, status: Mapping[str, Any]) -> EngineState:
        """Read ``status.engine``."""
        raw: Mapping[str, Any] = status.get("engine") or {}
        counters = raw.get("counters")
        return cls(
            identity=raw.get("identity"),
            consecutive_errors=raw.get("consecutiveErrors"),
            counters=None
            if counters is None
            else {
                source: {v: CounterTracker.from_dict(t) for v, t in per_variant.items()}
                for source, per_variant in counters.items()
            },
            step_samples=raw.get("stepSamples", NOT_RECORDED),
            eliminated=None if raw.get("eliminated") is None else tuple(raw["eliminated"]),
            shadow_passed=bool(raw.get("shadowPassed")),
            srm_acknowledged=raw.get("srmAcknowledged"),
            srm_running=SrmRunning.from_dict(raw.get("srmRunning")),
            guardrail_tests=raw.get("guardrailTests"),
            primary=DecisionState.from_dict(raw["primaryState"]) if "primaryState" in raw else None,
            secondary={
                key.removeprefix(_SECONDARY): DecisionState.from_dict(value)
                for key, value in raw.items()
                if key.startswith(_SECONDARY)
            },
            planned_sizes={key: value for key, value in raw.items() if key.startswith(_PLANNED)},
            routed=bool(raw.get("routed")),
        )

    def to_status(self) -> dict[str, Any]:
        """The ``status.engine`` object."""
        out: dict[str, Any] = {}
        if self.identity is not None:
            out["identity"] = self.identity
        if self.consecutive_errors is not None:
            out["consecutiveErrors"] = self.consecutive_errors
        if self.counters is not None:
            out["counters"] = {
                source: {v: t.to_dict() for v, t in per_variant.items()}
                for source, per_variant in self.counters.items()
            }
        if not isinstance(self.step_samples, _NotRecorded):
            out["stepSamples"] = None if self.step_samples is None else dict(self.step_samples)
        if self.eliminated is not None:
            out["eliminated"] = list(self.eliminated)
        if self.shadow_passed:
            out["shadowPassed"] = True
        if self.srm_acknowledged is not None:
            out["srmAcknowledged"] = self.srm_acknowledged
        if self.srm_running is not None:
            out["srmRunning"] = self.srm_running.to_dict()
        if self.guardrail_tests is not None:
            out["guardrailTests"] = {key: dict(value) for key, value in self.guardrail_tests.items()}
        if self.primary is not None:
            out["primaryState"] = self.primary.to_dict()
        for name, state in self.secondary.items():
            out[_SECONDARY + name] = state.to_dict()
        out.update(self.planned_sizes)
        if self.routed:
            out["routed"] = True
        return out


_SECONDARY = "secondaryState/"
_PLANNED = "plannedSampleSize"
