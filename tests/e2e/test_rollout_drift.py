"""Level-triggered traffic: someone edits the router's routes behind the operator's back, and the
operator puts the step's weights back on its next tick (the provider's read-back says "not in place")."""

from __future__ import annotations

import json
from typing import Any

import pytest
from harness.env import RolloutEnv
from harness.experiment import wait_for_phase

from arbiter.router.config import parse_routes_yaml
from arbiter_fixtures import OperatorProcess
from helpers import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def routed_weights(env: RolloutEnv) -> dict[str, int]:
    body = json.loads(
        env.cluster.kubectl("get", "configmap", env.config_map, "-n", env.namespace, "-o", "json").stdout
    )
    config = parse_routes_yaml(body["data"]["routes.yaml"])
    return {v.name: v.weight for v in config.variants}


def test_a_tampered_route_is_put_back(rollout_env: Any, operator: OperatorProcess, kube_api: Any) -> None:
    env: RolloutEnv = rollout_env(experiment="drift")
    env.apply([env.experiment(steps=[{"weight": 20, "minDuration": "10m"}, {"weight": 50}], interval="1s")])
    wait_for_phase(kube_api, env.namespace, "drift", "Progressing", timeout=60, forbid_phases={"Failed"})
    wait_for(lambda: routed_weights(env) == {"v1": 80, "v2": 20}, timeout=30, message="step 0's 80/20 routed")

    body = json.loads(
        env.cluster.kubectl("get", "configmap", env.config_map, "-n", env.namespace, "-o", "json").stdout
    )
    tampered = (
        body["data"]["routes.yaml"].replace("weight: 80", "weight: 5").replace("weight: 20", "weight: 95")
    )
    assert tampered != body["data"]["routes.yaml"], "the routes file has the expected shape"
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
    assert routed_weights(env) == {"v1": 5, "v2": 95}

    wait_for(
        lambda: routed_weights(env) == {"v1": 80, "v2": 20},
        timeout=30,
        message="the operator to put the step's weights back",
    )
    status = json.loads(
        env.cluster.kubectl("get", "mexp", "drift", "-n", env.namespace, "-o", "json").stdout
    )["status"]
    assert status["currentStep"] == 0 and status["phase"] == "Progressing"
