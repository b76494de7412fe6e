"""PrometheusProvider against a real HTTP server returning canned Prometheus API answers."""

from __future__ import annotations

import math

import pytest
from fakeprom import EVAL_TIME, FakePrometheus, Reply, error_body, scalar, vector

from arbiter.metrics import ErrorKind, PrometheusProvider, QueryContext, QueryPath, ResultKind

CONTEXT = QueryContext(experiment="fraud", namespace="prod", time=EVAL_TIME)
VARIANTS = ["champion", "challenger"]
REWRITABLE = 'sum(requests_total{experiment="{{experiment}}",variant="{{variant}}"})'
BY_VARIANT_QUERY = 'sum by (variant) (requests_total{experiment="fraud",variant=~"champion|challenger"})'
NOT_REWRITABLE = 'sum(requests_total{variant="{{variant}}"}) or vector(0)'


def provider(url: str, timeout: float = 2.0, **kwargs: object) -> PrometheusProvider:
    return PrometheusProvider(url, timeout=timeout, **kwargs)  # type: ignore[arg-type]


# --- one query: the shapes of an answer ---------------------------------------------------------------


def test_a_single_series_is_a_value(fake_prometheus: FakePrometheus) -> None:
    fake_prometheus.answer_with({"up": Reply(vector(({"job": "a"}, 42.5)))})
    observation = provider(fake_prometheus.url).query("up", at=EVAL_TIME)
    assert observation.outcome is ResultKind.VALUE
    assert observation.value == 42.5
    assert observation.query == "up"


def test_every_request_carries_the_evaluation_time_and_a_server_side_timeout(
    fake_prometheus: FakePrometheus,
) -> None:
    fake_prometheus.answer_with({"up": Reply(vector(({}, 1)))})
    provider(fake_prometheus.url, timeout=3.5).query("up", at=EVAL_TIME)
    [request] = fake_prometheus.queries
    assert float(request["time"]) == EVAL_TIME
    assert request["timeout"] == "3.5s"


def test_an_empty_vector_is_no_data_naming_the_query(fake_prometheus: FakePrometheus) -> None:
    fake_prometheus.answer_with({"sum(x)": Reply(vector())})
    observation = provider(fake_prometheus.url).query("sum(x)")
    assert observation.outcome is ResultKind.NO_DATA
    assert observation.value is None
    assert "sum(x)" in observation.message


def test_nan_is_no_data(fake_prometheus: FakePrometheus) -> None:
    """0/0 (a rate with no traffic) is NaN: nothing to judge yet, not a number to compare."""
    fake_prometheus.answer_with({"a/b": Reply(vector(({}, math.nan)))})
    observation = provider(fake_prometheus.url).query("a/b")
    assert observation.outcome is ResultKind.NO_DATA
    assert "NaN" in observation.message


def test_infinity_is_a_value(fake_prometheus: FakePrometheus) -> None:
    """histogram_quantile answers +Inf when the quantile is above the highest bucket: a real breach."""
    fake_prometheus.answer_with({"q": Reply(vector(({}, math.inf)))})
    observation = provider(fake_prometheus.url).query("q")
    assert observation.outcome is ResultKind.VALUE
    assert observation.value == math.inf
    assert observation.to_dict()["value"] == "+Inf"


def test_a_scalar_answer_is_a_value(fake_prometheus: FakePrometheus) -> None:
    fake_prometheus.answer_with({"scalar(x)": Reply(scalar(0.25))})
    assert provider(fake_prometheus.url).query("scalar(x)").value == 0.25


def test_a_nan_scalar_is_no_data(fake_prometheus: FakePrometheus) -> None:
    fake_prometheus.answer_with({"scalar(x)": Reply(scalar(math.nan))})
    assert provider(fake_prometheus.url).query("scalar(x)").outcome is ResultKind.NO_DATA


def test_a_string_answer_is_a_bad_response(fake_prometheus: FakePrometheus) -> None:
    body = {"status": "success", "data": {"resultType": "string", "result": [EVAL_TIME, "hello"]}}
    fake_prometheus.answer_with({'"hello"': Reply(body)})
    observation = provider(fake_prometheus.url).query('"hello"')
    assert observation.error_kind is ErrorKind.BAD_RESPONSE


def test_several_series_are_an_error_not_a_pick(fake_prometheus: FakePrometheus) -> None:
    fake_prometheus.answer_with({"x": Reply(vector(({"code": "200"}, 5), ({"code": "500"}, 1)))})
    observation = provider(fake_prometheus.url).query("x")
    assert observation.outcome is ResultKind.ERROR
    assert observation.error_kind is ErrorKind.BAD_QUERY
    assert "2 series" in observation.message
    assert "sum(" in observation.message


