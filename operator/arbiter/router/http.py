"""A small HTTP/1.1 server on raw asyncio protocols and llhttp, for the router's proxy port.

Requests are parsed by llhttp (through `httptools`, the parser Node.js and uvicorn use), which is
strict about framing: Content-Length together with Transfer-Encoding, duplicate Content-Length,
obsolete line folding, whitespace before a colon, bad chunk sizes and bytes outside the grammar are
errors (RFC 9112; no request smuggling). Around it this module keeps what a reverse proxy needs:
buffered request bodies (Content-Length or chunked) with a size limit enforced while reading,
limits on the request head, keep-alive and pipelining (answered in order, one at a time),
`Expect: 100-continue`, idle and slow-header timeouts. Every refusal is an error status and a
closed connection. Measured on the benchmark machine, aiohttp's server spends about three times as
much CPU per request as this one; the metrics port stays on aiohttp.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import cast

import httptools

__all__ = ["HTTPRequest", "HTTPResponse", "HTTPServer"]

log = logging.getLogger("arbiter.router.http")

MAX_HEAD_BYTES = 64 * 1024
MAX_HEADERS = 128
_NO_BODY_STATUS = frozenset({204, 304})


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


def _origin_form(target: bytes) -> bytes | None:
    """The path and query of an absolute-form target (RFC 9112 section 3.2.2); None for others.

    Only origin-form (`/path?query`) goes upstream: an absolute URL passed on as it came would ask
    the model server to act as a proxy to any host; `*` and CONNECT's authority-form mean nothing here.
    """
    scheme, sep, rest = target.partition(b"://")
    if not sep or scheme.lower() not in (b"http", b"https"):
        return None
    slash = rest.find(b"/")
    query = rest.find(b"?")
    if slash < 0 or (0 <= query < slash):
        return b"/" + rest[query:] if query >= 0 else b"/"
    return rest[slash:]


def _parser_error(exc: httptools.HttpParserError) -> _BadRequest:
    """Turn llhttp's verdict into the answer: 505 for a version we do not speak, else 400."""
    message = str(exc) or type(exc).__name__
    if "HTTP version" in message:
        return _BadRequest(505, "HTTP version not supported")
    return _BadRequest(400, f"bad request: {message}")


