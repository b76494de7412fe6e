"""The router's prediction log: JSON lines of served predictions and of the outcomes posted later.

Two files in one directory, each rotated by size and bounded in count (`predictions.jsonl`,
`predictions.jsonl.1`, ...; `outcomes.jsonl`, ...). The proxy path only puts a dict on a bounded queue;
a writer thread serialises and writes it, so a slow disk never slows a request (a full queue drops the
line and counts it in `arbiter_router_prediction_log_dropped_total`).

A prediction line::

    {"timestamp": "2026-11-29T06:01:02.345Z", "experiment": "fraud", "variant": "v2", "requestId": "r-17",
     "user": "<16 hex of SHA-256(salt, experiment, sticky key)>", "status": 200, "latencyMs": 12.3, "class": 0, "score": 0.07}

An outcome line (one per accepted `/feedback`) has `timestamp` (when the label arrived), `experiment`,
`variant` (the variant the outcome was counted for, exactly as the metrics counted it), `outcome`
(true/false, or the number), `attribution` (`token`, `requestId` or `key`), and `requestId`, `issued` and
`user` when known. `outcomes.jsonl` is already what `arbiter analyze` reads (`--variant-col variant
--metric-col outcome`); `arbiter join-predictions` adds each outcome's prediction fields to it.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import queue
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from arbiter.router.config import parse_json_pointer

__all__ = [
    "OUTCOMES_FILE",
    "PREDICTIONS_FILE",
    "PredictionLog",
    "PredictionLogOptions",
    "iso_timestamp",
    "parse_log_field",
    "user_hash",
]

log = logging.getLogger("arbiter.router")

PREDICTIONS_FILE = "predictions.jsonl"
OUTCOMES_FILE = "outcomes.jsonl"
_MISSING = object()


def iso_timestamp(seconds: float) -> str:
    """ISO 8601 UTC with milliseconds, e.g. 2026-11-29T06:01:02.345Z."""
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def user_hash(key: str, salt: str) -> str:
    """A stable pseudonym of a sticky key (16 hex digits of SHA-256 over salt and key)."""
    return hashlib.sha256(f"{salt}\0{key}".encode()).hexdigest()[:16]


def parse_log_field(text: str) -> tuple[str, tuple[str, ...]]:
    """Parse `NAME=/json/pointer` into (name, pointer tokens).

    Raises:
        ValueError: with a readable message.
    """
    name, sep, pointer = text.partition("=")
    name = name.strip()
    if not sep or not name or not pointer.startswith("/"):
        raise ValueError(f"expected NAME=/json/pointer, got {text!r}")
    return name, parse_json_pointer(pointer)


@dataclass(frozen=True)
class PredictionLogOptions:
    """How the prediction log is written.

    Args:
        directory: where predictions.jsonl and outcomes.jsonl go (created if missing).
        max_bytes: a file is rotated when it would grow past this.
        files: files kept per kind, the current one included (older ones are deleted).
        fields: column name -> JSON pointer tokens into the response body (e.g. the class, the score).
        keys: `hash` (default: a salted SHA-256 pseudonym of the sticky key), `plain`, or `none`.
        key_salt: a secret mixed into `hash` with the experiment name (without it, guessable user ids
            could be recovered by hashing guesses); the same on every replica so their logs agree.
        bodies: also log whole response bodies (`body`, as text): off by default, bodies may hold
            personal data.
        queue_lines: lines waiting for the writer at most; beyond it lines are dropped and counted.
    """

    directory: Path
    max_bytes: int = 64 * 1024 * 1024
    files: int = 5
    fields: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    keys: str = "hash"
    key_salt: str = ""
    bodies: bool = False
    queue_lines: int = 100_000

    def __post_init__(self) -> None:
        if self.max_bytes < 1024:
            raise ValueError("the prediction log's max bytes must be at least 1024")
        if self.files < 1:
            raise ValueError("the prediction log keeps at least 1 file")
        if self.keys not in ("hash", "plain", "none"):
            raise ValueError("prediction log keys must be hash, plain or none")
        if self.queue_lines < 1:
            raise ValueError("the prediction log queue must hold at least 1 line")


def _pick(document: Any, tokens: tuple[str, ...]) -> Any:
    for token in tokens:
        if isinstance(document, dict):
            document = document.get(token, _MISSING)
        elif isinstance(document, list) and token.isdigit() and int(token) < len(document):
            document = document[int(token)]
        else:
            return _MISSING
        if document is _MISSING:
            return _MISSING
    return document


class _RotatingFile:
    """Append lines to `name` in a directory, rotating by size and keeping `files` files."""

    def __init__(self, directory: Path, name: str, max_bytes: int, files: int) -> None:
        self.path = directory / name
        self.max_bytes = max_bytes
        self.files = files
        self._handle = open(self.path, "ab")  # noqa: SIM115 - closed in close()
        self._size = self._handle.tell()

    def write(self, data: bytes) -> None:
        if self._size and self._size + len(data) > self.max_bytes:
            self._rotate()
        self._handle.write(data)
        self._size += len(data)

    def _rotate(self) -> None:
        self._handle.close()
        oldest = self.path.with_name(f"{self.path.name}.{self.files - 1}")
        if self.files == 1:
            self.path.unlink(missing_ok=True)
        else:
            oldest.unlink(missing_ok=True)
            for index in range(self.files - 2, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{index}")
                if older.exists():
                    older.rename(self.path.with_name(f"{self.path.name}.{index + 1}"))
            self.path.rename(self.path.with_name(f"{self.path.name}.1"))
        self._handle = open(self.path, "ab")  # noqa: SIM115
        self._size = 0

    def flush(self) -> None:
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


class PredictionLog:
    """Write predictions and outcomes as JSON lines from a background thread.

    Args:
        options: where and how.
        registry: where to count lines written and dropped.
    """

    def __init__(self, options: PredictionLogOptions, registry: CollectorRegistry | None = None) -> None:
        self.options = options
        options.directory.mkdir(parents=True, exist_ok=True)
        self._queue: queue.Queue[tuple[str, dict[str, Any]] | None] = queue.Queue(options.queue_lines)
        self._files = {
            kind: _RotatingFile(options.directory, name, options.max_bytes, options.files)
            for kind, name in (("prediction", PREDICTIONS_FILE), ("outcome", OUTCOMES_FILE))
        }
        self.lines = Counter(
            "arbiter_router_prediction_log_lines",
            "Lines written to the prediction log; kind is prediction or outcome.",
            ["kind"],
            registry=registry,
        )
        self.dropped = Counter(
            "arbiter_router_prediction_log_dropped",
            "Prediction log lines dropped because the writer was behind (its queue was full) or failed.",
            ["kind"],
            registry=registry,
        )
        for kind in self._files:
            self.lines.labels(kind)
            self.dropped.labels(kind)
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    # -- the proxy path: build a dict, enqueue, never block --------------------------------------

    def _user(self, key: str | None, experiment: str) -> str | None:
        if not key or self.options.keys == "none":
            return None
        return (
            key if self.options.keys == "plain" else user_hash(key, f"{self.options.key_salt}\0{experiment}")
        )

    def prediction(
        self,
        *,
        when: float,
        experiment: str,
        variant: str,
        request_id: str,
        key: str | None,
        status: int,
        latency: float,
        body: bytes,
    ) -> None:
        """Log one served request (`body` is the response body; only configured fields are kept)."""
        line: dict[str, Any] = {
            "timestamp": when,
            "experiment": experiment,
            "variant": variant,
            "requestId": request_id,
            "user": self._user(key, experiment),
            "status": status,
            "latencyMs": round(latency * 1000.0, 3),
        }
        if self.options.fields or self.options.bodies:
            line["_body"] = body  # parsed on the writer thread, not here
        self._put("prediction", line)

    def outcome(
        self,
        *,
        when: float,
        experiment: str,
        variant: str,
        outcome: bool | float,
        attribution: str,
        request_id: str | None,
        issued: float | None,
        key: str | None,
    ) -> None:
        """Log one accepted outcome, attributed to `variant` by `attribution`."""
        line: dict[str, Any] = {
            "timestamp": when,
            "experiment": experiment,
            "variant": variant,
            "outcome": outcome,
            "attribution": attribution,
            "requestId": request_id,
            "issued": issued,
            "user": self._user(key, experiment),
        }
        self._put("outcome", line)

    def _put(self, kind: str, line: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait((kind, line))
        except queue.Full:
            self.dropped.labels(kind).inc()

    # -- the writer thread ------------------------------------------------------------------------

    def _render(self, line: dict[str, Any]) -> bytes:
        line["timestamp"] = iso_timestamp(line["timestamp"])
        if line.get("issued") is not None:
            line["issued"] = iso_timestamp(line["issued"])
        body = line.pop("_body", None)
        if body is not None:
            try:
                document = json.loads(body)
            except (ValueError, UnicodeDecodeError, RecursionError):
                document = _MISSING
            for name, tokens in self.options.fields.items():
                value = _pick(document, tokens) if document is not _MISSING else _MISSING
                line[name] = None if value is _MISSING else value
            if self.options.bodies:
                line["body"] = body.decode("utf-8", "replace")
        return json.dumps(line, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                break
            batch = [item]
            while len(batch) < 1000:  # write what is queued in one go, flush once
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)  # seen after this batch
                    break
                batch.append(more)
            for kind, line in batch:
                try:
                    self._files[kind].write(self._render(line))
                    self.lines.labels(kind).inc()
                except Exception as exc:  # a full disk must not kill the writer
                    self.dropped.labels(kind).inc()
                    log.error("prediction log write failed: %s", type(exc).__name__)
            for handle in self._files.values():
                try:
                    handle.flush()
                except OSError as exc:
                    log.error("prediction log flush failed: %s", exc.strerror)

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued (up to `timeout` seconds), then close the files."""
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            log.warning("prediction log still behind at shutdown; lines queued are dropped")
        self._thread.join(timeout)
        for handle in self._files.values():
            handle.close()
