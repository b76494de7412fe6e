"""Deleting a running experiment whose workloads are already gone (e.g. its namespace is being deleted).

Found while running the e2e suite: after test_operator_admission.py's namespace was deleted, the next
test's operator logged every 5 s, for minutes, ``Handler 'on_delete' failed temporarily: could not route
traffic back to the champion: Service .../fraud-v1 of variant v1 does not exist``. A namespace deletion
removes the Services before the experiment (which waits on its finalizer), so on_delete can never route
back to the champion, retries forever, and the namespace stays Terminating.
"""

from __future__ import annotations

from typing import Any

import pytest
from harness.env import RolloutEnv
from harness.experiment import wait_for_phase

from arbiter_fixtures import OperatorProcess

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def test_deleting_an_experiment_whose_services_are_gone_does_not_hang(
    rollout_env: Any, operator: OperatorProcess, kube_api: Any
) -> None:
    env: RolloutEnv = rollout_env(experiment="orphan")
    manifest = env.experiment(steps=[{"weight": 20, "minDuration": "10m"}])
    for variant in [manifest["spec"]["champion"], *manifest["spec"]["challengers"]]:
        del variant["url"]  # the router's URLs come from the Services, as in production
    env.apply([manifest])
    wait_for_phase(kube_api, env.namespace, "orphan", "Progressing", timeout=60, forbid_phases={"Failed"})

    env.cluster.kubectl("delete", "service", "model-v1", "model-v2", "-n", env.namespace)
    deleted = env.cluster.kubectl(
        "delete", "mexp", "orphan", "-n", env.namespace, "--wait=true", "--timeout=30s", check=False
    )
    assert deleted.returncode == 0, f"the experiment was not deleted within 30s: {deleted.stderr}"
    assert env.cluster.kubectl("get", "mexp", "orphan", "-n", env.namespace, check=False).returncode != 0
