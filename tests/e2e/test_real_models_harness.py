"""The real models and their model server, checked on their own (no cluster, no operator).

MLServer serves what hack/models/train.py trained: each variant answers V2 inference requests with the
class and the fraud score, the variants differ the way the catalogue says they do, and a server started
by the harness stops cleanly.
"""

from __future__ import annotations

import math
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from harness.mlserver import (
    CLASS_POINTER,
    INFER_PATH,
    SCORE_POINTER,
    Catalogue,
    MLServerProcess,
    infer_body,
    read_answer,
)
from harness.model_traffic import ModelTraffic, ModelTrafficSnapshot
from harness.processes import RouterProcess, http_json
from prometheus_client.parser import text_string_to_metric_families

from arbiter.router.config import RouterConfig, Shadow, ShadowCompare, Stickiness, Variant
from helpers import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ROWS = 200


def within(observed: float, expected: float, n: float, sigmas: float = 5.0) -> bool:
    """True when a proportion observed over n trials is within ``sigmas`` binomial standard errors."""
    return abs(observed - expected) <= sigmas * math.sqrt(max(expected * (1 - expected), 1e-4) / n)


def answers(server: MLServerProcess, features: list[list[float]]) -> list[tuple[int, float]]:
    return [server.infer(row) for row in features]


def test_mlserver_serves_the_trained_models_as_the_catalogue_describes(
    model_catalogue: Catalogue, tmp_path: Path
) -> None:
    features, labels = model_catalogue.rows
    rows, truth = features[:ROWS], labels[:ROWS]
    names = ("champion", "identical", "better", "disagreeing")
    servers = MLServerProcess.start_many(model_catalogue, {name: name for name in names}, tmp_path)
    try:
        got = {name: answers(server, rows) for name, server in servers.items()}
        # A V2 answer names its model and version, and carries an id of its own.
        status, body = http_json(servers["better"].url + INFER_PATH, infer_body(rows[0]))
        assert status == 200
        assert (body["model_name"], body["model_version"]) == ("fraud", "better")
        assert read_answer(body) == got["better"][0]
        status, other = http_json(servers["identical"].url + INFER_PATH, infer_body(rows[0]))
        assert other["id"] != body["id"]

        # The identical model answers exactly like the champion (same file, same runtime).
        assert got["identical"] == got["champion"]
        for name in ("better", "disagreeing"):
            agreement = sum(a[0] == b[0] for a, b in zip(got[name], got["champion"], strict=True)) / ROWS
            expected = model_catalogue.variants[name]["agreementWithChampion"]
            assert abs(agreement - expected) < 0.08, (name, agreement, expected)
        accuracy = {
            name: sum(answer[0] == label for answer, label in zip(got[name], truth, strict=True)) / ROWS
            for name in got
        }
        assert accuracy["better"] > accuracy["champion"] > accuracy["disagreeing"], accuracy
        # Scores are probabilities, and the class is the score's side of 0.5.
        for answer_class, score in got["champion"]:
            assert 0.0 <= score <= 1.0
            assert answer_class == int(score > 0.5)
    finally:
        codes = {name: server.stop() for name, server in servers.items()}
    assert all(not server.alive() for server in servers.values())
    assert codes == dict.fromkeys(servers, 0), codes


def test_the_slow_variant_answers_like_the_champion_but_later(
    model_catalogue: Catalogue, tmp_path: Path
) -> None:
    features, _ = model_catalogue.rows
    slow = MLServerProcess.start(model_catalogue, "slow", tmp_path, delay_ms=150)
    champion = MLServerProcess.start(model_catalogue, "champion", tmp_path)
    try:
        for row in features[:5]:
            started = time.monotonic()
            answer = slow.infer(row)
            # A lower bound only: the runtime sleeps at least this long, whatever the machine's load.
            assert time.monotonic() - started >= 0.15
            assert answer == champion.infer(row)
    finally:
        slow.stop()
        champion.stop()


def router_samples(router: RouterProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the router's /metrics, keyed by (name, sorted labels)."""
    with urllib.request.urlopen(f"http://{router.metrics_address}/metrics", timeout=5) as response:
        text = response.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in samples.items() if n == name and all((k, labels[k]) in ls for k in labels))


