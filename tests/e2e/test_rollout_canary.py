"""Canary stories on real parts: the operator, the API server, Prometheus, the router and model servers.

Each story: model servers whose true conversion rates and latency the test controls, a router that
routes users to them, Prometheus scraping the router every second, and the operator deciding every
second from Prometheus. The test only sets the truth and watches the experiment's status, the router's
routes and the Deployments; it never tells the operator what to do.
"""

from __future__ import annotations

import json
import math
import re
import time
from datetime import datetime
from typing import Any

import pytest
from harness.env import RolloutEnv
from harness.experiment import (
    UNDECIDED_MDE,
    UNDECIDED_TEST,
    condition,
    conversion_metric,
    describe,
    is_subsequence,
    latency_guardrail,
    primary_verdicts,
    status_of,
    steps_in_history,
    wait_for_events,
    wait_for_phase,
    wait_for_status,
)

from arbiter.metrics.base import QueryContext
from arbiter.metrics.template import render
from arbiter_fixtures import ROOT, OperatorProcess
from helpers import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(240)]

STEPS = [{"weight": 20, "minDuration": "3s"}, {"weight": 50, "minDuration": "3s"}]
TERMINAL = {"Promoted", "RolledBack", "Concluded", "Failed"}


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def all_recent_served_by(env: RolloutEnv, variant: str, n: int = 100) -> bool:
    """True when the last ``n`` answered requests were all served by ``variant``."""
    recent = env.generators[-1].recent(n)
    return len(recent) == n and set(recent) == {variant}


@pytest.mark.parametrize("provider", ["Router", "Replicas"])
def test_better_challenger_is_promoted_through_every_step(
    provider: str, rollout_env: Any, operator: OperatorProcess, kube_api: Any
) -> None:
    """v2 converts 15% of its users against v1's 10%: it passes every step, wins, and gets all traffic."""
    replicas = {"v1": 5, "v2": 5} if provider == "Replicas" else None  # budget 10: steps are exact
    env: RolloutEnv = rollout_env(experiment="better", provider=provider, replicas=replicas)
    experiment = env.experiment(
        steps=STEPS,
        guardrails=[latency_guardrail(max_seconds=0.5)],
        primary=conversion_metric(mde=0.2),
    )
    assert env.router is not None
    # What the Deployments ask for (Replicas); the router logs every routes version it loads.
    replica_counts = env.record(lambda: {name: spec for name, (spec, _) in env.deployment_replicas().items()})
    recorder = env.record_status("better")

    env.apply([experiment])
    traffic = env.traffic({"v1": 0.10, "v2": 0.15}, rate=150, max_seconds=200, seed=11)
    promoted = wait_for_phase(
        kube_api,
        env.namespace,
        "better",
        "Promoted",
        timeout=180,
        forbid_phases={"RolledBack", "Concluded", "Failed", "Paused"},
    )
    recorder.stop()

    # It went through every step, in order, and only then to Promoted.
    history = promoted["history"]
    assert steps_in_history(history) == [0, 1], history
    path = [h["to"].split("(")[0] for h in history if h["to"] != "Pending"]
    assert path == ["Progressing", "Progressing", "Promoted"], history
    step0, step1, promoted_at = (parse_time(h["time"]) for h in history[-3:])
    assert (step1 - step0).total_seconds() >= 3 - 1, "step 0 held its minDuration (1s resolution)"
    assert (promoted_at - step1).total_seconds() >= 3 - 1, "step 1 held its minDuration"

    # The winner has all the traffic, and the decision says why, with the numbers.
    assert promoted["weights"] == {"v1": 0, "v2": 100}
    decision = promoted["decision"]
    assert decision["outcome"] == "Promote" and decision.get("winner") == "v2", decision
    assert "v2" in decision["reason"] and len(re.findall(r"\d+\.\d+", decision["reason"])) >= 3, decision
    result = next(r for r in promoted["analysis"]["primary"]["results"] if r["variant"] == "v2")
    assert result["verdict"] == "Win" and result["pValue"] <= 0.05, result
    assert result["treatmentValue"] > result["controlValue"], result
    assert condition(promoted, "Decided")["status"] == "True"
    # Verdicts only ever went Inconclusive -> Win.
    assert {v for o in recorder.observed() for v in o.verdicts.values()} <= {"Inconclusive", "Win"}

    # The data plane followed every step and the promotion.
    if provider == "Router":
        wait_for(
            lambda: env.router.weights() == {"v2": 100}, timeout=30, message="the router to serve v2 only"
        )
        loaded = env.router.loaded_weights()
        # The ConfigMap is created at 100/0 and set to step 0's 80/20 in the same tick: a router that
        # lists it after both writes never sees 100/0, which is fine. Every step after that it must see.
        assert is_subsequence([{"v1": 80, "v2": 20}, {"v1": 50, "v2": 50}, {"v2": 100}], loaded), loaded
        assert all(
            w in ({"v1": 100}, {"v1": 80, "v2": 20}, {"v1": 50, "v2": 50}, {"v2": 100}) for w in loaded
        ), loaded
    else:
        wait_for(
            lambda: env.deployment_replicas() == {"v1": (0, 0), "v2": (10, 10)},
            timeout=60,
            message="the Deployments to be scaled to the winner",
        )
        assert is_subsequence(
            [{"v1": 8, "v2": 2}, {"v1": 5, "v2": 5}, {"v1": 0, "v2": 10}], replica_counts.stop()
        ), (replica_counts.values, replica_counts.reads, replica_counts.last_error)
    wait_for(lambda: all_recent_served_by(env, "v2"), timeout=30, message="users to be served by v2 only")
    replica_counts.stop()
    traffic.stop()
    wait_for_events(kube_api, env.namespace, "better", "Advanced", "Promoted")


