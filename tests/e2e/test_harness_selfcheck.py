"""The e2e harness checked on its own, before any operator is involved.

If these pass, a failing rollout story is about the operator, not about the stand-ins: the model servers
do what they are told, the traffic generator's counters are exactly what the router and the model servers
counted, the SRM injector drops what it should, the environment's router follows the ConfigMap (or the
replica counts), Prometheus sees the same numbers, and the builder's manifests and queries are valid.
"""

from __future__ import annotations

import json
import math
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness.env import RolloutEnv
from harness.experiment import conversion_metric, latency_guardrail
from harness.processes import ModelServerProcess, RouterProcess, http_json
from harness.traffic import NO_VARIANT, TrafficGenerator, user_fraction
from prometheus_client.parser import text_string_to_metric_families

from arbiter.api import parse_spec
from arbiter.metrics.base import QueryContext
from arbiter.metrics.template import render
from arbiter.router.config import RouterConfig, Stickiness, Variant
from helpers import wait_for

pytestmark = pytest.mark.timeout(120)


def within(observed: float, expected: float, n: float, sigmas: float = 5.0) -> bool:
    """True when a proportion observed over n trials is within ``sigmas`` binomial standard errors."""
    return abs(observed - expected) <= sigmas * math.sqrt(expected * (1 - expected) / n)


def router_counter(metrics_url: str, name: str, **labels: str) -> float:
    with urllib.request.urlopen(metrics_url, timeout=5) as response:
        text = response.read().decode()
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def routes(experiment: str, weights: dict[str, float], urls: dict[str, str]) -> str:
    return RouterConfig(
        experiment=experiment,
        variants=tuple(Variant(name=n, url=urls[n], weight=w) for n, w in weights.items()),
        stickiness=Stickiness(header="x-user-id"),
    ).to_yaml()


@pytest.fixture
def models(tmp_path: Path) -> Iterator[dict[str, ModelServerProcess]]:
    servers = {
        name: ModelServerProcess.start(name, tmp_path, latency_ms=1, jitter_ms=0.5) for name in ("v1", "v2")
    }
    yield servers
    for server in servers.values():
        server.stop()


def test_model_server_answers_as_configured_and_changes_at_runtime(
    models: dict[str, ModelServerProcess],
) -> None:
    v2 = models["v2"]
    status, body = http_json(v2.url + "/predict", {"features": [1, 2]})
    assert status == 200 and body["variant"] == "v2" and 0 <= body["score"] < 1
    assert http_json(v2.url + "/predict", {"features": [1, 2]})[1] == body, "same input, same score"
    assert http_json(models["v1"].url + "/predict", {"features": [1, 2]})[1]["score"] != body["score"]

    assert v2.configure(latency_ms=150, jitter_ms=0) == {
        "latencyMs": 150.0,
        "jitterMs": 0.0,
        "errorRate": 0.0,
    }
    begun = time.monotonic()
    assert http_json(v2.url + "/predict", {})[0] == 200
    assert time.monotonic() - begun >= 0.145, "the new latency applies to the next request"

    v2.configure(latency_ms=0, error_rate=1.0)
    status, body = http_json(v2.url + "/predict", {})
    assert status == 500 and body["error"] == "injected failure"
    assert v2.requests_served() == {"200": 3.0, "500": 1.0}

    assert http_json(v2.url + "/admin", {"errorRate": 2})[0] == 400
    assert http_json(v2.url + "/admin", {"latency": 1})[0] == 400
    assert v2.settings()["errorRate"] == 1.0, "a rejected change changes nothing"


def test_traffic_counts_match_what_router_and_models_counted(
    models: dict[str, ModelServerProcess], tmp_path: Path
) -> None:
    urls = {name: m.url for name, m in models.items()}
    config = tmp_path / "routes.yaml"
    config.write_text(routes("selfcheck", {"v1": 70, "v2": 30}, urls))
    router = RouterProcess.start(["--config", str(config)], tmp_path)
    try:
        generator = TrafficGenerator(
            router.url, conversion={"v1": 0.1, "v2": 0.4}, rate=250, max_requests=1500, max_seconds=60, seed=3
        )
        generator.inject_srm("v2", 0.5)
        generator.start()
        wait_for(
            lambda: not generator.running, timeout=60, message="the generator to stop after 1500 requests"
        )
        done = generator.snapshot()
        assert generator.error is None
        assert done.sent == 1500 and done.answered == 1500 and done.transport_errors == 0
        v1, v2 = done.of("v1"), done.of("v2")
        assert within(done.share("v2"), 0.3, done.answered), done
        assert within(v1.conversion, 0.1, v1.feedback_sent) and within(
            v2.conversion, 0.4, v2.feedback_sent
        ), done

        # The SRM injector drops the feedback of half of v2's users, and only theirs.
        assert v1.feedback_dropped == 0 and v1.feedback_sent == v1.requests
        assert v2.feedback_dropped + v2.feedback_sent == v2.requests
        assert within(v2.feedback_dropped / v2.requests, 0.5, v2.requests), v2

        # What the generator counted is exactly what the router and the models counted.
        metrics = f"http://{router.metrics_address}/metrics"
        for name, counts in (("v1", v1), ("v2", v2)):
            labels = {"experiment": "selfcheck", "variant": name}
            assert router_counter(metrics, "arbiter_router_requests_total", **labels) == counts.requests
            assert router_counter(metrics, "arbiter_router_outcomes_total", result="success", **labels) == (
                counts.successes
            )
            assert router_counter(metrics, "arbiter_router_outcomes_total", result="failure", **labels) == (
                counts.feedback_sent - counts.successes
            )
            assert models[name].requests_served() == {"200": float(counts.requests)}
            assert counts.feedback_elsewhere == 0, "weights did not change, so no key moved"

        # Conversion rates change at runtime; a generator without a count limit stops by its time limit.
        short = TrafficGenerator(router.url, conversion={"v1": 0.0}, rate=100, max_seconds=1.5, seed=4)
        short.set_conversion("v2", 1.0)
        short.start()
        wait_for(lambda: not short.running, timeout=10, message="the generator to stop after max_seconds")
        final = short.snapshot()
        assert final.elapsed < 5 and 0 < final.sent <= 1.5 * 100 + 1
        assert final.of("v1").successes == 0 and final.of("v2").successes == final.of("v2").feedback_sent > 0
    finally:
        router.stop()


