"""spec.dryRun in the decision core: the same decisions as a real run, no traffic, the live split judged."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import pytest

from arbiter.api import ModelExperimentSpec, parse_spec
from arbiter.rollout.dry_run import LiveSplit
from arbiter.rollout.engine import Controls, Plan, step
from arbiter.rollout.lifecycle import admit
from arbiter.rollout.observations import Observations, Reading

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

SPEC: dict[str, Any] = {
    "mode": "Canary",
    "champion": {"name": "v1", "deployment": "d1", "service": "s1"},
    "challengers": [{"name": "v2", "deployment": "d2", "service": "s2"}],
    "routing": {"provider": "Router", "router": {"configMap": "routes"}},
    "steps": [{"weight": 10, "minDuration": "20s"}, {"weight": 50, "minDuration": "20s"}],
    "analysis": {
        "interval": "10s",
        "prometheus": {"url": "http://prometheus:9090"},
        "guardrails": [{"name": "latency", "query": "q", "max": 0.2, "failureLimit": 1, "critical": True}],
    },
}


def make_spec(dry_run: bool, **changes: Any) -> ModelExperimentSpec:
    spec = copy.deepcopy(SPEC)
    spec["dryRun"] = dry_run
    spec.update(changes)
    return parse_spec(spec)


def latency(v2: float) -> Observations:
    return Observations(guardrails={"latency": {"v1": Reading(value=0.1), "v2": Reading(value=v2)}})


class Run:
    """Ticks as the handler runs them; a real run's routing is read back as verified, a dry run's never."""

    def __init__(self, spec: ModelExperimentSpec) -> None:
        self.spec = spec
        self.now = T0
        admitted = admit(status={}, generation=1, spec=spec, spec_error=None, workload_problems=[], now="t0")
        self.status: dict[str, Any] = admitted.status
        self.status["startedAt"] = self.status["stepStartedAt"] = "2026-01-01T00:00:00Z"
        self.plans: list[Plan] = []

    def tick(self, observations: Observations, live: LiveSplit | None = None) -> Plan:
        self.now += dt.timedelta(seconds=10)
        plan = step(self.spec, self.status, observations, self.now, Controls(), 1, live=live)
        self.status = plan.status
        if plan.routing is not None and not plan.routing.final:
            self.status["traffic"] = {"verified": "Yes", "weights": plan.routing.weights}
        self.plans.append(plan)
        return plan

    def decisions(self) -> list[tuple[str, str]]:
        """(phase, outcome) as they changed (a real run waits a tick per step for its routes to apply)."""
        seen = [(p.status["phase"], p.status["decision"]["outcome"]) for p in self.plans]
        return [d for i, d in enumerate(seen) if i == 0 or seen[i - 1] != d]


LIVE_70_30 = LiveSplit({"v1": 70, "v2": 30}, "read from Router")


def test_a_dry_run_decides_like_a_real_run_and_routes_nothing() -> None:
    real, dry = Run(make_spec(False)), Run(make_spec(True))
    for _ in range(8):
        real.tick(latency(0.1))
        dry.tick(latency(0.1), LIVE_70_30)
    assert real.status["phase"] == "Promoted"
    assert dry.decisions() == real.decisions(), "the same decisions, in the same order"
    assert ("Progressing", "Advance") in dry.decisions()
    assert all(p.routing is None for p in dry.plans), "a dry run never routes"
    assert dry.status["weights"] == {"v1": 70, "v2": 30}, "status shows the split users really get"
    assert dry.status["dryRun"]["wouldRoute"] == {"v1": 0, "v2": 100}
    assert dry.status["dryRun"]["wouldHave"] == "promoted v2"
    assert dry.status["decision"]["dryRun"] is True and dry.status["message"].startswith("dry run: ")
    reasons = [e.reason for p in dry.plans for e in p.events]
    assert "DryRunAdvanced" in reasons and "DryRunPromoted" in reasons
    assert "Promoted" not in reasons and "Advanced" not in reasons
    promoted = next(e for p in dry.plans for e in p.events if e.reason == "DryRunPromoted")
    assert promoted.type == "Normal" and promoted.message.startswith("dry run, no traffic changed: ")


def test_a_dry_run_would_roll_back_on_a_critical_guardrail_without_touching_traffic() -> None:
    dry = Run(make_spec(True))
    dry.tick(latency(0.1), LIVE_70_30)
    plan = dry.tick(latency(0.9), LIVE_70_30)
    assert dry.status["phase"] == "RolledBack" and plan.routing is None
    assert dry.status["dryRun"]["wouldHave"] == "rolled back to v1"
    assert dry.status["weights"] == {"v1": 70, "v2": 30}
    assert [e.reason for e in plan.events if "RolledBack" in e.reason] == ["DryRunRolledBack"]


def test_the_live_split_is_the_one_judged_and_a_change_restarts_the_step_count() -> None:
    dry = Run(make_spec(True, steps=[{"weight": 10, "minDuration": "10m"}]))

    def counted(v1: float, v2: float) -> Observations:
        samples = {"v1": Reading(value=v1), "v2": Reading(value=v2)}
        return Observations(guardrails=latency(0.1).guardrails, samples=samples)

    dry.tick(counted(700, 300), LIVE_70_30)
    assert dry.status["traffic"] == {
        "verified": "Yes",
        "reason": "dry run: the live split (read from Router)",
        "weights": {"v1": 70, "v2": 30},
    }
    # Counts are relative to the experiment's first reading: the step counts from 0 at the live split.
    assert dry.status["engine"]["stepSamples"] == {"v1": 0, "v2": 0}, "the live split is in place"
    dry.tick(counted(1400, 600), LIVE_70_30)
    assert dry.status["engine"]["stepSamples"] == {"v1": 0, "v2": 0}
    dry.tick(counted(2000, 1000), LiveSplit({"v1": 60, "v2": 40}, "read from Router"))
    assert dry.status["engine"]["stepSamples"] == {"v1": 1300, "v2": 700}, "a new split counts anew"
    assert dry.status["weights"] == {"v1": 60, "v2": 40}


def test_an_unreadable_live_split_is_reported_and_nothing_is_routed() -> None:
    dry = Run(make_spec(True))
    plan = dry.tick(latency(0.1), LiveSplit(None, "could not read the live split from Router: not found"))
    assert plan.routing is None
    assert dry.status["traffic"]["verified"] == "CannotTell"
    assert "not found" in dry.status["dryRun"]["observed"]
    assert "observedWeights" not in dry.status["dryRun"]


@pytest.mark.parametrize("dry_run", [False, True])
def test_sample_ratio_is_judged_against_the_split_the_traffic_really_has(dry_run: bool) -> None:
    """Samples split 70/30, as the live split: a dry run sees no mismatch; a real run at 90/10 would."""
    spec = make_spec(dry_run, steps=[{"weight": 10, "minDuration": "10m"}])
    spec = parse_spec(
        {
            **spec.model_dump(by_alias=True, exclude_none=True),
            "analysis": {
                **SPEC["analysis"],
                "sampleCount": "samples",
            },
        }
    )
    run = Run(spec)
    counts = {"v1": 0.0, "v2": 0.0}
    for _ in range(6):
        counts = {"v1": counts["v1"] + 7000, "v2": counts["v2"] + 3000}
        obs = latency(0.1)
        obs = Observations(
            guardrails=obs.guardrails, samples={v: Reading(value=n) for v, n in counts.items()}
        )
        run.tick(obs, LIVE_70_30 if dry_run else None)
    assert (run.status["phase"] == "Paused") is (not dry_run), run.status.get("decision")
