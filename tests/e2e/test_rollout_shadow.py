"""Shadow stories on real parts: the challenger gets a mirrored copy of the champion's traffic and is judged.

In mode Shadow the champion serves every user; the router mirrors the requests to the challenger,
compares the two JSON answers and counts ``arbiter_router_shadow_comparisons_total{agree}``; the
operator reads the share that agreed from Prometheus as a guardrail. The test sets the truth -- the
challenger's server answers exactly like the champion's (``answer_like``), or differently on a fixed
share of the requests (``disagreeRate``) -- and watches the status, the router and what users got.

The margins leave the statistics nothing to chance: agreement is exactly 1.0 (same model, same bytes)
or about 0.6 (40% of the request bodies perturbed), against a threshold of 0.95.
"""

from __future__ import annotations

import math
import re
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from harness.env import RolloutEnv
from harness.experiment import (
    StatusRecorder,
    agreement_guardrail,
    condition,
    steps_in_history,
    wait_for_events,
    wait_for_status,
)
from harness.processes import ModelServerProcess, RouterProcess, http_json
from harness.traffic import NO_VARIANT, TrafficGenerator

from arbiter_fixtures import OperatorProcess
from helpers import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(180)]

TERMINAL = {"Promoted", "RolledBack", "Concluded", "Failed"}
MIRROR = {"percent": 100, "timeoutSeconds": 1}
CHAMPION_ONLY = {"v1": 100, "v2": 0}


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def shadow_comparisons(router: RouterProcess, experiment: str, variant: str = "v2") -> dict[str, float]:
    """The router's own shadow comparison counters for ``variant``, by ``agree`` ("true" / "false")."""
    with urllib.request.urlopen(f"http://{router.metrics_address}/metrics", timeout=5) as response:
        text = response.read().decode()
    counts: dict[str, float] = {}
    for match in re.finditer(r"^arbiter_router_shadow_comparisons_total\{([^}]*)\} (\S+)$", text, re.M):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match[1]))
        if labels.get("experiment") == experiment and labels.get("variant") == variant:
            counts[labels["agree"]] = float(match[2])
    return counts


def comparisons_in_prometheus(env: RolloutEnv, experiment: str) -> dict[str, float]:
    """The same counters as the operator's Prometheus holds them (the test router's job only)."""
    selector = f'job="{env.job}",experiment="{experiment}",variant="v2"'
    result = env.prometheus.query(f"sum by (agree) (arbiter_router_shadow_comparisons_total{{{selector}}})")
    return {item["metric"].get("agree", ""): float(item["value"][1]) for item in result}


def loaded_routes(router: RouterProcess) -> list[tuple[dict[str, float], str]]:
    """(weights of the serving variants, shadow) of every routes version the router loaded, in order.

    From its log: e.g. ``({"v1": 100.0}, "v2 100%")`` while mirroring (the shadow variant serves nobody,
    so it has no weight), ``({"v1": 80.0, "v2": 20.0}, "off")`` without a mirror.
    """
    found = re.findall(r"routes loaded .*? weights=(\S+) .*? shadow=(off|\S+ \S+%)", router.log())
    return [
        ({n: float(w) for n, w in (p.split(":") for p in weights.split(","))}, shadow)
        for weights, shadow in found
    ]


def agreement_state(status: dict[str, Any]) -> dict[str, Any]:
    """The agreement guardrail's state for v2 as status reports it."""
    return next(
        g for g in status.get("guardrails") or [] if g["name"] == "agreement" and g["variant"] == "v2"
    )


def assert_users_only_served_by_champion(traffic: TrafficGenerator) -> None:
    """Stop the traffic once v1 has served 200 users; every answer came from v1 (or the router itself).

    Users go on after the decision, so this also covers the routes written when the experiment ended.
    Answers from the router itself (503 before the operator wrote any routes) count as ``none``.
    """
    wait_for(lambda: traffic.snapshot().requests("v1") >= 200, timeout=30, message="v1 to serve 200 users")
    snapshot = traffic.stop()
    assert set(snapshot.variants) <= {"v1", NO_VARIANT}, snapshot.variants
    assert snapshot.requests("v1") >= 200, snapshot.variants


