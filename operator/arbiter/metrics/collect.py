"""Sufficient statistics of one ``Metric`` per variant, read through a metrics provider.

Plain numbers plus the status of every query behind them; the handlers turn them into the statistics
engine's types (this module does not import ``arbiter.stats``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from arbiter.api.v1alpha1 import Metric, MetricType
from arbiter.metrics.base import ErrorKind, MetricsProvider, QueryContext, QueryResult, ResultKind

__all__ = ["MEAN_FIELDS", "PROPORTION_FIELDS", "MetricSample", "collect_metric", "metric_queries"]

PROPORTION_FIELDS = ("successes", "trials")
MEAN_FIELDS = ("count", "sum", "sum_squares")
_TRANSPORT_ERRORS = frozenset({ErrorKind.UNREACHABLE, ErrorKind.TIMEOUT})
# Counters evaluated at one instant cannot disagree by more than float noise.
_RELATIVE_TOLERANCE = 1e-9


@dataclass(frozen=True)
class MetricSample:
    """One variant's sufficient statistics for one metric.

    The numbers are set only when ``outcome`` is VALUE (every query returned a value and they are
    consistent); otherwise ``message`` says which query failed or came back empty, and why.

    Attributes:
        metric: the metric's name.
        type: Proportion or Mean.
        variant: the variant.
        outcome: VALUE; ERROR if any query errored or the values contradict each other; else NO_DATA.
        observations: field name (``successes``, ``trials``; ``count``, ``sum``, ``sum_squares``) ->
            the query result behind it.
        message: why the outcome is not VALUE.
    """

    metric: str
    type: MetricType
    variant: str
    outcome: ResultKind
    observations: Mapping[str, QueryResult] = field(default_factory=dict)
    message: str = ""
    successes: float | None = None
    trials: float | None = None
    count: float | None = None
    sum: float | None = None
    sum_squares: float | None = None

    @property
    def values(self) -> dict[str, float] | None:
        """Field name -> number when the outcome is VALUE, else None."""
        if self.outcome is not ResultKind.VALUE:
            return None
        names = PROPORTION_FIELDS if self.type is MetricType.PROPORTION else MEAN_FIELDS
        return {name: float(getattr(self, name)) for name in names}

    @property
    def error_kind(self) -> ErrorKind | None:
        """The kind of the first failed query, for ERROR samples."""
        return next((o.error_kind for o in self.observations.values() if o.error_kind is not None), None)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping (camelCase keys, like the rest of the status)."""
        result: dict[str, Any] = {
            "metric": self.metric,
            "type": self.type.value,
            "variant": self.variant,
            "outcome": self.outcome.value,
        }
        numbers = self.values
        if numbers is not None:
            result.update({_camel(name): value for name, value in numbers.items()})
        if self.message:
            result["message"] = self.message
        result["observations"] = {_camel(name): o.to_dict() for name, o in self.observations.items()}
        return result


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def metric_queries(metric: Metric) -> dict[str, str]:
    """Field name -> query template of a metric, in the order they are read."""
    names = PROPORTION_FIELDS if metric.type is MetricType.PROPORTION else MEAN_FIELDS
    queries = {name: getattr(metric, name) for name in names}
    missing = [name for name, query in queries.items() if query is None]
    if missing:
        raise ValueError(
            f"metric {metric.name!r} of type {metric.type.value} has no {', '.join(missing)} query"
        )
    return queries


def _inconsistency(metric_type: MetricType, values: Mapping[str, float]) -> str | None:
    """Why a set of sufficient statistics cannot be real, or None if they can."""
    if any(math.isinf(v) for v in values.values()):
        return "an infinite value"
    if metric_type is MetricType.PROPORTION:
        successes, trials = values["successes"], values["trials"]
        if successes < 0 or trials < 0:
            return f"negative counts (successes={successes:g}, trials={trials:g})"
        if successes > trials * (1 + _RELATIVE_TOLERANCE):
            return f"successes ({successes:g}) exceed trials ({trials:g})"
        return None
    count, total, squares = values["count"], values["sum"], values["sum_squares"]
    if count < 0 or squares < 0:
        return f"a negative count or sum of squares (count={count:g}, sumSquares={squares:g})"
    # Cauchy-Schwarz: n * sum(x^2) >= (sum x)^2 for any real data.
    if count * squares < total * total * (1 - 1e-6) - 1e-9:
        return f"count={count:g}, sum={total:g}, sumSquares={squares:g} imply a negative variance"
    return None