def test_worse_challenger_is_rolled_back_by_the_primary_metric(
    rollout_env: Any, operator: OperatorProcess, kube_api: Any
) -> None:
    """v2 converts 10% of its users against v1's 15%: a significant Loss rolls it back, champion at 100%.

    Group-sequential with an MDE of 25% (planned ~1,560 per arm): its futility look is the final one, and
    the Loss boundary is crossed before it in 199 of 200 simulated runs of this story (docs/rollout.md).
    """
    env: RolloutEnv = rollout_env(experiment="worse")
    env.apply(
        [
            env.experiment(
                steps=STEPS,
                primary=conversion_metric(mde=0.25),
                test={"method": "GroupSequential", "alpha": 0.05, "power": 0.8},
            )
        ]
    )
    env.traffic({"v1": 0.15, "v2": 0.10}, rate=150, max_seconds=200, seed=12)

    rolled_back = wait_for_phase(
        kube_api,
        env.namespace,
        "worse",
        "RolledBack",
        timeout=150,
        forbid_phases={"Promoted", "Concluded", "Failed", "Paused"},
    )
    assert rolled_back["weights"] == {"v1": 100, "v2": 0}
    decision = rolled_back["decision"]
    assert decision["outcome"] == "Rollback", decision
    assert "conversion" in decision["reason"], "the reason names the primary metric"
    assert primary_verdicts(rolled_back)["v2"] == "Loss", "RolledBack means harm was shown"
    wait_for(lambda: all_recent_served_by(env, "v1"), timeout=30, message="users to be served by v1 only")
    wait_for_events(kube_api, env.namespace, "worse", "RolledBack")


def test_worse_challenger_under_the_sequential_test_ends_keeping_the_champion(
    rollout_env: Any, operator: OperatorProcess, kube_api: Any
) -> None:
    """The same worse v2 under the mSPRT: the champion gets 100% at the first final verdict.

    "Cannot reach the MDE" (Futile) needs less evidence than "significantly worse" (Loss), so it usually
    comes first (181 of 200 simulated runs of this story): the experiment then ends Concluded ("no
    improvement worth the MDE") at once rather than keeping a worse model on traffic about 2x longer to
    prove harm. When Loss comes first it is RolledBack; never RolledBack without a Loss.
    """
    env: RolloutEnv = rollout_env(experiment="worse-seq")
    env.apply(
        [
            env.experiment(
                steps=STEPS,
                primary=conversion_metric(mde=0.2),
                test={"method": "Sequential", "alpha": 0.05, "power": 0.8},
            )
        ]
    )
    env.traffic({"v1": 0.15, "v2": 0.10}, rate=150, max_seconds=200, seed=12)

    ended = wait_for_status(
        kube_api,
        env.namespace,
        "worse-seq",
        lambda s: s.get("phase") in ("Concluded", "RolledBack"),
        forbid=lambda s: s.get("phase") in ("Promoted", "Failed", "Paused"),
        timeout=150,
        message="the worse challenger to be stopped",
    )
    assert ended["weights"] == {"v1": 100, "v2": 0}
    verdict = primary_verdicts(ended)["v2"]
    if ended["phase"] == "RolledBack":
        assert verdict == "Loss", ended["decision"]
    else:
        assert verdict == "Futile", ended["decision"]
        assert ended["decision"]["outcome"] == "Conclude", ended["decision"]
        assert ended["decision"]["reason"].startswith("no improvement worth the MDE"), ended["decision"]
    wait_for(lambda: all_recent_served_by(env, "v1"), timeout=30, message="users to be served by v1 only")
    wait_for_events(kube_api, env.namespace, "worse-seq", ended["phase"])


