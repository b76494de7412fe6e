"""A bounded traffic generator: users send predictions through the router and some of them convert.

Each request carries a random user key in ``x-user-id``; the router answers with the variant that
served it in ``x-arbiter-variant``. The user then converts with the probability the test set for that
variant (changeable at runtime) and the outcome is posted to the router's ``/feedback`` as
``{"key": <user>, "success": true|false}`` -- the way a product reports conversions. An *SRM injector*
drops (never sends) the feedback of a fixed share of one variant's users, like a logging bug would.

The generator runs an asyncio loop in a daemon thread, sends at a fixed rate (never faster; it does
not burst to catch up after a stall), talks to loopback only, and stops by itself after ``max_seconds``
or ``max_requests``. Counters per variant are read with :meth:`TrafficGenerator.snapshot`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import json
import random
import threading
import time
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

import aiohttp

VARIANT_HEADER = "x-arbiter-variant"
NO_VARIANT = "none"


def user_fraction(key: str) -> float:
    """A user's fixed position in [0, 1): the same key is always dropped or always kept by the SRM injector."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") / 2.0**64


@dataclass(frozen=True)
class VariantCounts:
    """What happened to the requests one variant served (``none``: the router answered itself)."""

    requests: int = 0
    ok: int = 0
    errors: int = 0
    """Answers with a status of 400 or more."""
    latency_sum: float = 0.0
    """Seconds, client side, over all answered requests."""
    feedback_sent: int = 0
    successes: int = 0
    feedback_dropped: int = 0
    """Feedback the SRM injector did not send."""
    feedback_failed: int = 0
    """Feedback the router did not accept (non-200 or no answer)."""
    feedback_elsewhere: int = 0
    """Feedback the router attributed to another variant (the key moved when the weights changed)."""

    @property
    def mean_latency(self) -> float:
        return self.latency_sum / self.requests if self.requests else float("nan")

    @property
    def conversion(self) -> float:
        """Observed successes per feedback sent."""
        return self.successes / self.feedback_sent if self.feedback_sent else float("nan")


@dataclass(frozen=True)
class TrafficSnapshot:
    """Counters at one moment."""

    variants: dict[str, VariantCounts]
    sent: int
    """Requests started."""
    transport_errors: int
    """Requests or feedback that got no HTTP answer at all."""
    elapsed: float
    running: bool

    def requests(self, variant: str) -> int:
        return self.variants.get(variant, VariantCounts()).requests

    def of(self, variant: str) -> VariantCounts:
        return self.variants.get(variant, VariantCounts())

    @property
    def answered(self) -> int:
        """Requests that got an answer, from a variant or from the router itself."""
        return sum(c.requests for c in self.variants.values())

    def share(self, variant: str) -> float:
        """The variant's share of the requests that a variant served."""
        served = sum(c.requests for name, c in self.variants.items() if name != NO_VARIANT)
        return self.requests(variant) / served if served else float("nan")


