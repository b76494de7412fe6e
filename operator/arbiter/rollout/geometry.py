"""Where traffic should be: step weights, the shadow's mirror and history labels. Pure functions."""

from __future__ import annotations

from arbiter.api import Mode, ModelExperimentSpec, Phase
from arbiter.api.weights import split_weights
from arbiter.rollout.state import EngineState

#: Default A/B split when an ABTest gives no steps.
DEFAULT_AB_WEIGHT = 50


def in_shadow(spec: ModelExperimentSpec, state: EngineState) -> bool:
    """A Shadow experiment that has not passed (and continued as a canary) yet."""
    return spec.mode is Mode.SHADOW and not state.shadow_passed


def mirror(spec: ModelExperimentSpec, state: EngineState) -> tuple[str, int] | None:
    """The challenger mirrored to, and the percent of champion traffic, while in shadow."""
    if not in_shadow(spec, state):
        return None
    shadow = spec.routing.shadow
    return (spec.challengers[0].name, shadow.percent if shadow else 100)


def target_percent(spec: ModelExperimentSpec, state: EngineState, step: int) -> int:
    """The challengers' total share at a step (Canary) or throughout (ABTest)."""
    steps = spec.steps or []
    if spec.mode is Mode.AB_TEST:
        return steps[-1].weight if steps else DEFAULT_AB_WEIGHT
    if in_shadow(spec, state):
        return 0
    return steps[min(step, len(steps) - 1)].weight if steps else 0


def active_challengers(spec: ModelExperimentSpec, state: EngineState) -> list[str]:
    """Challengers still in the experiment (not eliminated by a Loss or Futile verdict)."""
    eliminated = set(state.eliminated or ())
    return [c.name for c in spec.challengers if c.name not in eliminated]


def desired_weights(spec: ModelExperimentSpec, state: EngineState, step: int) -> dict[str, int]:
    """The step's (or A/B split's) weights over the challengers still in the experiment."""
    champion = spec.champion.name
    challengers = [c.name for c in spec.challengers]
    active = active_challengers(spec, state)
    if not active:
        return split_weights(champion, challengers, 0)
    weights = split_weights(champion, active, target_percent(spec, state, step))
    return {v.name: weights.get(v.name, 0) for v in spec.variants}


def challenger_total(weights: dict[str, int], spec: ModelExperimentSpec) -> int:
    """The challengers' total share in a weight map."""
    return sum(weights.get(c.name, 0) for c in spec.challengers)


def phase_label(phase: str, spec: ModelExperimentSpec, state: EngineState, step: int) -> str:
    """How the history names a phase: Progressing carries its step, except in shadow."""
    if phase == Phase.PROGRESSING.value and not in_shadow(spec, state):
        return f"Progressing(step {step})"
    return phase
