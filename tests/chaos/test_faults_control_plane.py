"""The API server restarts, then etcd restarts, under a running experiment.

On a control plane of this module's own (fault_support.dedicated_cluster), so the session's cluster and
every other test keep theirs. While the API server is gone the operator can neither read nor write: it
must not crash, not decide on what it could not read, and pick up by itself once the API server answers
again: the same step, the same step clock, the same history, the same route, and ticks going on.
(A condition cannot explain an outage of the API server it would be written to: the operator's log
and its metric ``arbiter_tick_failures_total{error}`` do.)

``ARBITER_CHAOS_FULL=1`` restarts each component three times instead of once.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fault_support import dedicated_cluster, full_chaos, restart_component
from harness.env import RolloutEnv
from harness.experiment import (
    UNDECIDED_MDE,
    UNDECIDED_TEST,
    condition,
    conversion_metric,
    describe,
    wait_for_status,
)

from arbiter.router.config import parse_routes_yaml
from arbiter_fixtures import CRD_FILE, OperatorProcess, install_operator_identity
from chaos_ledger import ChaosRun, record_run
from helpers import wait_for

pytestmark = [pytest.mark.chaos, pytest.mark.e2e, pytest.mark.cluster, pytest.mark.timeout(420)]
__all__ = ["dedicated_cluster"]  # a fixture, imported for pytest

TERMINAL = {"Promoted", "RolledBack", "Concluded", "Failed"}
NAME = "restart"
NAMESPACE = "chaos-control-plane"


@pytest.fixture
def world(
    dedicated_cluster: Any, prometheus: Any, tmp_path: Path
) -> Iterator[tuple[RolloutEnv, OperatorProcess, Any]]:
    """The CRD, a namespace with the workloads and router, and the operator, all on the dedicated cluster."""
    from kubernetes import config

    cluster = dedicated_cluster
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", "crd/modelexperiments.arbiter.dev"
    )
    cluster.kubectl("create", "namespace", NAMESPACE)
    wait_for(
        lambda: (
            cluster.kubectl("get", "serviceaccount", "default", "-n", NAMESPACE, check=False).returncode == 0
        ),
        timeout=30,
        message="the namespace's default ServiceAccount",
    )
    identity = install_operator_identity(cluster, tmp_path)
    api = config.new_client_from_config(config_file=cluster.kubeconfig)
    env = RolloutEnv(
        cluster=cluster,
        kube_api=api,
        namespace=NAMESPACE,
        prometheus=prometheus,
        workdir=tmp_path,
        experiment=NAME,
    )
    operator = OperatorProcess(identity.kubeconfig, tmp_path / "operator.log")
    try:
        env.start()
        operator.start().wait_ready()
        yield env, operator, api
    finally:
        operator.stop()
        sys.stderr.write(f"\n--- operator log ---\n{operator.log()[-5000:]}\n")
        env.close()
        api.close()


def routed(env: RolloutEnv) -> dict[str, float]:
    body = json.loads(
        env.cluster.kubectl("get", "configmap", env.config_map, "-n", env.namespace, "-o", "json").stdout
    )
    return {v.name: v.weight for v in parse_routes_yaml(body["data"]["routes.yaml"]).variants}


def test_api_server_and_etcd_restarts_are_ridden_out(world: tuple[RolloutEnv, OperatorProcess, Any]) -> None:
    env, operator, api = world
    env.apply(
        [
            env.experiment(
                steps=[{"weight": 20, "minDuration": "10m"}, {"weight": 50}],
                primary=conversion_metric(mde=UNDECIDED_MDE),
                test=UNDECIDED_TEST,
            )
        ]
    )
    env.traffic({"v1": 0.1, "v2": 0.1}, rate=60, max_seconds=380, seed=61)
    before = wait_for_status(
        api,
        NAMESPACE,
        NAME,
        lambda s: (
            s.get("weights") == {"v1": 80, "v2": 20}
            and condition(s, "MetricsAvailable").get("status") == "True"
        ),
        forbid=lambda s: s.get("phase") in TERMINAL,
        timeout=90,
        message="step 0 at 20% with metrics",
    )
    rounds = 3 if full_chaos() else 1
    for component in ["kube-apiserver", "etcd"] * rounds:
        outage = restart_component(env.cluster, component, down_seconds=3.0)
        last = wait_for_status(api, NAMESPACE, NAME, lambda s: True, timeout=30, message="status readable")
        # Ticks go on: the status moves again (the step's elapsed time is in its decision).
        after = wait_for_status(
            api,
            NAMESPACE,
            NAME,
            lambda s, last=last: s.get("decision") != last.get("decision"),
            forbid=lambda s: s.get("phase") in TERMINAL,
            timeout=90,
            message=f"the operator to tick again after the {component} restart",
        )
        same = (
            after["phase"] == "Progressing"
            and after["currentStep"] == before["currentStep"]
            and after["weights"] == before["weights"]
            and after["stepStartedAt"] == before["stepStartedAt"]
            and after["history"] == before["history"]
        )
        fault = "apiserver_restart" if component == "kube-apiserver" else "etcd_restart"
        record_run(
            ChaosRun(
                fault=fault,
                outcome_differed=not same,
                detail=f"{NAMESPACE}/{NAME}: {component} down {outage:.1f}s until ready",
            )
        )
        assert same, f"after the {component} restart: {describe(after)}"
        assert routed(env) == {"v1": 80, "v2": 20}
        operator.assert_alive()
    # What explains the outage afterwards: the ticks that failed while the API server was unreachable.
    failures = [
        line
        for line in operator.metrics().splitlines()
        if line.startswith("arbiter_tick_failures_total{") and float(line.rsplit(" ", 1)[1]) > 0
    ]
    assert failures, "the operator's metrics count the ticks the outage failed"