def _sample(metric: Metric, variant: str, observations: dict[str, QueryResult]) -> MetricSample:
    base = MetricSample(metric.name, metric.type, variant, ResultKind.VALUE, observations)
    for outcome in (ResultKind.ERROR, ResultKind.NO_DATA):
        failed = [(name, o) for name, o in observations.items() if o.outcome is outcome]
        if failed:
            name, first = failed[0]
            return replace(base, outcome=outcome, message=f"{_camel(name)}: {first.message}")
    values = {name: o.value for name, o in observations.items() if o.value is not None}
    problem = _inconsistency(metric.type, values)
    if problem is not None:
        return replace(
            base, outcome=ResultKind.ERROR, message=f"inconsistent values for {variant!r}: {problem}"
        )
    return replace(
        base,
        successes=values.get("successes"),
        trials=values.get("trials"),
        count=values.get("count"),
        sum=values.get("sum"),
        sum_squares=values.get("sum_squares"),
    )


def collect_metric(
    provider: MetricsProvider, metric: Metric, context: QueryContext, variants: Sequence[str]
) -> dict[str, MetricSample]:
    """Read a metric's sufficient statistics for every variant.

    All queries are evaluated at one instant (``context.time``, or now), so successes and trials come
    from the same scrapes. When a query fails because the provider is unreachable or timing out for
    every variant, the metric's remaining queries are not sent.

    Args:
        provider: where to read from.
        metric: a Proportion (successes, trials) or Mean (count, sum, sum_squares) metric.
        context: experiment, namespace and evaluation time.
        variants: the variants to read.

    Returns:
        variant -> sample; every requested variant is present.
    """
    if context.time is None:
        context = replace(context, time=time.time())
    variants = list(dict.fromkeys(variants))
    per_field: dict[str, dict[str, QueryResult]] = {}
    dead: QueryResult | None = None
    for name, template in metric_queries(metric).items():
        if dead is not None:
            assert dead.error_kind is not None
            skipped = QueryResult.error(dead.error_kind, f"not sent: {dead.message}", query=template)
            per_field[name] = dict.fromkeys(variants, skipped)
            continue
        answers = provider.query_per_variant(template, context, variants)
        per_field[name] = {
            v: answers.get(v)
            or QueryResult.error(ErrorKind.BAD_RESPONSE, f"no answer for {v!r}", query=template)
            for v in variants
        }
        if variants and all(per_field[name][v].error_kind in _TRANSPORT_ERRORS for v in variants):
            dead = per_field[name][variants[0]]
    if metric.type is MetricType.PROPORTION and "successes" in per_field and "trials" in per_field:
        _zero_missing_successes(per_field["successes"], per_field["trials"])
    return {v: _sample(metric, v, {name: per_field[name][v] for name in per_field}) for v in variants}


def _zero_missing_successes(successes: dict[str, QueryResult], trials: dict[str, QueryResult]) -> None:
    """A variant with trials but no successes series has 0 successes -- when the query is proven to work.

    Counters usually appear with their first increment, so a challenger that never converted has no
    success series at all; read as "no data" it would never be judged (a 0% conversion rate would never
    lose). The successes query is taken to work when it answered with a value for another variant; if it
    answers for none, "no data" stays (a typo must not read as 0 everywhere).
    """
    if not any(o.outcome is ResultKind.VALUE for o in successes.values()):
        return
    for variant, observation in successes.items():
        counted = trials.get(variant)
        if (
            observation.outcome is ResultKind.NO_DATA
            and counted is not None
            and counted.outcome is ResultKind.VALUE
        ):
            successes[variant] = QueryResult.of(0.0, query=observation.query, path=observation.path)
