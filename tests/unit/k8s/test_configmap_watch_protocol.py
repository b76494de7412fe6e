"""ConfigMapWatcher's protocol at the HTTP boundary: an expired watch (410 Gone) and an unreachable server.

A real API server only answers 410 once etcd has compacted past a watch's resourceVersion and its watch
cache has moved on, which no test can bring about on demand; so a scripted API server (a real HTTP
server on loopback speaking the list/watch protocol) plays that part here. Following a real ConfigMap on
the real API server is tested in tests/integration/test_router_configmap.py.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from kubernetes import client

from arbiter.k8s.configmap_watch import ROUTES_KEY, ConfigMapWatcher
from helpers import wait_for


def config_map(text: str, version: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "routes", "namespace": "ns", "resourceVersion": version},
        "data": {ROUTES_KEY: text},
    }


class ScriptedApiServer:
    """Lists answer the current ConfigMap; the first watch is answered with an expired (410) ERROR event,
    later watches stream one MODIFIED event once ``update`` is called, then end."""

    def __init__(self) -> None:
        self.text, self.version = "experiment: one\n", "10"
        self.requests: list[tuple[str, dict[str, list[str]]]] = []
        self.updated = threading.Event()
        self._lock = threading.Lock()
        scripted = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                query = parse_qs(url.query)
                with scripted._lock:
                    scripted.requests.append(("watch" if query.get("watch") == ["true"] else "list", query))
                    watches = sum(1 for kind, _ in scripted.requests if kind == "watch")
                if query.get("watch") != ["true"]:
                    body = {
                        "apiVersion": "v1",
                        "kind": "ConfigMapList",
                        "metadata": {"resourceVersion": scripted.version},
                        "items": [config_map(scripted.text, scripted.version)],
                    }
                    self._send(json.dumps(body).encode())
                    return
                if watches == 1:
                    expired = {
                        "type": "ERROR",
                        "object": {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"},
                    }
                    self._send(json.dumps(expired).encode() + b"\n")
                    return
                if scripted.updated.wait(5):
                    event = {"type": "MODIFIED", "object": config_map(scripted.text, scripted.version)}
                    self._send(json.dumps(event).encode() + b"\n")
                else:
                    self._send(b"")

            def _send(self, body: bytes) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def update(self, text: str, version: str) -> None:
        self.text, self.version = text, version
        self.updated.set()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def core_api(url: str) -> client.CoreV1Api:
    configuration = client.Configuration()
    configuration.host = url
    configuration.retries = 0
    return client.CoreV1Api(client.ApiClient(configuration))


class Received:
    """Texts the watcher delivered, in order (thread-safe)."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, text: str, source: str) -> None:
        with self._lock:
            self.texts.append(text)

    def last(self) -> str | None:
        with self._lock:
            return self.texts[-1] if self.texts else None


@pytest.fixture
def api_server() -> Iterator[ScriptedApiServer]:
    server = ScriptedApiServer()
    yield server
    server.close()


def test_an_expired_watch_relists_at_once_and_follows_on(
    api_server: ScriptedApiServer, caplog: pytest.LogCaptureFixture
) -> None:
    received = Received()
    watcher = ConfigMapWatcher(
        "ns", "routes", received, api=core_api(api_server.url), watch_timeout_seconds=5, initial_backoff=30
    )
    with caplog.at_level(logging.INFO, logger="arbiter.k8s.configmap_watch"):
        watcher.start()
        try:
            wait_for(lambda: received.last() == "experiment: one\n", timeout=10, message="the first text")
            # 410 -> list again at once (an initial backoff of 30 s would show), then watch from there.
            wait_for(
                lambda: [kind for kind, _ in api_server.requests][:4] == ["list", "watch", "list", "watch"],
                timeout=10,
                message="list, expired watch, list, watch",
            )
            api_server.update("experiment: two\n", "20")
            wait_for(lambda: received.last() == "experiment: two\n", timeout=10, message="the update")
        finally:
            watcher.stop(timeout=10)
    watches = [query for kind, query in api_server.requests if kind == "watch"]
    assert watches[0]["resourceVersion"] == ["10"] and watches[1]["resourceVersion"] == ["10"]
    assert watches[0]["fieldSelector"] == ["metadata.name=routes"]
    assert any("expired (410)" in r.getMessage() for r in caplog.records)
    assert received.texts == ["experiment: one\n", "experiment: two\n"], "each text once, in order"


def test_an_unreachable_api_server_backs_off_exponentially_and_stops_promptly(
    caplog: pytest.LogCaptureFixture, unused_tcp_port: int
) -> None:
    # Nothing listens on the port: every attempt is a real refused connection.
    api = core_api(f"http://127.0.0.1:{unused_tcp_port}")
    watcher = ConfigMapWatcher("ns", "routes", Received(), api=api, initial_backoff=0.1, max_backoff=0.4)
    with caplog.at_level(logging.WARNING, logger="arbiter.k8s.configmap_watch"):
        watcher.start()
        wait_for(
            lambda: len([r for r in caplog.records if "retrying in" in r.getMessage()]) >= 5,
            timeout=20,
            message="five failed attempts",
        )
        started = time.monotonic()
        watcher.stop(timeout=5)
        stopped_in = time.monotonic() - started
    delays = [
        float(m.group(1))
        for r in caplog.records
        if (m := re.search(r"retrying in ([0-9.]+)s", r.getMessage()))
    ]
    assert delays[:4] == [0.1, 0.2, 0.4, 0.4], delays
    assert watcher.delivered == 0
    assert stopped_in < 5, "stop() ends the backoff wait at once"
    assert watcher._thread is not None and not watcher._thread.is_alive()
