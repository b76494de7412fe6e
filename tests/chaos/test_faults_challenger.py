"""The challenger's Deployment is deleted, or its Pod crash-loops, in the middle of a step.

Whatever the metrics say meanwhile, nothing is advanced, promoted or rolled back while a variant's
workload is missing or not ready (engine row 2, ``judge_workloads``): the experiment holds its step and
its traffic, ``Ready=False`` (reason ``WorkloadsNotReady``) names the Deployment, a Warning Event is
posted; when the workload is back (re-created, or the Pod replaced by a healthy one) the experiment goes
on by itself from the same step and ``Ready`` turns True again (Event ``WorkloadsReady``).

A crash loop is played at the API level as the kubelet reports it: the Pod's status says not ready,
container waiting in ``CrashLoopBackOff`` with restarts (kwok never changes a Pod that has an IP).
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from fault_support import rollout_env, steps_entered, steps_entered_again
from harness.env import RolloutEnv, deployment
from harness.experiment import (
    UNDECIDED_MDE,
    UNDECIDED_TEST,
    condition,
    conversion_metric,
    describe,
    wait_for_events,
    wait_for_status,
)

from arbiter_fixtures import OperatorProcess
from chaos_ledger import ChaosRun, record_run
from helpers import wait_for

pytestmark = [pytest.mark.chaos, pytest.mark.e2e, pytest.mark.timeout(240)]
__all__ = ["rollout_env"]  # a fixture, imported for pytest

TERMINAL = {"Promoted", "RolledBack", "Concluded", "Failed"}
STEP_0_SECONDS = 4


def start(env: RolloutEnv, kube_api: Any, name: str) -> dict[str, Any]:
    env.apply(
        [
            env.experiment(
                steps=[
                    {"weight": 20, "minDuration": f"{STEP_0_SECONDS}s"},
                    {"weight": 50, "minDuration": "10m"},
                ],
                primary=conversion_metric(mde=UNDECIDED_MDE),
                test=UNDECIDED_TEST,
            )
        ]
    )
    env.traffic({"v1": 0.1, "v2": 0.1}, rate=80, max_seconds=200, seed=51)
    return wait_for_status(
        kube_api,
        env.namespace,
        name,
        lambda s: s.get("phase") == "Progressing" and s.get("weights") == {"v1": 80, "v2": 20},
        forbid=lambda s: s.get("phase") in TERMINAL,
        timeout=60,
        message="step 0 at 20%",
    )


def held_past_min_duration(env: RolloutEnv, kube_api: Any, name: str, problem: str) -> dict[str, Any]:
    """Wait for the hold, then past the step's minDuration: still step 0, still 80/20."""
    held = wait_for_status(
        kube_api,
        env.namespace,
        name,
        lambda s: (
            condition(s, "Ready").get("reason") == "WorkloadsNotReady"
            and "waiting for workloads" in ((s.get("decision") or {}).get("reason") or "")
        ),
        forbid=lambda s: s.get("phase") in TERMINAL or s.get("currentStep") != 0,
        timeout=60,
        message="the experiment to hold for the missing workload",
    )
    ready = condition(held, "Ready")
    assert ready["status"] == "False" and problem in ready["message"], ready
    until = time.monotonic() + STEP_0_SECONDS + 3
    return wait_for_status(
        kube_api,
        env.namespace,
        name,
        lambda s: time.monotonic() >= until,
        forbid=lambda s: (
            s.get("phase") in TERMINAL
            or s.get("currentStep") != 0
            or s.get("weights") != {"v1": 80, "v2": 20}
        ),
        timeout=STEP_0_SECONDS + 30,
        message="step 0 held past its minDuration",
    )


def advanced(env: RolloutEnv, kube_api: Any, name: str) -> dict[str, Any]:
    return wait_for_status(
        kube_api,
        env.namespace,
        name,
        lambda s: s.get("currentStep") == 1 and condition(s, "Ready").get("status") == "True",
        forbid=lambda s: s.get("phase") in TERMINAL,
        timeout=90,
        message="step 1 once the workload is back",
    )