def test_a_range_vector_is_a_bad_query(fake_prometheus: FakePrometheus) -> None:
    body = {
        "status": "success",
        "data": {"resultType": "matrix", "result": [{"metric": {}, "values": [[EVAL_TIME, "1"]]}]},
    }
    fake_prometheus.answer_with({"x[1m]": Reply(body)})
    observation = provider(fake_prometheus.url).query("x[1m]")
    assert observation.error_kind is ErrorKind.BAD_QUERY
    assert "range vector" in observation.message


# --- one query: failures -------------------------------------------------------------------------------


def test_bad_promql_is_an_error_with_prometheus_message_and_the_query(
    fake_prometheus: FakePrometheus,
) -> None:
    detail = '1:5: parse error: unexpected "}"'
    fake_prometheus.answer_with({"sum(}": Reply(error_body("bad_data", detail), status=400)})
    observation = provider(fake_prometheus.url).query("sum(}")
    assert observation.outcome is ResultKind.ERROR
    assert observation.error_kind is ErrorKind.BAD_QUERY
    assert detail in observation.message
    assert "HTTP 400 bad_data" in observation.message
    assert "query: sum(}" in observation.message


def test_an_execution_error_is_a_bad_query(fake_prometheus: FakePrometheus) -> None:
    detail = "found duplicate series for the match group"
    fake_prometheus.answer_with({"a/b": Reply(error_body("execution", detail), status=422)})
    observation = provider(fake_prometheus.url).query("a/b")
    assert observation.error_kind is ErrorKind.BAD_QUERY
    assert detail in observation.message


def test_prometheus_giving_up_evaluation_is_a_timeout(fake_prometheus: FakePrometheus) -> None:
    body = error_body("timeout", "query timed out in expression evaluation")
    fake_prometheus.answer_with({"slow": Reply(body, status=503)})
    assert provider(fake_prometheus.url).query("slow").error_kind is ErrorKind.TIMEOUT


@pytest.mark.parametrize("status", [500, 502, 503])
def test_a_5xx_is_a_server_error_and_is_not_retried(fake_prometheus: FakePrometheus, status: int) -> None:
    """The library's default adapter retries 5xx three times with back-off; that would stall a tick."""
    fake_prometheus.answer_with(
        {"up": Reply(b"<html>bad gateway</html>", status=status, content_type="text/html")}
    )
    observation = provider(fake_prometheus.url).query("up")
    assert observation.error_kind is ErrorKind.SERVER
    assert f"HTTP {status}" in observation.message
    assert "bad gateway" in observation.message
    assert len(fake_prometheus.queries) == 1


def test_a_4xx_without_prometheus_json_is_a_bad_query(fake_prometheus: FakePrometheus) -> None:
    fake_prometheus.answer_with({"up": Reply(b"nope", status=400, content_type="text/plain")})
    observation = provider(fake_prometheus.url).query("up")
    assert observation.error_kind is ErrorKind.BAD_QUERY
    assert "nope" in observation.message


def test_a_200_that_is_not_json_is_a_bad_response(fake_prometheus: FakePrometheus) -> None:
    fake_prometheus.answer_with({"up": Reply(b"<html>login</html>", content_type="text/html")})
    assert provider(fake_prometheus.url).query("up").error_kind is ErrorKind.BAD_RESPONSE


def test_a_200_without_a_result_is_a_bad_response(fake_prometheus: FakePrometheus) -> None:
    fake_prometheus.answer_with({"up": Reply({"status": "success"})})
    assert provider(fake_prometheus.url).query("up").error_kind is ErrorKind.BAD_RESPONSE


def test_connection_refused_is_unreachable(refused_url: str) -> None:
    observation = provider(refused_url).query("up")
    assert observation.outcome is ResultKind.ERROR
    assert observation.error_kind is ErrorKind.UNREACHABLE
    assert refused_url in observation.message
    assert "query: up" in observation.message


def test_a_server_that_does_not_answer_in_time_is_a_timeout(fake_prometheus: FakePrometheus) -> None:
    fake_prometheus.answer = lambda query: Reply(vector(), hang=True)
    observation = provider(fake_prometheus.url, timeout=0.3).query("up")
    assert observation.error_kind is ErrorKind.TIMEOUT
    assert "0.3s" in observation.message
    assert len(fake_prometheus.queries) == 1


# --- is_online -----------------------------------------------------------------------------------------


def test_is_online_asks_for_a_trivial_query(fake_prometheus: FakePrometheus) -> None:
    fake_prometheus.answer_with({"vector(1)": Reply(vector(({}, 1)))})
    assert provider(fake_prometheus.url).is_online() is True
    assert fake_prometheus.sent == ["vector(1)"]


