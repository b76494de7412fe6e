"""The real models and their model server, checked on their own (no cluster, no operator).

MLServer serves what hack/models/train.py trained: each variant answers V2 inference requests with the
class and the fraud score, the variants differ the way the catalogue says they do, and a server started
by the harness stops cleanly.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from harness.mlserver import INFER_PATH, Catalogue, MLServerProcess, infer_body, read_answer
from harness.processes import http_json

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ROWS = 200


def answers(server: MLServerProcess, features: list[list[float]]) -> list[tuple[int, float]]:
    return [server.infer(row) for row in features]


def test_mlserver_serves_the_trained_models_as_the_catalogue_describes(
    model_catalogue: Catalogue, tmp_path: Path
) -> None:
    features, labels = model_catalogue.rows
    rows, truth = features[:ROWS], labels[:ROWS]
    servers = {
        name: MLServerProcess.start(model_catalogue, name, tmp_path)
        for name in ("champion", "identical", "better", "disagreeing")
    }
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
