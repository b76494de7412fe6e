"""A real Prometheus scrapes a real exporter process and answers PromQL, across a restart."""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from localcluster import Prometheus, PrometheusError

from helpers import wait_for

EXPORTER = textwrap.dedent(
    """
    import sys
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from prometheus_client import CollectorRegistry, Gauge, make_wsgi_app

    registry = CollectorRegistry()
    Gauge("arbiter_test_value", "A value chosen by the test", registry=registry).set(float(sys.argv[1]))


    class Quiet(WSGIRequestHandler):
        def log_message(self, *args):
            pass


    server = make_server("127.0.0.1", 0, make_wsgi_app(registry), handler_class=Quiet)
    print(server.server_port, flush=True)
    server.serve_forever()
    """
)


@dataclass(frozen=True)
class Exporter:
    target: str
    value: float


@pytest.fixture
def exporter(tmp_path: Path) -> Iterator[Exporter]:
    """A separate process serving /metrics with a random gauge value on a free port."""
    script = tmp_path / "exporter.py"
    script.write_text(EXPORTER)
    value = round(random.uniform(1, 1000), 3)
    proc = subprocess.Popen([sys.executable, str(script), repr(value)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        yield Exporter(f"127.0.0.1:{port}", value)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def job(prometheus: Prometheus) -> Iterator[str]:
    name = f"exporter-{uuid.uuid4().hex[:8]}"
    yield name
    prometheus.remove_target(name)


def _value(prometheus: Prometheus, job: str, at: float | None = None) -> float | None:
    result = prometheus.query(f'arbiter_test_value{{job="{job}"}}', at=at)
    return float(result[0]["value"][1]) if result else None


def test_scrapes_a_local_exporter_and_answers_promql(
    prometheus: Prometheus, exporter: Exporter, job: str
) -> None:
    prometheus.add_target(job, [exporter.target], scrape_interval="1s")
    prometheus.wait_for_target_up(job, timeout=30)

    assert wait_for(lambda: _value(prometheus, job), timeout=15, message="no sample") == exporter.value
    doubled = prometheus.query(f'2 * sum(arbiter_test_value{{job="{job}"}})')
    assert float(doubled[0]["value"][1]) == pytest.approx(2 * exporter.value)


def test_removed_job_is_no_longer_scraped(prometheus: Prometheus, exporter: Exporter, job: str) -> None:
    prometheus.add_target(job, [exporter.target])
    prometheus.wait_for_target_up(job)

    prometheus.remove_target(job)

    assert prometheus.targets(job) == []


def test_a_rejected_config_leaves_the_previous_one_in_place(
    prometheus: Prometheus, exporter: Exporter, job: str
) -> None:
    prometheus.add_target(job, [exporter.target])
    with pytest.raises(PrometheusError, match="reload rejected"):
        prometheus.add_target(job, [exporter.target], scrape_interval="not-a-duration")

    prometheus.wait_for_target_up(job)
    assert prometheus.targets(job)[0]["scrapeInterval"] == "1s"


def test_stop_and_start_keep_the_url_and_the_stored_samples(
    prometheus: Prometheus, exporter: Exporter, job: str
) -> None:
    prometheus.add_target(job, [exporter.target])
    prometheus.wait_for_target_up(job)
    wait_for(lambda: _value(prometheus, job), timeout=15, message="no sample before the restart")
    before = time.time()
    url = prometheus.url

    prometheus.stop()
    assert not prometheus.running
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url + "/-/ready", timeout=2)

    prometheus.start()
    assert prometheus.url == url
    # The sample scraped before the stop is still in the TSDB (replayed from the WAL).
    assert _value(prometheus, job, at=before) == exporter.value
    prometheus.wait_for_target_up(job, timeout=30)
