"""Routing providers: move traffic between model variants through whatever carries it.

``provider_for(spec, namespace, experiment)`` returns the provider named by ``spec.routing.provider``:
``Router`` (Arbiter's router ConfigMap), ``GatewayAPI`` (HTTPRoute weights), ``Istio``
(VirtualService weights) or ``Replicas`` (replica counts behind one Service). See docs/routing.md.
"""

from arbiter.routing.base import (
    BaseProvider,
    InvalidTargetError,
    Mirror,
    RoutingError,
    RoutingProvider,
    TargetNotFoundError,
    TrafficState,
    TransientRoutingError,
    UnknownProviderError,
    UnsupportedError,
    Verification,
    WeightCheck,
)
from arbiter.routing.gatewayapi import GatewayAPIProvider
from arbiter.routing.istio import IstioProvider
from arbiter.routing.nop import NopProvider
from arbiter.routing.registry import PROVIDERS, provider_for
from arbiter.routing.replicas import ReplicasProvider
from arbiter.routing.router import RouterProvider

__all__ = [
    "PROVIDERS",
    "BaseProvider",
    "GatewayAPIProvider",
    "InvalidTargetError",
    "IstioProvider",
    "Mirror",
    "NopProvider",
    "ReplicasProvider",
    "RouterProvider",
    "RoutingError",
    "RoutingProvider",
    "TargetNotFoundError",
    "TrafficState",
    "TransientRoutingError",
    "UnknownProviderError",
    "UnsupportedError",
    "Verification",
    "WeightCheck",
    "provider_for",
]