class TrafficGenerator:
    """Send predictions and feedback through a router at a bounded rate, from a background thread.

    Args:
        router_url: the router's base URL (loopback only).
        conversion: probability that a user served by each variant converts; variants not listed
            use ``default_conversion``. Change it with :meth:`set_conversion`.
        rate: requests per second (each followed by at most one feedback post).
        max_seconds: the generator stops by itself after this long.
        max_requests: ... or after this many requests, if set.
        seed: seeds the user keys and the conversion draws.
        users: draw keys from this many distinct users; None gives every request a new user.
        concurrency: requests in flight at most.
        path: the prediction path.
    """

    def __init__(
        self,
        router_url: str,
        *,
        conversion: dict[str, float] | None = None,
        default_conversion: float = 0.0,
        rate: float = 150.0,
        max_seconds: float = 180.0,
        max_requests: int | None = None,
        seed: int = 0,
        users: int | None = None,
        concurrency: int = 32,
        path: str = "/predict",
        user_header: str = "x-user-id",
    ) -> None:
        host = urlsplit(router_url).hostname
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"the traffic generator only talks to loopback, not {host!r}")
        if not 0 < rate <= 2000:
            raise ValueError("rate must be in (0, 2000] requests per second")
        if max_seconds <= 0:
            raise ValueError("max_seconds must be positive")
        self.router_url = router_url.rstrip("/")
        self.rate = rate
        self.max_seconds = max_seconds
        self.max_requests = max_requests
        self.users = users
        self.concurrency = concurrency
        self.path = path
        self.user_header = user_header
        self.default_conversion = default_conversion
        self._conversion = dict(conversion or {})
        self._random = random.Random(seed)
        self._srm: tuple[str, float] | None = None
        self._lock = threading.Lock()
        self._counts: dict[str, VariantCounts] = {}
        self._sent = 0
        self._transport_errors = 0
        self._recent: collections.deque[str] = collections.deque(maxlen=2000)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started_at: float | None = None
        self._stopped_at: float | None = None
        self.error: BaseException | None = None
        """An unexpected exception that ended the generator early (transport errors are only counted)."""

    # -- control (any thread) ------------------------------------------------------------------

    def set_conversion(self, variant: str, probability: float) -> None:
        """Make users served by ``variant`` convert with ``probability`` from now on."""
        if not 0.0 <= probability <= 1.0:
            raise ValueError("a probability is between 0 and 1")
        with self._lock:
            self._conversion = {**self._conversion, variant: probability}

    def inject_srm(self, variant: str, drop_fraction: float) -> None:
        """Drop the feedback of ``drop_fraction`` of ``variant``'s users (by user key) from now on."""
        if not 0.0 < drop_fraction <= 1.0:
            raise ValueError("drop_fraction must be in (0, 1]")
        with self._lock:
            self._srm = (variant, drop_fraction)

    def clear_srm(self) -> None:
        """Send every feedback again."""
        with self._lock:
            self._srm = None

    def start(self) -> TrafficGenerator:
        """Start sending in a background thread; returns self."""
        if self._thread is not None:
            raise RuntimeError("already started")
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="traffic", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self, timeout: float = 15.0) -> TrafficSnapshot:
        """Stop sending, wait for requests in flight, and return the final counters."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended by itself
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(timeout)
        return self.snapshot()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def snapshot(self) -> TrafficSnapshot:
        """The counters now."""
        with self._lock:
            start = self._started_at
            end = self._stopped_at if self._stopped_at is not None else time.monotonic()
            return TrafficSnapshot(
                variants=dict(self._counts),
                sent=self._sent,
                transport_errors=self._transport_errors,
                elapsed=0.0 if start is None else end - start,
                running=self.running,
            )

    def recent(self, n: int) -> list[str]:
        """The variants that served the last ``n`` answered requests, oldest first."""
        with self._lock:
            items = list(self._recent)
        return items[-n:]

    # -- the loop (the generator's thread) -----------------------------------------------------

    def _run(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._stop = asyncio.Event()
            ready.set()
            loop.run_until_complete(self._main())
        except BaseException as exc:  # reported through .error; the test decides what it means
            self.error = exc
        finally:
            ready.set()
            with self._lock:
                self._stopped_at = time.monotonic()
            loop.close()

    async def _main(self) -> None:
        assert self._stop is not None
        timeout = aiohttp.ClientTimeout(total=10)
        connector = aiohttp.TCPConnector(limit=self.concurrency)
        slots = asyncio.Semaphore(self.concurrency)
        tasks: set[asyncio.Task[None]] = set()
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
                # After a stall (a slow router, a busy machine) resume the pace instead of bursting.
                next_at = max(next_at + 1.0 / self.rate, now - 0.5)
                await slots.acquire()
                task = asyncio.create_task(self._one_user(session))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                task.add_done_callback(lambda _: slots.release())
                with self._lock:
                    self._sent += 1
            if tasks:
                await asyncio.wait(tasks, timeout=15)

    def _new_user(self) -> str:
        if self.users is None:
            return f"u{self._random.getrandbits(64):016x}"
        return f"u{self._random.randrange(self.users)}"

    async def _one_user(self, session: aiohttp.ClientSession) -> None:
        key = self._new_user()
        body = json.dumps({"features": [self._random.random() for _ in range(4)]}).encode()
        begun = time.monotonic()
        try:
            async with session.post(
                self.router_url + self.path,
                data=body,
                headers={self.user_header: key, "Content-Type": "application/json"},
            ) as response:
                await response.read()
                status = response.status
                variant = response.headers.get(VARIANT_HEADER, NO_VARIANT)
        except (aiohttp.ClientError, TimeoutError):
            with self._lock:
                self._transport_errors += 1
            return
        elapsed = time.monotonic() - begun

        with self._lock:
            conversion = self._conversion.get(variant, self.default_conversion)
            srm = self._srm
            counts = self._counts.get(variant, VariantCounts())
            self._counts[variant] = replace(
                counts,
                requests=counts.requests + 1,
                ok=counts.ok + (status < 400),
                errors=counts.errors + (status >= 400),
                latency_sum=counts.latency_sum + elapsed,
            )
            self._recent.append(variant)
        if variant == NO_VARIANT:
            return  # the router answered by itself (no routes yet): nobody to attribute an outcome to

        # A user whose prediction failed does not convert.
        success = status < 400 and self._random.random() < conversion
        if srm is not None and srm[0] == variant and user_fraction(key) < srm[1]:
            self._add(variant, feedback_dropped=1)
            return
        try:
            async with session.post(
                self.router_url + "/feedback", json={"key": key, "success": success}
            ) as response:
                payload = await response.json(content_type=None) if response.status == 200 else None
                accepted = response.status == 200
        except (aiohttp.ClientError, TimeoutError, ValueError):
            with self._lock:
                self._transport_errors += 1
            self._add(variant, feedback_failed=1)
            return
        if not accepted:
            self._add(variant, feedback_failed=1)
            return
        attributed = payload.get("variant") if isinstance(payload, dict) else None
        self._add(
            variant,
            feedback_sent=1,
            successes=int(success),
            feedback_elsewhere=int(attributed is not None and attributed != variant),
        )

    def _add(self, variant: str, **increments: int) -> None:
        with self._lock:
            counts = self._counts.get(variant, VariantCounts())
            self._counts[variant] = replace(
                counts, **{name: getattr(counts, name) + value for name, value in increments.items()}
            )
