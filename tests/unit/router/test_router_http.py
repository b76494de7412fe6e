"""The proxy port's HTTP/1.1 server, spoken to byte by byte over real sockets."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from arbiter.router.http import HTTPRequest, HTTPResponse, HTTPServer


class Echo:
    """Answers with what it received; counts rejections."""

    def __init__(self) -> None:
        self.requests: list[HTTPRequest] = []
        self.rejected: list[int] = []
        self.gate: asyncio.Event | None = None

    async def __call__(self, request: HTTPRequest) -> HTTPResponse:
        self.requests.append(request)
        if self.gate is not None:
            await self.gate.wait()
        body = json.dumps(
            {
                "method": request.method,
                "target": request.target,
                "body": request.body.decode(),
                "cookie": request.cookie("uid"),
                "user": request.header("x-user-id"),
            }
        ).encode()
        return HTTPResponse(
            200, body, [("Content-Type", "application/json"), ("X-Seen", str(len(self.requests)))]
        )


@pytest.fixture
async def server() -> AsyncIterator[tuple[Echo, int]]:
    echo = Echo()
    http = HTTPServer(echo, max_body_bytes=lambda: 1000, on_rejected=echo.rejected.append)
    port = await http.start("127.0.0.1", 0)
    yield echo, port
    if echo.gate is not None:
        echo.gate.set()
    await http.close(grace=1)


async def exchange(port: int, *chunks: bytes, read_until_close: bool = True) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
        if read_until_close:
            return await asyncio.wait_for(reader.read(), 10)
        return await asyncio.wait_for(reader.read(65536), 10)
    finally:
        writer.close()


def responses(raw: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Split a byte stream into (status, headers, body) using Content-Length."""
    out = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", 0))
        out.append((status, headers, rest[:length]))
        raw = rest[length:]
    return out


async def test_pipelined_keep_alive_requests_are_answered_in_order(server) -> None:
    _echo, port = server
    raw = await exchange(
        port,
        b"POST /a?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nonePOST /b HTTP/1.1\r\nHost: h\r\n",
        b'Content-Length: 3\r\nX-User-Id: u7\r\nCookie: a=1; uid="42"\r\n\r\ntwo',
        b"GET /c HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    )
    answers = responses(raw)
    assert [json.loads(body)["target"] for _, _, body in answers] == ["/a?x=1", "/b", "/c"]
    assert [json.loads(body)["body"] for _, _, body in answers] == ["one", "two", ""]
    assert json.loads(answers[1][2])["user"] == "u7"
    assert json.loads(answers[1][2])["cookie"] == "42"
    assert answers[2][1]["connection"] == "close"
    assert [h["x-seen"] for _, h, _ in answers] == ["1", "2", "3"]


async def test_chunked_request_body_is_decoded(server) -> None:
    echo, port = server
    raw = await exchange(
        port,
        b"POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        b"4;ext=y\r\nWiki\r\n5\r\npedia\r\n",
        b"0\r\nX-Trailer: 1\r\n\r\n",
    )
    [(status, _, body)] = responses(raw)
    assert status == 200
    assert json.loads(body)["body"] == "Wikipedia"
    # The framing header stays visible to the handler; the proxy drops it as hop-by-hop.
    assert ("Transfer-Encoding", "chunked") in echo.requests[0].headers


async def test_expect_100_continue(server) -> None:
    echo, port = server
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10) == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"data")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 200 OK")
        assert all(name.lower() != "expect" for name, _ in echo.requests[0].headers), "Expect is hop by hop"
    finally:
        writer.close()


async def test_http_1_0_closes_unless_asked_to_keep_alive(server) -> None:
    _, port = server
    raw = await exchange(port, b"GET /old HTTP/1.0\r\n\r\n")
    [(status, headers, _)] = responses(raw)
    assert (status, headers["connection"]) == (200, "close")
    raw = await exchange(port, b"GET /old HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", read_until_close=False)
    assert b"Connection: keep-alive" in raw


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"NONSENSE\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\n\r\n", 505),
        (b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost : h\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nX-A: 1\r\n folded\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
        # Request smuggling: both framings at once is an error, never a guess.
        (b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
        (b"POST / HTTP/1.1\r\nExpect: magic\r\nContent-Length: 1\r\n\r\nx", 417),
        (b"POST / HTTP/1.1\r\nContent-Length: 1001\r\n\r\n" + b"x" * 1001, 413),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3e9\r\n" + b"x" * 1001 + b"\r\n0\r\n\r\n",
            413,
        ),
        (b"GET / HTTP/1.1\r\nX-Big: " + b"x" * 70_000 + b"\r\n\r\n", 431),
    ],
)
async def test_bad_requests_are_refused_and_the_connection_closed(
    server, request_bytes: bytes, status: int
) -> None:
    echo, port = server
    raw = await exchange(port, request_bytes)
    [(got, headers, body)] = responses(raw)
    assert got == status
    assert headers["connection"] == "close"
    assert json.loads(body)["error"]
    assert echo.rejected == [status]
    assert not echo.requests, "refused requests never reach the handler"


