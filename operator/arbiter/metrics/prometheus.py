"""The Prometheus metrics provider, on prometheus-api-client.

Every HTTP call carries the configured timeout (connect, and each wait for bytes) and asks Prometheus to
give up evaluating after the same time. The library's default adapter retries 5xx and connection errors
three times with back-off; that would stall a tick for seconds, so this provider never retries: a failed
query is an ERROR now, and the next tick asks again.
"""

from __future__ import annotations

import ast
import functools
import json
import math
import re
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import requests
from prometheus_api_client.exceptions import PrometheusApiClientException
from prometheus_api_client.prometheus_connect import PrometheusConnect
from requests.adapters import HTTPAdapter
from urllib3.exceptions import InsecureRequestWarning
from urllib3.util.retry import Retry

from arbiter.metrics.base import ErrorKind, QueryContext, QueryPath, QueryResult
from arbiter.metrics.connection import Connection
from arbiter.metrics.template import VARIANT_LABEL, QueryStrategy, plan_queries

__all__ = ["PrometheusProvider"]

#: Connections kept open per Prometheus server (at least the operator's worker threads).
POOL_SIZE = 16
_STATUS_MESSAGE = re.compile(r"HTTP Status Code (\d+) \((.*)\)", re.DOTALL)
# After these, the rest of the same call would only wait for the same dead server (or be refused again).
_TRANSPORT_ERRORS = frozenset({ErrorKind.UNREACHABLE, ErrorKind.TIMEOUT, ErrorKind.UNAUTHORIZED})


class _QueryFailed(Exception):
    """A query produced no answer; carries the kind and a short reason."""

    def __init__(self, kind: ErrorKind, reason: str, prometheus_error_type: str | None = None) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason
        self.prometheus_error_type = prometheus_error_type


def _http_failure(exc: PrometheusApiClientException) -> _QueryFailed:
    """Turn the library's "HTTP Status Code N (b'...')" into a kind and Prometheus' own error text."""
    match = _STATUS_MESSAGE.fullmatch(str(exc))
    if not match:
        return _QueryFailed(ErrorKind.SERVER, f"Prometheus error: {str(exc)[:200]}")
    status = int(match.group(1))
    error_type: str | None = None
    detail = match.group(2)
    try:
        body = ast.literal_eval(detail)
        payload = json.loads(body.decode() if isinstance(body, bytes) else body)
        error_type = payload.get("errorType")
        detail = str(payload.get("error", detail))
    except (ValueError, SyntaxError, AttributeError, TypeError, UnicodeDecodeError):
        # Not Prometheus' error JSON (a proxy's HTML page, say): keep the start of the raw body.
        pass
    detail = " ".join(detail.split())[:300]
    if status in (401, 403):
        # The body of a 401/403 says nothing more than its status (and a proxy's could echo a header).
        reason = "Unauthorized" if status == 401 else "Forbidden"
        return _QueryFailed(
            ErrorKind.UNAUTHORIZED, f"Prometheus refused the credentials (HTTP {status} {reason})"
        )
    if error_type == "timeout":
        kind = ErrorKind.TIMEOUT
    elif status in (400, 422) or error_type in ("bad_data", "execution"):
        kind = ErrorKind.BAD_QUERY
    else:
        kind = ErrorKind.SERVER
    label = f"HTTP {status}" + (f" {error_type}" if error_type else "")
    return _QueryFailed(kind, f"Prometheus rejected the query ({label}): {detail}", error_type)


def _sample_value(sample: Any) -> float:
    """The float of a ``[timestamp, "value"]`` pair."""
    try:
        return float(sample[1])
    except (TypeError, ValueError, IndexError, KeyError) as exc:
        raise _QueryFailed(ErrorKind.BAD_RESPONSE, f"not a numeric sample: {str(sample)[:100]}") from exc


def _series(result: Any) -> list[dict[str, Any]] | float:
    """An instant-vector result as a list of series, or a scalar result as its float."""
    if not isinstance(result, list):
        raise _QueryFailed(ErrorKind.BAD_RESPONSE, f"unexpected result: {str(result)[:100]}")
    if len(result) == 2 and not isinstance(result[0], dict):
        return _sample_value(result)  # resultType scalar (or string, which is not a number)
    if not all(isinstance(item, dict) for item in result):
        raise _QueryFailed(ErrorKind.BAD_RESPONSE, f"unexpected result: {str(result)[:100]}")
    if any("values" in item for item in result):
        raise _QueryFailed(
            ErrorKind.BAD_QUERY, "the query returns a range vector; it must return an instant vector"
        )
    if any("value" not in item for item in result):
        raise _QueryFailed(ErrorKind.BAD_RESPONSE, "a series without a float sample (a native histogram?)")
    return result


