"""Deterministic experiments, a timeline of status against the data plane, and the judge of a faulted run.

The operator-kill and leader-handover tests compare every faulted run with an undisturbed run of the
same experiment. For that comparison to mean anything the outcome must not depend on chance, so the two
kinds of experiment here decide on nothing random:

- ``promote``: a canary 20% -> 50% -> 80% whose steps pass on ``minDuration`` alone with one guardrail
  that is always healthy on real data (the router's scrape target is up, read from the real Prometheus);
  with no primary metric the engine promotes once the last step passed: steps 0, 1, 2, then Promoted.
- ``abort``: a canary 20% -> 50% whose step 1 lasts ten minutes; the test annotates
  ``arbiter.dev/abort`` as soon as it sees step 1 (a human outranks the machine): steps 0, 1, then
  RolledBack, the champion at 100%.

:class:`Timeline` polls an experiment's status and its router's weights (the data plane: what the router
process itself says is in force) side by side; :func:`judge` turns the timeline and the final status into
a :class:`chaos_ledger.ChaosRun`.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from harness.env import RolloutEnv
from harness.experiment import GROUP, PLURAL, TERMINAL, VERSION, status_of

from chaos_ledger import ChaosRun

INTERVAL_SECONDS = 1.0
KINDS = ("promote", "abort")


def guardrail_router_up() -> dict[str, Any]:
    """A guardrail that real data keeps healthy: the test's router is scraped (``up`` is 1)."""
    return {"name": "router-up", "query": 'max(up{job="arbiter-router-{{namespace}}"})', "min": 1}


def manifest(env: RolloutEnv, kind: str) -> dict[str, Any]:
    """The ModelExperiment of ``kind`` (``promote`` or ``abort``) for ``env``'s variants."""
    if kind == "promote":
        steps = [
            {"weight": 20, "minDuration": "3s"},
            {"weight": 50, "minDuration": "3s"},
            {"weight": 80, "minDuration": "3s"},
        ]
    elif kind == "abort":
        steps = [{"weight": 20, "minDuration": "3s"}, {"weight": 50, "minDuration": "10m"}]
    else:
        raise ValueError(f"unknown experiment kind {kind!r}")
    return env.experiment(
        steps=steps, interval=f"{INTERVAL_SECONDS:g}s", guardrails=[guardrail_router_up()], primary=None
    )


def history_steps(history: list[dict[str, Any]]) -> list[int]:
    """The step each history entry entered, in order (entries that enter no step are left out)."""
    import re

    out = []
    for entry in history:
        match = re.search(r"step[\s/#=:-]*(\d+)", str(entry.get("to") or ""), re.IGNORECASE)
        if match:
            out.append(int(match[1]))
    return out


def nonzero(weights: dict[str, Any] | None) -> dict[str, float]:
    """Weights without the variants at 0 (a finalized route may or may not list them)."""
    return {k: float(v) for k, v in (weights or {}).items() if float(v) > 0}


@dataclass
class Sample:
    """One look at status and data plane."""

    at: float
    phase: str | None
    step: int | None
    status_weights: dict[str, float]
    plane_weights: dict[str, float]


