"""Read one tick's observations through the metrics provider and hand them to the engine's types."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from arbiter.api import Metric, ModelExperimentSpec
from arbiter.api.v1alpha1 import Guardrail
from arbiter.metrics import (
    ErrorKind,
    MetricSample,
    MetricsProvider,
    QueryContext,
    QueryResult,
    ResultKind,
    collect_metric,
)
from arbiter.rollout.observations import MetricData, Observations, Reading, SufficientStats
from arbiter.stats import MeanStats, ProportionStats

#: After these, every other query of the tick would wait for the same dead server or be refused again.
_TRANSPORT_ERRORS = frozenset({ErrorKind.UNREACHABLE, ErrorKind.TIMEOUT, ErrorKind.UNAUTHORIZED})


class _OneTick:
    """The provider as one tick sees it: once a query finds the server unreachable, timing out or refusing
    the credentials for every variant, the tick's remaining queries are not sent (they get that error).

    Without this a slow Prometheus costs (guardrails + metric queries) x the timeout per tick, which holds
    a worker thread that every experiment's ticks share. Skipping only ever means less is read, so less
    can be decided: the tick is inconclusive either way.
    """

    def __init__(self, provider: MetricsProvider) -> None:
        self.provider = provider
        self.dead: QueryResult | None = None

    def query_per_variant(
        self, template: str, context: QueryContext, variants: Sequence[str]
    ) -> dict[str, QueryResult]:
        if self.dead is not None:
            assert self.dead.error_kind is not None
            skipped = QueryResult.error(
                self.dead.error_kind, f"not sent: {self.dead.message}", query=template
            )
            return dict.fromkeys(variants, skipped)
        answers = self.provider.query_per_variant(template, context, variants)
        found = [answers.get(v) for v in variants]
        if found and all(a is not None and a.error_kind in _TRANSPORT_ERRORS for a in found):
            self.dead = found[0]
        return answers

    def is_online(self) -> bool:
        return self.provider.is_online()


def read_observations(
    provider: MetricsProvider, spec: ModelExperimentSpec, namespace: str, experiment: str
) -> Observations:
    """Query every guardrail, metric and sample count of the experiment at one instant.

    Once a query finds the server unreachable, timing out or refusing the credentials, the tick's other
    queries are not sent (:class:`_OneTick`). Never raises for a failed query: failures become errors in
    the observations, which the engine
    treats as inconclusive (and, repeated, as a reason to pause).
    """
    context = QueryContext(experiment=experiment, namespace=namespace, time=time.time())
    provider = _OneTick(provider)
    variants = [v.name for v in spec.variants]
    analysis = spec.analysis
    guardrails: dict[str, dict[str, Reading]] = {}
    rates: dict[str, MetricData] = {}
    for guardrail in analysis.guardrails:
        if guardrail.query is not None:
            answers = provider.query_per_variant(guardrail.query, context, variants)
            guardrails[guardrail.name] = {v: _reading(answers.get(v)) for v in variants}
        if guardrail.rate is not None:
            rates[guardrail.name] = _metric_data(
                collect_metric(provider, _rate_metric(guardrail), context, variants)
            )
    primary = (
        _metric_data(collect_metric(provider, analysis.primary, context, variants))
        if analysis.primary
        else None
    )
    secondary = {
        m.name: _metric_data(collect_metric(provider, m, context, variants)) for m in analysis.secondary
    }
    samples: dict[str, Reading] = {}
    if analysis.sample_count is not None:
        answers = provider.query_per_variant(analysis.sample_count, context, variants)
        samples = {v: _reading(answers.get(v)) for v in variants}
    return Observations(
        guardrails=guardrails, guardrail_rates=rates, primary=primary, secondary=secondary, samples=samples
    )


def _reading(observation: QueryResult | None) -> Reading:
    if observation is None:
        return Reading()
    if observation.is_error:
        return Reading(error=observation.message)
    if observation.is_value and observation.value is not None:
        return Reading(value=float(observation.value))
    return Reading()


def _rate_metric(guardrail: Guardrail) -> Metric:
    """A guardrail's counters in the shape the metric collector reads (the MDE is unused there)."""
    rate = guardrail.rate
    assert rate is not None
    return Metric(
        name=guardrail.name,
        type=rate.type,
        successes=rate.successes,
        trials=rate.trials,
        count=rate.count,
        sum=rate.sum,
        sum_squares=rate.sum_squares,
        minimum_detectable_effect=1.0,
    )


def _metric_data(samples: Mapping[str, MetricSample]) -> MetricData:
    stats: dict[str, SufficientStats] = {}
    missing: dict[str, str] = {}
    errors: dict[str, str] = {}
    for variant, sample in samples.items():
        values = sample.values
        if sample.outcome is ResultKind.VALUE and values is not None:
            if "trials" in values:
                stats[variant] = ProportionStats(successes=values["successes"], trials=values["trials"])
            else:
                stats[variant] = MeanStats(
                    n=values["count"], sum=values["sum"], sum_squares=values["sum_squares"]
                )
        elif sample.outcome is ResultKind.ERROR:
            errors[variant] = sample.message
        else:
            missing[variant] = sample.message or "no data"
    return MetricData(stats=stats, missing=missing, errors=errors)
