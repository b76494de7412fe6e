"""Provider Istio against the real API server with Istio's own CRDs (istio.io/api).

The provider talks to the API server as the chart's operator ServiceAccount (``operator_api``), so a
permission the chart lacks fails these tests.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest
from kubernetes.client import ApiClient
from routing_support import GITOPS, apply, experiment_spec, get, managers

from arbiter.k8s.traffic import TrafficClient
from arbiter.routing import (
    InvalidTargetError,
    IstioProvider,
    Mirror,
    TrafficState,
    Verification,
    provider_for,
)

if TYPE_CHECKING:
    from localcluster import Cluster

VS = "fraud"


def virtual_service(namespace: str) -> dict[str, Any]:
    """The user's VirtualService: a health route first, then the champion's scoring route."""
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": VS, "labels": {"team": "ml"}},
        "spec": {
            "hosts": ["fraud.example.com"],
            "gateways": ["istio-system/public"],
            "http": [
                {
                    "name": "health",
                    "match": [{"uri": {"exact": "/healthz"}}],
                    "route": [{"destination": {"host": "health-check"}}],
                },
                {
                    "name": "score",
                    "match": [{"uri": {"prefix": "/score"}}],
                    "timeout": "2s",
                    "route": [
                        {
                            "destination": {
                                "host": f"fraud-v1.{namespace}.svc.cluster.local",
                                "port": {"number": 8080},
                            }
                        }
                    ],
                },
            ],
        },
    }


def make_provider(namespace: str, operator_api: ApiClient, **routing: Any) -> IstioProvider:
    spec = experiment_spec(
        {"provider": "Istio", "istio": {"virtualService": VS, "route": "score"}, **routing}, challengers=2
    )
    provider = provider_for(
        spec, namespace=namespace, experiment="fraud-v2", client=TrafficClient(operator_api)
    )
    assert isinstance(provider, IstioProvider)
    return provider


@pytest.fixture
def provider(
    cluster: Cluster, namespace: str, operator_api: ApiClient, thirdparty_crds: list[str]
) -> IstioProvider:
    apply(cluster, namespace, virtual_service(namespace))
    return make_provider(namespace, operator_api)


def http(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = get(cluster, namespace, "virtualservice", VS)["spec"]["http"]
    return result


def report_status(cluster: Cluster, namespace: str) -> None:
    """Play istiod with PILOT_ENABLE_STATUS: report the observed generation."""
    generation = get(cluster, namespace, "virtualservice", VS)["metadata"]["generation"]
    status = {"observedGeneration": generation, "conditions": [{"type": "Reconciled", "status": "True"}]}
    cluster.kubectl(
        "patch",
        "virtualservice",
        VS,
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )


def test_reconcile_adds_destinations_written_like_the_champions(
    cluster: Cluster, namespace: str, provider: IstioProvider
) -> None:
    provider.reconcile()
    score = http(cluster, namespace)[1]
    assert score["route"] == [
        {
            "destination": {"host": f"fraud-v1.{namespace}.svc.cluster.local", "port": {"number": 8080}},
            "weight": 100,
        },
        {
            "destination": {"host": f"fraud-v2.{namespace}.svc.cluster.local", "port": {"number": 8080}},
            "weight": 0,
        },
        {
            "destination": {"host": f"fraud-v3.{namespace}.svc.cluster.local", "port": {"number": 8080}},
            "weight": 0,
        },
    ]
    assert score["timeout"] == "2s"
    assert http(cluster, namespace)[0]["route"] == [{"destination": {"host": "health-check"}}]
    assert provider.get_weights().weights == {"v1": 100, "v2": 0, "v3": 0}


def test_weights_verify_mirror_finalize_and_fields_of_others_survive(
    cluster: Cluster, namespace: str, provider: IstioProvider
) -> None:
    provider.reconcile()
    provider.set_weights({"v1": 70, "v2": 20, "v3": 10})
    assert [d["weight"] for d in http(cluster, namespace)[1]["route"]] == [70, 20, 10]
    assert provider.get_weights().weights == {"v1": 70, "v2": 20, "v3": 10}

    assert provider.verify({"v1": 70, "v2": 20, "v3": 10}).outcome is Verification.CANNOT_TELL
    report_status(cluster, namespace)
    assert provider.verify({"v1": 70, "v2": 20, "v3": 10}).outcome is Verification.YES
    assert provider.verify({"v1": 60, "v2": 30, "v3": 10}).outcome is Verification.NO

    provider.set_weights({"v1": 100}, mirror=Mirror("v3", 25))
    score = http(cluster, namespace)[1]
    assert score["mirror"] == {"host": f"fraud-v3.{namespace}.svc.cluster.local", "port": {"number": 8080}}
    assert score["mirrorPercentage"] == {"value": 25}
    assert provider.get_weights().mirror == Mirror("v3", 25)
    verdict = provider.verify({"v1": 100}, Mirror("v3", 25))
    assert verdict.outcome is Verification.NO and "not yet processed" in verdict.reason

    provider.finalize("v1")
    score = http(cluster, namespace)[1]
    assert "mirror" not in score and "mirrorPercentage" not in score
    assert provider.get_weights() == TrafficState({"v1": 100, "v2": 0, "v3": 0}, None)

    provider.finalize("v2")
    assert [d["weight"] for d in http(cluster, namespace)[1]["route"]] == [0, 100, 0]

    vs = get(cluster, namespace, "virtualservice", VS)
    assert vs["spec"]["hosts"] == ["fraud.example.com"]
    assert vs["spec"]["gateways"] == ["istio-system/public"]
    assert vs["metadata"]["labels"] == {"team": "ml"}
    assert [r["name"] for r in vs["spec"]["http"]] == ["health", "score"]
    owners = managers(vs)
    assert '"f:hosts"' in owners[GITOPS] and '"f:gateways"' in owners[GITOPS]
    assert '"f:hosts"' not in owners["arbiter"]


def test_cookie_stickiness_pins_assigned_users_and_finalize_unpins(
    cluster: Cluster, namespace: str, operator_api: ApiClient, provider: IstioProvider
) -> None:
    sticky = make_provider(namespace, operator_api, stickiness={"cookie": "uid"})
    sticky.reconcile()
    sticky.set_weights({"v1": 50, "v2": 50})

    routes = http(cluster, namespace)
    assert [r["name"] for r in routes] == ["health", "arbiter-fraud-v2-v1", "arbiter-fraud-v2-v2", "score"]
    pin = routes[2]
    assert pin["match"] == [
        {"uri": {"prefix": "/score"}, "headers": {"cookie": {"regex": "(^|.*; ?)uid=v2(;.*)?$"}}}
    ]
    assert pin["route"] == [
        {
            "destination": {"host": f"fraud-v2.{namespace}.svc.cluster.local", "port": {"number": 8080}},
            "weight": 100,
            "headers": {"response": {"add": {"set-cookie": "uid=v2; Path=/"}}},
        }
    ]
    assert pin["timeout"] == "2s"
    score = routes[3]
    assert score["route"][1]["headers"] == {"response": {"add": {"set-cookie": "uid=v2; Path=/"}}}
    assert "headers" not in score["route"][2]  # v3 has weight 0: it serves nobody, so it assigns nobody
    assert sticky.get_weights().weights == {"v1": 50, "v2": 50, "v3": 0}
    report_status(cluster, namespace)
    assert sticky.verify({"v1": 50, "v2": 50}).outcome is Verification.YES
    # Without stickiness the same VirtualService does not carry what was asked (the pins are extra).
    assert provider.verify({"v1": 50, "v2": 50}).outcome is Verification.NO

    sticky.set_weights({"v1": 100})  # v2 lost: its pin goes, its users are reassigned
    assert [r["name"] for r in http(cluster, namespace)] == ["health", "arbiter-fraud-v2-v1", "score"]

    sticky.finalize("v1")
    routes = http(cluster, namespace)
    assert [r["name"] for r in routes] == ["health", "score"]
    assert all("headers" not in d for d in routes[1]["route"])


def test_header_stickiness_matches_the_header_naming_the_variant(
    cluster: Cluster, namespace: str, operator_api: ApiClient, provider: IstioProvider
) -> None:
    sticky = make_provider(namespace, operator_api, stickiness={"header": "X-Variant"})
    sticky.set_weights({"v1": 90, "v3": 10})
    routes = http(cluster, namespace)
    assert [r["name"] for r in routes] == ["health", "arbiter-fraud-v2-v1", "arbiter-fraud-v2-v3", "score"]
    assert routes[2]["match"][0]["headers"] == {"x-variant": {"exact": "v3"}}
    assert routes[3]["route"][2]["headers"] == {"response": {"add": {"x-variant": "v3"}}}


def test_unknown_route_name_is_invalid(
    cluster: Cluster, namespace: str, operator_api: ApiClient, thirdparty_crds: list[str]
) -> None:
    apply(cluster, namespace, virtual_service(namespace))
    spec = experiment_spec({"provider": "Istio", "istio": {"virtualService": VS, "route": "nope"}})
    provider = provider_for(spec, namespace=namespace, experiment="x", client=TrafficClient(operator_api))
    with pytest.raises(InvalidTargetError, match="'nope'"):
        provider.reconcile()