@dataclass
class Timeline:
    """Polls one experiment's status and its router's weights in the background, every ``period`` s.

    ``down`` holds the intervals (monotonic start, end) when no operator was serving (killed, not yet
    ready again): divergence while nobody can tick is not counted in ticks.
    """

    env: RolloutEnv
    name: str
    period: float = 0.2
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Timeline:
        self._thread = threading.Thread(target=self._run, name=f"timeline-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def last(self) -> Sample | None:
        return self.samples[-1] if self.samples else None

    def _run(self) -> None:
        assert self.env.router is not None
        while not self._stop.is_set():
            try:
                status = status_of(self.env.kube_api, self.env.namespace, self.name)
                plane = self.env.router.weights()
            except Exception:  # a transient read failure (or the object not yet created): look again
                self._stop.wait(self.period)
                continue
            self.samples.append(
                Sample(
                    time.monotonic(),
                    status.get("phase"),
                    status.get("currentStep"),
                    nonzero(status.get("weights")),
                    nonzero(plane),
                )
            )
            self._stop.wait(self.period)


def divergence_ticks(samples: list[Sample], down: list[tuple[float, float]], interval: float) -> int:
    """The longest time status and data plane disagreed, minus operator downtime, in ticks (rounded up).

    Only samples where both sides have weights count (before the first route there is nothing to
    compare). A disagreement lasts from the first sample that shows it to the first that does not.
    """
    longest, _ = worst_divergence(samples, down)
    return math.ceil(longest / interval - 1e-9) if longest > 0 else 0


def worst_divergence(samples: list[Sample], down: list[tuple[float, float]]) -> tuple[float, Sample | None]:
    """The longest disagreement (seconds outside downtime) and the sample where it began."""
    longest, worst = 0.0, None
    begun: Sample | None = None
    for sample in samples:
        if not sample.status_weights or not sample.plane_weights:
            continue
        differ = sample.status_weights != sample.plane_weights
        if differ and begun is None:
            begun = sample
        elif not differ and begun is not None:
            live = _live(begun.at, sample.at, down)
            if live > longest:
                longest, worst = live, begun
            begun = None
    if begun is not None and samples:
        live = _live(begun.at, samples[-1].at, down)
        if live > longest:
            longest, worst = live, begun
    return longest, worst


def settled(samples: list[Sample]) -> bool:
    """Whether status and data plane agree at the last look where both have weights."""
    comparable = [s for s in samples if s.status_weights and s.plane_weights]
    return bool(comparable) and comparable[-1].status_weights == comparable[-1].plane_weights


def _live(start: float, end: float, down: list[tuple[float, float]]) -> float:
    """Seconds of [start, end] not covered by any downtime interval."""
    covered = sum(max(0.0, min(end, b) - max(start, a)) for a, b in down)
    return max(0.0, end - start - covered)


@dataclass(frozen=True)
class Outcome:
    """What a run ended with: its phase, the steps status entered, the weights the router loaded."""

    phase: str | None
    steps: list[int]
    plane: list[dict[str, float]]


def outcome_of(env: RolloutEnv, name: str, plane_from: int) -> Outcome:
    """The run's outcome; ``plane_from``: how many router loads (from its log) predate this run."""
    assert env.router is not None
    status = status_of(env.kube_api, env.namespace, name)
    loads = [nonzero(w) for w in env.router.loaded_weights()[plane_from:]]
    distinct = [w for i, w in enumerate(loads) if w and (i == 0 or w != loads[i - 1])]
    # The routes the operator creates before the first step (all to the champion) exist only when the
    # router's ConfigMap is new, i.e. in a world's first run: they are not a step.
    while distinct and distinct[0] == {env.variant_names[0]: 100.0}:
        distinct.pop(0)
    return Outcome(status.get("phase"), history_steps(status.get("history") or []), distinct)


def judge(
    fault: str,
    reference: Outcome,
    run: Outcome,
    divergence: int,
    detail: str,
    handover_seconds: float | None = None,
) -> ChaosRun:
    """Compare a faulted run with the undisturbed reference.

    Steps lost: the reference's steps the run never entered, in status or in the data plane (a weight
    set of the reference the router never loaded). Steps doubled: steps status entered more than once,
    and weight sets the router went back to after leaving them.
    """
    lost = len([s for s in set(reference.steps) if s not in run.steps])
    lost += len([w for w in reference.plane if w not in run.plane])
    doubled = len(run.steps) - len(set(run.steps))
    doubled += len(run.plane) - len({tuple(sorted(w.items())) for w in run.plane})
    return ChaosRun(
        fault=fault,
        outcome_differed=run.phase != reference.phase,
        steps_lost=lost,
        steps_doubled=doubled,
        divergence_ticks=divergence,
        handover_seconds=handover_seconds,
        detail=f"{detail}; phase {run.phase} (reference {reference.phase}); steps {run.steps} "
        f"(reference {reference.steps}); data plane {run.plane}",
    )


# -- driving experiments ----------------------------------------------------------------------------


def create(env: RolloutEnv, kind: str) -> None:
    """Create the experiment of ``kind`` in ``env`` (after any earlier one of the same name is gone)."""
    from kubernetes import client

    api = client.CustomObjectsApi(env.kube_api)
    api.create_namespaced_custom_object(GROUP, VERSION, env.namespace, PLURAL, manifest(env, kind))


def delete_and_wait(env: RolloutEnv, timeout: float = 60) -> None:
    """Delete the env's experiment and wait until it is gone (its finalizer needs a running operator)."""
    from kubernetes import client

    from helpers import wait_for

    api = client.CustomObjectsApi(env.kube_api)
    try:
        api.delete_namespaced_custom_object(GROUP, VERSION, env.namespace, PLURAL, env.experiment_name)
    except client.exceptions.ApiException as err:
        if err.status != 404:
            raise

    def gone() -> bool:
        try:
            api.get_namespaced_custom_object(GROUP, VERSION, env.namespace, PLURAL, env.experiment_name)
        except client.exceptions.ApiException as err:
            return err.status == 404
        return False

    wait_for(gone, timeout=timeout, message=f"{env.namespace}/{env.experiment_name} to be deleted")


def abort_when_in_step_1(env: RolloutEnv, kind: str, sample: Sample | None, aborted: set[str]) -> None:
    """The ``abort`` experiment's human: annotate abort once status shows step 1 (once per run)."""
    from kubernetes import client

    if kind != "abort" or env.namespace in aborted or sample is None:
        return
    if sample.phase == "Progressing" and sample.step == 1:
        client.CustomObjectsApi(env.kube_api).patch_namespaced_custom_object(
            GROUP,
            VERSION,
            env.namespace,
            PLURAL,
            env.experiment_name,
            {"metadata": {"annotations": {"arbiter.dev/abort": f"chaos-{time.time_ns()}"}}},
        )
        aborted.add(env.namespace)


def finished(sample: Sample | None) -> bool:
    """Whether the sample shows a final phase."""
    return sample is not None and sample.phase in TERMINAL


def progressing_past(sample: Sample | None, step: int) -> bool:
    """Whether the sample shows the experiment progressing in ``step`` or a later one."""
    return sample is not None and sample.phase == "Progressing" and (sample.step or 0) >= step


def router_loads(env: RolloutEnv) -> int:
    """How many routes versions the env's router has loaded so far."""
    assert env.router is not None
    return len(env.router.loaded_weights())