def test_is_offline_when_refused_erroring_or_hanging(
    fake_prometheus: FakePrometheus, refused_url: str
) -> None:
    assert provider(refused_url).is_online() is False
    fake_prometheus.answer_with({}, default=Reply(b"down", status=503))
    assert provider(fake_prometheus.url).is_online() is False
    fake_prometheus.answer = lambda query: Reply(vector(), hang=True)
    assert provider(fake_prometheus.url, timeout=0.3).is_online() is False


# --- query_per_variant: the three paths ------------------------------------------------------------------


def test_a_rewritable_template_is_one_query_by_variant(fake_prometheus: FakePrometheus) -> None:
    fake_prometheus.answer_with(
        {BY_VARIANT_QUERY: Reply(vector(({"variant": "champion"}, 100), ({"variant": "challenger"}, 7)))}
    )
    observations = provider(fake_prometheus.url).query_per_variant(REWRITABLE, CONTEXT, VARIANTS)
    assert fake_prometheus.sent == [BY_VARIANT_QUERY]
    assert {v: o.value for v, o in observations.items()} == {"champion": 100, "challenger": 7}
    assert {o.path for o in observations.values()} == {QueryPath.BY_VARIANT}
    assert observations["champion"].query == BY_VARIANT_QUERY


def test_by_variant_a_missing_or_nan_variant_is_no_data(fake_prometheus: FakePrometheus) -> None:
    variants = ["champion", "challenger", "third"]
    query = BY_VARIANT_QUERY.replace("champion|challenger", "champion|challenger|third")
    fake_prometheus.answer_with(
        {query: Reply(vector(({"variant": "champion"}, 3), ({"variant": "third"}, math.nan)))}
    )
    observations = provider(fake_prometheus.url).query_per_variant(REWRITABLE, CONTEXT, variants)
    assert observations["champion"].value == 3
    assert observations["challenger"].outcome is ResultKind.NO_DATA
    assert "'challenger'" in observations["challenger"].message
    assert observations["third"].outcome is ResultKind.NO_DATA


def test_by_variant_an_error_is_every_variants_error(fake_prometheus: FakePrometheus) -> None:
    body = error_body("execution", "query processing would load too many samples")
    fake_prometheus.answer_with({BY_VARIANT_QUERY: Reply(body, status=422)})
    observations = provider(fake_prometheus.url).query_per_variant(REWRITABLE, CONTEXT, VARIANTS)
    assert set(observations) == set(VARIANTS)
    for observation in observations.values():
        assert observation.error_kind is ErrorKind.BAD_QUERY
        assert observation.path is QueryPath.BY_VARIANT
        assert "too many samples" in observation.message
    assert len(fake_prometheus.queries) == 1


def test_by_variant_rejected_as_unparsable_falls_back_to_per_variant(fake_prometheus: FakePrometheus) -> None:
    """A gap in our rewrite grammar must cost one extra query, never a wrong or missing answer."""
    fake_prometheus.answer_with(
        {
            BY_VARIANT_QUERY: Reply(error_body("bad_data", "parse error"), status=400),
            'sum(requests_total{experiment="fraud",variant="champion"})': Reply(vector(({}, 10))),
            'sum(requests_total{experiment="fraud",variant="challenger"})': Reply(vector(({}, 20))),
        }
    )
    observations = provider(fake_prometheus.url).query_per_variant(REWRITABLE, CONTEXT, VARIANTS)
    assert {v: o.value for v, o in observations.items()} == {"champion": 10, "challenger": 20}
    assert {o.path for o in observations.values()} == {QueryPath.PER_VARIANT}
    assert len(fake_prometheus.queries) == 3


def test_by_variant_several_series_for_one_variant_is_that_variants_error(
    fake_prometheus: FakePrometheus,
) -> None:
    fake_prometheus.answer_with(
        {
            BY_VARIANT_QUERY: Reply(
                vector(
                    ({"variant": "champion"}, 1),
                    ({"variant": "challenger", "code": "200"}, 2),
                    ({"variant": "challenger", "code": "500"}, 3),
                )
            )
        }
    )
    observations = provider(fake_prometheus.url).query_per_variant(REWRITABLE, CONTEXT, VARIANTS)
    assert observations["champion"].value == 1
    assert observations["challenger"].error_kind is ErrorKind.BAD_QUERY


def test_a_template_that_cannot_be_rewritten_is_one_query_per_variant(
    fake_prometheus: FakePrometheus,
) -> None:
    fake_prometheus.answer_with(
        {
            'sum(requests_total{variant="champion"}) or vector(0)': Reply(vector(({}, 5))),
            'sum(requests_total{variant="challenger"}) or vector(0)': Reply(vector(({}, 0))),
        }
    )
    observations = provider(fake_prometheus.url).query_per_variant(NOT_REWRITABLE, CONTEXT, VARIANTS)
    assert {v: o.value for v, o in observations.items()} == {"champion": 5, "challenger": 0}
    assert {o.path for o in observations.values()} == {QueryPath.PER_VARIANT}
    assert {q["time"] for q in fake_prometheus.queries} == {f"{EVAL_TIME:.3f}"}


