"""The operator is SIGKILLed in the middle of a step and comes back: it continues exactly where it was.

Everything the engine needs lives in the experiment's status, so the new process must neither restart
the step's clock (same ``stepStartedAt``), nor repeat a step, nor skip one, nor rewrite the history.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from harness.env import RolloutEnv
from harness.experiment import (
    UNDECIDED_MDE,
    UNDECIDED_TEST,
    conversion_metric,
    describe,
    steps_in_history,
    wait_for_status,
)

from arbiter_fixtures import OperatorProcess

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(180)]

TERMINAL = {"Promoted", "RolledBack", "Concluded", "Failed"}
STEP_1_SECONDS = 12


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_operator_killed_mid_step_continues_where_it_was(
    rollout_env: Any, operator: OperatorProcess, kube_api: Any
) -> None:
    env: RolloutEnv = rollout_env(experiment="crash")
    env.apply(
        [
            env.experiment(
                steps=[
                    {"weight": 20, "minDuration": "2s"},
                    {"weight": 40, "minDuration": f"{STEP_1_SECONDS}s"},
                    {"weight": 60, "minDuration": "10m"},
                ],
                # The same model on both sides, judged so that the metric cannot end the story early.
                primary=conversion_metric(mde=UNDECIDED_MDE),
                test=UNDECIDED_TEST,
            )
        ]
    )
    env.traffic({"v1": 0.1, "v2": 0.1}, rate=100, max_seconds=150, seed=31)

    in_step_1 = wait_for_status(
        kube_api,
        env.namespace,
        "crash",
        lambda s: s.get("currentStep") == 1,
        forbid=lambda s: s.get("phase") in TERMINAL | {"Paused"},
        timeout=60,
        message="step 1",
    )
    operator.kill()
    assert operator.returncode == -9

    operator.start().wait_ready()
    # The new process has looked at the experiment once the status changes (its numbers move every tick).
    after = wait_for_status(
        kube_api,
        env.namespace,
        "crash",
        lambda s: s != in_step_1,
        forbid=lambda s: s.get("phase") in TERMINAL | {"Paused"},
        timeout=60,
        message="the restarted operator to tick",
    )
    # The step lasts 12s and a restart takes a few: the new process finds the experiment in step 1.
    assert after["currentStep"] == 1, describe(after)
    assert after["startedAt"] == in_step_1["startedAt"]
    assert after["stepStartedAt"] == in_step_1["stepStartedAt"], "the step's clock was not restarted"
    assert after["history"] == in_step_1["history"], "no transition was repeated or added"
    assert after["weights"] == in_step_1["weights"] == {"v1": 60, "v2": 40}

    advanced = wait_for_status(
        kube_api,
        env.namespace,
        "crash",
        lambda s: s.get("currentStep") == 2,
        forbid=lambda s: s.get("phase") in TERMINAL | {"Paused"},
        timeout=60,
        message="step 2",
    )
    history = advanced["history"]
    assert history[: len(in_step_1["history"])] == in_step_1["history"], "the old history is kept as it was"
    assert steps_in_history(history) == [0, 1, 2], history
    assert len({(h["from"], h["to"]) for h in history}) == len(history), f"a transition repeated: {history}"
    # Step 1 lasted its minDuration from the *original* start: not restarted, not cut short.
    held = (parse_time(history[-1]["time"]) - parse_time(in_step_1["stepStartedAt"])).total_seconds()
    assert held >= STEP_1_SECONDS - 1, describe(advanced)
    assert advanced["weights"] == {"v1": 40, "v2": 60}
    operator.assert_alive()