def test_latency_breach_rolls_back_within_one_interval_and_one_scrape(
    rollout_env: Any, operator: OperatorProcess, kube_api: Any
) -> None:
    """v2 turns slow mid-step; the p95 guardrail (max 0.2s, Prometheus scrape 1s, interval 1s) rolls it back.

    The time from the breach being visible in Prometheus to phase RolledBack is measured and written to
    .bench/e2e/breach_to_rollback.json; the expectation is one analysis interval plus one scrape interval.
    """
    interval, scrape, max_latency = 1.0, 1.0, 0.2
    env: RolloutEnv = rollout_env(experiment="slow")
    guardrail = latency_guardrail(max_seconds=max_latency, window="5s")
    env.apply(
        [
            env.experiment(
                steps=[{"weight": 20, "minDuration": "10m"}],
                guardrails=[guardrail],
                primary=conversion_metric(mde=UNDECIDED_MDE),
                test=UNDECIDED_TEST,
                interval=f"{interval:g}s",
            )
        ]
    )
    env.traffic({"v1": 0.1, "v2": 0.1}, rate=150, max_seconds=120, seed=13, concurrency=64)
    healthy = wait_for_status(
        kube_api,
        env.namespace,
        "slow",
        lambda s: (
            s.get("weights") == {"v1": 80, "v2": 20}
            and condition(s, "GuardrailsHealthy").get("status") == "True"
        ),
        forbid=lambda s: s.get("phase") in TERMINAL | {"Paused"},
        timeout=60,
        message="step 0 at 20% with healthy guardrails",
    )
    assert healthy["phase"] == "Progressing"

    query = render(guardrail["query"], QueryContext(experiment="slow", namespace=env.namespace), "v2")
    env.models["v2"].configure(latency_ms=400, jitter_ms=0)
    breached_at = time.monotonic()
    visible_at: float | None = None
    rolled_back_at: float | None = None
    status: dict[str, Any] = {}
    deadline = breached_at + 60
    while rolled_back_at is None and time.monotonic() < deadline:
        now = time.monotonic()
        if visible_at is None:
            result = env.prometheus.query(query)
            if result and float(result[0]["value"][1]) > max_latency:
                visible_at = now
        status = status_of(kube_api, env.namespace, "slow")
        if status.get("phase") == "RolledBack":
            rolled_back_at = now
        time.sleep(0.05)
    assert rolled_back_at is not None, f"no rollback within 60s of the breach: {describe(status)}"
    assert visible_at is not None, "the breach never showed in Prometheus, yet the operator rolled back"

    measured = {
        "breach_to_visible_seconds": round(visible_at - breached_at, 3),
        "visible_to_rolled_back_seconds": round(rolled_back_at - visible_at, 3),
        "breach_to_rolled_back_seconds": round(rolled_back_at - breached_at, 3),
        "expected_seconds": interval + scrape,
        "analysis_interval_seconds": interval,
        "scrape_interval_seconds": scrape,
        "guardrail": guardrail["query"],
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out = ROOT / ".bench" / "e2e" / "breach_to_rollback.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(measured, indent=2) + "\n")
    print(f"\nbreach -> rollback: {json.dumps(measured)}")

    decision = status["decision"]
    assert decision["outcome"] == "Rollback" and "p95-latency" in decision["reason"], decision
    assert status["weights"] == {"v1": 100, "v2": 0}
    assert condition(status, "GuardrailsHealthy")["status"] == "False"
    # Not a timing benchmark: only an implementation that misses the breach by 10x fails here.
    assert math.isfinite(measured["visible_to_rolled_back_seconds"])
    assert measured["visible_to_rolled_back_seconds"] < 10 * (interval + scrape), measured
    wait_for(lambda: all_recent_served_by(env, "v1"), timeout=30, message="users to be served by v1 only")
