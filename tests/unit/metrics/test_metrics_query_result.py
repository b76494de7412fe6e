"""QueryResult keeps value / no data / error apart; the registry refuses unknown providers."""

from __future__ import annotations

import json
import math

import pytest

from arbiter.api.v1alpha1 import Analysis
from arbiter.metrics import (
    ErrorKind,
    MetricsProvider,
    PrometheusProvider,
    QueryPath,
    QueryResult,
    ResultKind,
    UnknownProviderError,
    create_provider,
    provider_for,
    provider_names,
    register_provider,
)


def test_the_three_outcomes_are_distinct() -> None:
    value = QueryResult.of(1.5, query="q")
    empty = QueryResult.no_data(query="q")
    failed = QueryResult.error(ErrorKind.UNREACHABLE, "connection refused", query="q")
    assert (value.is_value, value.is_no_data, value.is_error) == (True, False, False)
    assert (empty.is_value, empty.is_no_data, empty.is_error) == (False, True, False)
    assert (failed.is_value, failed.is_no_data, failed.is_error) == (False, False, True)
    assert value.value == 1.5
    assert empty.value is None
    assert failed.value is None


def test_nan_is_never_a_value() -> None:
    observation = QueryResult.of(math.nan, query="a/b")
    assert observation.outcome is ResultKind.NO_DATA
    with pytest.raises(ValueError, match="NaN"):
        QueryResult(ResultKind.VALUE, value=math.nan)


def test_inconsistent_fields_are_refused() -> None:
    with pytest.raises(ValueError):
        QueryResult(ResultKind.NO_DATA, value=1.0)
    with pytest.raises(ValueError):
        QueryResult(ResultKind.ERROR, message="x")  # no error kind
    with pytest.raises(ValueError):
        QueryResult(ResultKind.VALUE, value=1.0, error_kind=ErrorKind.SERVER)


def test_an_error_message_names_the_query_on_one_line() -> None:
    query = "sum(\n  rate(x[1m])\n)"
    observation = QueryResult.error(ErrorKind.TIMEOUT, "no answer within 2s", query=query)
    assert observation.message == "no answer within 2s; query: sum( rate(x[1m]) )"
    assert observation.query == query


def test_a_long_query_is_cut_in_the_message_but_kept_whole() -> None:
    query = "sum(" + "x + " * 200 + "x)"
    observation = QueryResult.error(ErrorKind.BAD_QUERY, "bad", query=query)
    assert len(observation.message) < 260
    assert observation.message.endswith("...")
    assert observation.query == query


@pytest.mark.parametrize(
    ("observation", "expected"),
    [
        (QueryResult.of(2.0, query="q", path=QueryPath.BY_VARIANT), {"outcome": "Value", "value": 2.0}),
        (QueryResult.of(math.inf, query="q"), {"outcome": "Value", "value": "+Inf"}),
        (QueryResult.no_data(query="q"), {"outcome": "NoData"}),
        (
            QueryResult.error(ErrorKind.SERVER, "HTTP 500", query="q"),
            {"outcome": "Error", "errorKind": "Server"},
        ),
    ],
)
def test_to_dict_is_json(observation: QueryResult, expected: dict[str, object]) -> None:
    data = observation.to_dict()
    assert json.loads(json.dumps(data, allow_nan=False)) == data
    assert expected.items() <= data.items()
    assert data["query"] == "q"
    assert data["path"] == observation.path.value


def test_observations_are_frozen() -> None:
    observation = QueryResult.of(1.0)
    with pytest.raises(AttributeError):
        observation.value = 2.0  # type: ignore[misc]


def test_the_prometheus_provider_satisfies_the_protocol() -> None:
    provider = create_provider("prometheus", url="http://127.0.0.1:1", timeout=1)
    assert isinstance(provider, PrometheusProvider)
    assert isinstance(provider, MetricsProvider)


def test_provider_names_are_case_insensitive() -> None:
    assert isinstance(create_provider("Prometheus", url="http://127.0.0.1:1"), PrometheusProvider)


def test_an_unknown_provider_is_an_error_naming_the_known_ones() -> None:
    with pytest.raises(UnknownProviderError, match=r"unknown metrics provider 'datadog'.*prometheus"):
        create_provider("datadog", url="http://x")


def test_a_name_cannot_be_registered_twice() -> None:
    assert "prometheus" in provider_names()
    with pytest.raises(ValueError, match="already registered"):
        register_provider("prometheus", PrometheusProvider)


def test_provider_for_reads_url_and_timeout_from_the_spec() -> None:
    analysis = Analysis.model_validate({"prometheus": {"url": "http://prom:9090/", "timeout": "1500ms"}})
    provider = provider_for(analysis)
    assert isinstance(provider, PrometheusProvider)
    assert provider.url == "http://prom:9090"
    assert provider.timeout == 1.5


def test_a_non_positive_timeout_is_refused() -> None:
    with pytest.raises(ValueError, match="timeout"):
        PrometheusProvider("http://127.0.0.1:1", timeout=0)
