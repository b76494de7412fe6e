"""A small HTTP/1.1 server on raw asyncio protocols, for the router's proxy port.

Measured on the benchmark machine, aiohttp's server spends about three times as much CPU per
request as this one, and the proxy port is the router's hot path (the metrics port stays on
aiohttp). It implements what a reverse proxy needs and nothing more: buffered request bodies
(Content-Length or chunked) with a size limit enforced while reading, keep-alive and pipelining
(one request at a time per connection), `Expect: 100-continue`, limits on the request head, idle
and slow-header timeouts, and strict framing rules against request smuggling (RFC 9112 section
6.3: Content-Length together with Transfer-Encoding, or conflicting lengths, is an error).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import cast

__all__ = ["HTTPRequest", "HTTPResponse", "HTTPServer"]

log = logging.getLogger("arbiter.router.http")

MAX_HEAD_BYTES = 64 * 1024
MAX_HEADERS = 128
_NO_BODY_STATUS = frozenset({204, 304})
_TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


@dataclass(slots=True)
class HTTPRequest:
    """One complete request.

    Args:
        method: e.g. `POST`.
        target: the request target as sent: path and query, still percent-encoded.
        version: `1.1` or `1.0`.
        headers: (name, value) pairs in the order received, names as sent.
        body: the whole body, de-chunked.
        peer: the client's IP address.
        keep_alive: whether the client wants the connection kept open after the response.
    """

    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes
    peer: str
    keep_alive: bool = True
    _lower: dict[str, str] | None = None

    @property
    def path(self) -> str:
        """The target without its query string."""
        return self.target.split("?", 1)[0]

    def header(self, name: str) -> str | None:
        """The value of header `name` (lower-case), the last one if repeated; None if absent."""
        lower = self._lower
        if lower is None:
            lower = self._lower = {k.lower(): v for k, v in self.headers}
        return lower.get(name)

    def cookie(self, name: str) -> str | None:
        """The value of cookie `name` from the Cookie header(s), or None."""
        for key, value in self.headers:
            if key.lower() != "cookie":
                continue
            for pair in value.split(";"):
                cookie_name, sep, cookie_value = pair.strip().partition("=")
                if sep and cookie_name == name:
                    return cookie_value.strip().strip('"')
        return None


@dataclass(slots=True)
class HTTPResponse:
    """A complete response; `Content-Length` and `Connection` are added when it is written."""

    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    reason: str = ""


Handler = Callable[[HTTPRequest], Awaitable[HTTPResponse]]


@dataclass(slots=True)
class _Head:
    """A parsed request head whose body may still be arriving."""

    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    length: int  # -1: chunked
    keep_alive: bool
    expect_continue: bool


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _simple(status: int, message: str) -> bytes:
    body = json.dumps({"error": message}).encode()
    return (
        f"HTTP/1.1 {status} {_reason(status)}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


class _Connection(asyncio.Protocol):
    __slots__ = (
        "_body_limit",
        "_buffer",
        "_busy",
        "_continue_sent",
        "_draining",
        "_eof",
        "_head",
        "_last_active",
        "_loop",
        "_paused",
        "_server",
        "_transport",
        "peer",
    )

    def __init__(self, server: HTTPServer) -> None:
        self._server = server
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._busy = False
        self._head: _Head | None = None
        self._continue_sent = False
        self._last_active = self._loop.time()
        self._body_limit = 0
        self._draining = False
        self._eof = False
        self._paused = False
        self.peer = ""

    # protocol ------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, hence the cast.
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        self._server._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server._connections.discard(self)
        self._transport = None

    def data_received(self, data: bytes) -> None:
        if self._draining:
            return
        self._last_active = self._loop.time()
        self._buffer += data
        if not self._busy:
            self._advance()
        elif len(self._buffer) > MAX_HEAD_BYTES + self._body_limit and self._transport is not None:
            # A client pipelining faster than we answer: stop reading until we catch up.
            self._transport.pause_reading()
            self._paused = True

    def eof_received(self) -> bool | None:
        # Half-closed by the client: answer what is in flight, then close.
        self._eof = True
        if not self._busy:
            self.close()
        return True

    # parsing -------------------------------------------------------------------------------------

    def _advance(self) -> None:
        """Parse as far as the buffer allows; start the handler when a request is complete."""
        try:
            request = self._parse()
        except _BadRequest as exc:
            self._server._rejected(exc.status)
            self._fail(exc.status, str(exc))
            return
        if request is not None:
            self._busy = True
            self._loop.create_task(self._serve(request))

    def _parse(self) -> HTTPRequest | None:
        buffer = self._buffer
        if self._head is None:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_HEAD_BYTES:
                    raise _BadRequest(431, "request head too large")
                return None
            if end > MAX_HEAD_BYTES:
                raise _BadRequest(431, "request head too large")
            raw_head = bytes(buffer[:end])
            del buffer[: end + 4]
            self._head = self._parse_head(raw_head)
            self._continue_sent = False
        head = self._head
        if head.length >= 0:
            if len(buffer) < head.length:
                self._maybe_continue()
                return None
            body = bytes(buffer[: head.length])
            del buffer[: head.length]
        else:
            maybe_body = self._parse_chunked()
            if maybe_body is None:
                self._maybe_continue()
                return None
            body = maybe_body
        self._head = None
        return HTTPRequest(
            head.method, head.target, head.version, head.headers, body, self.peer, head.keep_alive
        )

    def _parse_head(self, head: bytes) -> _Head:
        try:
            text = head.decode("latin-1")
        except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
            raise _BadRequest(400, "undecodable request head") from None
        lines = text.split("\r\n")
        # RFC 9112 section 2.2: ignore at least one empty line before the request line.
        while lines and not lines[0]:
            lines.pop(0)
        if not lines:
            raise _BadRequest(400, "empty request")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/") or not parts[0] or not parts[1]:
            raise _BadRequest(400, "bad request line")
        method, target, protocol = parts
        if not set(method) <= _TOKEN_CHARS:
            raise _BadRequest(400, "bad method")
        version = protocol[5:]
        if version not in ("1.1", "1.0"):
            raise _BadRequest(505, "HTTP version not supported")
        if len(lines) - 1 > MAX_HEADERS:
            raise _BadRequest(431, "too many headers")
        headers: list[tuple[str, str]] = []
        length: int | None = None
        chunked = False
        has_transfer_encoding = False
        connection = ""
        expect = ""
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or not set(name) <= _TOKEN_CHARS:
                # Also rejects obsolete line folding and whitespace before the colon (RFC 9112 5.1).
                raise _BadRequest(400, "bad header line")
            value = value.strip(" \t")
            lower = name.lower()
            if lower == "content-length":
                if not value.isdigit() or (length is not None and int(value) != length):
                    raise _BadRequest(400, "bad Content-Length")
                length = int(value)
            elif lower == "transfer-encoding":
                has_transfer_encoding = True
                codings = [c.strip().lower() for c in value.split(",")]
                if codings[-1] != "chunked" or chunked:
                    raise _BadRequest(501, "unsupported Transfer-Encoding")
                chunked = True
            elif lower == "connection":
                connection = f"{connection},{value.lower()}" if connection else value.lower()
            elif lower == "expect":
                expect = value.lower()
            headers.append((name, value))
        if has_transfer_encoding and length is not None:
            raise _BadRequest(400, "both Content-Length and Transfer-Encoding")
        tokens = {t.strip() for t in connection.split(",")} if connection else set()
        keep_alive = "keep-alive" in tokens if version == "1.0" else "close" not in tokens
        limit = self._server.max_body_bytes()
        self._body_limit = limit
        if length is not None and length > limit:
            raise _BadRequest(413, f"request body over {limit} bytes")
        if expect and expect != "100-continue":
            raise _BadRequest(417, "unsupported Expect")
        if expect:
            # Answered here (hop by hop); the upstream gets the body at once.
            headers = [(k, v) for k, v in headers if k.lower() != "expect"]
        return _Head(
            method, target, version, headers, -1 if chunked else (length or 0), keep_alive, bool(expect)
        )

    def _maybe_continue(self) -> None:
        head = self._head
        if self._continue_sent or self._transport is None or head is None:
            return
        if head.expect_continue and head.version == "1.1":
            self._continue_sent = True
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _parse_chunked(self) -> bytes | None:
        """Decode a complete chunked body from the buffer, or return None if it is not all here."""
        buffer = self._buffer
        position = 0
        chunks: list[bytes] = []
        size_total = 0
        limit = self._body_limit
        while True:
            line_end = buffer.find(b"\r\n", position)
            if line_end < 0:
                if len(buffer) - position > 1024:
                    raise _BadRequest(400, "bad chunk size line")
                return None
            size_text = bytes(buffer[position:line_end]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise _BadRequest(400, "bad chunk size") from None
            if size < 0:
                raise _BadRequest(400, "bad chunk size")
            size_total += size
            if size_total > limit:
                raise _BadRequest(413, f"request body over {limit} bytes")
            if size == 0:
                trailer_end = buffer.find(b"\r\n\r\n", line_end)
                if trailer_end < 0:
                    if len(buffer) - line_end > MAX_HEAD_BYTES:
                        raise _BadRequest(431, "trailers too large")
                    return None
                del buffer[: trailer_end + 4]
                return b"".join(chunks)
            start = line_end + 2
            if len(buffer) < start + size + 2:
                return None
            if buffer[start + size : start + size + 2] != b"\r\n":
                raise _BadRequest(400, "bad chunk framing")
            chunks.append(bytes(buffer[start : start + size]))
            position = start + size + 2

    # serving -------------------------------------------------------------------------------------

    async def _serve(self, request: HTTPRequest) -> None:
        try:
            response = await self._server.handler(request)
        except Exception:
            log.exception("handler failed for %s %s", request.method, request.target)
            response = HTTPResponse(
                500, b'{"error": "internal error"}', [("Content-Type", "application/json")]
            )
        keep_alive = request.keep_alive and not self._server.closing and not self._eof
        self._write(request, response, keep_alive)
        self._busy = False
        self._last_active = self._loop.time()
        if not keep_alive:
            self.close()
            return
        if self._transport is not None:
            if self._paused:
                self._paused = False
                self._transport.resume_reading()
            if self._buffer:
                self._advance()

    def _write(self, request: HTTPRequest, response: HTTPResponse, keep_alive: bool) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        status = response.status
        parts = [f"HTTP/1.1 {status} {response.reason or _reason(status)}\r\n"]
        has_length = False
        for name, value in response.headers:
            if name.lower() == "content-length":
                # Kept only for HEAD, where it describes the body a GET would get.
                if request.method != "HEAD":
                    continue
                has_length = True
            parts.append(f"{name}: {value}\r\n")
        body = response.body
        if request.method == "HEAD" or status in _NO_BODY_STATUS or status < 200:
            body = b""
        elif not has_length:
            parts.append(f"Content-Length: {len(body)}\r\n")
        if not keep_alive:
            parts.append("Connection: close\r\n")
        elif request.version == "1.0":
            parts.append("Connection: keep-alive\r\n")
        parts.append("\r\n")
        transport.write("".join(parts).encode("latin-1", "replace") + body)

    def _fail(self, status: int, message: str) -> None:
        """Answer an error and close, reading and dropping what the client still sends for a moment.

        Closing a socket with unread input makes the kernel send a reset, and a client still
        uploading a refused body would see the reset instead of our answer (a "lingering close").
        """
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        transport.write(_simple(status, message))
        self._draining = True
        self._buffer.clear()
        self._head = None
        if transport.can_write_eof():
            transport.write_eof()
        self._loop.call_later(2.0, self.close)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def idle_for(self, now: float) -> float:
        return now - self._last_active

    @property
    def busy(self) -> bool:
        return self._busy

    @property
    def reading_head(self) -> bool:
        return bool(self._buffer) or self._head is not None


class HTTPServer:
    """Serve `handler` on a TCP port.

    Args:
        handler: turns a complete request into a complete response.
        max_body_bytes: returns the request body limit in force (read per request).
        on_rejected: told the status of every request refused before the handler (400, 413, ...).
        keepalive_timeout: seconds an idle keep-alive connection is kept open.
        request_timeout: seconds a client may take to send a whole request once it started one.
    """

    def __init__(
        self,
        handler: Handler,
        *,
        max_body_bytes: Callable[[], int],
        on_rejected: Callable[[int], None] | None = None,
        keepalive_timeout: float = 75.0,
        request_timeout: float = 60.0,
    ) -> None:
        self.handler = handler
        self.max_body_bytes = max_body_bytes
        self._on_rejected = on_rejected
        self.keepalive_timeout = keepalive_timeout
        self.request_timeout = request_timeout
        self.closing = False
        self._connections: set[_Connection] = set()
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None

    def _rejected(self, status: int) -> None:
        if self._on_rejected is not None:
            self._on_rejected(status)

    async def start(self, host: str, port: int) -> int:
        """Listen on host:port (0 picks a free port); return the bound port."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self), host, port, reuse_address=True, backlog=1024
        )
        self._sweeper = asyncio.create_task(self._sweep())
        sockname = self._server.sockets[0].getsockname()
        return int(sockname[1])

    async def _sweep(self) -> None:
        """Close idle keep-alive connections and clients that send a request too slowly."""
        loop = asyncio.get_running_loop()
        interval = min(self.keepalive_timeout, self.request_timeout, 5.0)
        while True:
            await asyncio.sleep(interval)
            now = loop.time()
            for connection in list(self._connections):
                if connection.busy:
                    continue
                limit = self.request_timeout if connection.reading_head else self.keepalive_timeout
                if connection.idle_for(now) > limit:
                    connection.close()

    async def close(self, grace: float = 5.0) -> None:
        """Stop accepting, let requests in flight finish (up to `grace` seconds), then close all."""
        self.closing = True
        if self._server is not None:
            self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        for connection in list(self._connections):
            if not connection.busy:
                connection.close()
        while any(c.busy for c in self._connections) and loop.time() < deadline:
            await asyncio.sleep(0.02)
        for connection in list(self._connections):
            connection.close()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