class _Connection(asyncio.Protocol):
    """One client connection: llhttp parses, this class frames, limits and answers.

    The parser runs ahead of the handler: complete pipelined requests wait in `_queue` (with a
    refusal in their place when one is malformed) and are answered strictly in order, one at a time.
    The httptools callbacks (`on_*`) build the request in progress; a callback raises `_BadRequest`
    to stop the parser, which is how limits and the checks llhttp does not make refuse a request.
    """

    __slots__ = (
        "_body",
        "_body_limit",
        "_body_size",
        "_broken",
        "_busy",
        "_chunked",
        "_connection_header",
        "_continue_pending",
        "_declared_body",
        "_draining",
        "_eof",
        "_expect",
        "_fed",
        "_head_bytes",
        "_head_done",
        "_headers",
        "_idle_bytes",
        "_in_message",
        "_last_active",
        "_length",
        "_loop",
        "_parser",
        "_paused",
        "_queue",
        "_queued_bytes",
        "_rejection",
        "_server",
        "_started_in_feed",
        "_transport",
        "_url",
        "peer",
    )

    def __init__(self, server: HTTPServer) -> None:
        self._server = server
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._queue: deque[HTTPRequest | _BadRequest] = deque()
        self._queued_bytes = 0
        self._busy = False
        self._last_active = self._loop.time()
        self._body_limit = 0
        self._draining = False
        self._broken = False
        self._eof = False
        self._paused = False
        self._rejection: _BadRequest | None = None
        self._started_in_feed = False
        self._continue_pending = False
        self._declared_body = False
        self._idle_bytes = 0
        self.peer = ""
        self._reset_message()
        self._in_message = False

    def _reset_message(self) -> None:
        self._url: list[bytes] = []
        self._headers: list[tuple[str, str]] = []
        self._body: list[bytes] = []
        self._body_size = 0
        self._head_bytes = 0
        self._fed = 0
        self._head_done = False
        self._length: int | None = None
        self._chunked = False
        self._connection_header = ""
        self._expect = ""

    # asyncio protocol ----------------------------------------------------------------------------

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
        if self._draining or self._broken:
            return
        self._last_active = self._loop.time()
        self._feed(data)
        self._pump()
        overfull = self._busy and self._queued_bytes > MAX_HEAD_BYTES + self._body_limit
        if overfull and self._transport is not None and not self._paused:
            # A client pipelining faster than we answer: stop reading until we catch up.
            self._transport.pause_reading()
            self._paused = True

    def eof_received(self) -> bool | None:
        # Half-closed by the client: answer what is complete, then close.
        self._eof = True
        if not self._busy and not self._queue:
            self.close()
        return True

    # parsing -------------------------------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        """Run llhttp over `data`; complete requests and refusals land in `_queue`."""
        in_message_before = self._in_message
        self._started_in_feed = False
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._upgrade()
            return
        except httptools.HttpParserError as exc:
            rejection = self._rejection or _parser_error(exc)
            self._reject(rejection)
            return
        if not self._in_message:
            if not in_message_before and not self._started_in_feed:
                # llhttp skips empty lines between requests; a client sending nothing else must
                # not hold the connection open with them forever.
                self._idle_bytes += len(data)
                if self._idle_bytes > 1024:
                    self._reject(_BadRequest(400, "stray bytes between requests"))
            return
        # What llhttp holds inside a header line is not visible to the callbacks; bound it by
        # counting the bytes of every read that belonged wholly to the message in progress.
        if in_message_before and not self._started_in_feed:
            self._fed += len(data)
        if not self._head_done:
            if self._fed > MAX_HEAD_BYTES:
                self._reject(_BadRequest(431, "request head too large"))
        elif self._fed - self._body_size > 2 * MAX_HEAD_BYTES + self._body_size:
            # Chunk size lines and trailers beyond reason: 128 KiB plus as much as the body itself
            # (chunks of 8 bytes or more never reach it; a megabyte in one-byte chunks does).
            self._reject(_BadRequest(400, "too much chunk framing"))

    def _reject(self, rejection: _BadRequest) -> None:
        self._broken = True
        self._continue_pending = False
        self._queue.append(rejection)

    def _upgrade(self) -> None:
        # llhttp stops at a protocol upgrade (or CONNECT) after the head, skipping any body. The
        # router switches no protocols: such a request is served as an ordinary one and the
        # connection closed after it; one that announced a body is refused rather than cut short.
        self._broken = True
        if not self._queue or isinstance(self._queue[-1], _BadRequest):
            return
        request = self._queue[-1]
        if self._declared_body:
            self._queue[-1] = _BadRequest(400, "a protocol upgrade with a body is not supported")
        else:
            request.keep_alive = False

    def _limit_head(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > MAX_HEAD_BYTES:
            raise self._fail_parse(431, "request head too large")

    def _fail_parse(self, status: int, message: str) -> _BadRequest:
        self._rejection = _BadRequest(status, message)
        return self._rejection

    # httptools callbacks (called from inside feed_data) -------------------------------------------

    def on_message_begin(self) -> None:
        self._idle_bytes = 0
        self._reset_message()
        self._in_message = True
        self._started_in_feed = True
        self._body_limit = self._server.max_body_bytes()

    def on_url(self, url: bytes) -> None:
        self._limit_head(len(url))
        self._url.append(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        # The hot path: one call per header line, so the head limit is checked inline.
        size = self._head_bytes + len(name) + len(value) + 4
        self._head_bytes = size
        if size > MAX_HEAD_BYTES:
            raise self._fail_parse(431, "request head too large")
        if self._head_done:
            return  # a trailer after a chunked body: read and dropped
        headers = self._headers
        if len(headers) >= MAX_HEADERS:
            raise self._fail_parse(431, "too many headers")
        key = name.decode("latin-1")
        text = value.decode("latin-1").rstrip(" \t")  # llhttp drops the leading whitespace
        lower = key.lower()
        if lower == "content-length":
            self._length = int(text)  # llhttp has checked: digits only, not repeated
        elif lower == "transfer-encoding":
            if text.rsplit(",", 1)[-1].strip().lower() != "chunked":
                raise self._fail_parse(501, "unsupported Transfer-Encoding")
            self._chunked = True
        elif lower == "connection":
            self._connection_header += "," + text.lower()
        elif lower == "expect":
            self._expect = text.lower()
            return  # answered here (hop by hop); the upstream gets the body at once
        headers.append((key, text))

    def on_headers_complete(self) -> None:
        self._head_done = True
        self._head_bytes = 0  # trailers get their own allowance
        version = self._parser.get_http_version()
        if version not in ("1.1", "1.0"):
            raise self._fail_parse(505, "HTTP version not supported")
        if self._chunked and version == "1.0":
            # RFC 9112 section 6.1: Transfer-Encoding in HTTP/1.0 is faulty framing.
            raise self._fail_parse(400, "Transfer-Encoding in an HTTP/1.0 request")
        target = b"".join(self._url)
        if not target.startswith(b"/"):
            path = _origin_form(target)
            if path is None:
                raise self._fail_parse(400, "the request target must be a path or an http(s) URL")
            self._url = [path]
        limit = self._body_limit
        if self._length is not None and self._length > limit:
            raise self._fail_parse(413, f"request body over {limit} bytes")
        if self._expect:
            if self._expect != "100-continue":
                raise self._fail_parse(417, "unsupported Expect")
            self._continue_pending = version == "1.1"

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self._body_limit:
            raise self._fail_parse(413, f"request body over {self._body_limit} bytes")
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._in_message = False
        self._continue_pending = False
        version = self._parser.get_http_version()
        if self._connection_header:
            tokens = {t.strip() for t in self._connection_header.split(",")}
            keep_alive = "keep-alive" in tokens if version == "1.0" else "close" not in tokens
        else:
            keep_alive = version == "1.1"
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        request = HTTPRequest(
            self._parser.get_method().decode("ascii"),
            b"".join(self._url).decode("latin-1"),
            version,
            self._headers,
            body,
            self.peer,
            keep_alive,
        )
        self._queue.append(request)
        self._queued_bytes += len(body) + 512
        self._declared_body = bool(self._length or self._chunked)
        # The next on_message_begin resets the per-message state.

    # dispatch ------------------------------------------------------------------------------------

    def _pump(self) -> None:
        """Start the next queued request (or refusal) unless one is being answered."""
        if self._busy or self._transport is None:
            return
        if not self._queue:
            self._maybe_continue()
            return
        item = self._queue.popleft()
        if isinstance(item, _BadRequest):
            self._queue.clear()
            self._server._rejected(item.status)
            self._fail(item.status, str(item))
            return
        self._queued_bytes = max(0, self._queued_bytes - len(item.body) - 512)
        self._busy = True
        self._loop.create_task(self._serve(item))

    def _maybe_continue(self) -> None:
        # Only once the connection is ours to write on: a 100 sent while an earlier response is
        # pending would be read as the start of that response.
        if self._continue_pending and self._transport is not None and self._in_message:
            self._continue_pending = False
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    # serving -------------------------------------------------------------------------------------

    async def _serve(self, request: HTTPRequest) -> None:
        try:
            response = await self._server.handler(request)
        except Exception:
            # The path only: a query string may carry a token, and headers and body are never logged.
            log.exception("handler failed for %s %s", request.method, request.path)
            response = HTTPResponse(
                500, b'{"error": "internal error"}', [("Content-Type", "application/json")]
            )
        more = bool(self._queue) or (self._in_message and not self._broken)
        keep_alive = request.keep_alive and not self._server.closing and (more or not self._eof)
        self._write(request, response, keep_alive)
        self._busy = False
        self._last_active = self._loop.time()
        if not keep_alive:
            self.close()
            return
        if self._transport is not None:
            if self._paused and not self._queue:
                self._paused = False
                self._transport.resume_reading()
            self._pump()
            if self._eof and not self._busy and not self._queue and self._transport is not None:
                self.close()

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
        if self._paused:
            # Read (and drop) what the client still sends, or the lingering close cannot work.
            self._paused = False
            transport.resume_reading()
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
        return self._in_message or bool(self._queue)


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
