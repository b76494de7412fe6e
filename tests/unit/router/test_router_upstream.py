"""The router's HTTP/1.1 upstream client against scripted raw-socket servers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
from router_testing import free_port

from arbiter.router.upstream import UpstreamClient, UpstreamError, strip_hop_by_hop

Reply = Callable[[int, bytes], list[bytes] | None]
"""Given (request number on this connection, raw request), the chunks to write; None closes."""


@dataclass
class RawServer:
    url: str
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.decode("latin-1").split("\r\n"):
        if line.lower().startswith("content-length:"):
            length = int(line.split(":", 1)[1])
    return head + (await reader.readexactly(length) if length else b"")


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[[Reply], asyncio.Future[RawServer]]]:
    servers: list[asyncio.Server] = []

    async def start(reply: Reply) -> RawServer:
        state = RawServer("")

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            state.connections += 1
            n = 0
            try:
                while True:
                    request = await _read_request(reader)
                    state.requests.append(request)
                    chunks = reply(n, request)
                    n += 1
                    if chunks is None:
                        break
                    for chunk in chunks:
                        writer.write(chunk)
                        await writer.drain()
                    if chunks and chunks[-1] == b"<close>":
                        break
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        state.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        return state

    yield start  # type: ignore[misc]
    for server in servers:
        server.close()


OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok": 1.0}'


async def fetch(
    client: UpstreamClient,
    url: str,
    path: str = "/p",
    method: str = "POST",
    body: bytes = b"{}",
    timeout: float = 5.0,
):  # type: ignore[no-untyped-def]
    return await client.request(url, method, path, [("X-A", "1")], body, timeout)


async def test_keep_alive_reuses_one_connection_and_sends_host_and_length(raw_server) -> None:
    server = await raw_server(lambda n, req: [OK])
    client = UpstreamClient()
    try:
        for _ in range(3):
            response = await fetch(client, server.url + "/prefix")
            assert (response.status, response.body) == (200, b'{"ok": 1.0}')
        assert server.connections == 1
        port = server.url.rsplit(":", 1)[1]
        first = server.requests[0].decode()
        assert first.startswith("POST /prefix/p HTTP/1.1\r\n")
        assert f"\r\nHost: 127.0.0.1:{port}\r\n" in first
        assert "\r\nContent-Length: 2\r\n" in first and first.endswith("\r\n\r\n{}")
        assert "\r\nX-A: 1\r\n" in first
    finally:
        await client.close()


async def test_chunked_response_with_extensions_and_trailers(raw_server) -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Model: m\r\n\r\n"
        b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
    )
    server = await raw_server(lambda n, req: [chunked[i : i + 3] for i in range(0, len(chunked), 3)])
    client = UpstreamClient()
    try:
        for _ in range(2):
            response = await fetch(client, server.url)
            assert response.body == b"hello world"
            assert response.headers == [("X-Model", "m")]
        assert server.connections == 1, "a complete chunked body leaves the connection reusable"
    finally:
        await client.close()


async def test_close_delimited_response(raw_server) -> None:
    server = await raw_server(
        lambda n, req: [b"HTTP/1.0 200 OK\r\nX-Old: yes\r\n\r\n", b"until ", b"close", b"<close>"]
    )
    client = UpstreamClient()
    try:
        response = await fetch(client, server.url)
        assert response.body.endswith(b"until close<close>")
        response = await fetch(client, server.url)
        assert server.connections == 2, "no reuse after a close-delimited body"
    finally:
        await client.close()


async def test_interim_100_continue_is_skipped(raw_server) -> None:
    server = await raw_server(lambda n, req: [b"HTTP/1.1 100 Continue\r\n\r\n", OK])
    client = UpstreamClient()
    try:
        response = await fetch(client, server.url)
        assert (response.status, response.body) == (200, b'{"ok": 1.0}')
    finally:
        await client.close()


async def test_a_pooled_connection_closed_by_the_server_is_replaced(raw_server) -> None:
    # The server answers one request per connection, then closes it (without saying so).
    server = await raw_server(lambda n, req: [OK] if n == 0 else None)
    client = UpstreamClient()
    try:
        for _ in range(4):
            assert (await fetch(client, server.url)).status == 200
        assert server.connections >= 4
    finally:
        await client.close()


async def test_connection_close_header_is_honoured_and_named_headers_are_dropped(raw_server) -> None:
    reply = (
        b"HTTP/1.1 200 OK\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=1\r\nX-Keep: 2\r\n"
        b"Content-Length: 2\r\n\r\nok"
    )
    server = await raw_server(lambda n, req: [reply])
    client = UpstreamClient()
    try:
        response = await fetch(client, server.url)
        assert response.body == b"ok"
        assert response.headers == [("X-Keep", "2")]
        await fetch(client, server.url)
        assert server.connections == 2
    finally:
        await client.close()


async def test_head_response_has_no_body_even_with_a_length(raw_server) -> None:
    server = await raw_server(lambda n, req: [b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n"])
    client = UpstreamClient()
    try:
        for _ in range(2):
            response = await fetch(client, server.url, method="HEAD", body=b"")
            assert (response.status, response.body) == (200, b"")
            assert response.headers == [("Content-Length", "500")], "HEAD keeps the length of the GET body"
        assert server.connections == 1
        assert b"Content-Length" not in server.requests[0], "no length for a bodiless HEAD"
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("chunks", "reason"),
    [
        ([b"SMTP ready\r\n\r\n"], "protocol"),
        ([b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nsh", b"<close>"], "protocol"),
        ([b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"], "protocol"),
        ([b"HTTP/1.1 200 OK\r\nbad header line\r\n\r\n"], "protocol"),
        # A response whose length is ambiguous is refused, as requests are (response smuggling).
        (
            [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"],
            "protocol",
        ),
        ([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok"], "protocol"),
        ([b"HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\nContent-Length: 2\r\n\r\nok"], "protocol"),
        ([b"HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok"], "protocol"),
        ([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nok\r\n0\r\n\r\n"], "protocol"),
        ([b"HTTP/1.1 200 OK\r\nX-Big: " + b"x" * 70_000 + b"\r\n\r\n"], "protocol"),
        # The router follows no protocol switch.
        ([b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n"], "protocol"),
    ],
)
async def test_malformed_or_truncated_responses_are_protocol_errors(raw_server, chunks, reason) -> None:
    server = await raw_server(lambda n, req: chunks)
    client = UpstreamClient()
    try:
        with pytest.raises(UpstreamError) as caught:
            await fetch(client, server.url)
        assert caught.value.reason == reason
    finally:
        await client.close()


async def test_refused_and_timed_out() -> None:
    client = UpstreamClient()
    try:
        with pytest.raises(UpstreamError) as caught:
            await fetch(client, f"http://127.0.0.1:{free_port()}")
        assert caught.value.reason == "connect"
    finally:
        await client.close()


async def test_timeout_closes_the_connection(raw_server) -> None:
    gate = asyncio.Event()

    def reply(n: int, req: bytes) -> list[bytes]:
        return [OK] if n > 0 or gate.is_set() else []  # the first request never gets an answer

    server = await raw_server(reply)
    client = UpstreamClient()
    try:
        with pytest.raises(UpstreamError) as caught:
            await fetch(client, server.url, timeout=0.1)
        assert caught.value.reason == "timeout"
        gate.set()
        assert (await fetch(client, server.url)).status == 200
        assert server.connections == 2, "a timed-out connection is never reused"
    finally:
        await client.close()


def test_strip_hop_by_hop() -> None:
    headers = [
        ("Connection", "x-a, Keep-Alive"),
        ("X-A", "1"),
        ("X-B", "2"),
        ("Host", "h"),
        ("Content-Length", "3"),
        ("TE", "trailers"),
        ("X-B", "3"),
        ("Upgrade", "h2c"),
    ]
    assert strip_hop_by_hop(headers) == [("X-B", "2"), ("X-B", "3")]


async def test_bytes_after_a_response_make_the_connection_unusable(raw_server) -> None:
    """A second response to one request means the upstream is out of step: answer, then never reuse."""
    server = await raw_server(lambda n, req: [OK + b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"])
    client = UpstreamClient()
    try:
        for _ in range(2):
            response = await fetch(client, server.url)
            assert (response.status, response.body) == (200, b'{"ok": 1.0}')
        assert server.connections == 2
    finally:
        await client.close()