def test_by_variant_can_be_switched_off(fake_prometheus: FakePrometheus) -> None:
    fake_prometheus.answer = lambda query: Reply(vector(({}, 1)))
    observations = provider(fake_prometheus.url, by_variant=False).query_per_variant(
        REWRITABLE, CONTEXT, VARIANTS
    )
    assert len(fake_prometheus.queries) == 2
    assert {o.path for o in observations.values()} == {QueryPath.PER_VARIANT}


def test_a_template_without_variant_is_one_shared_query(fake_prometheus: FakePrometheus) -> None:
    template = 'sum(up{namespace="{{namespace}}"})'
    fake_prometheus.answer_with({'sum(up{namespace="prod"})': Reply(vector(({}, 3)))})
    observations = provider(fake_prometheus.url).query_per_variant(template, CONTEXT, VARIANTS)
    assert len(fake_prometheus.queries) == 1
    assert {v: (o.value, o.path) for v, o in observations.items()} == {
        "champion": (3, QueryPath.SHARED),
        "challenger": (3, QueryPath.SHARED),
    }


def test_one_call_evaluates_every_query_at_one_instant(fake_prometheus: FakePrometheus) -> None:
    fake_prometheus.answer = lambda query: Reply(vector(({}, 1)))
    clock = iter([1000.0, 2000.0, 3000.0])
    unfixed = QueryContext(experiment="fraud", namespace="prod")
    prov = provider(fake_prometheus.url, clock=lambda: next(clock))
    prov.query_per_variant(NOT_REWRITABLE, unfixed, ["a", "b", "c"])
    assert [q["time"] for q in fake_prometheus.queries] == ["1000.000"] * 3


def test_an_unrenderable_template_sends_nothing(fake_prometheus: FakePrometheus) -> None:
    observations = provider(fake_prometheus.url).query_per_variant(
        'sum(x{model="{{model}}",variant="{{variant}}"})', CONTEXT, VARIANTS
    )
    assert fake_prometheus.queries == []
    for observation in observations.values():
        assert observation.error_kind is ErrorKind.TEMPLATE
        assert "{{model}}" in observation.message


def test_unreachable_stops_the_rest_of_the_call(refused_url: str) -> None:
    observations = provider(refused_url).query_per_variant(NOT_REWRITABLE, CONTEXT, ["a", "b", "c"])
    assert all(o.error_kind is ErrorKind.UNREACHABLE for o in observations.values())
    assert "not sent" in observations["c"].message
    assert 'variant="c"' in observations["c"].query


def test_a_timeout_costs_one_timeout_per_call_not_one_per_variant(fake_prometheus: FakePrometheus) -> None:
    fake_prometheus.answer = lambda query: Reply(vector(), hang=True)
    observations = provider(fake_prometheus.url, timeout=0.3).query_per_variant(
        NOT_REWRITABLE, CONTEXT, ["a", "b", "c"]
    )
    assert len(fake_prometheus.queries) == 1
    assert all(o.error_kind is ErrorKind.TIMEOUT for o in observations.values())


def test_the_answer_has_exactly_the_requested_variants(fake_prometheus: FakePrometheus) -> None:
    fake_prometheus.answer = lambda query: Reply(
        vector(({"variant": "a"}, 1), ({"variant": "b"}, 2), ({"variant": "other"}, 3))
    )
    observations = provider(fake_prometheus.url).query_per_variant(REWRITABLE, CONTEXT, ["a", "b", "a"])
    assert list(observations) == ["a", "b"]
    assert {v: o.value for v, o in observations.items()} == {"a": 1, "b": 2}


def test_headers_are_sent(fake_prometheus: FakePrometheus) -> None:
    """Bearer tokens for a Prometheus behind an auth proxy reach the server."""
    fake_prometheus.answer = lambda query: Reply(vector(({}, 1)))
    prov = provider(fake_prometheus.url, headers={"Authorization": "Bearer t0ken"})
    assert prov.query("up").value == 1
    assert fake_prometheus.headers[0]["Authorization"] == "Bearer t0ken"


def test_no_variants_send_nothing(fake_prometheus: FakePrometheus) -> None:
    prov = provider(fake_prometheus.url)
    assert prov.query_per_variant('sum(up{namespace="{{namespace}}"})', CONTEXT, []) == {}
    assert prov.query_per_variant(REWRITABLE, CONTEXT, []) == {}
    assert fake_prometheus.queries == []