async def test_a_refused_upload_still_reads_the_answer(server) -> None:
    """The client keeps uploading after the 413; the lingering close lets it read the answer."""
    _, port = server
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"POST / HTTP/1.1\r\nContent-Length: 5000000\r\n\r\n")
        for _ in range(20):
            writer.write(b"x" * 100_000)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 413 ")
    finally:
        writer.close()


async def test_head_and_204_responses_have_no_body(server) -> None:
    _echo, port = server
    raw = await exchange(port, b"HEAD /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    assert raw.endswith(b"\r\n\r\n"), "HEAD gets headers only"


async def test_close_lets_requests_in_flight_finish() -> None:
    echo = Echo()
    echo.gate = asyncio.Event()
    http = HTTPServer(echo, max_body_bytes=lambda: 1000)
    port = await http.start("127.0.0.1", 0)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n")
        while not echo.requests:
            await asyncio.sleep(0.01)
        closing = asyncio.create_task(http.close(grace=30))
        await asyncio.sleep(0)
        assert not closing.done(), "close waits for the request in flight"
        echo.gate.set()
        raw = await asyncio.wait_for(reader.read(), 10)
        [(status, headers, _)] = responses(raw)
        assert (status, headers["connection"]) == (200, "close"), (
            "answered, then closed: the server is stopping"
        )
        await asyncio.wait_for(closing, 10)
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port)
    finally:
        writer.close()


async def test_idle_and_slow_clients_are_disconnected() -> None:
    echo = Echo()
    http = HTTPServer(echo, max_body_bytes=lambda: 1000, keepalive_timeout=0.2, request_timeout=0.2)
    port = await http.start("127.0.0.1", 0)
    try:
        # Idle after one answered request.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n")
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        await asyncio.wait_for(reader.read(), 10)  # returns once the server closes
        writer.close()
        # A request head that never completes (slowloris).
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /b HTTP/1.1\r\nHost: h\r\n")
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
        assert len(echo.requests) == 1
    finally:
        await http.close(grace=1)


async def test_a_flood_of_pipelined_requests_is_answered_in_full(server) -> None:
    """More pipelined input than the server buffers: it pauses reading, then catches up."""
    echo, port = server
    count = 3000
    flood = (
        b"GET /p HTTP/1.1\r\nHost: h\r\n\r\n" * (count - 1) + b"GET /p HTTP/1.1\r\nConnection: close\r\n\r\n"
    )
    raw = await exchange(port, flood)
    answers = responses(raw)
    assert len(answers) == count
    assert answers[-1][1]["x-seen"] == str(count)
    assert len(echo.requests) == count


class _Transport:
    """A transport that records what the protocol writes (no socket: reads arrive exactly as fed)."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str) -> object:
        return ("127.0.0.1", 1234) if name == "peername" else None

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


async def feed_reads(reads: list[bytes], limit: int = 100_000) -> tuple[Echo, bytes]:
    """Feed the protocol these reads one by one, as the event loop would; return what it answered."""
    from arbiter.router.http import _Connection

    echo = Echo()
    server = HTTPServer(echo, max_body_bytes=lambda: limit, on_rejected=echo.rejected.append)
    connection = _Connection(server)
    transport = _Transport()
    connection.connection_made(transport)  # type: ignore[arg-type]
    for read in reads:
        connection.data_received(read)
        while connection.busy:
            await asyncio.sleep(0)
    return echo, bytes(transport.written)


async def test_a_body_that_ends_in_a_large_read_is_not_taken_for_stray_bytes() -> None:
    body = b"x" * 50_000
    head = b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % len(body)
    echo, written = await feed_reads([head + body[:10], body[10:], b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n"])
    assert [json.loads(b)["target"] for _, _, b in responses(written)] == ["/p", "/next"]
    assert echo.requests[0].body == body
    assert not echo.rejected


async def test_empty_lines_between_requests_are_tolerated_but_not_forever() -> None:
    request = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n"
    echo, written = await feed_reads([request, b"\r\n" * 10, request])
    assert [status for status, _, _ in responses(written)] == [200, 200], "RFC 9112 2.2: a few are fine"
    echo, written = await feed_reads([request] + [b"\r\n" * 100] * 6)
    assert [status for status, _, _ in responses(written)] == [200, 400]
    assert echo.rejected == [400]
