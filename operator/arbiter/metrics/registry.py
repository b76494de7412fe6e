"""Metric providers by name. An unknown name is an error, never a silent fallback."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from arbiter.api.v1alpha1 import Analysis
from arbiter.metrics.base import ErrorKind, MetricsProvider, QueryContext, QueryResult
from arbiter.metrics.connection import (
    Connection,
    CredentialsError,
    DefaultConnection,
    SecretReader,
    resolve_connection,
)
from arbiter.metrics.prometheus import PrometheusProvider

__all__ = [
    "ProviderFactory",
    "UnavailableProvider",
    "UnknownProviderError",
    "create_provider",
    "default_connection",
    "provider_for",
    "provider_names",
    "register_provider",
    "set_default_connection",
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


def provider_for(
    analysis: Analysis,
    namespace: str = "",
    *,
    read_secret: SecretReader | None = None,
    defaults: DefaultConnection | None = None,
) -> MetricsProvider:
    """The provider an experiment's ``spec.analysis`` asks for: Prometheus, with its connection resolved.

    Never raises for a connection that cannot be set up (no URL, a Secret missing or forbidden): the
    provider returned then answers every query with a ``Credentials`` error that says why, so the
    experiment reports it in its conditions like any other failed query and never acts on it.

    Args:
        analysis: the experiment's ``spec.analysis``.
        namespace: the experiment's namespace (where its Secrets live).
        read_secret: reads one Secret key; the API server through ``arbiter.k8s.secrets`` by default.
        defaults: the operator's default connection; the one set by :func:`set_default_connection`.
    """
    connection = _resolve(analysis, namespace, read_secret, defaults)
    if isinstance(connection, UnavailableProvider):
        return connection
    return PrometheusProvider.from_connection(connection)


def _resolve(
    analysis: Analysis,
    namespace: str,
    read_secret: SecretReader | None,
    defaults: DefaultConnection | None,
) -> Connection | UnavailableProvider:
    if read_secret is None:
        from arbiter.k8s.secrets import read_secret_key

        read_secret = read_secret_key
    try:
        return resolve_connection(
            analysis.prometheus, namespace, defaults or _default_connection, read_secret
        )
    except CredentialsError as err:
        return UnavailableProvider(f"Prometheus connection: {err}")


#: Distinct Prometheus connections whose providers (and HTTP connection pools) are kept.
SHARED_PROVIDERS = 64
_shared: OrderedDict[str, MetricsProvider] = OrderedDict()
_shared_lock = threading.Lock()


def shared_provider_for(
    analysis: Analysis,
    namespace: str = "",
    *,
    read_secret: SecretReader | None = None,
    defaults: DefaultConnection | None = None,
) -> MetricsProvider:
    """Like :func:`provider_for`, but one provider per distinct resolved connection, reused across ticks.

    The connection is resolved on every call (Secrets and token files are read again, so rotated
    credentials take effect at the next tick); experiments whose connections come out the same share
    one provider and so one HTTP session whose connections stay open. Providers are safe to use from
    several threads at once (requests' connection pool is). The least recently used of more than
    :data:`SHARED_PROVIDERS` connections is dropped (not closed: a tick may still be using it).
    """
    connection = _resolve(analysis, namespace, read_secret, defaults)
    if isinstance(connection, UnavailableProvider):
        return connection
    key = _fingerprint(connection)
    with _shared_lock:
        provider = _shared.get(key)
        if provider is not None:
            _shared.move_to_end(key)
            return provider
    provider = PrometheusProvider.from_connection(connection)
    with _shared_lock:
        provider = _shared.setdefault(key, provider)
        _shared.move_to_end(key)
        while len(_shared) > SHARED_PROVIDERS:
            _shared.popitem(last=False)
    return provider


def _fingerprint(connection: Connection) -> str:
    """A key for a connection that does not keep its credentials in the clear."""
    parts = (
        connection.url,
        connection.timeout,
        sorted(connection.headers.items()),
        connection.bearer_token,
        connection.basic_auth,
        connection.verify,
        connection.sources,
    )
    return hashlib.sha256(repr(parts).encode()).hexdigest()


_default_connection = DefaultConnection()


def set_default_connection(defaults: DefaultConnection) -> None:
    """Set the operator's default Prometheus connection (`arbiter run --prometheus-*`)."""
    global _default_connection
    _default_connection = defaults


def default_connection() -> DefaultConnection:
    """The operator's default Prometheus connection."""
    return _default_connection


class UnavailableProvider:
    """A provider whose connection could not be set up: every query is an ERROR saying why.

    Args:
        reason: why, naming the Secret, key or file (never a value).
    """

    name = "unavailable"

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __repr__(self) -> str:
        return f"UnavailableProvider({self.reason!r})"

    def query_per_variant(
        self, template: str, context: QueryContext, variants: Sequence[str]
    ) -> dict[str, QueryResult]:
        """An ERROR of kind ``Credentials`` for every variant; nothing is sent."""
        error = QueryResult.error(ErrorKind.CREDENTIALS, self.reason, query=template)
        return dict.fromkeys(variants, error)

    def is_online(self) -> bool:
        """Never."""
        return False
