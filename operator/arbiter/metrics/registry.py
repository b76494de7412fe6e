"""Metric providers by name. An unknown name is an error, never a silent fallback."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from arbiter.api.v1alpha1 import Analysis, parse_duration
from arbiter.metrics.base import MetricsProvider
from arbiter.metrics.prometheus import PrometheusProvider

__all__ = [
    "ProviderFactory",
    "UnknownProviderError",
    "create_provider",
    "provider_for",
    "provider_names",
    "register_provider",
    "shared_provider_for",
]

ProviderFactory = Callable[..., MetricsProvider]

_FACTORIES: dict[str, ProviderFactory] = {PrometheusProvider.name: PrometheusProvider}


class UnknownProviderError(ValueError):
    """No metric provider is registered under the requested name."""

    def __init__(self, name: str) -> None:
        known = ", ".join(provider_names())
        super().__init__(f"unknown metrics provider {name!r}; known providers: {known}")
        self.name = name


def provider_names() -> list[str]:
    """The registered provider names, sorted."""
    return sorted(_FACTORIES)


def register_provider(name: str, factory: ProviderFactory) -> None:
    """Register a provider factory under a (case-insensitive) name.

    Raises:
        ValueError: the name is already taken.
    """
    key = name.lower()
    if key in _FACTORIES:
        raise ValueError(f"metrics provider {name!r} is already registered")
    _FACTORIES[key] = factory


def create_provider(name: str, **settings: Any) -> MetricsProvider:
    """Build the provider registered under ``name`` (case-insensitive) with its settings.

    Raises:
        UnknownProviderError: no such provider; the message lists the known ones.
    """
    factory = _FACTORIES.get(name.lower())
    if factory is None:
        raise UnknownProviderError(name)
    return factory(**settings)


def provider_for(analysis: Analysis) -> MetricsProvider:
    """The provider an experiment's ``spec.analysis`` asks for (Prometheus, with its URL and timeout)."""
    source = analysis.prometheus
    return create_provider(PrometheusProvider.name, url=source.url, timeout=parse_duration(source.timeout))


#: Distinct Prometheus configurations whose providers (and HTTP connection pools) are kept.
SHARED_PROVIDERS = 64
_shared: OrderedDict[str, MetricsProvider] = OrderedDict()
_shared_lock = threading.Lock()


def shared_provider_for(analysis: Analysis) -> MetricsProvider:
    """Like :func:`provider_for`, but one provider per distinct ``spec.analysis.prometheus``, reused.

    Every experiment pointing at the same Prometheus with the same settings shares one provider and so
    one HTTP session (its connections stay open across ticks). Providers are safe to use from several
    threads at once (requests' connection pool is). The least recently used of more than
    :data:`SHARED_PROVIDERS` configurations is dropped (not closed: a tick may still be using it).
    """
    key = analysis.prometheus.model_dump_json()
    with _shared_lock:
        provider = _shared.get(key)
        if provider is not None:
            _shared.move_to_end(key)
            return provider
    provider = provider_for(analysis)
    with _shared_lock:
        provider = _shared.setdefault(key, provider)
        _shared.move_to_end(key)
        while len(_shared) > SHARED_PROVIDERS:
            _shared.popitem(last=False)
    return provider
