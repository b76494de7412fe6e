"""Provider Router against the real API server: the routes.yaml ConfigMap the router watches.

The provider talks to the API server as the chart's operator ServiceAccount (``operator_api``), so a
permission the chart lacks fails these tests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from kubernetes.client import ApiClient
from routing_support import GITOPS, apply, experiment_spec, get, managers, service

from arbiter.k8s.traffic import TrafficClient
from arbiter.router.config import parse_routes_yaml
from arbiter.routing import Mirror, RouterProvider, TargetNotFoundError, Verification, provider_for

if TYPE_CHECKING:
    from localcluster import Cluster

CONFIG_MAP = "fraud-router"


@pytest.fixture
def provider(cluster: Cluster, namespace: str, operator_api: ApiClient) -> RouterProvider:
    apply(cluster, namespace, service("fraud-v1"), service("fraud-v2", port=80), service("fraud-v3"))
    spec = experiment_spec(
        {
            "provider": "Router",
            "router": {"configMap": CONFIG_MAP},
            "stickiness": {"header": "x-user-id"},
            "shadow": {"percent": 100, "timeoutSeconds": 2.5},
        },
        challengers=2,
    )
    routing = provider_for(
        spec, namespace=namespace, experiment="fraud-v2", client=TrafficClient(operator_api)
    )
    assert isinstance(routing, RouterProvider)
    return routing


def routes(cluster: Cluster, namespace: str) -> dict[str, object]:
    document = parse_routes_yaml(get(cluster, namespace, "configmap", CONFIG_MAP)["data"]["routes.yaml"])
    return document.model_dump(mode="json", by_alias=True, exclude_defaults=True)


def test_reconcile_creates_the_config_map_with_the_champion_at_100(
    cluster: Cluster, namespace: str, provider: RouterProvider
) -> None:
    assert cluster.kubectl("get", "configmap", CONFIG_MAP, "-n", namespace, check=False).returncode != 0
    with pytest.raises(TargetNotFoundError):
        provider.get_weights()
    assert provider.verify({"v1": 100}).outcome is Verification.NO

    provider.reconcile()

    document = routes(cluster, namespace)
    assert document == {
        "experiment": "fraud-v2",
        "variants": [
            {"name": "v1", "url": f"http://fraud-v1.{namespace}.svc:8080", "weight": 100},
            {"name": "v2", "url": f"http://fraud-v2.{namespace}.svc:80", "weight": 0},
            {"name": "v3", "url": f"http://fraud-v3.{namespace}.svc:8080", "weight": 0},
        ],
        "champion": "v1",
        "stickiness": {"header": "x-user-id"},
    }
    assert provider.get_weights().weights == {"v1": 100, "v2": 0, "v3": 0}
    labels = get(cluster, namespace, "configmap", CONFIG_MAP)["metadata"]["labels"]
    assert labels == {"app.kubernetes.io/managed-by": "arbiter", "arbiter.dev/experiment": "fraud-v2"}


def test_weights_mirror_finalize_and_fields_of_others_survive(
    cluster: Cluster, namespace: str, provider: RouterProvider
) -> None:
    provider.reconcile()
    # Someone else (GitOps) owns a label and another key of the same ConfigMap.
    apply(
        cluster,
        namespace,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": CONFIG_MAP, "labels": {"team": "ml"}},
            "data": {"notes.txt": "owned by gitops"},
        },
    )

    provider.set_weights({"v1": 80, "v2": 10, "v3": 10})
    assert provider.get_weights().weights == {"v1": 80, "v2": 10, "v3": 10}
    assert provider.verify({"v1": 80, "v2": 10, "v3": 10}).outcome is Verification.YES
    assert provider.verify({"v1": 90, "v2": 10}).outcome is Verification.NO
    assert [v["weight"] for v in routes(cluster, namespace)["variants"]] == [80, 10, 10]

    provider.set_weights({"v1": 100}, mirror=Mirror("v2", 40))
    state = provider.get_weights()
    assert state.weights == {"v1": 100, "v2": 0, "v3": 0}
    assert state.mirror == Mirror("v2", 40)
    assert routes(cluster, namespace)["shadow"] == {"variant": "v2", "percent": 40, "timeoutSeconds": 2.5}
    assert provider.verify({"v1": 100}, Mirror("v2", 40)).outcome is Verification.YES
    assert provider.verify({"v1": 100}).outcome is Verification.NO

    provider.finalize("v1")  # rollback: champion at 100%, mirror gone
    assert provider.get_weights().weights == {"v1": 100, "v2": 0, "v3": 0}
    assert "shadow" not in routes(cluster, namespace)

    provider.finalize("v3")  # promotion of v3
    assert provider.get_weights().weights == {"v1": 0, "v2": 0, "v3": 100}

    obj = get(cluster, namespace, "configmap", CONFIG_MAP)
    assert obj["data"]["notes.txt"] == "owned by gitops"
    assert obj["metadata"]["labels"]["team"] == "ml"
    owners = managers(obj)
    assert "notes.txt" in owners[GITOPS] and "notes.txt" not in owners["arbiter"]
    assert "routes.yaml" in owners["arbiter"] and "routes.yaml" not in owners[GITOPS]


def test_reconcile_keeps_weights_in_place_and_writes_nothing_when_unchanged(
    cluster: Cluster, namespace: str, provider: RouterProvider
) -> None:
    provider.reconcile()
    provider.set_weights({"v1": 50, "v2": 50})
    version = get(cluster, namespace, "configmap", CONFIG_MAP)["metadata"]["resourceVersion"]

    provider.reconcile()
    provider.set_weights({"v1": 50, "v2": 50})

    assert get(cluster, namespace, "configmap", CONFIG_MAP)["metadata"]["resourceVersion"] == version
    assert provider.get_weights().weights == {"v1": 50, "v2": 50, "v3": 0}


def test_reconcile_replaces_an_unusable_document(
    cluster: Cluster, namespace: str, provider: RouterProvider
) -> None:
    apply(
        cluster,
        namespace,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": CONFIG_MAP},
            "data": {"routes.yaml": "[1, 2"},
        },
        manager="someone",
    )
    provider.reconcile()
    assert provider.get_weights().weights == {"v1": 100, "v2": 0, "v3": 0}


def test_missing_service_is_reported(cluster: Cluster, namespace: str, provider: RouterProvider) -> None:
    cluster.kubectl("delete", "service", "fraud-v3", "-n", namespace)
    with pytest.raises(TargetNotFoundError, match="fraud-v3"):
        provider.reconcile()


def test_a_variant_url_overrides_the_service(
    cluster: Cluster, namespace: str, operator_api: ApiClient
) -> None:
    apply(cluster, namespace, service("fraud-v1"))  # no Service for v2: it is served outside the cluster
    spec = experiment_spec({"provider": "Router", "router": {"configMap": CONFIG_MAP}})
    spec = spec.model_copy(
        update={
            "challengers": [
                spec.challengers[0].model_copy(update={"url": "https://v2.models.example.com:8443"})
            ]
        }
    )
    provider = provider_for(
        spec, namespace=namespace, experiment="fraud-v2", client=TrafficClient(operator_api)
    )
    provider.reconcile()
    urls = [v["url"] for v in routes(cluster, namespace)["variants"]]
    assert urls == [f"http://fraud-v1.{namespace}.svc:8080", "https://v2.models.example.com:8443"]


def test_the_specs_shadow_compare_rules_reach_the_routes(
    cluster: Cluster, namespace: str, kube_api: ApiClient
) -> None:
    apply(cluster, namespace, service("fraud-v1"), service("fraud-v2"))
    compare = {
        "fields": ["/outputs/0/data"],
        "ignore": ["/id", "/model_version"],
        "score": "/outputs/1/data/1",
    }
    spec = experiment_spec(
        {
            "provider": "Router",
            "router": {"configMap": CONFIG_MAP},
            "shadow": {"percent": 100, "timeoutSeconds": 2.0, "compare": compare},
        },
        challengers=1,
    )
    routing = provider_for(spec, namespace=namespace, experiment="fraud-v2", client=TrafficClient(kube_api))
    routing.reconcile()
    routing.set_weights({"v1": 100}, mirror=Mirror("v2", 100))
    assert routes(cluster, namespace)["shadow"] == {
        "variant": "v2",
        "percent": 100,
        "timeoutSeconds": 2.0,
        "compare": compare,
    }
