"""Call webhook gates over HTTP: one POST of JSON per gate, concurrently, each bounded by its timeout."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from arbiter.k8s.secrets import SecretError, read_secret_key

#: How much longer than its timeout a gate is waited for before it counts as unanswered (the socket
#: timeout bounds each read, not a server that trickles bytes forever).
GRACE_SECONDS = 1.0
#: How much of an answer's body is kept for status and Events.
BODY_PREVIEW = 200


@dataclass(frozen=True)
class GateRequest:
    """One gate to call.

    Attributes:
        name: the gate's name (the key of its answer).
        payload: the JSON body.
        timeout: seconds one call may take.
        url: where to POST; or
        secret: ``(namespace, name, key)`` of the Secret key holding the URL.
    """

    name: str
    payload: Mapping[str, Any]
    timeout: float
    url: str | None = None
    secret: tuple[str, str, str] | None = None


@dataclass(frozen=True)
class GateAnswer:
    """What a gate said: ``passed`` on HTTP 2xx; ``code`` is None after a timeout or connection error."""

    passed: bool
    code: int | None = None
    message: str = ""


@dataclass
class _Slot:
    answer: GateAnswer | None = None
    done: threading.Event = field(default_factory=threading.Event)


def call_gate(request: GateRequest) -> GateAnswer:
    """POST the payload and read the answer. Never raises: every failure is a failing answer."""
    try:
        url = _url(request)
    except SecretError as exc:
        return GateAnswer(False, None, f"URL not readable: {exc}")
    body = json.dumps(request.payload, sort_keys=True).encode()
    http = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "arbiter-gate"},
    )
    try:
        with urllib.request.urlopen(http, timeout=request.timeout) as response:
            code = int(response.status)
            text = _preview(response.read(BODY_PREVIEW))
    except urllib.error.HTTPError as exc:
        return GateAnswer(False, exc.code, f"HTTP {exc.code}{_suffix(_preview(exc.read(BODY_PREVIEW)))}")
    except TimeoutError:
        return GateAnswer(False, None, f"no answer within {request.timeout:g}s")
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError | socket.timeout):
            return GateAnswer(False, None, f"no answer within {request.timeout:g}s")
        return GateAnswer(False, None, f"connection failed: {exc.reason}")
    except (OSError, ValueError) as exc:  # a reset connection, a malformed answer or URL
        return GateAnswer(False, None, f"call failed: {type(exc).__name__}: {exc}")
    passed = 200 <= code < 300
    return GateAnswer(passed, code, f"HTTP {code}{_suffix(text)}")


def call_gates(requests: Sequence[GateRequest]) -> dict[str, GateAnswer]:
    """Call every gate at once; returns within the longest timeout plus :data:`GRACE_SECONDS`.

    A call still running then counts as unanswered (its daemon thread ends with its socket timeout).
    """
    slots = {r.name: _Slot() for r in requests}
    for request in requests:
        slot = slots[request.name]
        thread = threading.Thread(
            target=_run, args=(request, slot), name=f"arbiter-gate-{request.name}", daemon=True
        )
        thread.start()
    started = time.monotonic()
    answers: dict[str, GateAnswer] = {}
    for request in requests:
        slot = slots[request.name]
        slot.done.wait(max(0.0, started + request.timeout + GRACE_SECONDS - time.monotonic()))
        answers[request.name] = slot.answer or GateAnswer(
            False, None, f"no answer within {request.timeout:g}s"
        )
    return answers


def _run(request: GateRequest, slot: _Slot) -> None:
    try:
        slot.answer = call_gate(request)
    finally:
        slot.done.set()


def _url(request: GateRequest) -> str:
    if request.url is not None:
        return request.url
    assert request.secret is not None
    namespace, name, key = request.secret
    url = read_secret_key(namespace, name, key).decode(errors="replace").strip()
    if not url.startswith(("http://", "https://")):
        raise SecretError(f"Secret {namespace}/{name} key {key!r} does not hold an http(s) URL")
    return url


def _preview(raw: bytes) -> str:
    return " ".join(raw.decode(errors="replace").split())[:BODY_PREVIEW]


def _suffix(text: str) -> str:
    return f": {text}" if text else ""
