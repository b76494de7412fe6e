"""The route is changed behind the operator's back: once by hand, or again and again by a GitOps tool.

- A hand edit is put back on the next tick, once, with a ``RouteOverwritten`` Warning Event.
- A GitOps tool with self-heal that keeps re-applying its own ``routes.yaml`` (server-side apply, field
  manager ``argocd-controller``) is not fought in a loop: after three repairs in a row the operator backs
  off (handlers/route_drift.py), sets ``RouteContested=True`` with a message that points at the fix
  (docs/routing.md, GitOps) and posts a ``RouteContested`` Event. Its writes to the route grow with the
  logarithm of the contested ticks, not with each tick. When the tool stops (``ignoreDifferences``
  configured), the operator's next attempt holds, the condition turns False and traffic is back.

Nothing of the analysis moves meanwhile: same step, same weights in status, no terminal phase.
``ARBITER_CHAOS_FULL=1`` lets the GitOps tool fight three times as long.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from typing import Any

import pytest
from fault_support import GITOPS_MANAGER, GitOpsReapplier, RouteWrites, full_chaos, rollout_env
from harness.env import RolloutEnv
from harness.experiment import condition, describe, wait_for_events, wait_for_phase, wait_for_status

from arbiter.router.config import RouterConfig, parse_routes_yaml
from arbiter_fixtures import OperatorProcess
from chaos_ledger import ChaosRun, record_run
from helpers import wait_for

pytestmark = [pytest.mark.chaos, pytest.mark.e2e, pytest.mark.timeout(240)]
__all__ = ["rollout_env"]  # a fixture, imported for pytest

TERMINAL = {"Promoted", "RolledBack", "Concluded", "Failed"}


def routes_text(env: RolloutEnv) -> str:
    body = json.loads(
        env.cluster.kubectl("get", "configmap", env.config_map, "-n", env.namespace, "-o", "json").stdout
    )
    return str(body["data"]["routes.yaml"])


def weights_of(text: str) -> dict[str, int]:
    return {v.name: v.weight for v in parse_routes_yaml(text).variants}


def with_weights(text: str, weights: dict[str, int]) -> str:
    config = parse_routes_yaml(text)
    variants = tuple(v.model_copy(update={"weight": float(weights[v.name])}) for v in config.variants)
    return RouterConfig.model_validate(config.model_copy(update={"variants": variants})).to_yaml()


def start_at_step_0(env: RolloutEnv, kube_api: Any, name: str) -> dict[str, Any]:
    env.apply([env.experiment(steps=[{"weight": 20, "minDuration": "10m"}, {"weight": 50}], interval="1s")])
    wait_for_phase(kube_api, env.namespace, name, "Progressing", timeout=60, forbid_phases={"Failed"})
    wait_for(lambda: weights_of(routes_text(env)) == {"v1": 80, "v2": 20}, timeout=30, message="80/20 routed")
    return wait_for_status(
        kube_api,
        env.namespace,
        name,
        lambda s: (s.get("traffic") or {}).get("verified") == "Yes",
        timeout=30,
        message="the route verified in place",
    )


def more_ticks(kube_api: Any, namespace: str, name: str, count: int) -> None:
    """Wait until the operator has ticked ``count`` more times (the step's elapsed time is in its decision)."""
    seen: list[Any] = []

    def moved(status: dict[str, Any]) -> bool:
        reason = (status.get("decision") or {}).get("reason")
        if not seen or seen[-1] != reason:
            seen.append(reason)
        return len(seen) > count

    wait_for_status(kube_api, namespace, name, moved, timeout=30, message=f"{count} more ticks")


def test_a_hand_edited_route_is_put_back_once(
    rollout_env: Any, operator: OperatorProcess, kube_api: Any
) -> None:
    env: RolloutEnv = rollout_env(experiment="hand")
    before = start_at_step_0(env, kube_api, "hand")
    writes = RouteWrites(kube_api, env.namespace, env.config_map).start()
    try:
        wait_for(lambda: writes.values(), timeout=10, message="the route watch to start")
        good = routes_text(env)
        tampered = with_weights(good, {"v1": 5, "v2": 95})
        env.cluster.kubectl(
            "patch",
            "configmap",
            env.config_map,
            "-n",
            env.namespace,
            "--type=merge",
            "-p",
            json.dumps({"data": {"routes.yaml": tampered}}),
        )
        wait_for(lambda: routes_text(env) == good, timeout=30, message="the operator to put the route back")
        wait_for_events(kube_api, env.namespace, "hand", "RouteOverwritten")
        # Several more ticks: the repaired route stays as it is, nobody writes it again.
        settled = wait_for_status(
            kube_api,
            env.namespace,
            "hand",
            lambda s: (s.get("traffic") or {}).get("verified") == "Yes" and "overwrites" not in s["traffic"],
            timeout=30,
            message="the route verified in place again",
        )
        more_ticks(kube_api, env.namespace, "hand", 3)  # a repair loop would show as more writes
    finally:
        writes.stop()
    seen = writes.values()
    record_run(
        ChaosRun(
            fault="route_hand_edit",
            outcome_differed=settled["currentStep"] != before["currentStep"]
            or settled["weights"] != before["weights"],
            detail=f"{env.namespace}/hand: route values seen {len(seen)}",
        )
    )
    assert seen == [good, tampered, good], [weights_of(t) for t in seen]
    assert settled["currentStep"] == 0 and settled["weights"] == {"v1": 80, "v2": 20}, describe(settled)
    assert condition(settled, "RouteContested") == {}, "a single edit is no contest"


def test_gitops_reapplying_the_route_is_not_fought_in_a_loop(
    rollout_env: Any, operator: OperatorProcess, kube_api: Any
) -> None:
    env: RolloutEnv = rollout_env(experiment="gitops")
    before = start_at_step_0(env, kube_api, "gitops")
    good = routes_text(env)
    in_git = with_weights(good, {"v1": 100, "v2": 0})  # what the repository says: the champion only
    writes = RouteWrites(kube_api, env.namespace, env.config_map).start()
    recorder = env.record_status("gitops")
    gitops = GitOpsReapplier(env.cluster, env.namespace, env.config_map, in_git, period=0.5)
    fight_seconds = 45 if full_chaos() else 15
    started = time.monotonic()
    gitops.start()
    try:
        contested = wait_for_status(
            kube_api,
            env.namespace,
            "gitops",
            lambda s: condition(s, "RouteContested").get("status") == "True",
            forbid=lambda s: s.get("phase") in TERMINAL,
            timeout=60,
            message="the route to be reported as contested",
        )
        deadline = started + fight_seconds
        wait_for_status(
            kube_api,
            env.namespace,
            "gitops",
            lambda s: time.monotonic() >= deadline,
            forbid=lambda s: s.get("phase") in TERMINAL,
            timeout=fight_seconds + 30,
            message="the fight to go on",
        )
        during = wait_for_status(
            kube_api, env.namespace, "gitops", lambda s: True, timeout=10, message="the status"
        )
    finally:
        gitops.stop()
    fight_ended = time.monotonic()
    ticks = (during.get("traffic") or {}).get("overwrites", 0)
    # The operator's repairs: every change of the route away from what git says.
    values = writes.values()
    repairs = sum(1 for a, b in itertools.pairwise(values) if a == in_git and b != in_git)

    # The tool has stopped: the next attempt of the back-off holds, and the contest is over.
    recovered = wait_for_status(
        kube_api,
        env.namespace,
        "gitops",
        lambda s: (
            condition(s, "RouteContested").get("status") == "False"
            and (s.get("traffic") or {}).get("verified") == "Yes"
        ),
        forbid=lambda s: s.get("phase") in TERMINAL,
        timeout=90,
        message="the route back in place once the GitOps tool stopped",
    )
    writes.stop()
    seen = recorder.stop()
    assert routes_text(env) == good
    wait_for_events(kube_api, env.namespace, "gitops", "RouteOverwritten", "RouteContested", "RouteInPlace")
    record_run(
        ChaosRun(
            fault="route_gitops_reapply",
            outcome_differed=recovered["currentStep"] != before["currentStep"]
            or recovered["weights"] != before["weights"]
            or bool({o.phase for o in seen} & TERMINAL),
            detail=(
                f"{env.namespace}/gitops: {gitops.applies} GitOps applies, {repairs} operator repairs over "
                f"{ticks} contested ticks; recovered {time.monotonic() - fight_ended:.1f}s after the tool stopped"
            ),
        )
    )
    message = condition(contested, "RouteContested")["message"]
    assert condition(contested, "RouteContested")["reason"] == "OverwrittenRepeatedly"
    assert "docs/routing.md" in message and "back-off" in message, message
    assert gitops.applies >= 3, f"the GitOps stand-in ({GITOPS_MANAGER}) really re-applied: {gitops.applies}"
    assert ticks >= 8, f"the fight lasted long enough to tell a loop from back-off: {describe(during)}"
    # Three repairs in a row, then one per power of two: about 3 + log2(ticks), never one per tick.
    bound = 3 + math.log2(ticks) + 1
    assert repairs <= bound, f"{repairs} repairs over {ticks} contested ticks (bound {bound:.1f})"
    assert repairs >= 3, f"the first edits were repaired at once: {repairs}"
    assert not {o.phase for o in seen} & TERMINAL, [o.phase for o in seen]
    assert {o.step for o in seen if o.step is not None} == {0}, "no step while the route was contested"
    assert all(o.weights == before["weights"] for o in seen if o.weights), "status weights never moved"
    assert recovered["currentStep"] == 0 and "overwrites" not in recovered["traffic"], describe(recovered)
    operator.assert_alive()
