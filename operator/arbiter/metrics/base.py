"""What every metric provider returns, and the interface it implements.

A query for one variant ends in exactly one of three outcomes, and the engine must keep them apart:

- VALUE: a number (``+Inf`` included: a latency quantile above the highest bucket is a real value).
- NO DATA: the query ran and returned nothing (an empty vector, or NaN such as ``0/0`` with no traffic).
  The engine treats it as *inconclusive*: never a pass, never a fail.
- ERROR: the query could not be answered (Prometheus unreachable, timeout, bad PromQL, an HTTP error,
  an ambiguous answer). Also inconclusive, but counted: enough consecutive errors pause the experiment
  with a condition that names the query, which every error message does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "ErrorKind",
    "MetricsProvider",
    "QueryContext",
    "QueryPath",
    "QueryResult",
    "ResultKind",
    "short_query",
]

_MAX_QUERY_IN_MESSAGE = 200


class ResultKind(StrEnum):
    """What a query for one variant produced."""

    VALUE = "Value"
    NO_DATA = "NoData"
    ERROR = "Error"


class ErrorKind(StrEnum):
    """Why a query produced no answer; lets the engine and status say more than "error"."""

    UNREACHABLE = "Unreachable"
    """Connection refused, DNS failure, reset: the provider could not be reached."""
    TIMEOUT = "Timeout"
    """The provider did not answer within the configured timeout (or gave up evaluating)."""
    BAD_QUERY = "BadQuery"
    """The provider rejected the query (HTTP 400/422), or the answer is ambiguous (several series)."""
    SERVER = "Server"
    """Any other HTTP error status (5xx, 404, ...)."""
    UNAUTHORIZED = "Unauthorized"
    """The provider refused the credentials (HTTP 401 or 403): wrong, expired or missing."""
    CREDENTIALS = "Credentials"
    """The connection could not be set up (no URL; a Secret, key or file missing); nothing was sent."""
    BAD_RESPONSE = "BadResponse"
    """The answer is not what the provider's API promises (not JSON, wrong shape, not a number)."""
    TEMPLATE = "Template"
    """The query template could not be rendered safely; nothing was sent."""


class QueryPath(StrEnum):
    """How the per-variant values were obtained; recorded for status and debugging."""

    BY_VARIANT = "ByVariant"
    """One query grouped ``by (variant)`` answered every variant."""
    PER_VARIANT = "PerVariant"
    """One query per variant (the template could not be proven safe to rewrite)."""
    SHARED = "Shared"
    """The template does not mention ``{{variant}}``: one query, the same answer for every variant."""


def short_query(query: str) -> str:
    """The query on one line, cut to a length that fits a status message."""
    flat = " ".join(query.split())
    if len(flat) <= _MAX_QUERY_IN_MESSAGE:
        return flat
    return flat[: _MAX_QUERY_IN_MESSAGE - 3] + "..."


def _json_number(value: float) -> float | str:
    """JSON has no NaN or infinities; spell them as Prometheus does."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return value


@dataclass(frozen=True)
class QueryResult:
    """The outcome of one query for one variant.

    Build it with :meth:`of`, :meth:`no_data` or :meth:`error`, which keep the fields consistent.

    Attributes:
        outcome: VALUE, NO_DATA or ERROR.
        value: the number, only for VALUE.
        message: for NO_DATA and ERROR, a short reason that names the query.
        error_kind: for ERROR, which kind of failure.
        query: the query actually sent (rendered; the by-variant form when that path was taken).
        path: how the value was obtained.
    """

    outcome: ResultKind
    value: float | None = None
    message: str = ""
    error_kind: ErrorKind | None = None
    query: str = ""
    path: QueryPath = QueryPath.PER_VARIANT

    def __post_init__(self) -> None:
        if self.outcome is ResultKind.VALUE:
            if self.value is None or math.isnan(self.value):
                raise ValueError("a VALUE result needs a number (NaN is NO_DATA)")
        elif self.value is not None:
            raise ValueError(f"a {self.outcome.value} result carries no value")
        if (self.outcome is ResultKind.ERROR) != (self.error_kind is not None):
            raise ValueError("error_kind is set exactly for ERROR results")

    @classmethod
    def of(cls, value: float, *, query: str = "", path: QueryPath = QueryPath.PER_VARIANT) -> QueryResult:
        """A value; NaN becomes NO_DATA (Prometheus' answer to ``0/0``, e.g. a rate with no traffic)."""
        value = float(value)
        if math.isnan(value):
            return cls.no_data(query=query, path=path, reason="the query returned NaN")
        return cls(ResultKind.VALUE, value=value, query=query, path=path)

    @classmethod
    def no_data(
        cls,
        *,
        query: str = "",
        path: QueryPath = QueryPath.PER_VARIANT,
        reason: str = "the query returned no series",
    ) -> QueryResult:
        """The query ran and returned nothing."""
        message = f"{reason}: {short_query(query)}" if query else reason
        return cls(ResultKind.NO_DATA, message=message, query=query, path=path)

    @classmethod
    def error(
        cls,
        kind: ErrorKind,
        reason: str,
        *,
        query: str = "",
        path: QueryPath = QueryPath.PER_VARIANT,
    ) -> QueryResult:
        """The query could not be answered; the message names the query."""
        message = f"{reason}; query: {short_query(query)}" if query else reason
        return cls(ResultKind.ERROR, message=message, error_kind=kind, query=query, path=path)

    @property
    def is_value(self) -> bool:
        """True when the query returned a number."""
        return self.outcome is ResultKind.VALUE

    @property
    def is_no_data(self) -> bool:
        """True when the query ran and returned nothing."""
        return self.outcome is ResultKind.NO_DATA

    @property
    def is_error(self) -> bool:
        """True when the query could not be answered."""
        return self.outcome is ResultKind.ERROR

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping (NaN/Inf spelled as strings), without empty fields."""
        result: dict[str, Any] = {"outcome": self.outcome.value, "path": self.path.value}
        if self.value is not None:
            result["value"] = _json_number(self.value)
        if self.error_kind is not None:
            result["errorKind"] = self.error_kind.value
        if self.message:
            result["message"] = self.message
        if self.query:
            result["query"] = self.query
        return result


@dataclass(frozen=True)
class QueryContext:
    """What a query template is rendered with, besides the variant.

    Attributes:
        experiment: the ModelExperiment's name (``{{experiment}}``).
        namespace: its namespace (``{{namespace}}``).
        time: evaluation time (Unix seconds) for every query made with this context; None means
            "now", fixed once per call so that related queries (successes and trials) see one instant.
    """

    experiment: str
    namespace: str
    time: float | None = None


@runtime_checkable
class MetricsProvider(Protocol):
    """A source of per-variant metric values (Prometheus today).

    Implementations never raise for a failed query: the failure is an ERROR result, so one broken
    query cannot hide the answers of the others. They bound every call by their configured timeout.
    """

    def query_per_variant(
        self, template: str, context: QueryContext, variants: Sequence[str]
    ) -> dict[str, QueryResult]:
        """Run a query template for each variant.

        Args:
            template: a query with ``{{experiment}}``, ``{{namespace}}`` and ``{{variant}}`` placeholders.
            context: experiment, namespace and evaluation time.
            variants: variant names; the result has exactly these keys.

        Returns:
            One result per variant.
        """
        ...

    def is_online(self) -> bool:
        """True when the provider answers a trivial query within its timeout."""
        ...
