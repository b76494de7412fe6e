"""Per-variant metric values from a metrics provider (Prometheus), as VALUE, NO DATA or ERROR.

Public surface::

    provider = provider_for(spec.analysis, namespace) # or create_provider("prometheus", url=..., timeout=...)
    context = QueryContext(experiment=name, namespace=namespace)
    provider.query_per_variant(guardrail.query, context, ["champion", "challenger"])  # -> {variant: QueryResult}
    collect_metric(provider, spec.analysis.primary, context, variants)               # -> {variant: MetricSample}

Calls are blocking (requests); from async handlers run them with ``asyncio.to_thread``.
See docs/metrics.md.
"""

from arbiter.metrics.base import (
    ErrorKind,
    MetricsProvider,
    QueryContext,
    QueryPath,
    QueryResult,
    ResultKind,
)
from arbiter.metrics.collect import (
    MEAN_FIELDS,
    PROPORTION_FIELDS,
    MetricSample,
    collect_metric,
    metric_queries,
)
from arbiter.metrics.connection import Connection, CredentialsError, DefaultConnection, resolve_connection
from arbiter.metrics.prometheus import PrometheusProvider
from arbiter.metrics.registry import (
    UnavailableProvider,
    UnknownProviderError,
    create_provider,
    default_connection,
    provider_for,
    provider_names,
    register_provider,
    set_default_connection,
    shared_provider_for,
)
from arbiter.metrics.template import QueryStrategy, TemplateError, plan_queries, render

__all__ = [
    "MEAN_FIELDS",
    "PROPORTION_FIELDS",
    "Connection",
    "CredentialsError",
    "DefaultConnection",
    "ErrorKind",
    "MetricSample",
    "MetricsProvider",
    "PrometheusProvider",
    "QueryContext",
    "QueryPath",
    "QueryResult",
    "QueryStrategy",
    "ResultKind",
    "TemplateError",
    "UnavailableProvider",
    "UnknownProviderError",
    "collect_metric",
    "create_provider",
    "default_connection",
    "metric_queries",
    "plan_queries",
    "provider_for",
    "provider_names",
    "register_provider",
    "render",
    "resolve_connection",
    "set_default_connection",
    "shared_provider_for",
]
