"""`arbiter router` as a real process in front of real model-server processes.

Everything goes over loopback HTTP: headers, stickiness, shadow comparisons, feedback, /metrics,
reloads of the --config file (on change and on SIGHUP) and a clean stop on SIGTERM.
"""

from __future__ import annotations

import json
import signal
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from router_process_support import ARBITER, call, metric, model_server_processes, start_router

from arbiter.router.assign import Assigner
from helpers import wait_for


@pytest.fixture
def model_servers(tmp_path: Path) -> Iterator[dict[str, str]]:
    """Three model-server processes: v1 and v2 answer score 0.5, v3 answers 0.9."""
    with model_server_processes(tmp_path, {"v1": 0.5, "v2": 0.5, "v3": 0.9}) as urls:
        yield urls


def routes(urls: dict[str, str], w1: float, w2: float, shadow: bool = True) -> str:
    text = textwrap.dedent(
        f"""
        experiment: proc
        variants:
          - {{name: v1, url: "{urls["v1"]}", weight: {w1}}}
          - {{name: v2, url: "{urls["v2"]}", weight: {w2}}}
          - {{name: v3, url: "{urls["v3"]}", weight: 0}}
        stickiness: {{header: x-user-id}}
        """
    )
    if shadow:
        text += "shadow: {variant: v3, percent: 100, timeoutSeconds: 2, compare: {numericTolerance: 0.5}}\n"
    return text


def test_router_process_end_to_end(model_servers: dict[str, str], tmp_path: Path) -> None:
    config = tmp_path / "routes.yaml"
    config.write_text(routes(model_servers, 80, 20))
    process, proxy, metrics_url = start_router("--config", str(config), "--poll-interval", "0.1")
    try:
        # Headers and stickiness: every user always lands where the documented hash says.
        expected = Assigner("proc", [("v1", 80), ("v2", 20)])
        served: dict[str, str] = {}
        for i in range(40):
            user = f"user-{i}"
            for _ in range(2):
                status, headers, body = call(
                    proxy + "/predict?x=1", b'{"f": [1]}', {"x-user-id": user, "Connection": "close"}
                )
                assert status == 200
                assert headers["x-arbiter-variant"] == headers["x-served-by"] == expected.sticky(user)
                assert json.loads(body) == {"score": 0.5, "labels": ["ok"]}
                served[user] = headers["x-arbiter-variant"]
        assert set(served.values()) == {"v1", "v2"}

        # Shadow: every request mirrored to v3, whose 0.9 is within the 0.5 tolerance of 0.5.
        wait_for(
            lambda: (
                metric(metrics_url, "arbiter_router_shadow_comparisons_total", variant="v3", agree="true")
                == 80
            ),
            timeout=20,
            message="80 agreeing shadow comparisons",
        )
        assert metric(metrics_url, "arbiter_router_shadow_latency_delta_seconds_count", variant="v3") == 80
        on_v1 = sum(1 for v in served.values() if v == "v1")
        assert metric(metrics_url, "arbiter_router_requests_total", variant="v1", code="200") == 2 * on_v1
        assert metric(metrics_url, "arbiter_router_request_duration_seconds_count", variant="v2") == 2 * (
            40 - on_v1
        )

        # Feedback lands on the variant the user was served by.
        for user, variant in list(served.items())[:10]:
            status, _, body = call(proxy + "/feedback", json.dumps({"key": user, "value": 2.0}).encode())
            assert (status, json.loads(body)["variant"]) == (200, variant)
        firsts = list(served.values())[:10]
        assert metric(metrics_url, "arbiter_router_outcome_value_sum", variant="v1") == 2.0 * firsts.count(
            "v1"
        )

        # Growing the challenger in the file: users only move toward it, nobody leaves it.
        config.write_text(routes(model_servers, 40, 60, shadow=False))
        wait_for(lambda: process.find(r"weights=v1:40,v2:60"), timeout=20, message="the new routes to load")
        for user, before in served.items():
            after = call(proxy + "/p", b"{}", {"x-user-id": user})[1]["x-arbiter-variant"]
            assert after == "v2" or before == after == "v1", (user, before, after)

        # A broken file is rejected with a log line; the last good routes keep serving.
        config.write_text("experiment: proc\nvariants: [{name: v1, url: nowhere, weight: 1}]\n")
        wait_for(
            lambda: process.find(r"routes rejected from .*keeping the previous routes"),
            timeout=20,
            message="the rejection log line",
        )
        assert call(proxy + "/p", b"{}", {"x-user-id": "user-1"})[0] == 200
        assert metric(metrics_url, "arbiter_router_config_reloads_total", result="failure") >= 1

        # SIGHUP re-reads the file on demand.
        config.write_text(routes(model_servers, 0, 1, shadow=False))
        loaded = metric(metrics_url, "arbiter_router_config_reloads_total", result="success")
        process.popen.send_signal(signal.SIGHUP)
        wait_for(lambda: process.find(r"SIGHUP: re-reading"), timeout=20, message="the SIGHUP log line")
        wait_for(
            lambda: metric(metrics_url, "arbiter_router_config_reloads_total", result="success") > loaded,
            timeout=20,
            message="a reload after SIGHUP",
        )
        assert all(
            call(proxy + "/p", b"{}", {"x-user-id": f"user-{i}"})[1]["x-arbiter-variant"] == "v2"
            for i in range(10)
        )
        assert call(metrics_url + "/readyz")[0] == 200
    finally:
        code = process.stop()
    assert code == 0, process.log()


def test_router_refuses_to_start_without_usable_routes(tmp_path: Path) -> None:
    config = tmp_path / "routes.yaml"
    config.write_text("experiment: x\nvariants: []\n")
    result = subprocess.run(
        [
            str(ARBITER),
            "router",
            "--config",
            str(config),
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "routes rejected" in result.stderr
    assert "variants" in result.stderr
