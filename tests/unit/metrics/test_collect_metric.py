"""collect_metric reads a metric's sufficient statistics per variant through a provider over HTTP."""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from fakeprom import EVAL_TIME, FakePrometheus, Reply, error_body, vector

from arbiter.api.v1alpha1 import Metric
from arbiter.metrics import ErrorKind, PrometheusProvider, QueryContext, ResultKind, collect_metric
from arbiter.metrics.base import QueryPath

CONTEXT = QueryContext(experiment="fraud", namespace="prod", time=EVAL_TIME)
VARIANTS = ["champion", "challenger"]
SUCCESSES_BY_VARIANT = 'sum by (variant) (outcomes_total{result="success",variant=~"champion|challenger"})'
TRIALS_BY_VARIANT = 'sum by (variant) (outcomes_total{variant=~"champion|challenger"})'

PROPORTION = Metric.model_validate(
    {
        "name": "conversion",
        "type": "Proportion",
        "successes": 'sum(outcomes_total{result="success",variant="{{variant}}"})',
        "trials": 'sum(outcomes_total{variant="{{variant}}"})',
        "minimumDetectableEffect": 0.05,
    }
)
MEAN = Metric.model_validate(
    {
        "name": "revenue",
        "type": "Mean",
        "count": 'sum(value_count{variant="{{variant}}"})',
        "sum": 'sum(value_sum{variant="{{variant}}"})',
        "sumSquares": 'sum(value_sum_squares{variant="{{variant}}"})',
        "minimumDetectableEffect": 0.02,
    }
)


def by_variant(values: dict[str, float]) -> Reply:
    return Reply(vector(*(({"variant": v}, x) for v, x in values.items())))


def answer_by_metric(replies: dict[str, Reply]) -> Callable[[str], Reply]:
    """Answer each query by the metric name it selects."""

    def answer(query: str) -> Reply:
        match = re.search(r"\(([a-z_]+)\{", query)
        assert match, query
        return replies[match.group(1)]

    return answer


def test_proportion_counts_per_variant(fake_prometheus: FakePrometheus) -> None:
    fake_prometheus.answer_with(
        {
            SUCCESSES_BY_VARIANT: by_variant({"champion": 120, "challenger": 135}),
            TRIALS_BY_VARIANT: by_variant({"champion": 1000, "challenger": 990}),
        }
    )
    samples = collect_metric(
        PrometheusProvider(fake_prometheus.url, timeout=2), PROPORTION, CONTEXT, VARIANTS
    )
    assert {v: s.values for v, s in samples.items()} == {
        "champion": {"successes": 120, "trials": 1000},
        "challenger": {"successes": 135, "trials": 990},
    }
    assert samples["champion"].outcome is ResultKind.VALUE
    assert samples["champion"].observations["trials"].path is QueryPath.BY_VARIANT
    assert len(fake_prometheus.queries) == 2


def test_mean_statistics_per_variant(fake_prometheus: FakePrometheus) -> None:
    fake_prometheus.answer = answer_by_metric(
        {
            "value_count": by_variant({"champion": 4, "challenger": 2}),
            "value_sum": by_variant({"champion": 10, "challenger": 6}),
            "value_sum_squares": by_variant({"champion": 30, "challenger": 20}),
        }
    )
    samples = collect_metric(PrometheusProvider(fake_prometheus.url, timeout=2), MEAN, CONTEXT, VARIANTS)
    champion = samples["champion"]
    assert (champion.count, champion.sum, champion.sum_squares) == (4, 10, 30)
    assert samples["challenger"].values == {"count": 2, "sum": 6, "sum_squares": 20}


def test_every_query_of_a_metric_is_evaluated_at_one_instant(fake_prometheus: FakePrometheus) -> None:
    """Successes and trials read at different instants can disagree (successes > trials)."""
    fake_prometheus.answer = lambda query: by_variant({"champion": 1, "challenger": 1})
    collect_metric(
        PrometheusProvider(fake_prometheus.url, timeout=2),
        PROPORTION,
        QueryContext(experiment="fraud", namespace="prod"),
        VARIANTS,
    )
    assert len({q["time"] for q in fake_prometheus.queries}) == 1


def test_no_data_for_one_query_is_no_data_naming_the_field(fake_prometheus: FakePrometheus) -> None:
    fake_prometheus.answer_with(
        {
            SUCCESSES_BY_VARIANT: by_variant({"champion": 5}),
            TRIALS_BY_VARIANT: by_variant({"champion": 50}),
        }
    )
    samples = collect_metric(
        PrometheusProvider(fake_prometheus.url, timeout=2), PROPORTION, CONTEXT, VARIANTS
    )
    assert samples["champion"].outcome is ResultKind.VALUE
    challenger = samples["challenger"]
    assert challenger.outcome is ResultKind.NO_DATA
    assert challenger.values is None
    assert challenger.successes is None
    assert challenger.message.startswith("successes: ")