def assert_never_split(recorder: StatusRecorder) -> list[Any]:
    """Every status the recorder saw kept the challenger at weight 0; returns what it saw."""
    seen = recorder.stop()
    weights = [o.weights for o in seen if o.weights]
    assert weights, "the recorder saw the experiment's weights"
    assert all(w == CHAMPION_ONLY for w in weights), [o.weights for o in seen]
    return seen


# -- the stand-in model server can answer like another variant -------------------------------------


def test_model_server_answers_like_another_variant_and_disagrees_on_a_share(tmp_path: Path) -> None:
    """``--answer-as v1`` gives v1's exact bytes; ``disagreeRate`` 0.4 perturbs a fixed 40% of bodies."""
    v1 = ModelServerProcess.start("v1", tmp_path, latency_ms=0, jitter_ms=0, seed=3)
    v2 = ModelServerProcess.start("v2", tmp_path, latency_ms=0, jitter_ms=0, seed=3, answer_as="v1")
    try:
        bodies = [{"features": [index, index / 7]} for index in range(200)]
        champion = [http_json(v1.url + "/predict", body) for body in bodies]
        assert all(status == 200 for status, _ in champion)
        assert [http_json(v2.url + "/predict", body) for body in bodies] == champion
        assert champion[0][1]["variant"] == "v1"

        assert "disagreeRate" not in v2.settings(), "nothing new in the settings until it is set"
        assert v2.configure(disagree_rate=0.4)["disagreeRate"] == 0.4
        shadow = [http_json(v2.url + "/predict", body)[1] for body in bodies]
        differing = [
            (mine["score"], theirs["score"])
            for mine, (_, theirs) in zip(shadow, champion, strict=True)
            if mine != theirs
        ]
        assert 0.3 * len(bodies) < len(differing) < 0.5 * len(bodies), len(differing)
        assert all(abs(abs(a - b) - 0.5) < 1e-9 for a, b in differing), "moved by 0.5 modulo 1"
        again = [http_json(v2.url + "/predict", body)[1] for body in bodies]
        assert again == shadow, "the same body is always in or always out of the disagreeing share"
        # Its own name stays in its metrics: these are v2's requests.
        assert v2.requests_served() == {"200": 3.0 * len(bodies)}
        assert http_json(v2.url + "/admin", {"disagreeRate": 1.5})[0] == 400
    finally:
        v1.stop()
        v2.stop()


# -- the stories ----------------------------------------------------------------------------------


def test_agreeing_shadow_is_judged_safe_to_canary(
    rollout_env: Any, operator: OperatorProcess, kube_api: Any
) -> None:
    """v2 is v1's model: every mirrored answer agrees, and after minDuration the shadow is judged safe."""
    name = "shadow-agrees"
    env: RolloutEnv = rollout_env(experiment=name, answer_like={"v2": "v1"})
    assert env.router is not None
    recorder = env.record_status(name)
    env.apply(
        [
            env.experiment(
                mode="Shadow",
                guardrails=[agreement_guardrail(0.95)],
                shadow=MIRROR,
                shadow_analysis={"minDuration": "5s"},
            )
        ]
    )
    traffic = env.traffic({"v1": 0.1}, rate=100, max_seconds=120, seed=31)
    concluded = wait_for_status(
        kube_api,
        env.namespace,
        name,
        lambda s: s.get("phase") == "Concluded",
        forbid=lambda s: s.get("phase") in TERMINAL - {"Concluded"} or s.get("phase") == "Paused",
        timeout=90,
        message="the agreeing shadow to be concluded safe",
    )
    seen = assert_never_split(recorder)

    decision = concluded["decision"]
    assert decision["outcome"] == "Conclude", decision
    assert "safe to canary" in decision["reason"], decision
    assert decision.get("winner", "v1") == "v1", decision
    assert concluded["weights"] == CHAMPION_ONLY
    # Judged on data: the agreement guardrail read exactly 1.0 from Prometheus, and was never breached.
    agreement = agreement_state(concluded)
    assert agreement["value"] == 1.0 and agreement["breaches"] == 0, agreement
    assert all(
        not g["breached"] for o in seen for g in o.raw.get("guardrails") or [] if g["name"] == "agreement"
    )
    # ...for at least minDuration (the status clock has a 1 s resolution).
    judged = (parse_time(decision["time"]) - parse_time(concluded["startedAt"])).total_seconds()
    assert judged >= 5 - 1, (concluded["startedAt"], decision)
    wait_for_events(kube_api, env.namespace, name, "Concluded")

    # The router really mirrored, every comparison agreed, and the operator's Prometheus saw them.
    counts = shadow_comparisons(env.router, name)
    assert counts.get("true", 0) >= 100 and counts.get("false", 0) == 0, counts
    assert comparisons_in_prometheus(env, name).get("true", 0) > 0
    assert env.models["v2"].requests_served().get("200", 0) >= counts["true"], "v2 answered the mirror"
    routes = loaded_routes(env.router)
    assert ({"v1": 100.0}, "v2 100%") in routes, routes
    assert all(weights.get("v2", 0) == 0 for weights, _ in routes), routes
    # Once judged the mirror is switched off; nobody was ever routed to v2.
    wait_for(lambda: "shadow=off" in env.router.readyz(), timeout=30, message="the router to stop mirroring")
    assert_users_only_served_by_champion(traffic)


