"""Users sending real transactions through the router to real models; the true labels arrive later.

Each request is one held-out row of the fraud task (:attr:`harness.mlserver.Catalogue.rows`) sent as a
V2 inference request. Most requests come from returning users with stable ids (``x-user-id:
user-17``), so the router keeps each user on one variant; a share comes from anonymous visitors without
an id, who carry an ``x-request-id`` instead and are assigned at random.

The outcome is not known when the model answers: it arrives ``label_delay`` seconds later (a chargeback,
an analyst's review), and only then is it posted to the router's ``/feedback`` -- by ``key`` for a known
user, by ``requestId`` for an anonymous one. What counts as a success is the scenario's:

- ``correct``: the model's class equals the true label (one trial per transaction);
- ``fraud_caught``: for a fraudulent transaction only, the model flagged it (legitimate ones send nothing).

It runs an asyncio loop in a daemon thread, sends at a fixed rate (never faster, no burst after a stall),
talks to loopback only, and stops by itself after ``max_seconds`` or ``max_requests``. :meth:`stop` waits
for labels still due (``flush``), so counts are final.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import random
import sys
import threading
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp

from harness.mlserver import INFER_PATH, infer_body, read_answer

VARIANT_HEADER = "x-arbiter-variant"
NO_VARIANT = "none"
Success = Literal["correct", "fraud_caught"]


@dataclass(frozen=True)
class ModelCounts:
    """What happened to the transactions one variant answered."""

    requests: int = 0
    ok: int = 0
    errors: int = 0
    anonymous: int = 0
    flagged: int = 0
    """Answers with class 1 (fraud)."""
    correct: int = 0
    """Answers whose class equals the true label."""
    frauds: int = 0
    """Fraudulent transactions answered."""
    latency_sum: float = 0.0
    labels_due: int = 0
    """Outcomes scheduled (sent later)."""
    labels_sent: int = 0
    """Outcomes the router accepted."""
    successes: int = 0
    labels_failed: int = 0
    """Outcomes the router refused or never answered."""
    labels_elsewhere: int = 0
    """Outcomes the router attributed to another variant than the one that answered."""

    @property
    def accuracy(self) -> float:
        return self.correct / self.ok if self.ok else float("nan")

    @property
    def success_rate(self) -> float:
        return self.successes / self.labels_sent if self.labels_sent else float("nan")


@dataclass(frozen=True)
class ModelTrafficSnapshot:
    variants: dict[str, ModelCounts]
    codes: dict[int, int]
    """Answers per HTTP status code, over all variants."""
    sent: int
    transport_errors: int
    labels_pending: int
    elapsed: float
    running: bool

    def of(self, variant: str) -> ModelCounts:
        return self.variants.get(variant, ModelCounts())

    def share(self, variant: str) -> float:
        served = sum(c.requests for name, c in self.variants.items() if name != NO_VARIANT)
        return self.of(variant).requests / served if served else float("nan")


class ModelTraffic:
    """Send transactions and, later, their true labels through a router, from a background thread.

    Args:
        router_url: the router's base URL (loopback only).
        rows: (features, labels) of the held-out transactions.
        success: ``correct`` or ``fraud_caught`` (see the module docstring).
        rate: transactions per second.
        users: returning users with stable ids (``user-0`` ...); each request picks one at random.
        anonymous_share: share of requests without a user id (feedback by ``requestId``).
        label_delay: (min, max) seconds between the answer and its label, drawn uniformly.
        fraud_share: draw a fraudulent row with this probability (None: as the held-out rows come, about
            10%); a traffic mix richer in fraud, like transactions a rules engine already flagged.
        max_seconds: stop sending after this long; max_requests: ... or after this many.
        seed: seeds users, rows and delays.
        concurrency: requests in flight at most.
        user_header: the sticky header the router is configured with.
        by_token: send each label with the answer's ``Arbiter-Attribution`` token (when the router
            issued one) instead of by key or request id: any replica can credit it.
    """

    def __init__(
        self,
        router_url: str,
        rows: tuple[list[list[float]], list[int]],
        *,
        success: Success = "correct",
        rate: float = 60.0,
        users: int = 2000,
        anonymous_share: float = 0.1,
        label_delay: tuple[float, float] = (1.0, 3.0),
        fraud_share: float | None = None,
        max_seconds: float = 180.0,
        max_requests: int | None = None,
        seed: int = 0,
        concurrency: int = 16,
        user_header: str = "x-user-id",
        by_token: bool = False,
    ) -> None:
        host = urlsplit(router_url).hostname
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"the load generator only talks to loopback, not {host!r}")
        if success not in ("correct", "fraud_caught"):
            raise ValueError(f"success must be 'correct' or 'fraud_caught', not {success!r}")
        if not 0 < rate <= 1000:
            raise ValueError("rate must be in (0, 1000] requests per second")
        if not 0.0 <= anonymous_share <= 1.0 or users < 1:
            raise ValueError("anonymous_share is in [0, 1] and users >= 1")
        if not 0.0 <= label_delay[0] <= label_delay[1] <= 600:
            raise ValueError("label_delay is (min, max) seconds with 0 <= min <= max <= 600")
        features, labels = rows
        if not features or len(features) != len(labels):
            raise ValueError("rows need as many labels as feature rows, and at least one")
        if fraud_share is not None and not 0.0 <= fraud_share <= 1.0:
            raise ValueError("fraud_share is in [0, 1]")
        self.fraud_share = fraud_share
        self._by_label = {label: [i for i, value in enumerate(labels) if value == label] for label in (0, 1)}
        if fraud_share is not None and not all(self._by_label.values()):
            raise ValueError("fraud_share needs rows of both labels")
        self.router_url = router_url.rstrip("/")
        self.features, self.labels = features, labels
        self.success = success
        self.rate = rate
        self.users = users
        self.anonymous_share = anonymous_share
        self.label_delay = label_delay
        self.max_seconds = max_seconds
        self.max_requests = max_requests
        self.concurrency = concurrency
        self.user_header = user_header
        self.by_token = by_token
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._counts: dict[str, ModelCounts] = {}
        self._codes: collections.Counter[int] = collections.Counter()
        self._sent = 0
        self._transport_errors = 0
        self._pending_labels = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._flush = True
        self._started_at: float | None = None
        self._stopped_at: float | None = None
        self.error: BaseException | None = None

    # -- control (any thread) ------------------------------------------------------------------

    def start(self) -> ModelTraffic:
        if self._thread is not None:
            raise RuntimeError("already started")
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="model-traffic", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self, *, flush: bool = True, timeout: float | None = None) -> ModelTrafficSnapshot:
        """Stop sending; with ``flush`` wait for the labels still due (at most the longest delay + 10 s)."""
        self._flush = flush
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(timeout if timeout is not None else self.label_delay[1] + 20)
        return self.snapshot()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def snapshot(self) -> ModelTrafficSnapshot:
        with self._lock:
            start = self._started_at
            end = self._stopped_at if self._stopped_at is not None else time.monotonic()
            return ModelTrafficSnapshot(
                variants=dict(self._counts),
                codes=dict(self._codes),
                sent=self._sent,
                transport_errors=self._transport_errors,
                labels_pending=self._pending_labels,
                elapsed=0.0 if start is None else end - start,
                running=self.running,
            )

    # -- the loop ------------------------------------------------------------------------------

    def _run(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._stop = asyncio.Event()
            ready.set()
            loop.run_until_complete(self._main())
        except BaseException as exc:  # reported through .error
            self.error = exc
        finally:
            ready.set()
            with self._lock:
                self._stopped_at = time.monotonic()
            loop.close()

    async def _main(self) -> None:
        assert self._stop is not None
        timeout = aiohttp.ClientTimeout(total=10)
        connector = aiohttp.TCPConnector(limit=self.concurrency * 2)
        slots = asyncio.Semaphore(self.concurrency)
        requests: set[asyncio.Task[None]] = set()
        labels: set[asyncio.Task[None]] = set()
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            started = time.monotonic()
            with self._lock:
                self._started_at = started
            deadline = started + self.max_seconds
            next_at = started
            while not self._stop.is_set():
                now = time.monotonic()
                if now >= deadline or (self.max_requests is not None and self._sent >= self.max_requests):
                    break
                if next_at > now:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), next_at - now)
                    continue
                next_at = max(next_at + 1.0 / self.rate, now - 0.5)
                await slots.acquire()
                task = asyncio.create_task(self._transaction(session, labels))
                requests.add(task)
                task.add_done_callback(requests.discard)
                task.add_done_callback(lambda _: slots.release())
                with self._lock:
                    self._sent += 1
            if requests:
                await asyncio.wait(requests, timeout=15)
            if labels:
                if self._flush:
                    await asyncio.wait(labels, timeout=self.label_delay[1] + 15)
                for task in labels:
                    task.cancel()
                await asyncio.gather(*labels, return_exceptions=True)

    async def _transaction(self, session: aiohttp.ClientSession, labels: set[asyncio.Task[None]]) -> None:
        if self.fraud_share is None:
            index = self._random.randrange(len(self.features))
        else:
            pool = self._by_label[1 if self._random.random() < self.fraud_share else 0]
            index = pool[self._random.randrange(len(pool))]
        anonymous = self._random.random() < self.anonymous_share
        user = None if anonymous else f"user-{self._random.randrange(self.users)}"
        headers = {"Content-Type": "application/json"}
        request_id = str(uuid.UUID(int=self._random.getrandbits(128), version=4))
        headers["x-request-id"] = request_id
        if user is not None:
            headers[self.user_header] = user
        begun = time.monotonic()
        try:
            async with session.post(
                self.router_url + INFER_PATH,
                data=json.dumps(infer_body(self.features[index])),
                headers=headers,
            ) as response:
                raw = await response.read()
                status = response.status
                variant = response.headers.get(VARIANT_HEADER, NO_VARIANT)
                token = response.headers.get("Arbiter-Attribution")
        except (aiohttp.ClientError, TimeoutError):
            with self._lock:
                self._transport_errors += 1
            return
        elapsed = time.monotonic() - begun
        label = self.labels[index]
        with self._lock:
            self._codes[status] += 1
        predicted: int | None = None
        if status == 200:
            with contextlib.suppress(ValueError, KeyError, IndexError, TypeError):
                predicted = read_answer(json.loads(raw))[0]
        self._add(
            variant,
            requests=1,
            ok=int(predicted is not None),
            errors=int(predicted is None),
            anonymous=int(anonymous),
            flagged=int(predicted == 1),
            correct=int(predicted == label),
            frauds=int(label == 1),
            latency_sum=elapsed,
        )
        if variant == NO_VARIANT:
            return  # the router answered by itself: no model to credit
        if predicted is None and user is None:
            return  # a failed anonymous request: the router has no request id to credit a label to
        if self.success == "correct":
            success = predicted == label  # a failed answer is a wrong one
        elif label == 1:
            success = predicted == 1
        else:
            return  # fraud_caught: a legitimate transaction is no trial
        feedback: dict[str, Any] = {"success": bool(success)}
        feedback.update({"requestId": request_id} if user is None else {"key": user})
        if self.by_token and token:
            feedback = {"success": bool(success), "token": token}
        delay = self._random.uniform(*self.label_delay)
        self._add(variant, labels_due=1)
        with self._lock:
            self._pending_labels += 1
        task = asyncio.create_task(self._label_later(session, delay, variant, feedback))
        labels.add(task)
        task.add_done_callback(labels.discard)

    async def _label_later(
        self, session: aiohttp.ClientSession, delay: float, variant: str, feedback: dict[str, Any]
    ) -> None:
        try:
            await asyncio.sleep(delay)  # the label is not known yet: it arrives this much later
            try:
                async with session.post(self.router_url + "/feedback", json=feedback) as response:
                    payload = await response.json(content_type=None) if response.status == 200 else None
                    accepted = response.status == 200
            except (aiohttp.ClientError, TimeoutError, ValueError):
                with self._lock:
                    self._transport_errors += 1
                self._add(variant, labels_failed=1)
                return
            if not accepted:
                self._add(variant, labels_failed=1)
                return
            attributed = payload.get("variant") if isinstance(payload, dict) else None
            self._add(
                variant,
                labels_sent=1,
                successes=int(feedback["success"]),
                labels_elsewhere=int(attributed is not None and attributed != variant),
            )
        finally:
            with self._lock:
                self._pending_labels -= 1

    def _add(self, variant: str, **increments: float) -> None:
        with self._lock:
            counts = self._counts.get(variant, ModelCounts())
            self._counts[variant] = replace(
                counts, **{name: getattr(counts, name) + value for name, value in increments.items()}
            )


def main(argv: list[str] | None = None) -> int:
    """Play users against a running router for a while and print what each variant did (JSON)."""
    from harness.mlserver import ensure_models

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--router", required=True, help="the router's URL, e.g. http://127.0.0.1:8080")
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--rate", type=float, default=60)
    parser.add_argument("--success", choices=("correct", "fraud_caught"), default="correct")
    parser.add_argument("--anonymous-share", type=float, default=0.1)
    args = parser.parse_args(argv)
    traffic = ModelTraffic(
        args.router,
        ensure_models().rows,
        success=args.success,
        rate=args.rate,
        anonymous_share=args.anonymous_share,
        max_seconds=args.seconds,
    ).start()
    while traffic.running and traffic.snapshot().elapsed < args.seconds:
        time.sleep(1)
    snapshot = traffic.stop()
    out = {
        name: {**vars(c), "accuracy": c.accuracy, "successRate": c.success_rate}
        for name, c in snapshot.variants.items()
    }
    print(
        json.dumps(
            {"sent": snapshot.sent, "transportErrors": snapshot.transport_errors, "variants": out}, indent=2
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
