"""`arbiter router` as a real process under hostile input: smuggling, fuzzing, and what it logs.

Everything is sent as raw bytes over loopback to a running router in front of a real model-server
process. The claims: a framing the router cannot be sure of (request smuggling: both
Content-Length and Transfer-Encoding, repeated lengths, obsolete line folding, whitespace before a
colon, bad chunk sizes, oversized heads) is refused with an error status and the connection
closed, and never reaches the model; no input makes it answer 500, hang, reset the connection or
log a traceback; it keeps serving afterwards; and it never writes credentials or request bodies
to its log.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from router_process_support import Process, free_port, metric, model_server_processes, start_router

from helpers import wait_for

# Statuses the router itself answers a request it refuses with (its model server answers 200).
REFUSALS = {400, 413, 417, 431, 501, 505}
STATUS = re.compile(rb"HTTP/1\.1 (\d{3}) ")
SECRET_TOKEN = "Bearer tok-5ecret-a1b2c3"
SECRET_BODY = '{"ssn": "999-88-7777", "card": "4111111111111111"}'


@dataclass
class RunningRouter:
    process: Process
    port: int
    metrics_url: str

    def upstream_requests(self) -> float:
        """Requests the router has answered from the model server (any status)."""
        return metric(self.metrics_url, "arbiter_router_requests_total", variant="v1")


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRouter]:
    tmp_path = tmp_path_factory.mktemp("router-hardening")
    with model_server_processes(tmp_path, {"v1": 0.5, "v2": 0.5}) as urls:
        config = tmp_path / "routes.yaml"
        # v2 is a shadow: every served request is also mirrored and compared (more code under fuzz).
        config.write_text(
            "experiment: hardening\nvariants:\n"
            f"  - {{name: v1, url: '{urls['v1']}', weight: 1}}\n"
            f"  - {{name: v2, url: '{urls['v2']}', weight: 0}}\n"
            "stickiness: {header: x-user-id}\n"
            "shadow: {variant: v2, percent: 100}\n"
            "limits: {maxBodyBytes: 100000}\n"
        )
        process, proxy, metrics_url = start_router("--config", str(config), "--log-level", "DEBUG")
        try:
            yield RunningRouter(process, int(proxy.rsplit(":", 1)[1]), metrics_url)
        finally:
            code = process.stop()
        assert code == 0, process.log()


@dataclass
class Exchange:
    raw: bytes
    reset: bool

    @property
    def statuses(self) -> list[int]:
        return [int(code) for code in STATUS.findall(self.raw)]


def send(port: int, data: bytes, timeout: float = 15.0) -> Exchange:
    """Send `data`, half-close, and read until the router closes (a timeout fails the test)."""
    chunks: list[bytes] = []
    reset = False
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            reset = True  # refused before we finished sending; what it answered is still readable
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                reset = True
                break
            except TimeoutError:
                raise AssertionError(f"the router neither answered nor closed: {data[:200]!r}") from None
            if not chunk:
                break
            chunks.append(chunk)
    return Exchange(b"".join(chunks), reset)


def assert_still_serving(router: RunningRouter) -> None:
    answer = send(router.port, b"GET /health-probe HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    assert answer.statuses == [200], answer.raw[:300]
    assert router.process.popen.poll() is None, router.process.log()


def assert_no_crash_logged(router: RunningRouter) -> None:
    log = router.process.log()
    assert "Traceback" not in log and "handler failed" not in log, log[-3000:]


POST = b"POST /predict HTTP/1.1\r\nHost: h\r\n"
SMUGGLING = {
    "content-length and transfer-encoding": POST
    + b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG",
    "transfer-encoding then content-length": POST
    + b"Transfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n0\r\n\r\nG",
    "te and cl in odd case": POST + b"tRaNsFeR-eNcOdInG: chunked\r\ncOnTeNt-LeNgTh: 4\r\n\r\n0\r\n\r\n",
    "conflicting content-lengths": POST + b"Content-Length: 3\r\nContent-Length: 40\r\n\r\nabc",
    "repeated equal content-length": POST + b"Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
    "content-length list": POST + b"Content-Length: 3, 3\r\n\r\nabc",
    "signed content-length": POST + b"Content-Length: +3\r\n\r\nabc",
    "negative content-length": POST + b"Content-Length: -1\r\n\r\n",
    "hex content-length": POST + b"Content-Length: 0x3\r\n\r\nabc",
    "content-length overflow": POST + b"Content-Length: 99999999999999999999999\r\n\r\n",
    "space before colon (te)": POST + b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    "space before colon (cl)": POST + b"Content-Length : 3\r\n\r\nabc",
    "tab before colon": POST + b"Transfer-Encoding\t: chunked\r\n\r\n0\r\n\r\n",
    "obs-fold": b"GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n folded\r\n\r\n",
    "obs-fold with tab": b"GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n\tfolded\r\n\r\n",
    "obs-fold of transfer-encoding": POST + b"Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
    "obs-fold in a trailer": POST + b"Transfer-Encoding: chunked\r\n\r\n0\r\nX: 1\r\n folded\r\n\r\n",
    "transfer-encoding twice": POST
    + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "chunked, chunked": POST + b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
    "unknown transfer coding": POST + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    "chunked not last": POST + b"Transfer-Encoding: chunked, identity\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "transfer-encoding in http/1.0": b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "vertical tab in transfer-encoding": POST + b"Transfer-Encoding: \x0bchunked\r\n\r\n0\r\n\r\n",
    "bad chunk size": POST + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    "negative chunk size": POST + b"Transfer-Encoding: chunked\r\n\r\n-3\r\nabc\r\n0\r\n\r\n",
    "0x chunk size": POST + b"Transfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n0\r\n\r\n",
    "space after chunk size": POST + b"Transfer-Encoding: chunked\r\n\r\n3 \r\nabc\r\n0\r\n\r\n",
    "chunk size overflow": POST + b"Transfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nabc\r\n0\r\n\r\n",
    "chunk longer than its size": POST + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabcdef\r\n0\r\n\r\n",
    "bare LF after chunk size": POST + b"Transfer-Encoding: chunked\r\n\r\n3\nabc\n0\n\n",
    "NUL in chunk extension": POST + b"Transfer-Encoding: chunked\r\n\r\n3;\x00\r\nabc\r\n0\r\n\r\n",
    "bare LF line endings": b"GET / HTTP/1.1\nHost: h\n\n",
    "bare CR in a header": b"GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n",
    "NUL in a header": b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x00b\r\n\r\n",
    "header name with a bracket": b"GET / HTTP/1.1\r\nHost: h\r\nX[: 1\r\n\r\n",
    "space in the target": b"GET /a b HTTP/1.1\r\nHost: h\r\n\r\n",
    "unknown method": b"SMUGGLE / HTTP/1.1\r\nHost: h\r\n\r\n",
    "http/0.9": b"GET /\r\n\r\n",
    "http/1.2": b"GET / HTTP/1.2\r\nHost: h\r\n\r\n",
    "http/2.0 over http/1 framing": b"GET / HTTP/2.0\r\nHost: h\r\n\r\n",
    "connect": b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n",
    "asterisk target": b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
    "upgrade with a body": b"POST / HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nUpgrade: h2c\r\n"
    b"Content-Length: 3\r\n\r\nabc",
    "unsupported expect": POST + b"Expect: 200-ok\r\nContent-Length: 3\r\n\r\nabc",
    "a flood of empty lines": b"\r\n" * 2000,
    "oversized header": b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + b"x" * 70_000 + b"\r\n\r\n",
    "oversized target": b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: h\r\n\r\n",
    "too many headers": b"GET / HTTP/1.1\r\nHost: h\r\n"
    + b"".join(b"X-%d: 1\r\n" % i for i in range(200))
    + b"\r\n",
    "oversized trailers": POST
    + b"Transfer-Encoding: chunked\r\n\r\n0\r\nX-T: "
    + b"t" * 70_000
    + b"\r\n\r\n",
    "body over the limit by length": POST + b"Content-Length: 200000\r\n\r\n" + b"x" * 200_000,
    "body over the limit by chunks": POST
    + b"Transfer-Encoding: chunked\r\n\r\n"
    + (b"8000\r\n" + b"x" * 0x8000 + b"\r\n") * 4
    + b"0\r\n\r\n",
}


@pytest.mark.parametrize("request_bytes", list(SMUGGLING.values()), ids=list(SMUGGLING))
def test_ambiguous_framing_is_refused_and_never_reaches_the_model(
    router: RunningRouter, request_bytes: bytes
) -> None:
    before = router.upstream_requests()
    answer = send(router.port, request_bytes)
    assert len(answer.statuses) == 1 and answer.statuses[0] in REFUSALS, answer.raw[:300]
    head = answer.raw.split(b"\r\n\r\n", 1)[0].lower()
    assert b"\r\nconnection: close" in head, "a refusal closes the connection"
    assert not answer.reset, "closed cleanly: the client can read the refusal"
    assert router.upstream_requests() == before, "nothing reached the model server"
    assert_still_serving(router)


def test_a_smuggled_request_after_a_good_one_is_refused_alone(router: RunningRouter) -> None:
    """Pipelined: the good request is answered, the ambiguous one refused, nothing after it read."""
    before = router.upstream_requests()
    answer = send(
        router.port,
        b"GET /first HTTP/1.1\r\nHost: h\r\n\r\n"
        + POST
        + b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        + b"GET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n",
    )
    assert answer.statuses == [200, 400], answer.raw[:500]
    assert router.upstream_requests() == before + 1, "only /first reached the model"


def test_an_absolute_url_target_is_sent_upstream_as_a_path(router: RunningRouter) -> None:
    """RFC 9112 3.2.2: servers accept absolute-form; the model must never be asked to proxy."""
    answer = send(
        router.port, b"GET http://evil.example/steal?x=1 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
    )
    assert answer.statuses == [200]


def test_a_truncated_request_is_dropped_without_an_answer(router: RunningRouter) -> None:
    before = router.upstream_requests()
    answer = send(router.port, POST + b"Content-Length: 10\r\n\r\nabc")
    assert answer.raw == b"" and not answer.reset
    assert router.upstream_requests() == before


# Pieces a mutated request is assembled from: the valid grammar and the tokens smuggling uses.
FRAGMENTS = [
    b"GET",
    b"POST",
    b"HEAD",
    b"OPTIONS",
    b" ",
    b"/",
    b"/predict?x=1",
    b"*",
    b"http://h/",
    b" HTTP/1.1",
    b" HTTP/1.0",
    b" HTTP/2.0",
    b"\r\n",
    b"\n",
    b"\r",
    b"\r\n\r\n",
    b"Host: h",
    b"Content-Length: ",
    b"Content-Length: 3",
    b"Content-Length: 0",
    b"Transfer-Encoding: chunked",
    b"Transfer-Encoding: gzip, chunked",
    b"Connection: close",
    b"Connection: keep-alive, Upgrade",
    b"Upgrade: websocket",
    b"Expect: 100-continue",
    b"x-user-id: u1",
    b"Cookie: uid=1",
    b" : ",
    b":",
    b"\t",
    b"0\r\n\r\n",
    b"3\r\nabc\r\n",
    b"3;ext=1\r\n",
    b"ffffffff\r\n",
    b"-1",
    b"abc",
    b"\x00",
    b"\xff",
    b"%00",
]
mutated_requests = st.lists(
    st.one_of(st.sampled_from(FRAGMENTS), st.binary(max_size=8)), min_size=1, max_size=30
).map(b"".join)
well_formed_prefix = st.sampled_from(
    [
        b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n",
        b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n{}",
        b"POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        b"",
    ]
)


@settings(
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    st.one_of(
        st.binary(max_size=300),
        mutated_requests,
        st.tuples(well_formed_prefix, mutated_requests).map(b"".join),
    )
)
def test_no_input_crashes_hangs_or_breaks_the_router(router: RunningRouter, data: bytes) -> None:
    answer = send(router.port, data)
    assert not answer.reset, f"connection reset for {data!r}"
    for status in answer.statuses:
        # 200 (or another status) from the model server, or the router's own refusal; 500 would be
        # a crash in the handler, 502/504 an upstream the router broke.
        assert status == 200 or status in REFUSALS, (status, data, answer.raw[:300])
    assert router.process.popen.poll() is None, router.process.log()[-3000:]


json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**80), max_value=2**80),
        st.floats(allow_nan=False),
        st.text(max_size=20),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
feedback_documents = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {},
        optional={
            "key": json_values | st.sampled_from(["user-1", ""]),
            "requestId": json_values | st.sampled_from(["req-1", ""]),
            "success": json_values,
            "value": json_values | st.sampled_from([1.5, -2, 1e308, 10**400, -(10**400)]),
        },
    ),
)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(feedback_documents)
def test_any_feedback_document_gets_an_answer_not_a_crash(router: RunningRouter, document: object) -> None:
    body = json.dumps(document).encode()
    answer = send(
        router.port,
        b"POST /feedback HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
        + body,
    )
    # 200 attributed, 400 malformed, 404 unknown requestId without a key (the routes are sticky, so
    # no 409); never a 500.
    assert len(answer.statuses) == 1 and answer.statuses[0] in {200, 400, 404}, (document, answer.raw[:300])


def test_the_router_survived_the_fuzzing(router: RunningRouter) -> None:
    """Runs after the fuzz test in this module: still serving, and no traceback was ever logged."""
    assert_still_serving(router)
    assert_no_crash_logged(router)


def test_credentials_and_bodies_never_reach_the_log(tmp_path: Path) -> None:
    """At DEBUG, through served, refused and retried requests and feedback, secrets stay out of the log.

    The challenger listens nowhere, so nearly every request fails there first and is retried on
    the champion: the path that logs a warning per request.
    """
    with model_server_processes(tmp_path, {"v1": 0.5}) as urls:
        config = tmp_path / "routes.yaml"
        config.write_text(
            "experiment: secrets\nvariants:\n"
            f"  - {{name: v1, url: '{urls['v1']}', weight: 1}}\n"
            f"  - {{name: dead, url: 'http://127.0.0.1:{free_port()}', weight: 1000}}\n"
            "stickiness: {header: x-user-id}\n"
        )
        process, proxy, _ = start_router("--config", str(config), "--log-level", "DEBUG")
        port = int(proxy.rsplit(":", 1)[1])
        try:
            secret_headers = (
                f"Authorization: {SECRET_TOKEN}\r\nProxy-Authorization: Basic c2VjcmV0OnB3\r\n"
                "Cookie: session=sess-5ecret-cookie\r\nX-Api-Key: key-5ecret\r\nx-user-id: user-5ecret\r\n"
            ).encode()
            body = SECRET_BODY.encode()
            length = b"Content-Length: %d\r\n" % len(body)
            requests = [
                b"POST /predict?token=qs-5ecret HTTP/1.1\r\nHost: h\r\n"
                + secret_headers
                + length
                + b"Connection: close\r\n\r\n"
                + body,
                # Refused while parsing: refusals are where errors are reported.
                b"POST /predict HTTP/1.1\r\nHost: h\r\n"
                + secret_headers
                + length
                + b"Transfer-Encoding: chunked\r\n\r\n"
                + body,
                b"POST /predict HTTP/1.1\r\nHost: h\r\n"
                + secret_headers
                + b"Content-Length: 2000000\r\n\r\n",
                b"POST /feedback HTTP/1.1\r\nHost: h\r\n"
                + secret_headers
                + length
                + b"Connection: close\r\n\r\n"
                + body,
            ]
            statuses = [send(port, request).statuses for request in requests]
            assert statuses == [[200], [400], [413], [400]], statuses
            wait_for(
                lambda: process.find(r"retrying on champion"),
                timeout=10,
                message="the retry warning (the log path under test)",
            )
        finally:
            code = process.stop()
        assert code == 0
    log = process.log()
    for secret in ("5ecret", "c2VjcmV0OnB3", "999-88-7777", "4111111111111111"):
        assert secret not in log, f"{secret!r} appears in the router's log:\n{log[-3000:]}"