def test_agreeing_shadow_continues_as_a_canary(
    rollout_env: Any, operator: OperatorProcess, kube_api: Any
) -> None:
    """With continueAsCanary the judged-safe shadow goes on as a canary (steps 0 and 1) instead of concluding.

    The history must record each step the canary enters after the shadow, as it does for a plain canary
    (it did not: the engine labelled every Progressing state of a Shadow-mode experiment plain
    "Progressing", so step 0 -> 1 was not recorded; pinned in tests/unit/rollout/test_engine.py).
    """
    name = "shadow-canary"
    env: RolloutEnv = rollout_env(experiment=name, answer_like={"v2": "v1"})
    assert env.router is not None
    env.apply(
        [
            env.experiment(
                mode="Shadow",
                steps=[{"weight": 20, "minDuration": "3s"}, {"weight": 50, "minDuration": "10m"}],
                guardrails=[agreement_guardrail(0.95)],
                shadow=MIRROR,
                shadow_analysis={"minDuration": "5s", "continueAsCanary": True},
            )
        ]
    )
    traffic = env.traffic({"v1": 0.1, "v2": 0.1}, rate=100, max_seconds=120, seed=32)
    canary = wait_for_status(
        kube_api,
        env.namespace,
        name,
        lambda s: s.get("phase") == "Progressing" and s.get("weights") == {"v1": 80, "v2": 20},
        forbid=lambda s: s.get("phase") in TERMINAL or s.get("phase") == "Paused",
        timeout=90,
        message="the agreeing shadow to go on as a canary at step 0",
    )
    assert canary["currentStep"] == 0
    passed = next(h for h in canary["history"] if "continuing as a canary" in h["reason"])
    assert passed["to"] == "Progressing(step 0)", canary["history"]
    wait_for_events(kube_api, env.namespace, name, "ShadowPassed")
    assert agreement_state(canary)["value"] == 1.0

    # The data plane: first the mirror at 100/0, then the canary split without a mirror, never both.
    split = ({"v1": 80.0, "v2": 20.0}, "off")
    wait_for(
        lambda: split in loaded_routes(env.router), timeout=30, message="the router to load the canary split"
    )
    routes = loaded_routes(env.router)
    switch = routes.index(split)
    assert ({"v1": 100.0}, "v2 100%") in routes[:switch], routes
    assert all(w.get("v2", 0) == 0 for w, _ in routes[:switch]), f"no user saw v2 while mirrored: {routes}"
    assert shadow_comparisons(env.router, name).get("true", 0) > 0
    # Now v2 serves real users.
    wait_for(lambda: traffic.snapshot().requests("v2") > 0, timeout=30, message="v2 to serve users")

    # ...and the canary goes on through its steps, each one in the history.
    step1 = wait_for_status(
        kube_api,
        env.namespace,
        name,
        lambda s: s.get("currentStep") == 1 and s.get("weights") == {"v1": 50, "v2": 50},
        forbid=lambda s: s.get("phase") in TERMINAL or s.get("phase") == "Paused",
        timeout=60,
        message="the canary to advance to step 1",
    )
    assert steps_in_history(step1["history"]) == [0, 1], step1["history"]
    assert step1["history"][-1]["to"] == "Progressing(step 1)", step1["history"]