def routes(champion: str, shadow: str, servers: dict[str, MLServerProcess], compare: dict[str, Any]) -> str:
    config = RouterConfig(
        experiment="fraud-shadow",
        variants=tuple(
            Variant(name=name, url=server.url, weight=1 if name == champion else 0)
            for name, server in servers.items()
        ),
        champion=champion,
        stickiness=Stickiness(header="x-user-id"),
        shadow=Shadow(
            variant=shadow, percent=100, timeout_seconds=5, compare=ShadowCompare.model_validate(compare)
        ),
    )
    return config.to_yaml()


def served(snapshot: ModelTrafficSnapshot) -> int:
    """Requests a model answered (the router compares a mirror only with a served answer)."""
    return sum(count for code, count in snapshot.codes.items() if code not in (502, 504))


def wait_compared(router: RouterProcess, variant: str, n: int) -> tuple[dict[Any, float], float]:
    """The router's samples once all ``n`` answers mirrored to ``variant`` were compared or lost, and the count compared.

    On a busy machine a few mirrors time out (``shadow.timeoutSeconds``); the router counts them as
    upstream errors and compares nothing for them, which is what it must do. Most must be compared.
    """

    def settled() -> tuple[dict[Any, float], float] | None:
        samples = router_samples(router)
        compared = total(samples, "arbiter_router_shadow_comparisons_total", variant=variant)
        lost = total(samples, "arbiter_router_upstream_errors_total", variant=variant) + total(
            samples, "arbiter_router_shadow_dropped_total", variant=variant
        )
        assert compared + lost <= n
        return (samples, compared) if compared + lost == n else None

    samples, compared = wait_for(settled, timeout=30, message=f"every answer mirrored to {variant} compared")
    assert compared >= 0.8 * n, f"only {compared} of {n} mirrored answers compared"
    return samples, compared


CLASS_RULES = {"fields": [CLASS_POINTER], "score": SCORE_POINTER}


