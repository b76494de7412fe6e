"""Attribution tokens and the prediction log, in process (the two-replica story is in tests/integration)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry
from router_testing import routes_yaml

from arbiter.router.attribution import AttributionError, AttributionSigner, load_keys
from arbiter.router.config import parse_routes_yaml
from arbiter.router.prediction_log import PredictionLog, PredictionLogOptions, iso_timestamp, parse_log_field
from arbiter.router.proxy import Router

KEY = b"k" * 32


def test_a_token_round_trips_and_any_listed_key_verifies_it() -> None:
    old = AttributionSigner([KEY], clock=lambda: 1000.0)
    rotated = AttributionSigner([b"n" * 32, KEY], clock=lambda: 1010.0)
    token = old.issue("exp", "v2", "r-1 ünïcode")
    assert rotated.verify(token).variant == "v2"
    assert rotated.verify(token).request_id == "r-1 ünïcode"
    assert rotated.verify(token).issued == 1000
    with pytest.raises(AttributionError) as refused:
        AttributionSigner([b"n" * 32]).verify(token)
    assert refused.value.reason == "signature"


@pytest.mark.parametrize(
    ("now", "reason"), [(1000.0 + 61, "expired"), (1000.0 - 301, "expired"), (1000.0 + 60, None)]
)
def test_max_age_and_clock_skew(now: float, reason: str | None) -> None:
    token = AttributionSigner([KEY], clock=lambda: 1000.0).issue("e", "v", "r")
    verifier = AttributionSigner([KEY], max_age=60, clock=lambda: now)
    if reason is None:
        assert verifier.verify(token).variant == "v"
    else:
        with pytest.raises(AttributionError) as refused:
            verifier.verify(token)
        assert refused.value.reason == reason


@pytest.mark.parametrize("token", ["", "v1..", "v2.a.b", "v1.a.b.c", "v1.!!.??", "x" * 5000, "v1.é.é"])
def test_malformed_tokens_are_refused_without_echoing_them(token: str) -> None:
    with pytest.raises(AttributionError) as refused:
        AttributionSigner([KEY]).verify(token)
    assert refused.value.reason in {"malformed", "signature"}
    assert token not in str(refused.value) or not token


def test_keys_must_be_long_enough_and_messages_never_hold_them(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        AttributionSigner([b"short"])
    keys = tmp_path / "keys"
    keys.write_bytes(b"\n  " + KEY + b"  \nshort-secret\n")
    with pytest.raises(ValueError, match="key 2") as refused:
        load_keys(keys)
    assert "short-secret" not in str(refused.value)
    keys.write_bytes(KEY + b"\n")
    assert load_keys(keys) == [KEY]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no attribution keys"):
        load_keys(empty)


def test_log_fields_parse() -> None:
    assert parse_log_field("class=/outputs/0/data/0") == ("class", ("outputs", "0", "data", "0"))
    for bad in ("class", "=/x", "class=x"):
        with pytest.raises(ValueError):
            parse_log_field(bad)


def test_iso_timestamps_are_utc_with_milliseconds() -> None:
    assert iso_timestamp(0.25) == "1970-01-01T00:00:00.250Z"


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_log_rotates_by_size_keeps_a_bounded_number_of_files_and_picks_fields(tmp_path: Path) -> None:
    options = PredictionLogOptions(
        directory=tmp_path / "log", max_bytes=2048, files=3, fields={"class": ("c",), "score": ("s", "1")}
    )
    log = PredictionLog(options, CollectorRegistry())
    for index in range(200):
        body = json.dumps({"c": index % 2, "s": [0.0, index / 200]}).encode() if index != 7 else b"<html>"
        log.prediction(
            when=1.0 + index,
            experiment="e",
            variant="v1",
            request_id=f"r{index}",
            key="alice" if index % 2 else None,
            status=200,
            latency=0.01,
            body=body,
        )
    log.close()
    files = sorted(p.name for p in (tmp_path / "log").iterdir())
    assert files == ["outcomes.jsonl", "predictions.jsonl", "predictions.jsonl.1", "predictions.jsonl.2"]
    assert all((tmp_path / "log" / name).stat().st_size <= 2048 for name in files)
    kept = [line for n in (2, 1) for line in _lines(tmp_path / "log" / f"predictions.jsonl.{n}")]
    kept += _lines(tmp_path / "log" / "predictions.jsonl")
    ids = [int(str(line["requestId"])[1:]) for line in kept]
    assert ids == list(range(200 - len(ids), 200))  # the newest lines, in order, none lost in the middle
    last = kept[-1]
    assert (last["class"], last["score"], last["latencyMs"]) == (1, 199 / 200, 10.0)
    assert last["user"] != "alice" and len(str(last["user"])) == 16
    assert "body" not in last


def test_a_full_queue_drops_and_counts_instead_of_blocking(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    options = PredictionLogOptions(directory=tmp_path, queue_lines=5)
    log = PredictionLog(options, registry)
    gate, entered = threading.Event(), threading.Event()
    original = log._render

    def slow_render(line: dict[str, object]) -> bytes:  # a disk that hangs
        entered.set()
        gate.wait(10)
        return original(line)

    log._render = slow_render  # type: ignore[method-assign]
    for index in range(50):
        if index == 1:
            assert entered.wait(10)  # the writer holds line 0; the queue (5 lines) is all that is left
        log.outcome(
            when=1.0,
            experiment="e",
            variant="v",
            outcome=True,
            attribution="key",
            request_id=None,
            issued=None,
            key=f"u{index}",
        )
    dropped = registry.get_sample_value("arbiter_router_prediction_log_dropped_total", {"kind": "outcome"})
    gate.set()
    log.close()
    written = registry.get_sample_value("arbiter_router_prediction_log_lines_total", {"kind": "outcome"})
    assert dropped is not None and written is not None
    assert (dropped, written) == (44, 6)
    assert len(_lines(tmp_path / "outcomes.jsonl")) == written


async def test_the_answer_carries_only_the_routers_token_and_a_token_of_old_routes_is_refused(
    model_server: Any,
) -> None:
    """A model server's own `Arbiter-Attribution` header never reaches the client; a token of another
    experiment (the routes changed since) is refused with 409, counted."""
    v1 = await model_server("v1", extra_headers={"Arbiter-Attribution": "v1.from-the-model.x"})
    signer = AttributionSigner([KEY])
    router = Router(attribution=signer)
    router.apply_config(parse_routes_yaml(routes_yaml("first", ("v1", v1.url, 1))))
    port = await router.start("127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as client:
            async with client.post(f"http://127.0.0.1:{port}/p", json={}) as response:
                tokens = response.headers.getall("Arbiter-Attribution")
            assert len(tokens) == 1 and signer.verify(tokens[0]).variant == "v1"
            assert signer.verify(tokens[0]).experiment == "first"
            router.apply_config(parse_routes_yaml(routes_yaml("second", ("v1", v1.url, 1))))
            async with client.post(
                f"http://127.0.0.1:{port}/feedback", json={"token": tokens[0], "success": True}
            ) as response:
                assert response.status == 409
                assert (await response.json())["reason"] == "experiment"
        rejected = router.metrics.registry.get_sample_value(
            "arbiter_router_attribution_rejected_total", {"experiment": "second", "reason": "experiment"}
        )
        assert rejected == 1
    finally:
        await router.close()