def test_srm_injector_drops_by_user_not_by_request() -> None:
    dropped = [key for key in (f"u{i}" for i in range(2000)) if user_fraction(key) < 0.25]
    assert within(len(dropped) / 2000, 0.25, 2000)
    assert all(user_fraction(key) < 0.25 for key in dropped), "the same user is always dropped"


def test_traffic_generator_refuses_non_loopback_targets() -> None:
    with pytest.raises(ValueError, match="loopback"):
        TrafficGenerator("http://example.com:80")


def prom_value(rollout: RolloutEnv, query: str) -> float | None:
    result = rollout.prometheus.query(query)
    return float(result[0]["value"][1]) if result else None


def test_router_env_follows_the_configmap_and_prometheus_sees_the_traffic(
    rollout_env: Any, kube_api: Any, arbiter_crd: str
) -> None:
    env: RolloutEnv = rollout_env(experiment="selfcheck")
    assert env.router is not None

    # Before the operator writes the ConfigMap the router runs without routes.
    assert not env.router.ready()
    waiting = env.traffic({}, rate=50, max_requests=5)
    wait_for(lambda: not waiting.running, timeout=10, message="five requests")
    assert waiting.snapshot().of(NO_VARIANT).errors == 5

    # Write the routes the way the Router provider does, and the router picks them up.
    urls = {ref.name: ref.url for ref in env.variants}
    env.apply(
        [
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": env.config_map},
                "data": {"routes.yaml": routes("selfcheck", {"v1": 60, "v2": 40}, urls)},
            }
        ]
    )
    wait_for(
        lambda: env.router.weights() == {"v1": 60, "v2": 40}, timeout=30, message="routes from the ConfigMap"
    )

    generator = env.traffic({"v1": 0.1, "v2": 0.3}, rate=200, max_requests=1000, seed=5)
    wait_for(lambda: not generator.running, timeout=60, message="1000 requests")
    done = generator.snapshot()
    assert done.answered == 1000 and within(done.share("v2"), 0.4, 1000)

    # Prometheus sees exactly the generator's counts through the experiment's own query templates.
    metric = conversion_metric()
    context = QueryContext(experiment="selfcheck", namespace=env.namespace)
    for name in ("v1", "v2"):
        counts = done.of(name)
        successes = render(metric["successes"], context, name)
        trials = render(metric["trials"], context, name)
        wait_for(
            lambda q=successes, c=counts: prom_value(env, q) == c.successes,
            timeout=20,
            message=f"Prometheus to show {name}'s successes",
        )
        wait_for(
            lambda q=trials, c=counts: prom_value(env, q) == c.feedback_sent,
            timeout=20,
            message=f"Prometheus to show {name}'s trials",
        )

    # The latency guardrail's query sees a slow variant within a few scrapes, and only that variant.
    latency = latency_guardrail(max_seconds=0.25)
    env.models["v2"].configure(latency_ms=400, jitter_ms=0)
    slow = env.traffic({}, rate=100, max_seconds=30, seed=6)
    v2_latency = render(latency["query"], context, "v2")
    v1_latency = render(latency["query"], context, "v1")
    wait_for(
        lambda: (prom_value(env, v2_latency) or 0) > 0.25, timeout=20, message="the p95 of v2 to exceed 0.25s"
    )
    assert (prom_value(env, v1_latency) or 0) < 0.25
    slow.stop()

    # The builder's manifest is what the API server and the operator's parser accept.
    manifest = env.experiment(
        steps=[{"weight": 20, "minDuration": "2s"}, {"weight": 50, "minDuration": "2s"}],
        guardrails=[latency],
        primary=metric,
    )
    parse_spec(manifest["spec"])
    env.cluster.kubectl(
        "apply", "--dry-run=server", "-n", env.namespace, "-f", "-", input=yaml.safe_dump(manifest)
    )


def test_replicas_env_routes_by_ready_replicas(rollout_env: Any, arbiter_crd: str) -> None:
    env: RolloutEnv = rollout_env(
        experiment="selfcheck-replicas", provider="Replicas", replicas={"v1": 3, "v2": 1}
    )
    assert env.router is not None
    assert env.router.weights() == {"v1": 3, "v2": 1}

    env.cluster.kubectl("scale", "deployment/model-v2", "--replicas=3", "-n", env.namespace)
    wait_for(
        lambda: env.router.weights() == {"v1": 3, "v2": 3},
        timeout=60,
        message="routes to follow the replicas",
    )
    generator = env.traffic({}, rate=200, max_requests=800, seed=7)
    wait_for(lambda: not generator.running, timeout=60, message="800 requests")
    assert within(generator.snapshot().share("v2"), 0.5, 800)

    manifest = env.experiment(steps=[{"weight": 50}], guardrails=[latency_guardrail()])
    assert "router" not in manifest["spec"]["routing"]
    parse_spec(manifest["spec"])
    env.cluster.kubectl(
        "apply", "--dry-run=server", "-n", env.namespace, "-f", "-", input=json.dumps(manifest)
    )