def test_a_deleted_challenger_holds_the_experiment_until_it_is_back(
    rollout_env: Any, operator: OperatorProcess, kube_api: Any
) -> None:
    env: RolloutEnv = rollout_env(experiment="gone")
    start(env, kube_api, "gone")
    recorder = env.record_status("gone")
    env.cluster.kubectl("delete", "deployment", "model-v2", "-n", env.namespace, "--wait=false")
    held = held_past_min_duration(env, kube_api, "gone", "Deployment model-v2 not found")
    wait_for_events(kube_api, env.namespace, "gone", "WorkloadsNotReady")

    env.apply([deployment("model-v2", "v2", 1)])
    after = advanced(env, kube_api, "gone")
    seen = recorder.stop()
    steps = steps_entered([*(o.step for o in seen if o.step is not None), after["currentStep"]])
    record_run(
        ChaosRun(
            fault="challenger_deleted",
            outcome_differed=steps != [0, 1] or bool({o.phase for o in seen} & TERMINAL),
            steps_doubled=steps_entered_again(steps),
            detail=f"{env.namespace}/gone held: {held.get('decision', {}).get('reason', '')[:100]}",
        )
    )
    assert steps == [0, 1], steps
    assert not {o.phase for o in seen} & TERMINAL, [o.phase for o in seen]
    assert after["weights"] == {"v1": 50, "v2": 50}, describe(after)
    wait_for_events(kube_api, env.namespace, "gone", "WorkloadsReady")
    operator.assert_alive()


def crash_loop(env: RolloutEnv, pod: str) -> None:
    """Report the Pod as the kubelet does for a container that keeps exiting."""
    import json

    body = json.loads(env.cluster.kubectl("get", "pod", pod, "-n", env.namespace, "-o", "json").stdout)
    status = body["status"]
    for item in status.get("conditions") or []:
        if item["type"] in ("Ready", "ContainersReady"):
            item["status"] = "False"
            item["reason"] = "ContainersNotReady"
    status["containerStatuses"] = [
        {
            "name": container["name"],
            "image": container["image"],
            "imageID": "",
            "ready": False,
            "started": False,
            "restartCount": 5,
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 1m20s restarting"}},
            "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}},
        }
        for container in body["spec"]["containers"]
    ]
    env.cluster.kubectl(
        "patch",
        "pod",
        pod,
        "-n",
        env.namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(
            {"status": {"conditions": status["conditions"], "containerStatuses": status["containerStatuses"]}}
        ),
    )


def test_a_crash_looping_challenger_holds_the_experiment_until_it_is_healthy(
    rollout_env: Any, operator: OperatorProcess, kube_api: Any
) -> None:
    env: RolloutEnv = rollout_env(experiment="crashloop")
    start(env, kube_api, "crashloop")
    recorder = env.record_status("crashloop")
    pods = env.cluster.kubectl(
        "get", "pods", "-n", env.namespace, "-l", "version=v2", "-o", "name"
    ).stdout.split()
    assert len(pods) == 1, pods
    pod = pods[0].split("/", 1)[1]
    crash_loop(env, pod)
    wait_for(
        lambda: env.deployment_replicas()["v2"] == (1, 0),
        timeout=30,
        message="the Deployment to report its crash-looping replica as not ready",
    )
    held = held_past_min_duration(env, kube_api, "crashloop", "Deployment model-v2 has 0/1 ready replicas")

    # The fix is rolled out: the broken Pod is replaced by a healthy one.
    env.cluster.kubectl("delete", "pod", pod, "-n", env.namespace, "--wait=false")
    after = advanced(env, kube_api, "crashloop")
    seen = recorder.stop()
    steps = steps_entered([*(o.step for o in seen if o.step is not None), after["currentStep"]])
    record_run(
        ChaosRun(
            fault="challenger_crashloop",
            outcome_differed=steps != [0, 1] or bool({o.phase for o in seen} & TERMINAL),
            steps_doubled=steps_entered_again(steps),
            detail=f"{env.namespace}/crashloop held: {held.get('decision', {}).get('reason', '')[:100]}",
        )
    )
    assert steps == [0, 1], steps
    assert not {o.phase for o in seen} & TERMINAL, [o.phase for o in seen]
    wait_for_events(kube_api, env.namespace, "crashloop", "WorkloadsNotReady", "WorkloadsReady")
    operator.assert_alive()
