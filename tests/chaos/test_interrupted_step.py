"""A step change routed but never recorded (operator killed in between) is not judged as the old step.

With real traffic: the operator routes step 1 (50%) and is killed before its status write
(``ARBITER_CHAOS_CRASH_AT=after-route``), users keep arriving at the new split while no operator runs, and
the restarted operator reads status that still says step 0 (20%). Counting those requests against step 0
would be a sample-ratio mismatch that never happened (it paused the experiment before the fix); the
operator must notice the split it did not record, judge no sample ratio on the mixed counts and go on to
step 1 as an undisturbed run does (tests/unit/rollout/test_entry_split.py has the other case, a tick that
does not decide the same change again and counts the old step anew).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from harness.experiment import (
    UNDECIDED_MDE,
    UNDECIDED_TEST,
    conversion_metric,
    describe,
    status_of,
    wait_for_status,
)

from arbiter_fixtures import OperatorIdentity, OperatorProcess
from chaos_ledger import ChaosRun, record_run

pytestmark = [pytest.mark.chaos, pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]

NAME = "interrupted"


def _served(env: Any, variant: str) -> float:
    return sum(env.models[variant].requests_served().values())


def test_a_lost_step_change_is_counted_anew_not_paused_as_a_sample_ratio_mismatch(
    chaos_envs: Any, arbiter_crd: str, operator_identity: OperatorIdentity, tmp_path: Path, kube_api: Any
) -> None:
    (env,) = chaos_envs(1, NAME)
    steps = [{"weight": 20, "minDuration": "8s"}, {"weight": 50, "minDuration": "10m"}]
    env.apply(
        [
            env.experiment(
                steps=steps, interval="1s", primary=conversion_metric(mde=UNDECIDED_MDE), test=UNDECIDED_TEST
            )
        ]
    )
    env.traffic({"v1": 0.1, "v2": 0.1}, rate=100, max_seconds=300, seed=3)
    operator = OperatorProcess(operator_identity.kubeconfig, tmp_path / "operator.log")
    operator.start().wait_ready()
    wait_for_status(
        kube_api,
        env.namespace,
        NAME,
        lambda s: s.get("currentStep") == 0 and (s.get("traffic") or {}).get("verified") == "Yes",
        timeout=90,
        message="step 0 in place",
    )
    operator.kill()
    operator.extra_env = {"ARBITER_CHAOS_CRASH_AT": "after-route"}
    operator.start()
    assert operator.process.wait(timeout=120) is not None, "the armed operator reached its crash point"
    crashed = status_of(kube_api, env.namespace, NAME)
    assert crashed.get("currentStep") == 0, f"the step change was not recorded: {describe(crashed)}"
    # Users keep arriving at the new split while no operator runs (a slow restart on a busy node).
    served_then = _served(env, "v2")
    deadline = time.monotonic() + 60
    while _served(env, "v2") < served_then + 400:
        assert time.monotonic() < deadline, "traffic stopped"
        time.sleep(0.2)

    operator.extra_env = {}
    operator.start().wait_ready()
    seen: list[tuple[Any, Any, Any]] = []

    def advanced(status: dict[str, Any]) -> bool:
        seen.append((status.get("phase"), status.get("currentStep"), status.get("pauseReason")))
        return status.get("currentStep") == 1 and (status.get("traffic") or {}).get("verified") == "Yes"

    try:
        wait_for_status(kube_api, env.namespace, NAME, advanced, timeout=120, message="step 1 in place")
    finally:
        operator.stop()
    paused = [s for s in seen if s[0] == "Paused"]
    record_run(
        ChaosRun(
            "operator_sigkill",
            outcome_differed=bool(paused),
            detail="after-route with traffic: the lost step change is counted anew",
        )
    )
    assert not paused, f"paused after the restart: {paused}"