def _one_series(series: Sequence[dict[str, Any]]) -> float | None:
    """The single value of a per-variant answer; None for an empty vector."""
    if not series:
        return None
    if len(series) > 1:
        labels = ", ".join(str(item.get("metric", {})) for item in series[:3])
        raise _QueryFailed(
            ErrorKind.BAD_QUERY,
            f"the query returns {len(series)} series ({labels}{', ...' if len(series) > 3 else ''}), "
            "expected one per variant; aggregate it, e.g. sum(...)",
        )
    return _sample_value(series[0]["value"])


class PrometheusProvider:
    """Per-variant values from a Prometheus server.

    Args:
        url: base URL of the Prometheus HTTP API, e.g. ``http://prometheus.monitoring:9090``.
        timeout: seconds; bounds every HTTP call (connect, each read) and Prometheus' evaluation.
        headers: extra HTTP headers, e.g. ``X-Scope-OrgID``.
        bearer_token: sent as ``Authorization: Bearer <token>``.
        basic_auth: ``(username, password)`` for HTTP basic authentication.
        verify: how to verify an https server: True (the system's trust store), False (not at all) or
            the path of a PEM CA bundle.
        auth_description: where the credentials come from (never their values), appended to
            "credentials refused" messages; empty when unknown.
        by_variant: answer rewritable templates with one query grouped by variant (see
            :func:`arbiter.metrics.template.plan_queries`); False forces one query per variant.
        clock: the time source for "now" (Unix seconds).
    """

    name = "prometheus"

    def __init__(
        self,
        url: str,
        timeout: float = 10.0,
        *,
        headers: Mapping[str, str] | None = None,
        bearer_token: str | None = None,
        basic_auth: tuple[str, str] | None = None,
        verify: bool | str = True,
        auth_description: str = "",
        by_variant: bool = True,
        clock: Any = time.time,
    ) -> None:
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, got {timeout!r}")
        self.url = url.rstrip("/")
        self.timeout = float(timeout)
        self.by_variant = by_variant
        self._clock = clock
        self._auth_description = auth_description
        self._insecure = verify is False
        all_headers = dict(headers or {})
        if bearer_token is not None:
            all_headers["Authorization"] = f"Bearer {bearer_token}"
        # requests' own default (no retries, read errors raised as themselves) instead of the library's.
        retry = Retry(total=0, read=False)
        # One session for the provider's life: connections stay open between queries and ticks. The
        # library mounts a 10-connection adapter on the URL; ours, on the longer prefix, wins, and
        # keeps enough connections for every worker thread querying at once.
        session = requests.Session()
        session.verify = verify
        # requests re-reads proxy variables and ~/.netrc on every request when trust_env is on; resolve
        # the proxies for this URL once instead (HTTP(S)_PROXY and NO_PROXY still apply).
        session.proxies = requests.utils.get_environ_proxies(self.url)
        session.trust_env = False
        session.mount(
            self.url + "/", HTTPAdapter(max_retries=retry, pool_connections=1, pool_maxsize=POOL_SIZE)
        )
        self._client = PrometheusConnect(
            url=self.url,
            headers=all_headers,
            retry=retry,
            auth=basic_auth,  # type: ignore[arg-type]  # annotated tuple; None means no auth
            session=session,
            timeout=self.timeout,  # type: ignore[arg-type]  # annotated int; requests takes a float
        )

    @classmethod
    def from_connection(cls, connection: Connection, **options: Any) -> PrometheusProvider:
        """A provider for a resolved :class:`~arbiter.metrics.connection.Connection`."""
        return cls(
            connection.url,
            connection.timeout,
            headers=connection.headers,
            bearer_token=connection.bearer_token,
            basic_auth=connection.basic_auth,
            verify=connection.verify,
            auth_description=connection.describe(),
            **options,
        )

    def close(self) -> None:
        """Release the HTTP connection pool."""
        self._client.close()

    def __enter__(self) -> PrometheusProvider:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        # Never the headers or credentials: only where they come from.
        auth = f", auth={self._auth_description!r}" if self._auth_description else ""
        return f"PrometheusProvider(url={self.url!r}, timeout={self.timeout}{auth})"

    # -- one HTTP call ------------------------------------------------------------------------------

    def _run(self, query: str, at: float) -> list[dict[str, Any]] | float:
        """One instant query; raises _QueryFailed with the kind of failure."""
        params = {"time": f"{at:.3f}", "timeout": f"{self.timeout:g}s"}
        try:
            with warnings.catch_warnings():
                if self._insecure:  # chosen by the user (insecureSkipVerify); not worth a warning per query
                    warnings.simplefilter("ignore", InsecureRequestWarning)
                result = self._client.custom_query(query, params=params)
        except PrometheusApiClientException as exc:
            failure = _http_failure(exc)
            if failure.kind is ErrorKind.UNAUTHORIZED:
                sent = self._auth_description or "no credentials were sent"
                failure = _QueryFailed(failure.kind, f"{failure.reason} ({sent})")
            raise failure from exc
        except requests.Timeout as exc:
            raise _QueryFailed(
                ErrorKind.TIMEOUT, f"Prometheus at {self.url} did not answer within {self.timeout:g}s"
            ) from exc
        except requests.JSONDecodeError as exc:
            raise _QueryFailed(
                ErrorKind.BAD_RESPONSE, f"Prometheus at {self.url} answered with non-JSON"
            ) from exc
        except requests.exceptions.SSLError as exc:
            raise _QueryFailed(
                ErrorKind.UNREACHABLE, f"TLS with Prometheus at {self.url} failed ({_tls_cause(exc)})"
            ) from exc
        except requests.ConnectionError as exc:
            raise _QueryFailed(
                ErrorKind.UNREACHABLE, f"Prometheus at {self.url} is unreachable ({_cause(exc)})"
            ) from exc
        except requests.RequestException as exc:
            raise _QueryFailed(
                ErrorKind.UNREACHABLE, f"request to Prometheus at {self.url} failed ({_cause(exc)})"
            ) from exc
        except (KeyError, TypeError) as exc:
            raise _QueryFailed(ErrorKind.BAD_RESPONSE, "the answer is not a Prometheus query result") from exc
        return _series(result)

    # -- public API ---------------------------------------------------------------------------------

    def query(self, query: str, *, at: float | None = None) -> QueryResult:
        """Run one PromQL query that should return a single value (no template).

        Args:
            query: PromQL.
            at: evaluation time (Unix seconds); now when None.
        """
        try:
            answer = self._run(query, self._clock() if at is None else at)
            value = answer if isinstance(answer, float) else _one_series(answer)
        except _QueryFailed as failure:
            return QueryResult.error(failure.kind, failure.reason, query=query)
        return QueryResult.no_data(query=query) if value is None else QueryResult.of(value, query=query)

    def is_online(self) -> bool:
        """True when Prometheus evaluates ``vector(1)`` within the timeout."""
        return self.query("vector(1)").is_value

    def plan(self, template: str, context: QueryContext, variants: Sequence[str]) -> QueryStrategy:
        """How :meth:`query_per_variant` would answer this template (for status and debugging).

        Plans depend only on the template, experiment, namespace and variants, never on the time, so
        they are computed once and reused every tick.
        """
        return _cached_plan(template, context.experiment, context.namespace, tuple(variants), self.by_variant)

    def query_per_variant(
        self, template: str, context: QueryContext, variants: Sequence[str]
    ) -> dict[str, QueryResult]:
        """Run a query template for each variant; never raises for a failed query.

        Each observation records the query sent and the path taken. When Prometheus is unreachable or
        times out, the remaining queries of this call are not sent (they get the same error), so a
        dead server costs one timeout per call, not one per variant.
        """
        if context.time is None:
            context = replace(context, time=self._clock())
        assert context.time is not None
        variants = list(dict.fromkeys(variants))
        if not variants:
            return {}
        plan = self.plan(template, context, variants)
        if plan.path is QueryPath.BY_VARIANT:
            assert plan.query is not None
            observations = self._by_variant(plan.query, context.time, variants)
            if observations is not None:
                return observations
            # Prometheus could not parse the rewrite: most likely a gap in our grammar, so answer the slow,
            # certain way (if the template itself is broken, the per-variant queries will say so).
            plan = plan_queries(template, context, variants, by_variant=False)
            plan = replace(plan, reason="the by-variant rewrite was rejected by Prometheus as bad_data")
        if plan.path is QueryPath.SHARED:
            return self._shared(plan, template, context.time, variants)
        return self._per_variant(plan, template, context.time, variants)

    # -- the three paths ----------------------------------------------------------------------------

    def _shared(
        self, plan: QueryStrategy, template: str, at: float, variants: Sequence[str]
    ) -> dict[str, QueryResult]:
        if plan.query is None:
            return {
                v: QueryResult.error(
                    ErrorKind.TEMPLATE,
                    plan.errors.get(v, "cannot render"),
                    query=template,
                    path=QueryPath.SHARED,
                )
                for v in variants
            }
        observation = replace(self.query(plan.query, at=at), path=QueryPath.SHARED)
        return dict.fromkeys(variants, observation)

    def _per_variant(
        self, plan: QueryStrategy, template: str, at: float, variants: Sequence[str]
    ) -> dict[str, QueryResult]:
        observations: dict[str, QueryResult] = {}
        transport_failure: QueryResult | None = None
        for variant in variants:
            if variant in plan.errors:
                observations[variant] = QueryResult.error(
                    ErrorKind.TEMPLATE, plan.errors[variant], query=template
                )
                continue
            query = plan.per_variant[variant]
            if transport_failure is not None:
                assert transport_failure.error_kind is not None
                observations[variant] = QueryResult.error(
                    transport_failure.error_kind, f"not sent: {transport_failure.message}", query=query
                )
                continue
            observation = self.query(query, at=at)
            observations[variant] = observation
            if observation.error_kind in _TRANSPORT_ERRORS:
                transport_failure = observation
        return observations

    def _by_variant(self, query: str, at: float, variants: Sequence[str]) -> dict[str, QueryResult] | None:
        """One query for every variant; None when Prometheus rejects the rewritten query as unparsable."""
        path = QueryPath.BY_VARIANT
        try:
            answer = self._run(query, at)
            if isinstance(answer, float):
                raise _QueryFailed(ErrorKind.BAD_RESPONSE, "a scalar answer to a by-variant query")
            grouped: dict[str, list[dict[str, Any]]] = {}
            for item in answer:
                label = item.get("metric", {}).get(VARIANT_LABEL)
                if label is None:
                    raise _QueryFailed(ErrorKind.BAD_RESPONSE, "a series without the variant label")
                grouped.setdefault(label, []).append(item)
        except _QueryFailed as failure:
            if failure.prometheus_error_type == "bad_data":
                return None
            error = QueryResult.error(failure.kind, failure.reason, query=query, path=path)
            return dict.fromkeys(variants, error)
        observations: dict[str, QueryResult] = {}
        for variant in variants:
            try:
                value = _one_series(grouped.get(variant, []))
            except _QueryFailed as failure:
                observations[variant] = QueryResult.error(
                    failure.kind, failure.reason, query=query, path=path
                )
                continue
            if value is None:
                observations[variant] = QueryResult.no_data(
                    query=query, path=path, reason=f"no series for variant {variant!r}"
                )
            elif math.isnan(value):
                observations[variant] = QueryResult.no_data(
                    query=query, path=path, reason=f"NaN for variant {variant!r}"
                )
            else:
                observations[variant] = QueryResult.of(value, query=query, path=path)
        return observations