def test_the_router_judges_real_shadow_answers_by_class_and_delayed_labels_reach_it(
    model_catalogue: Catalogue, tmp_path: Path
) -> None:
    """Two real models behind the router: class agreement and score deltas as the catalogue measured them.

    Compared whole, the V2 answers of the same model served twice never agree (ids and versions differ).
    """
    servers = MLServerProcess.start_many(
        model_catalogue,
        {"champion": "champion", "agreeing": "agreeing", "disagreeing": "disagreeing"},
        tmp_path,
    )
    path = tmp_path / "routes.yaml"
    path.write_text(routes("champion", "agreeing", servers, CLASS_RULES))
    router = RouterProcess.start(["--config", str(path), "--poll-interval", "0.2"], tmp_path)
    try:
        wait_for(router.ready, timeout=30, message="the router's routes")
        n = 200
        traffic = ModelTraffic(
            router.url,
            model_catalogue.rows,
            rate=20,
            max_requests=n,
            label_delay=(4.0, 6.0),
            anonymous_share=0.2,
        ).start()
        wait_for(lambda: traffic.snapshot().of("champion").requests >= n, timeout=120, message="the answers")
        early = traffic.snapshot()
        # The labels are due 4-6 s after their answers: when the last answer is in, the latest are still due.
        assert early.labels_pending > 0, early
        assert early.of("champion").labels_sent + early.labels_pending == early.of("champion").labels_due
        assert total(router_samples(router), "arbiter_router_outcomes_total") < n
        final = traffic.stop()
        assert final.labels_pending == 0
        champion = final.of("champion")
        # Nearly every transaction is answered (a busy machine may time a few out: 504) and every label due
        # reaches the router; only a failed anonymous request has no label (nothing to credit it to).
        assert champion.requests == n and champion.ok >= 0.9 * n, final.codes
        assert champion.labels_due >= champion.ok and champion.labels_due == champion.labels_sent
        assert champion.labels_failed == 0
        assert set(final.variants) == {"champion"}, "the shadows serve nobody"
        assert 0.1 * n < champion.anonymous < 0.3 * n
        assert within(champion.accuracy, model_catalogue.variants["champion"]["accuracy"], champion.ok)

        samples, compared = wait_compared(router, "agreeing", served(final))
        # Every label reached the router, by user key or by request id, and was credited to the champion.
        assert (
            total(samples, "arbiter_router_outcomes_total", variant="champion", result="success")
            == champion.successes
        )
        assert total(samples, "arbiter_router_outcomes_total", variant="champion") == champion.labels_sent
        agree = total(samples, "arbiter_router_shadow_comparisons_total", variant="agreeing", agree="true")
        assert within(
            agree / compared, model_catalogue.variants["agreeing"]["agreementWithChampion"], compared
        )
        assert total(samples, "arbiter_router_shadow_score_delta_count", variant="agreeing") == compared
        assert total(samples, "arbiter_router_shadow_unreadable_total") == 0
        # Most scores of a forest with another seed move by less than 0.1.
        assert (
            total(samples, "arbiter_router_shadow_score_delta_bucket", variant="agreeing", le="0.1") > 0.8 * n
        )

        # The disagreeing model, by the same rules.
        path.write_text(routes("champion", "disagreeing", servers, CLASS_RULES))
        wait_for(lambda: "shadow=disagreeing" in router.readyz(), timeout=30, message="the new routes")
        traffic = ModelTraffic(
            router.url, model_catalogue.rows, rate=20, max_requests=n, label_delay=(0, 0.5), seed=1
        )
        traffic.start()
        wait_for(lambda: traffic.snapshot().of("champion").requests >= n, timeout=120, message="the answers")
        samples, compared = wait_compared(router, "disagreeing", served(traffic.stop()))
        agree = total(samples, "arbiter_router_shadow_comparisons_total", variant="disagreeing", agree="true")
        assert within(
            agree / compared, model_catalogue.variants["disagreeing"]["agreementWithChampion"], compared
        )

        # Whole bodies: the champion's own model answering twice never agrees with itself.
        path.write_text(routes("champion", "agreeing", servers, {}))
        wait_for(lambda: "shadow=agreeing" in router.readyz(), timeout=30, message="whole-body routes")
        samples = router_samples(router)
        before = total(samples, "arbiter_router_shadow_comparisons_total", variant="agreeing")
        agreed = total(samples, "arbiter_router_shadow_comparisons_total", variant="agreeing", agree="true")
        status, body = http_json(router.url + INFER_PATH, infer_body(model_catalogue.rows[0][0]))
        assert status == 200, body
        wait_for(
            lambda: (
                total(router_samples(router), "arbiter_router_shadow_comparisons_total", variant="agreeing")
                == before + 1
            ),
            timeout=30,
            message="the comparison",
        )
        samples = router_samples(router)
        assert (
            total(samples, "arbiter_router_shadow_comparisons_total", variant="agreeing", agree="true")
            == agreed
        )
    finally:
        router.stop()
        for server in servers.values():
            server.stop()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"router_url": "http://10.0.0.1:80"}, "only talks to loopback"),
        ({"success": "profit"}, "success must be"),
        ({"rate": 0}, "rate must be"),
        ({"anonymous_share": 1.5}, "anonymous_share"),
        ({"label_delay": (3.0, 1.0)}, "label_delay"),
        ({"fraud_share": 2.0}, "fraud_share is in"),
        ({"rows": ([[0.0]], [0])}, "fraud_share needs rows of both labels"),
        ({"rows": ([[0.0]], [0, 1])}, "as many labels"),
    ],
)
def test_the_load_generator_refuses_bad_settings(options: dict[str, Any], message: str) -> None:
    settings: dict[str, Any] = {
        "router_url": "http://127.0.0.1:8080",
        "rows": ([[0.0], [1.0]], [0, 1]),
        **({"fraud_share": 0.5} if "rows" in options and len(options["rows"][1]) == 1 else {}),
        **options,
    }
    with pytest.raises(ValueError, match=message):
        ModelTraffic(settings.pop("router_url"), settings.pop("rows"), **settings)
