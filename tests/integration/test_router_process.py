"""`arbiter router` as a real process in front of real model-server processes.

Everything goes over loopback HTTP: headers, stickiness, shadow comparisons, feedback, /metrics,
reloads of the --config file (on change and on SIGHUP) and a clean stop on SIGTERM.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from arbiter.router.assign import Assigner
from helpers import wait_for

ARBITER = Path(sys.executable).with_name("arbiter")

MODEL_SERVER = textwrap.dedent(
    """
    import json, sys
    from aiohttp import web

    name, score = sys.argv[1], float(sys.argv[2])

    async def predict(request):
        await request.read()
        body = json.dumps({"score": score, "labels": ["ok"]}).encode()
        return web.Response(body=body, content_type="application/json", headers={"X-Served-By": name})

    async def main():
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", predict)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        print(runner.addresses[0][1], flush=True)
        await asyncio.Event().wait()

    import asyncio
    asyncio.run(main())
    """
)


@dataclass
class Process:
    """A child process whose stderr is collected line by line in the background."""

    popen: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.popen.stderr is not None
        for line in self.popen.stderr:
            self.lines.append(line.rstrip("\n"))

    def log(self) -> str:
        return "\n".join(self.lines)

    def find(self, pattern: str) -> re.Match[str] | None:
        for line in list(self.lines):
            match = re.search(pattern, line)
            if match:
                return match
        return None

    def stop(self) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                return self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                return self.popen.wait(5)
        return self.popen.returncode


@pytest.fixture
def model_servers(tmp_path: Path) -> Iterator[dict[str, str]]:
    """Three model-server processes: v1 and v2 answer score 0.5, v3 answers 0.9."""
    script = tmp_path / "model_server.py"
    script.write_text(MODEL_SERVER)
    children: list[subprocess.Popen[str]] = []
    urls = {}
    try:
        for name, score in (("v1", 0.5), ("v2", 0.5), ("v3", 0.9)):
            child = subprocess.Popen(
                [sys.executable, str(script), name, str(score)], stdout=subprocess.PIPE, text=True
            )
            children.append(child)
            assert child.stdout is not None
            urls[name] = f"http://127.0.0.1:{int(child.stdout.readline())}"
        yield urls
    finally:
        for child in children:
            child.terminate()
            child.wait(10)


def start_router(*args: str, env: dict[str, str] | None = None) -> tuple[Process, str, str]:
    """Run `arbiter router ARGS` on free ports; return it with its proxy and metrics base URLs."""
    popen = subprocess.Popen(
        [str(ARBITER), "router", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    process = Process(popen)
    try:
        wait_for(
            lambda: process.find(r"metrics on http://") or popen.poll() is not None,
            timeout=30,
            message="the router to listen",
        )
    except AssertionError:
        process.stop()
        raise
    if popen.poll() is not None:
        raise AssertionError(f"arbiter router exited with {popen.returncode}:\n{process.log()}")
    proxy = process.find(r"routing on (\S+):(\d+)")
    metrics = process.find(r"metrics on (http://\S+)/metrics")
    assert proxy and metrics, process.log()
    return process, f"http://{proxy[1]}:{proxy[2]}", metrics[1]


def call(
    url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, headers=headers or {}, method="POST" if body else "GET")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


def metric(metrics_url: str, name: str, **labels: str) -> float:
    text = call(metrics_url + "/metrics")[2].decode()
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


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