def test_a_variant_with_trials_but_no_success_series_has_zero_successes(
    fake_prometheus: FakePrometheus,
) -> None:
    """A counter appears with its first increment: a challenger that never converted has no series."""
    fake_prometheus.answer_with(
        {
            SUCCESSES_BY_VARIANT: by_variant({"champion": 5}),
            TRIALS_BY_VARIANT: by_variant({"champion": 50, "challenger": 40}),
        }
    )
    samples = collect_metric(
        PrometheusProvider(fake_prometheus.url, timeout=2), PROPORTION, CONTEXT, VARIANTS
    )
    assert samples["challenger"].outcome is ResultKind.VALUE
    assert samples["challenger"].values == {"successes": 0.0, "trials": 40}
    assert (
        samples["challenger"].observations["successes"].query
        == samples["champion"].observations["successes"].query
    )


def test_a_success_query_that_matches_nothing_for_any_variant_stays_no_data(
    fake_prometheus: FakePrometheus,
) -> None:
    """A typo in the successes query must not read as 0 conversions everywhere."""
    fake_prometheus.answer_with(
        {
            SUCCESSES_BY_VARIANT: Reply(vector()),
            TRIALS_BY_VARIANT: by_variant({"champion": 50, "challenger": 40}),
        }
    )
    samples = collect_metric(
        PrometheusProvider(fake_prometheus.url, timeout=2), PROPORTION, CONTEXT, VARIANTS
    )
    for sample in samples.values():
        assert sample.outcome is ResultKind.NO_DATA and sample.message.startswith("successes: ")


def test_an_error_wins_over_no_data(fake_prometheus: FakePrometheus) -> None:
    fake_prometheus.answer_with(
        {
            SUCCESSES_BY_VARIANT: Reply(vector()),
            TRIALS_BY_VARIANT: Reply(error_body("execution", "too many samples"), status=422),
        }
    )
    samples = collect_metric(
        PrometheusProvider(fake_prometheus.url, timeout=2), PROPORTION, CONTEXT, VARIANTS
    )
    for sample in samples.values():
        assert sample.outcome is ResultKind.ERROR
        assert sample.error_kind is ErrorKind.BAD_QUERY
        assert sample.message.startswith("trials: ")
        assert "too many samples" in sample.message


def test_successes_above_trials_are_an_error(fake_prometheus: FakePrometheus) -> None:
    fake_prometheus.answer_with(
        {
            SUCCESSES_BY_VARIANT: by_variant({"champion": 11, "challenger": 3}),
            TRIALS_BY_VARIANT: by_variant({"champion": 10, "challenger": 10}),
        }
    )
    samples = collect_metric(
        PrometheusProvider(fake_prometheus.url, timeout=2), PROPORTION, CONTEXT, VARIANTS
    )
    assert samples["champion"].outcome is ResultKind.ERROR
    assert "successes (11) exceed trials (10)" in samples["champion"].message
    assert samples["challenger"].values == {"successes": 3, "trials": 10}


def test_mean_statistics_that_imply_a_negative_variance_are_an_error(fake_prometheus: FakePrometheus) -> None:
    # n=2, sum=10 forces sum of squares >= 50.
    fake_prometheus.answer = answer_by_metric(
        {
            "value_count": by_variant({"champion": 2, "challenger": 2}),
            "value_sum": by_variant({"champion": 10, "challenger": 10}),
            "value_sum_squares": by_variant({"champion": 49, "challenger": 50}),
        }
    )
    samples = collect_metric(PrometheusProvider(fake_prometheus.url, timeout=2), MEAN, CONTEXT, VARIANTS)
    assert samples["champion"].outcome is ResultKind.ERROR
    assert "negative variance" in samples["champion"].message
    assert samples["challenger"].outcome is ResultKind.VALUE


def test_an_unreachable_provider_is_asked_once_per_metric(refused_url: str) -> None:
    samples = collect_metric(PrometheusProvider(refused_url, timeout=2), MEAN, CONTEXT, VARIANTS)
    for sample in samples.values():
        assert sample.outcome is ResultKind.ERROR
        assert sample.error_kind is ErrorKind.UNREACHABLE
        assert "not sent" in sample.observations["sum_squares"].message
        assert "value_sum_squares" in sample.observations["sum_squares"].query


def test_a_hanging_provider_costs_one_timeout_per_metric(fake_prometheus: FakePrometheus) -> None:
    fake_prometheus.answer = lambda query: Reply(vector(), hang=True)
    samples = collect_metric(PrometheusProvider(fake_prometheus.url, timeout=0.3), MEAN, CONTEXT, VARIANTS)
    assert len(fake_prometheus.queries) == 1
    assert {s.error_kind for s in samples.values()} == {ErrorKind.TIMEOUT}


def test_to_dict_is_json_with_camel_case_fields(fake_prometheus: FakePrometheus) -> None:
    fake_prometheus.answer = answer_by_metric(
        {
            "value_count": by_variant({"champion": 2, "challenger": 2}),
            "value_sum": by_variant({"champion": 4, "challenger": 4}),
            "value_sum_squares": by_variant({"champion": 10, "challenger": 10}),
        }
    )
    sample = collect_metric(PrometheusProvider(fake_prometheus.url, timeout=2), MEAN, CONTEXT, VARIANTS)[
        "champion"
    ]
    data = sample.to_dict()
    assert json.loads(json.dumps(data, allow_nan=False)) == data
    assert data["sumSquares"] == 10
    assert data["type"] == "Mean"
    assert data["observations"]["sumSquares"]["outcome"] == "Value"
