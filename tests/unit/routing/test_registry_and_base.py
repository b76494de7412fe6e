"""The registry (no silent fallback), the shared validation of weights and mirrors, and the Nop provider."""

from __future__ import annotations

from typing import Any

import pytest

from arbiter.api.v1alpha1 import ModelExperimentSpec, parse_spec
from arbiter.routing import (
    PROVIDERS,
    GatewayAPIProvider,
    IstioProvider,
    Mirror,
    NopProvider,
    ReplicasProvider,
    RouterProvider,
    RoutingProvider,
    TrafficState,
    UnknownProviderError,
    Verification,
    provider_for,
)


def spec(routing: dict[str, Any]) -> ModelExperimentSpec:
    return parse_spec(
        {
            "champion": {"name": "v1", "deployment": "d1", "service": "s1"},
            "challengers": [
                {"name": "v2", "deployment": "d2", "service": "s2"},
                {"name": "v3", "deployment": "d3", "service": "s3"},
            ],
            "routing": routing,
            "steps": [{"weight": 10}],
            "analysis": {"prometheus": {"url": "http://127.0.0.1:9"}},
        }
    )


@pytest.mark.parametrize(
    ("routing", "cls"),
    [
        ({"provider": "Router", "router": {"configMap": "c"}}, RouterProvider),
        ({"provider": "GatewayAPI", "gatewayAPI": {"httpRoute": "r"}}, GatewayAPIProvider),
        ({"provider": "Istio", "istio": {"virtualService": "v"}}, IstioProvider),
        ({"provider": "Replicas"}, ReplicasProvider),
    ],
)
def test_provider_for_each_name(routing: dict[str, Any], cls: type) -> None:
    provider = provider_for(spec(routing), namespace="ns", experiment="e")
    assert type(provider) is cls
    assert isinstance(provider, RoutingProvider)
    assert provider.variant_names == ["v1", "v2", "v3"]


def test_every_api_provider_name_is_registered() -> None:
    from arbiter.api.v1alpha1 import RoutingProviderName

    assert set(PROVIDERS) == {name.value for name in RoutingProviderName}


def test_unknown_provider_is_an_error_not_a_fallback() -> None:
    bogus = spec({"provider": "Replicas"}).model_copy(
        update={"routing": spec({"provider": "Replicas"}).routing.model_copy(update={"provider": "Linkerd"})}
    )
    with pytest.raises(UnknownProviderError, match=r"'Linkerd'.*Replicas"):
        provider_for(bogus, namespace="ns", experiment="e")


def test_nop_provider_checks_and_remembers() -> None:
    provider = NopProvider(spec({"provider": "Replicas"}), "ns", "e")
    provider.reconcile()
    assert provider.get_weights() == TrafficState({"v1": 100, "v2": 0, "v3": 0})
    provider.set_weights({"v1": 90, "v2": 5, "v3": 5})
    assert provider.verify({"v1": 90, "v2": 5, "v3": 5}).outcome is Verification.YES
    verdict = provider.verify({"v1": 80, "v2": 10, "v3": 10})
    assert verdict.outcome is Verification.NO
    assert "v1: 90% instead of 80%" in verdict.reason
    provider.set_weights({"v1": 100}, Mirror("v3", 50))
    assert provider.verify({"v1": 100}).reason == "mirror is 50% to v3 instead of none"
    provider.finalize("v2")
    assert provider.get_weights() == TrafficState({"v1": 0, "v2": 100, "v3": 0})


@pytest.mark.parametrize(
    ("weights", "mirror", "error"),
    [
        ({"v1": 90, "v2": 5}, None, "sum to 100"),
        ({"v1": 90, "v9": 10}, None, "unknown"),
        ({"v1": 90, "v2": 10}, Mirror("v2"), "must be 0"),
        ({"v1": 100}, Mirror("v9"), "not one of"),
    ],
)
def test_invalid_weights_and_mirrors_are_rejected_before_any_io(
    weights: dict[str, int], mirror: Mirror | None, error: str
) -> None:
    provider = NopProvider(spec({"provider": "Replicas"}), "ns", "e")
    with pytest.raises(ValueError, match=error):
        provider.set_weights(weights, mirror)


def test_mirror_percent_is_validated() -> None:
    with pytest.raises(ValueError, match=r"0\.\.100"):
        Mirror("v2", 101)
