"""The gate client against a real local HTTP server: 2xx passes, anything else fails with the reason."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from arbiter.gates import GateRequest, call_gate, call_gates
from gate_server import GateServer


@pytest.fixture
def server() -> Iterator[GateServer]:
    gate = GateServer().start()
    yield gate
    gate.stop()


def request(url: str, name: str = "smoke", timeout: float = 2.0) -> GateRequest:
    return GateRequest(
        name=name, payload={"name": "exp", "type": "step", "step": 1}, timeout=timeout, url=url
    )


def test_a_2xx_passes_and_the_gate_receives_the_json(server: GateServer) -> None:
    server.answer(204)
    answer = call_gate(request(server.url("/smoke")))
    assert answer.passed and answer.code == 204
    assert server.received("/smoke") == [{"path": "/smoke", "name": "exp", "type": "step", "step": 1}]


@pytest.mark.parametrize("code", [400, 403, 409, 500, 503])
def test_a_non_2xx_fails_with_its_code_and_what_the_gate_said(server: GateServer, code: int) -> None:
    server.answer(code)
    answer = call_gate(request(server.url()))
    assert not answer.passed and answer.code == code
    assert answer.message == f"HTTP {code}: gate says {code}"


def test_a_gate_that_never_answers_fails_by_its_timeout(server: GateServer) -> None:
    server.hang()
    answer = call_gate(request(server.url(), timeout=0.3))
    assert not answer.passed and answer.code is None
    assert answer.message == "no answer within 0.3s"


def test_a_refused_connection_fails() -> None:
    with socket.socket() as sock:  # a port nobody listens on once this socket is closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    answer = call_gate(request(f"http://127.0.0.1:{port}/gate"))
    assert not answer.passed and answer.code is None and answer.message.startswith("connection failed")


def test_gates_are_called_together_and_a_hanging_one_does_not_hide_the_others(server: GateServer) -> None:
    other = GateServer(code=200).start()
    try:
        server.hang()
        answers = call_gates(
            [request(server.url("/slow"), "slow", timeout=0.3), request(other.url("/fast"), "fast")]
        )
    finally:
        other.stop()
    assert answers["fast"].passed
    assert not answers["slow"].passed and answers["slow"].message == "no answer within 0.3s"
