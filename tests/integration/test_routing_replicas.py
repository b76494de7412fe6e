"""Provider Replicas against the real API server: Deployments scaled by the controller-manager, pods made
Ready by kwok's fake node, so readyReplicas is real.

The provider talks to the API server as the chart's operator ServiceAccount (``operator_api``), so a
permission the chart lacks fails these tests.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest
from kubernetes.client import ApiClient
from routing_support import GITOPS, apply, deployment, experiment_spec, get, managers

from arbiter.k8s.traffic import TrafficClient
from arbiter.routing import (
    Mirror,
    ReplicasProvider,
    TargetNotFoundError,
    UnsupportedError,
    Verification,
    provider_for,
)
from arbiter.routing.replicas import BUDGET_ANNOTATION
from helpers import wait_for

if TYPE_CHECKING:
    from localcluster import Cluster

READY_TIMEOUT = 60


@pytest.fixture
def provider(cluster: Cluster, namespace: str, operator_api: ApiClient) -> ReplicasProvider:
    apply(cluster, namespace, deployment("fraud-v1", 3), deployment("fraud-v2", 1))
    spec = experiment_spec({"provider": "Replicas"})
    routing = provider_for(
        spec, namespace=namespace, experiment="fraud-v2", client=TrafficClient(operator_api)
    )
    assert isinstance(routing, ReplicasProvider)
    return routing


def replicas(cluster: Cluster, namespace: str) -> dict[str, int]:
    return {n: get(cluster, namespace, "deployment", f"fraud-{n}")["spec"]["replicas"] for n in ("v1", "v2")}


def wait_verified(provider: ReplicasProvider, weights: dict[str, int]) -> None:
    wait_for(
        lambda: provider.verify(weights).outcome is Verification.YES,
        timeout=READY_TIMEOUT,
        interval=0.5,
        message=f"ready replicas for {weights}: {provider.verify(weights).reason}",
    )


def test_budget_weights_finalize_and_fields_of_others_survive(
    cluster: Cluster, namespace: str, provider: ReplicasProvider
) -> None:
    provider.reconcile()
    annotations = get(cluster, namespace, "deployment", "fraud-v1")["metadata"]["annotations"]
    assert json.loads(annotations[BUDGET_ANNOTATION]) == {"experiment": "fraud-v2", "replicas": 4}
    wait_for(
        lambda: provider.get_weights().weights == {"v1": 75, "v2": 25}, timeout=READY_TIMEOUT, interval=0.5
    )

    provider.set_weights({"v1": 50, "v2": 50})
    assert replicas(cluster, namespace) == {"v1": 2, "v2": 2}
    # Scaled but not yet ready is "no", with the reason.
    wait_verified(provider, {"v1": 50, "v2": 50})
    assert provider.get_weights().weights == {"v1": 50, "v2": 50}

    provider.set_weights({"v1": 95, "v2": 5})  # granularity: 1/4 of the traffic is the smallest step
    assert replicas(cluster, namespace) == {"v1": 3, "v2": 1}
    wait_verified(provider, {"v1": 95, "v2": 5})
    assert provider.get_weights().weights == {"v1": 75, "v2": 25}

    provider.set_weights({"v2": 100})  # a step at 100%: the champion keeps one replica
    assert replicas(cluster, namespace) == {"v1": 1, "v2": 3}
    wait_verified(provider, {"v2": 100})

    provider.finalize("v1")  # rollback
    assert replicas(cluster, namespace) == {"v1": 4, "v2": 0}
    wait_verified(provider, {"v1": 100})
    assert provider.get_weights().weights == {"v1": 100, "v2": 0}

    provider.finalize("v2")  # promotion: the champion may go to 0 now
    assert replicas(cluster, namespace) == {"v1": 0, "v2": 4}
    wait_verified(provider, {"v2": 100})

    v1 = get(cluster, namespace, "deployment", "fraud-v1")
    assert v1["metadata"]["labels"] == {"team": "ml"}
    assert v1["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example.com/fraud:1"
    assert BUDGET_ANNOTATION in managers(v1)["arbiter"]
    assert '"f:labels"' in managers(v1)[GITOPS]


def test_verify_says_no_while_replicas_are_not_ready(
    cluster: Cluster, namespace: str, provider: ReplicasProvider
) -> None:
    # v2's new pods can never be scheduled (no node matches), so they never become ready.
    stuck = deployment("fraud-v2", 1)
    stuck["spec"]["template"]["spec"]["nodeSelector"] = {"arbiter.dev/nowhere": "true"}
    apply(cluster, namespace, stuck)
    provider.set_weights({"v1": 25, "v2": 75})
    wait_for(
        lambda: "fraud-v1" not in provider.verify({"v1": 25, "v2": 75}).reason,
        timeout=READY_TIMEOUT,
        interval=0.5,
        message="fraud-v1 scaled down to its 1 ready replica",
    )
    verdict = provider.verify({"v1": 25, "v2": 75})
    assert verdict.outcome is Verification.NO
    assert "fraud-v2" in verdict.reason and "expected 3" in verdict.reason

    apply(cluster, namespace, deployment("fraud-v2", 3))  # the fix: schedulable again
    wait_verified(provider, {"v1": 25, "v2": 75})
    assert provider.verify({"v1": 50, "v2": 50}).outcome is Verification.NO


def test_recorded_budget_survives_a_new_provider_and_mirror_is_unsupported(
    cluster: Cluster, namespace: str, operator_api: ApiClient, provider: ReplicasProvider
) -> None:
    provider.reconcile()
    provider.set_weights({"v1": 50, "v2": 50})
    # The user scales by hand; a fresh provider (operator restart) still uses the recorded budget.
    cluster.kubectl("scale", "deployment", "fraud-v1", "-n", namespace, "--replicas=7")
    again = provider_for(
        experiment_spec({"provider": "Replicas"}), namespace, "fraud-v2", client=TrafficClient(operator_api)
    )
    again.set_weights({"v1": 50, "v2": 50})
    assert replicas(cluster, namespace) == {"v1": 2, "v2": 2}

    with pytest.raises(UnsupportedError, match="cannot mirror"):
        provider.set_weights({"v1": 100}, mirror=Mirror("v2", 100))


def test_missing_deployment(cluster: Cluster, namespace: str, provider: ReplicasProvider) -> None:
    cluster.kubectl("delete", "deployment", "fraud-v2", "-n", namespace)
    with pytest.raises(TargetNotFoundError, match="fraud-v2"):
        provider.set_weights({"v1": 100})
    assert provider.verify({"v1": 100}).outcome is Verification.NO
