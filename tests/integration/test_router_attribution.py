"""Delayed labels across router replicas and restarts: attribution tokens and the prediction log.

Two `arbiter router` processes share nothing but their HMAC keys. Requests are served by replica A,
A is restarted, and the labels arrive later at replica B and at the restarted A: each is credited to
the variant that served it. Forged, tampered, expired and malformed tokens are refused with a 4xx and
counted; neither key nor token ever appears in a log.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from router_process_support import ARBITER, call, metric, model_server_processes, start_router

from arbiter.router.attribution import ATTRIBUTION_HEADER, AttributionSigner

OLD_KEY = b"old-attribution-key-0123456789abcdef"
NEW_KEY = b"new-attribution-key-fedcba9876543210"


@pytest.fixture
def model_servers(tmp_path: Path) -> Iterator[dict[str, str]]:
    with model_server_processes(tmp_path, {"v1": 0.25, "v2": 0.75}) as urls:
        yield urls


def _routes(urls: dict[str, str], experiment: str = "labels") -> str:
    return textwrap.dedent(
        f"""
        experiment: {experiment}
        variants:
          - {{name: v1, url: "{urls["v1"]}", weight: 50}}
          - {{name: v2, url: "{urls["v2"]}", weight: 50}}
        stickiness: {{header: x-user-id}}
        """
    )


def _feedback(proxy: str, payload: dict[str, object]) -> tuple[int, dict[str, object]]:
    status, _, body = call(proxy + "/feedback", json.dumps(payload).encode(), {"Connection": "close"})
    return status, json.loads(body)


def _read_jsonl(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_labels_reach_any_replica_after_the_serving_one_restarted(
    model_servers: dict[str, str], tmp_path: Path
) -> None:
    config = tmp_path / "routes.yaml"
    config.write_text(_routes(model_servers))
    # Replica A signs with the old key; B has rotated (new key first) and still accepts the old one.
    keys_a = tmp_path / "keys-a"
    keys_a.write_bytes(OLD_KEY + b"\n")
    keys_b = tmp_path / "keys-b"
    keys_b.mkdir()
    (keys_b / "keys").write_bytes(NEW_KEY + b"\n" + OLD_KEY + b"\n")
    (keys_b / "..data").mkdir()  # a Secret volume's hidden entries are skipped
    log_a, log_b = tmp_path / "log-a", tmp_path / "log-b"

    def replica(keys: Path, log_dir: Path) -> tuple[object, str, str]:
        return start_router(
            "--config", str(config), "--log-level", "DEBUG",
            "--attribution-keys", str(keys), "--attribution-max-age", "3600",
            "--prediction-log", str(log_dir), "--prediction-log-field", "score=/score",
            "--prediction-log-field", "missing=/nope/0",
        )  # fmt: skip

    a, proxy_a, _ = replica(keys_a, log_a)
    b, proxy_b, metrics_b = replica(keys_b, log_b)
    a2 = None
    try:
        served: list[tuple[str, str, str | None]] = []  # (token, variant, request id)
        for i in range(30):
            headers = {"Connection": "close"}
            request_id = None
            if i % 3:
                headers["x-user-id"] = f"user-{i}"
            if i % 2:
                request_id = f"req-{i}"
                headers["x-request-id"] = request_id
            status, answer, _ = call(proxy_a + "/predict", b'{"x": [1]}', headers)
            assert status == 200
            token = answer[ATTRIBUTION_HEADER.lower()]
            served.append((token, answer["x-arbiter-variant"], request_id))
        assert {variant for _, variant, _ in served} == {"v1", "v2"}

        assert a.stop() == 0  # the serving replica goes away (and with it its request-id memory)
        a2, proxy_a2, metrics_a2 = replica(keys_a, log_a)

        expected: Counter[str] = Counter()
        for index, (token, variant, _) in enumerate(served):
            target = proxy_b if index % 2 == 0 else proxy_a2
            status, answer = _feedback(target, {"token": token, "success": index % 4 == 0})
            assert status == 200, answer
            assert answer["variant"] == variant
            if target == proxy_b:
                expected[(variant, "success" if index % 4 == 0 else "failure")] += 1
        for (variant, result), count in expected.items():
            assert metric(metrics_b, "arbiter_router_outcomes_total", variant=variant, result=result) == count

        # A request id the restarted replica never saw, with no token and no key: a clear 404.
        status, answer = _feedback(proxy_a2, {"requestId": "req-1", "success": True})
        assert status == 404

        # Refused tokens: each a 4xx, counted by reason, and nothing credited.
        token, variant, _ = served[0]
        version, payload, mac = token.split(".")
        flipped = mac[:-2] + ("A" if mac[-2] != "A" else "B") + mac[-1]
        other = "v2" if variant == "v1" else "v1"
        tampered_payload = (
            AttributionSigner([b"attacker-key-0123456789"]).issue("labels", other, "x").split(".")[1]
        )
        stale = AttributionSigner([OLD_KEY], clock=lambda: time.time() - 7200).issue("labels", variant, "r")
        elsewhere = AttributionSigner([OLD_KEY]).issue("another-experiment", variant, "r")
        before = metric(metrics_b, "arbiter_router_outcomes_total")
        cases = [
            (f"{version}.{payload}.{flipped}", 403, "signature"),
            (f"{version}.{tampered_payload}.{mac}", 403, "signature"),
            (AttributionSigner([b"attacker-key-0123456789"]).issue("labels", other, "x"), 403, "signature"),
            (stale, 403, "expired"),
            ("not-a-token", 400, "malformed"),
            (elsewhere, 409, "experiment"),
        ]
        for bad, code, reason in cases:
            status, answer = _feedback(proxy_b, {"token": bad, "success": True, "key": "user-1"})
            assert (status, answer.get("reason")) == (code, reason), answer
            assert bad not in json.dumps(answer)
        assert metric(metrics_b, "arbiter_router_outcomes_total") == before
        assert metric(metrics_b, "arbiter_router_attribution_rejected_total", reason="signature") == 3
        assert metric(metrics_b, "arbiter_router_attribution_rejected_total", reason="expired") == 1
        assert metric(metrics_b, "arbiter_router_attribution_rejected_total", reason="malformed") == 1
        # A token signed only with B's new key is refused by A, which has not been given it yet.
        _, answer_headers, _ = call(proxy_b + "/predict", b"{}", {"Connection": "close"})
        status, answer = _feedback(
            proxy_a2, {"token": answer_headers[ATTRIBUTION_HEADER.lower()], "value": 1.5}
        )
        assert (status, answer["reason"]) == (403, "signature")
        assert metric(metrics_a2, "arbiter_router_attribution_rejected_total", reason="signature") == 1
        # Feedback by key keeps working alongside tokens.
        status, answer = _feedback(proxy_b, {"key": "user-1", "value": 2.0})
        assert status == 200
    finally:
        for process in (a, b, a2):
            if process is not None:
                process.stop()

    # Never logged: the keys and the tokens.
    logs = "\n".join(p.log() for p in (a, b, a2) if p is not None)
    assert "attribution tokens on" in logs
    for secret in (OLD_KEY.decode(), NEW_KEY.decode(), *(token for token, _, _ in served)):
        assert secret not in logs
    for token, _, _ in served:
        for directory in (log_a, log_b):
            assert token not in "".join(p.read_text() for p in directory.iterdir())

    # The prediction log of A (both lives) holds every served request; B's outcome lines carry the
    # variant and request id the token said, in the columns `arbiter analyze` reads.
    predictions = _read_jsonl(log_a / "predictions.jsonl")
    assert len(predictions) == 30
    for line, (_, variant, request_id) in zip(predictions, served, strict=True):
        assert line["variant"] == variant
        assert line["score"] == (0.25 if variant == "v1" else 0.75)
        assert line["missing"] is None and "body" not in line
        assert line["status"] == 200 and float(str(line["latencyMs"])) > 0
        assert str(line["timestamp"]).endswith("Z") and "T" in str(line["timestamp"])
        if request_id is not None:
            assert line["requestId"] == request_id
    assert all(line["user"] is None or len(str(line["user"])) == 16 for line in predictions)
    assert not any(str(line["user"]).startswith("user-") for line in predictions)
    outcomes_b = [o for o in _read_jsonl(log_b / "outcomes.jsonl") if o["attribution"] == "token"]
    by_request = {str(p["requestId"]): p for p in predictions}
    assert len(outcomes_b) == 15
    for outcome in outcomes_b:
        assert outcome["variant"] == by_request[str(outcome["requestId"])]["variant"]
        assert isinstance(outcome["outcome"], bool)
    keyed = [o for o in _read_jsonl(log_b / "outcomes.jsonl") if o["attribution"] == "key"]
    assert [o["outcome"] for o in keyed] == [2.0]


def test_a_bad_key_file_stops_the_router_at_start_without_printing_the_key(
    model_servers: dict[str, str], tmp_path: Path
) -> None:
    config = tmp_path / "routes.yaml"
    config.write_text(_routes(model_servers))
    keys = tmp_path / "keys"
    keys.write_text("tiny-secret\n")
    for args, message in (
        (["--attribution-keys", str(keys)], "attribution key 1 in"),
        (["--attribution-keys", str(tmp_path / "absent")], "no such file or directory"),
        (["--attribution-max-age", "60"], "--attribution-max-age needs --attribution-keys"),
    ):
        done = subprocess.run(
            [str(ARBITER), "router", "--config", str(config), "--listen", "127.0.0.1:0", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 2, done.stderr
        assert message in done.stderr and "tiny-secret" not in done.stderr
