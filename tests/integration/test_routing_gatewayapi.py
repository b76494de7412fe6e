"""Provider GatewayAPI against the real API server with Gateway API's own (standard channel) CRDs.

The provider talks to the API server as the chart's operator ServiceAccount (``operator_api``), so a
permission the chart lacks fails these tests.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest
from kubernetes.client import ApiClient
from routing_support import GITOPS, apply, experiment_spec, get, managers

from arbiter.k8s.traffic import HTTP_ROUTES, ConflictError, InvalidError, TrafficClient
from arbiter.routing import GatewayAPIProvider, InvalidTargetError, Mirror, Verification, provider_for

if TYPE_CHECKING:
    from localcluster import Cluster

ROUTE = "fraud"


def http_route() -> dict[str, Any]:
    """The user's HTTPRoute: the champion only, a foreign rule, a header filter, hostnames and a label."""
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": ROUTE, "labels": {"team": "ml"}},
        "spec": {
            "parentRefs": [{"name": "public-gateway"}],
            "hostnames": ["fraud.example.com"],
            "rules": [
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/static"}}],
                    "backendRefs": [{"name": "static-files", "port": 80}],
                },
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/score"}}],
                    "filters": [
                        {
                            "type": "RequestHeaderModifier",
                            "requestHeaderModifier": {"set": [{"name": "x-model", "value": "fraud"}]},
                        }
                    ],
                    "backendRefs": [{"name": "fraud-v1", "port": 8080, "weight": 1}],
                },
            ],
        },
    }


@pytest.fixture
def provider(
    cluster: Cluster, namespace: str, operator_api: ApiClient, thirdparty_crds: list[str]
) -> GatewayAPIProvider:
    apply(cluster, namespace, http_route())
    spec = experiment_spec({"provider": "GatewayAPI", "gatewayAPI": {"httpRoute": ROUTE}}, challengers=2)
    routing = provider_for(
        spec, namespace=namespace, experiment="fraud-v2", client=TrafficClient(operator_api)
    )
    assert isinstance(routing, GatewayAPIProvider)
    return routing


