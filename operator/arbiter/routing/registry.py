"""Which provider carries an experiment's traffic: ``spec.routing.provider`` -> provider class.

An unknown name is an error (:class:`UnknownProviderError`), never a fallback to another provider.
"""

from __future__ import annotations

from typing import Any

from arbiter.api.v1alpha1 import ModelExperimentSpec
from arbiter.k8s.traffic import TrafficClient
from arbiter.routing.base import BaseProvider, UnknownProviderError
from arbiter.routing.gatewayapi import GatewayAPIProvider
from arbiter.routing.istio import IstioProvider
from arbiter.routing.replicas import ReplicasProvider
from arbiter.routing.router import RouterProvider

PROVIDERS: dict[str, type[BaseProvider]] = {
    provider.name: provider
    for provider in (RouterProvider, GatewayAPIProvider, IstioProvider, ReplicasProvider)
}


def provider_for(
    spec: ModelExperimentSpec,
    namespace: str,
    experiment: str,
    *,
    client: TrafficClient | None = None,
    **options: Any,
) -> BaseProvider:
    """Build the provider named by ``spec.routing.provider`` for one experiment. Does no I/O.

    Args:
        spec: the experiment's spec.
        namespace: the experiment's namespace.
        experiment: the experiment's name.
        client: Kubernetes access; a default :class:`TrafficClient` on first use when None.
        options: provider-specific settings, e.g. ``replicas_budget=`` for Replicas.

    Raises:
        UnknownProviderError: no provider has that name.
    """
    name = str(getattr(spec.routing.provider, "value", spec.routing.provider))
    provider = PROVIDERS.get(name)
    if provider is None:
        raise UnknownProviderError(
            f"unknown routing provider {name!r}; known providers: {', '.join(sorted(PROVIDERS))}"
        )
    return provider(spec, namespace, experiment, client=client, **options)
