"""The Prometheus metrics provider against a real Prometheus scraping a real exporter process.

The exporter (a separate Python process using prometheus_client) exposes the router's per-variant
series with values this test sets over stdin, so every expected number is known exactly.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from localcluster import Prometheus

from arbiter.api.v1alpha1 import Metric
from arbiter.metrics import (
    ErrorKind,
    PrometheusProvider,
    QueryContext,
    QueryPath,
    QueryResult,
    ResultKind,
    collect_metric,
)
from helpers import wait_for

EXPORTER = textwrap.dedent(
    """
    import json
    import sys
    import threading
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from prometheus_client import CollectorRegistry, Histogram, make_wsgi_app
    from prometheus_client.core import CounterMetricFamily

    lock = threading.Lock()
    counters = {}  # name -> {sorted label items: cumulative value}
    histograms = {}


    class Counters:
        def collect(self):
            with lock:
                snapshot = {name: dict(series) for name, series in counters.items()}
            for name, series in snapshot.items():
                keys = sorted({key for labels in series for key, _ in labels})
                family = CounterMetricFamily(name, "set by the test", labels=keys)
                for labels, value in series.items():
                    values = dict(labels)
                    family.add_metric([values.get(key, "") for key in keys], value)
                yield family


    registry = CollectorRegistry()
    registry.register(Counters())


    class Quiet(WSGIRequestHandler):
        def log_message(self, *args):
            pass


    server = make_server("127.0.0.1", 0, make_wsgi_app(registry), handler_class=Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(server.server_port, flush=True)

    for line in sys.stdin:
        command = json.loads(line)
        labels = command["labels"]
        if command["op"] == "set":
            with lock:
                counters.setdefault(command["name"], {})[tuple(sorted(labels.items()))] = command["value"]
        else:
            histogram = histograms.get(command["name"])
            if histogram is None:
                histogram = Histogram(
                    command["name"], "observed by the test", sorted(labels), registry=registry,
                    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
                )
                histograms[command["name"]] = histogram
            for _ in range(command["count"]):
                histogram.labels(**labels).observe(command["value"])
        print("ok", flush=True)
    """
)

REQUESTS = "arbiter_router_requests"  # exposed as arbiter_router_requests_total
OUTCOMES = "arbiter_router_outcomes"
DURATION = "arbiter_router_request_duration_seconds"
VARIANTS = ["champion", "challenger", "idle", "ghost"]  # idle: never changes; ghost: no series at all

SELECT = 'experiment="{{experiment}}",variant="{{variant}}"'
TOTAL = f"sum({REQUESTS}_total{{{SELECT}}})"
ERROR_RATE = (
    f'sum(rate({REQUESTS}_total{{{SELECT},code=~"5.."}}[1m])) / sum(rate({REQUESTS}_total{{{SELECT}}}[1m]))'
)
P95 = f"histogram_quantile(0.95, sum by (le) (rate({DURATION}_bucket{{{SELECT}}}[1m])))"

# Every rewritable form the grammar accepts, evaluated both ways on the same data at the same instant.
EQUIVALENCE_TEMPLATES = {
    "sum": TOTAL,
    "ratio-of-rates": ERROR_RATE,
    "histogram-quantile": P95,
    "avg": f"avg({REQUESTS}_total{{{SELECT}}})",
    "min": f"min({REQUESTS}_total{{{SELECT}}})",
    "max": f"max({REQUESTS}_total{{{SELECT}}})",
    "count": f"count({REQUESTS}_total{{{SELECT}}})",
    "scaled-increase": f'100 * sum(increase({OUTCOMES}_total{{{SELECT},result="success"}}[1m]))',
    "over-time": f"sum(max_over_time({REQUESTS}_total{{{SELECT}}}[1m]))",
    "nested-sum": f"sum(sum by (code) ({REQUESTS}_total{{{SELECT}}}))",
    "several-series": f"sum({REQUESTS}_total{{{SELECT}}}) by (code)",  # an error both ways
    "bare-selector": f'{REQUESTS}_total{{{SELECT},code="200"}}',
    "mean-latency": f"sum(rate({DURATION}_sum{{{SELECT}}}[1m])) / sum(rate({DURATION}_count{{{SELECT}}}[1m]))",
}


@dataclass(frozen=True)
class Traffic:
    """What the exporter served: cumulative requests per variant and code, and when to look."""

    requests: dict[str, dict[str, int]]
    at: float


class Exporter:
    """The exporter process; each command returns once the process has applied it."""

    def __init__(self, script: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        self.target = f"127.0.0.1:{int(self.proc.stdout.readline())}"

    def _send(self, command: dict[str, object]) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "ok"

    def set(self, name: str, labels: dict[str, str], value: float) -> None:
        """Set a counter's cumulative value."""
        self._send({"op": "set", "name": name, "labels": labels, "value": value})

    def observe(self, name: str, labels: dict[str, str], value: float, count: int) -> None:
        """Observe ``value`` ``count`` times in a histogram."""
        self._send({"op": "observe", "name": name, "labels": labels, "value": value, "count": count})

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def new_experiment() -> str:
    """A name no other test's series carry."""
    return f"exp-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def experiment() -> str:
    """The experiment of the module's shared traffic."""
    return new_experiment()


@pytest.fixture(scope="module")
def exporter(tmp_path_factory: pytest.TempPathFactory, prometheus: Prometheus) -> Iterator[Exporter]:
    """A running exporter that the session Prometheus scrapes every second (shared by the module)."""
    script = tmp_path_factory.mktemp("exporter") / "exporter.py"
    script.write_text(EXPORTER)
    process = Exporter(script)
    job = f"metrics-{uuid.uuid4().hex[:8]}"
    try:
        prometheus.add_target(job, [process.target], scrape_interval="1s")
        prometheus.wait_for_target_up(job, timeout=30)
        yield process
    finally:
        prometheus.remove_target(job)
        process.close()


def scalar_value(prometheus: Prometheus, promql: str) -> float | None:
    result = prometheus.query(promql)
    return float(result[0]["value"][1]) if result else None


def wait_until_scraped(prometheus: Prometheus, experiment: str, total: float) -> None:
    """Wait until Prometheus holds the exporter's latest requests total for this experiment."""
    promql = f'sum({REQUESTS}_total{{experiment="{experiment}"}})'
    wait_for(
        lambda: scalar_value(prometheus, promql) == total,
        timeout=30,
        message=f"Prometheus never saw {promql} == {total}",
    )


def values(observations: dict[str, QueryResult]) -> dict[str, float | None]:
    return {variant: o.value for variant, o in observations.items()}


@pytest.fixture(scope="module")
def traffic(exporter: Exporter, prometheus: Prometheus, experiment: str) -> Traffic:
    """Set once for the module (the tests only read it): two scrapes apart, champion and challenger
    serve traffic; idle's counters never move.

    Returns:
        The final cumulative request counts, and an instant at which both phases are in a 1m window
        (queries evaluated then give the same answer however late the test runs).
    """
    # Large starting values keep rate()'s extrapolation from stopping at zero, so every series of a
    # variant is extrapolated alike and a ratio of rates is exactly the ratio of the increments.
    phases = [
        {
            "champion": {"200": 10_000, "500": 1_000},
            "challenger": {"200": 10_000, "500": 1_000},
            "idle": {"200": 7, "500": 0},
        },
        {
            "champion": {"200": 10_060, "500": 1_001},
            "challenger": {"200": 10_040, "500": 1_005},
            "idle": {"200": 7, "500": 0},
        },
    ]
    latencies = {"champion": 0.04, "challenger": 0.2}
    for index, counts in enumerate(phases):
        for variant, by_code in counts.items():
            labels = {"experiment": experiment, "variant": variant}
            for code, value in by_code.items():
                exporter.set(REQUESTS, {**labels, "code": code}, value)
            exporter.set(OUTCOMES, {**labels, "result": "success"}, by_code["200"] // 2)
            exporter.set(OUTCOMES, {**labels, "result": "failure"}, by_code["200"] - by_code["200"] // 2)
            if variant in latencies or index == 0:
                exporter.observe(DURATION, labels, latencies.get(variant, 0.01), count=20 * (index + 1))
        wait_until_scraped(prometheus, experiment, sum(sum(c.values()) for c in counts.values()))
    return Traffic(requests=phases[-1], at=time.time())


def test_values_per_variant_match_what_the_exporter_serves(
    prometheus: Prometheus, experiment: str, traffic: Traffic
) -> None:
    context = QueryContext(experiment=experiment, namespace="default", time=traffic.at)
    with PrometheusProvider(prometheus.url, timeout=5) as provider:
        observations = provider.query_per_variant(TOTAL, context, VARIANTS)
    assert values(observations) == {
        "champion": sum(traffic.requests["champion"].values()),
        "challenger": sum(traffic.requests["challenger"].values()),
        "idle": sum(traffic.requests["idle"].values()),
        "ghost": None,
    }
    assert {o.path for o in observations.values()} == {QueryPath.BY_VARIANT}
    assert observations["ghost"].outcome is ResultKind.NO_DATA
    assert "'ghost'" in observations["ghost"].message


@pytest.mark.parametrize("template", EQUIVALENCE_TEMPLATES.values(), ids=EQUIVALENCE_TEMPLATES.keys())
def test_one_query_by_variant_equals_one_query_per_variant(
    prometheus: Prometheus, experiment: str, traffic: Traffic, template: str
) -> None:
    """The rewrite's proof, checked on real data: same outcome, same number, for every variant."""
    context = QueryContext(experiment=experiment, namespace="default", time=traffic.at)
    with (
        PrometheusProvider(prometheus.url, timeout=5) as single,
        PrometheusProvider(prometheus.url, timeout=5, by_variant=False) as each,
    ):
        by_variant = single.query_per_variant(template, context, VARIANTS)
        per_variant = each.query_per_variant(template, context, VARIANTS)
    assert {o.path for o in by_variant.values()} == {QueryPath.BY_VARIANT}
    assert {o.path for o in per_variant.values()} == {QueryPath.PER_VARIANT}
    for variant in VARIANTS:
        one, other = by_variant[variant], per_variant[variant]
        assert (one.outcome, one.error_kind) == (other.outcome, other.error_kind), variant
        if one.is_value:
            assert one.value == pytest.approx(other.value, rel=1e-12, abs=1e-12), variant
    # Not a vacuous comparison: the champion has a real answer (or, for `by (code)`, a real error).
    assert by_variant["champion"].outcome is not ResultKind.NO_DATA
    assert by_variant["ghost"].outcome is ResultKind.NO_DATA


def test_rates_and_quantiles_tell_the_variants_apart(
    prometheus: Prometheus, experiment: str, traffic: Traffic
) -> None:
    context = QueryContext(experiment=experiment, namespace="default", time=traffic.at)
    with PrometheusProvider(prometheus.url, timeout=5) as provider:
        error_rate = provider.query_per_variant(ERROR_RATE, context, VARIANTS)
        p95 = provider.query_per_variant(P95, context, VARIANTS)
    # challenger: 5 errors in 45 new requests; champion: 1 in 61.
    assert error_rate["challenger"].value == pytest.approx(5 / 45, rel=1e-9)
    assert error_rate["champion"].value == pytest.approx(1 / 61, rel=1e-9)
    # idle served nothing in the window: 0/0 is NaN, which is "no data", not a zero error rate.
    assert error_rate["idle"].outcome is ResultKind.NO_DATA
    assert 0.025 < p95["champion"].value <= 0.05  # type: ignore[operator]
    assert 0.1 < p95["challenger"].value <= 0.25  # type: ignore[operator]
    assert p95["idle"].outcome is ResultKind.NO_DATA


def test_label_values_are_escaped_so_they_match_themselves_only(
    prometheus: Prometheus, exporter: Exporter
) -> None:
    """A '.' in a regex matches any character and a '"' ends a string, unless escaped."""
    experiment = new_experiment()
    served = {"a.b": 5, "axb": 7, 'q"x\\y': 11, "it's": 13}
    for variant, value in served.items():
        exporter.set("arbiter_test_escaping", {"experiment": experiment, "variant": variant}, value)
    promql = f'sum(arbiter_test_escaping_total{{experiment="{experiment}"}})'
    wait_for(lambda: scalar_value(prometheus, promql) == 36, timeout=30, message=f"{promql} never 36")
    context = QueryContext(experiment=experiment, namespace="default")
    exact = 'sum(arbiter_test_escaping_total{experiment="{{experiment}}",variant="{{variant}}"})'
    regex = 'sum(arbiter_test_escaping_total{experiment="{{experiment}}",variant=~"{{variant}}"})'
    single_quoted = "sum(arbiter_test_escaping_total{experiment='{{experiment}}',variant='{{variant}}'})"
    with PrometheusProvider(prometheus.url, timeout=5) as provider:
        by_variant = provider.query_per_variant(exact, context, list(served))
        per_variant = provider.query_per_variant(regex, context, ["a.b", 'q"x\\y'])
        in_single_quotes = provider.query_per_variant(single_quoted, context, list(served))
    assert values(by_variant) == served
    assert {o.path for o in by_variant.values()} == {QueryPath.BY_VARIANT}
    assert values(per_variant) == {"a.b": 5, 'q"x\\y': 11}
    assert values(in_single_quotes) == served
    assert {o.path for o in per_variant.values()} == {QueryPath.PER_VARIANT}


def test_invalid_promql_is_an_error_with_prometheus_reason(prometheus: Prometheus) -> None:
    context = QueryContext(experiment=new_experiment(), namespace="default")
    with PrometheusProvider(prometheus.url, timeout=5) as provider:
        observations = provider.query_per_variant(
            f'sum(rate({REQUESTS}_total{{variant="{{{{variant}}}}"}}[1m]) or on(', context, ["a", "b"]
        )
    for observation in observations.values():
        assert observation.outcome is ResultKind.ERROR
        assert observation.error_kind is ErrorKind.BAD_QUERY
        assert "bad_data" in observation.message
        assert "parse error" in observation.message
        assert f"{REQUESTS}_total" in observation.message


def test_collect_metric_reads_proportions_and_means(prometheus: Prometheus, exporter: Exporter) -> None:
    experiment = new_experiment()
    for variant, (successes, failures, values) in {
        "champion": (30, 70, [1.0, 2.0, 3.0]),
        "challenger": (45, 55, [2.0, 4.0]),
    }.items():
        labels = {"experiment": experiment, "variant": variant}
        exporter.set(OUTCOMES, {**labels, "result": "success"}, successes)
        exporter.set(OUTCOMES, {**labels, "result": "failure"}, failures)
        exporter.set("arbiter_router_outcome_value_count", labels, len(values))
        exporter.set("arbiter_router_outcome_value_sum", labels, sum(values))
        exporter.set("arbiter_router_outcome_value_sum_squares", labels, sum(v * v for v in values))
    # An exporter that creates a counter series on its first increment: "dud" never converted.
    exporter.set(OUTCOMES, {"experiment": experiment, "variant": "dud", "result": "failure"}, 40)
    promql = f'sum({OUTCOMES}_total{{experiment="{experiment}"}})'
    wait_for(lambda: scalar_value(prometheus, promql) == 240, timeout=30, message=f"{promql} never 240")
    proportion = Metric.model_validate(
        {
            "name": "conversion",
            "type": "Proportion",
            "successes": f'sum({OUTCOMES}_total{{{SELECT},result="success"}})',
            "trials": f"sum({OUTCOMES}_total{{{SELECT}}})",
            "minimumDetectableEffect": 0.05,
        }
    )
    mean = Metric.model_validate(
        {
            "name": "value",
            "type": "Mean",
            "count": f"sum(arbiter_router_outcome_value_count_total{{{SELECT}}})",
            "sum": f"sum(arbiter_router_outcome_value_sum_total{{{SELECT}}})",
            "sumSquares": f"sum(arbiter_router_outcome_value_sum_squares_total{{{SELECT}}})",
            "minimumDetectableEffect": 0.05,
        }
    )
    context = QueryContext(experiment=experiment, namespace="default")
    with PrometheusProvider(prometheus.url, timeout=5) as provider:
        proportions = collect_metric(
            provider, proportion, context, ["champion", "challenger", "dud", "ghost"]
        )
        means = collect_metric(provider, mean, context, ["champion", "challenger"])
    assert proportions["champion"].values == {"successes": 30, "trials": 100}
    assert proportions["challenger"].values == {"successes": 45, "trials": 100}
    assert proportions["dud"].values == {"successes": 0, "trials": 40}, "no success series: 0 successes"
    assert proportions["ghost"].outcome is ResultKind.NO_DATA, "no trials either: nothing is known"
    assert means["champion"].values == {"count": 3, "sum": 6, "sum_squares": 14}
    assert means["challenger"].values == {"count": 2, "sum": 6, "sum_squares": 20}


def test_a_stopped_prometheus_is_an_error_not_no_data_and_recovery_follows_a_restart(
    prometheus: Prometheus, experiment: str, traffic: Traffic
) -> None:
    context = QueryContext(experiment=experiment, namespace="default")
    expected = sum(traffic.requests["champion"].values())
    with PrometheusProvider(prometheus.url, timeout=2) as provider:
        assert provider.is_online()
        prometheus.stop()
        try:
            assert not provider.is_online()
            observations = provider.query_per_variant(TOTAL, context, VARIANTS)
            for observation in observations.values():
                assert observation.outcome is ResultKind.ERROR
                assert observation.error_kind is ErrorKind.UNREACHABLE
                assert prometheus.url in observation.message
            samples = provider.query_per_variant(
                f"sum({REQUESTS}_total{{{SELECT}}}) or vector(0)", context, VARIANTS
            )
            assert {s.error_kind for s in samples.values()} == {ErrorKind.UNREACHABLE}
        finally:
            prometheus.start()
        assert provider.is_online()
        recovered = wait_for(
            lambda: provider.query_per_variant(TOTAL, context, ["champion"])["champion"].value == expected,
            timeout=30,
            message="the provider did not read values again after Prometheus restarted",
        )
        assert recovered