def rules(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = get(cluster, namespace, "httproute", ROUTE)["spec"]["rules"]
    return result


def report_status(cluster: Cluster, namespace: str, accepted: str = "True") -> None:
    """Play the Gateway controller: report on the route's current generation in status.parents."""
    generation = get(cluster, namespace, "httproute", ROUTE)["metadata"]["generation"]
    condition = {"observedGeneration": generation, "lastTransitionTime": "2026-01-01T00:00:00Z"}
    status = {
        "parents": [
            {
                "parentRef": {"name": "public-gateway"},
                "controllerName": "example.com/gateway-controller",
                "conditions": [
                    {
                        **condition,
                        "type": "Accepted",
                        "status": accepted,
                        "reason": "Accepted",
                        "message": "",
                    },
                    {
                        **condition,
                        "type": "ResolvedRefs",
                        "status": "True",
                        "reason": "ResolvedRefs",
                        "message": "",
                    },
                ],
            }
        ]
    }
    cluster.kubectl(
        "patch",
        "httproute",
        ROUTE,
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )


def test_reconcile_adds_the_missing_challenger_refs_at_weight_zero(
    cluster: Cluster, namespace: str, provider: GatewayAPIProvider
) -> None:
    provider.reconcile()
    managed = rules(cluster, namespace)[1]
    assert managed["backendRefs"] == [
        {"group": "", "kind": "Service", "name": "fraud-v1", "port": 8080, "weight": 100},
        {"group": "", "kind": "Service", "name": "fraud-v2", "port": 8080, "weight": 0},
        {"group": "", "kind": "Service", "name": "fraud-v3", "port": 8080, "weight": 0},
    ]
    assert rules(cluster, namespace)[0]["backendRefs"][0]["name"] == "static-files"
    assert provider.get_weights().weights == {"v1": 100, "v2": 0, "v3": 0}


def test_weights_verify_mirror_finalize_and_fields_of_others_survive(
    cluster: Cluster, namespace: str, provider: GatewayAPIProvider
) -> None:
    provider.reconcile()
    provider.set_weights({"v1": 80, "v2": 10, "v3": 10})
    assert [r["weight"] for r in rules(cluster, namespace)[1]["backendRefs"]] == [80, 10, 10]
    assert provider.get_weights().weights == {"v1": 80, "v2": 10, "v3": 10}

    # No Gateway controller has reported: the spec is right, but nobody says it is in effect.
    verdict = provider.verify({"v1": 80, "v2": 10, "v3": 10})
    assert verdict.outcome is Verification.CANNOT_TELL, verdict
    report_status(cluster, namespace)
    assert provider.verify({"v1": 80, "v2": 10, "v3": 10}).outcome is Verification.YES
    assert provider.verify({"v1": 70, "v2": 20, "v3": 10}).outcome is Verification.NO
    # A new generation the controller has not processed yet: not in place yet.
    provider.set_weights({"v1": 70, "v2": 20, "v3": 10})
    verdict = provider.verify({"v1": 70, "v2": 20, "v3": 10})
    assert verdict.outcome is Verification.NO and "not yet processed" in verdict.reason
    report_status(cluster, namespace, accepted="False")
    assert provider.verify({"v1": 70, "v2": 20, "v3": 10}).outcome is Verification.NO

    provider.set_weights({"v1": 100}, mirror=Mirror("v2", 30))
    filters = rules(cluster, namespace)[1]["filters"]
    assert filters[0]["type"] == "RequestHeaderModifier"
    assert filters[1] == {
        "type": "RequestMirror",
        "requestMirror": {
            "backendRef": {"group": "", "kind": "Service", "name": "fraud-v2", "port": 8080},
            "percent": 30,
        },
    }
    assert provider.get_weights().mirror == Mirror("v2", 30)

    provider.finalize("v1")  # rollback: the mirror goes, the user's header filter stays
    assert [f["type"] for f in rules(cluster, namespace)[1]["filters"]] == ["RequestHeaderModifier"]
    assert provider.get_weights().weights == {"v1": 100, "v2": 0, "v3": 0}
    assert provider.get_weights().mirror is None

    provider.finalize("v2")  # promotion
    assert [r["weight"] for r in rules(cluster, namespace)[1]["backendRefs"]] == [0, 100, 0]

    route = get(cluster, namespace, "httproute", ROUTE)
    assert route["spec"]["hostnames"] == ["fraud.example.com"]
    assert route["spec"]["parentRefs"][0]["name"] == "public-gateway"
    assert route["metadata"]["labels"] == {"team": "ml"}
    assert rules(cluster, namespace)[0]["backendRefs"] == [
        {"group": "", "kind": "Service", "name": "static-files", "port": 80, "weight": 1}
    ]
    owners = managers(route)
    assert "fraud.example.com" not in owners["arbiter"]
    assert '"f:hostnames"' in owners[GITOPS] and '"f:team"' in owners[GITOPS]


def test_a_concurrent_change_is_reread_not_overwritten(
    cluster: Cluster, namespace: str, operator_api: ApiClient, provider: GatewayAPIProvider
) -> None:
    """Between our read and our patch, GitOps adds a hostname: the patch is retried on the new object."""
    client = provider.client
    original = client.json_patch
    calls: list[str] = []

    def racing_patch(*args: Any, **kwargs: Any) -> dict[str, Any]:
        if not calls:
            route = http_route()
            route["spec"]["hostnames"].append("fraud.internal")
            apply(cluster, namespace, route)
        calls.append("patch")
        return original(*args, **kwargs)

    client.json_patch = racing_patch  # type: ignore[method-assign]
    provider.set_weights({"v1": 60, "v2": 40})

    assert len(calls) == 2  # the first patch failed its resourceVersion test
    route = get(cluster, namespace, "httproute", ROUTE)
    assert route["spec"]["hostnames"] == ["fraud.example.com", "fraud.internal"]
    assert provider.get_weights().weights == {"v1": 60, "v2": 40, "v3": 0}


def test_a_stale_patch_is_a_conflict_and_an_invalid_one_is_not(
    cluster: Cluster, namespace: str, operator_api: ApiClient, thirdparty_crds: list[str]
) -> None:
    apply(cluster, namespace, http_route())
    client = TrafficClient(operator_api)
    version = get(cluster, namespace, "httproute", ROUTE)["metadata"]["resourceVersion"]
    clear_hostnames = [{"op": "replace", "path": "/spec/hostnames", "value": []}]
    cluster.kubectl("label", "httproute", ROUTE, "-n", namespace, "touched=yes")
    with pytest.raises(ConflictError):
        client.json_patch(HTTP_ROUTES, namespace, ROUTE, clear_hostnames, resource_version=version)
    assert get(cluster, namespace, "httproute", ROUTE)["spec"]["hostnames"] == ["fraud.example.com"]

    version = get(cluster, namespace, "httproute", ROUTE)["metadata"]["resourceVersion"]
    too_many = [
        {"op": "replace", "path": "/spec/hostnames", "value": [f"h{i}.example.com" for i in range(17)]}
    ]
    with pytest.raises(InvalidError):
        client.json_patch(HTTP_ROUTES, namespace, ROUTE, too_many, resource_version=version)


def test_a_route_without_the_variants_is_invalid(
    cluster: Cluster, namespace: str, provider: GatewayAPIProvider
) -> None:
    route = http_route()
    route["spec"]["rules"] = route["spec"]["rules"][:1]
    cluster.kubectl("delete", "httproute", ROUTE, "-n", namespace)
    apply(cluster, namespace, route)
    with pytest.raises(InvalidTargetError, match="no rule with a backendRef"):
        provider.reconcile()
    assert provider.verify({"v1": 100}).outcome is Verification.NO
