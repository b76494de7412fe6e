"""A real HTTP server speaking the Prometheus query API with canned answers: the unit tests' boundary.

The fixtures are re-exported by this directory's conftest.py; the builders are imported by the tests.
"""

from __future__ import annotations

import json
import math
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

EVAL_TIME = 1_700_000_000.0


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def vector(*series: tuple[dict[str, str], float]) -> dict[str, Any]:
    """A successful instant-vector answer."""
    result = [{"metric": labels, "value": [EVAL_TIME, _number(value)]} for labels, value in series]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


def scalar(value: float) -> dict[str, Any]:
    """A successful scalar answer."""
    return {"status": "success", "data": {"resultType": "scalar", "result": [EVAL_TIME, _number(value)]}}


def error_body(error_type: str, error: str) -> dict[str, Any]:
    """Prometheus' error JSON."""
    return {"status": "error", "errorType": error_type, "error": error}


@dataclass
class Reply:
    """What the fake server answers: a status and a body (JSON-encoded unless bytes)."""

    body: Any
    status: int = 200
    content_type: str = "application/json"
    hang: bool = False  # block until the test ends, to provoke a client timeout


Responder = Callable[[str], Reply]


@dataclass
class FakePrometheus:
    """The running server; ``answer`` decides the reply for each query string."""

    url: str
    answer: Responder = lambda query: Reply(vector())
    queries: list[dict[str, str]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    def answer_with(self, replies: dict[str, Reply], default: Reply | None = None) -> None:
        """Answer each known query with its reply; anything else with ``default`` (or a 500)."""
        fallback = default or Reply(b"unexpected query", status=500, content_type="text/plain")
        self.answer = lambda query: replies.get(query, fallback)

    @property
    def sent(self) -> list[str]:
        """The PromQL of every query received, in order."""
        return [q["query"] for q in self.queries]


@pytest.fixture
def fake_prometheus() -> Iterator[FakePrometheus]:
    """A Prometheus stand-in on a free 127.0.0.1 port."""
    state: dict[str, FakePrometheus] = {}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _serve(self, params: dict[str, str]) -> None:
            fake = state["fake"]
            if urlparse(self.path).path != "/api/v1/query":
                self.send_error(404)
                return
            fake.queries.append(params)
            fake.headers.append(dict(self.headers.items()))
            reply = fake.answer(params.get("query", ""))
            if reply.hang:
                fake.release.wait(timeout=30)
                return
            body = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            query = parse_qs(urlparse(self.path).query)
            self._serve({k: v[0] for k, v in query.items()})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            form = parse_qs(self.rfile.read(length).decode())
            query = parse_qs(urlparse(self.path).query)
            self._serve({k: v[0] for k, v in {**query, **form}.items()})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    host, port = server.server_address[:2]
    fake = FakePrometheus(url=f"http://{host}:{port}")
    state["fake"] = fake
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        fake.release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def refused_url() -> Iterator[str]:
    """A URL whose port is bound but not listening: connecting is refused, and no one can take the port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()