@functools.lru_cache(maxsize=4096)
def _cached_plan(
    template: str, experiment: str, namespace: str, variants: tuple[str, ...], by_variant: bool
) -> QueryStrategy:
    return plan_queries(template, QueryContext(experiment, namespace), variants, by_variant=by_variant)


def _cause(exc: BaseException) -> str:
    """The innermost reason of a requests/urllib3 error, e.g. "Connection refused"."""
    text = str(exc)
    for marker in ("Connection refused", "Name or service not known", "Connection reset", "No route to host"):
        if marker in text:
            return marker
    return type(exc).__name__


def _tls_cause(exc: BaseException) -> str:
    """A short reason for a TLS failure, e.g. "certificate verify failed: unable to get local issuer"."""
    text = str(exc)
    for marker, reason in (
        ("CERTIFICATE_VERIFY_FAILED", "certificate verify failed"),
        ("WRONG_VERSION_NUMBER", "not a TLS server: use http://, or check the port"),
        ("doesn't match", "the certificate does not name this host"),
        ("Hostname mismatch", "the certificate does not name this host"),
    ):
        if marker in text:
            detail = text.split("certificate verify failed:", 1)[-1] if marker.startswith("CERT") else ""
            detail = detail.split("(_ssl.c")[0].strip(" ()'\"")
            return f"{reason}: {detail}" if detail else reason
    return type(exc).__name__