@pytest.mark.parametrize("disagree_rate", [0.4, 1.0], ids=["disagrees-on-40pct", "never-agrees"])
def test_disagreeing_shadow_is_rolled_back(
    disagree_rate: float, rollout_env: Any, operator: OperatorProcess, kube_api: Any
) -> None:
    """v2 answers differently on 40% of the requests (agreement ~0.6), or on all of them (agreement 0:
    the router exports agree="true" at 0 from the moment it mirrors, so it reads 0 rather than no data);
    either trips the 0.95 guardrail."""
    name = "shadow-disagrees"
    env: RolloutEnv = rollout_env(experiment=name, answer_like={"v2": "v1"})
    assert env.router is not None
    assert env.models["v2"].configure(disagree_rate=disagree_rate)["disagreeRate"] == disagree_rate
    recorder = env.record_status(name)
    env.apply(
        [
            env.experiment(
                mode="Shadow",
                guardrails=[agreement_guardrail(0.95, failure_limit=2)],
                shadow=MIRROR,
                # Longer than the test: only a guardrail can end this experiment.
                shadow_analysis={"minDuration": "10m"},
            )
        ]
    )
    traffic = env.traffic({"v1": 0.1}, rate=150, max_seconds=120, seed=33)
    rolled_back = wait_for_status(
        kube_api,
        env.namespace,
        name,
        lambda s: s.get("phase") == "RolledBack",
        forbid=lambda s: s.get("phase") in TERMINAL - {"RolledBack"} or s.get("phase") == "Paused",
        timeout=90,
        message="the disagreeing shadow to be rolled back",
    )
    assert_never_split(recorder)

    decision = rolled_back["decision"]
    assert decision["outcome"] == "Rollback", decision
    assert "guardrail breached" in decision["reason"] and "agreement" in decision["reason"], decision
    assert rolled_back["weights"] == CHAMPION_ONLY
    guardrails = condition(rolled_back, "GuardrailsHealthy")
    assert guardrails["status"] == "False" and guardrails["reason"] == "GuardrailTripped", guardrails
    agreement = agreement_state(rolled_back)
    assert agreement["breached"] and agreement["breaches"] >= 2, agreement
    assert agreement["value"] < 0.95, agreement
    if disagree_rate == 1.0:
        assert agreement["value"] == 0.0, agreement
    wait_for_events(kube_api, env.namespace, name, "RolledBack")

    # The mirror is off since the rollback, so the router's counts are final.
    wait_for(lambda: "shadow=off" in env.router.readyz(), timeout=30, message="the router to stop mirroring")
    counts = shadow_comparisons(env.router, name)
    compared = counts.get("true", 0) + counts.get("false", 0)
    assert compared >= 30, counts
    in_prometheus = comparisons_in_prometheus(env, name)
    assert in_prometheus.get("false", 0) > 0, in_prometheus
    if disagree_rate == 1.0:
        assert counts.get("true", 0) == 0 and in_prometheus.get("true", 0) == 0, (counts, in_prometheus)
    else:
        # The observed share of disagreements is within 4 standard deviations of the rate.
        spread = 4 * math.sqrt(disagree_rate * (1 - disagree_rate) / compared)
        assert abs(counts.get("false", 0) / compared - disagree_rate) < spread, counts
        assert in_prometheus.get("true", 0) > 0, in_prometheus
    assert_users_only_served_by_champion(traffic)
