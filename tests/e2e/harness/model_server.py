"""A stand-in for one model variant: a real HTTP server whose latency and error rate the test controls.

Run it as a process (the way a model server runs next to the router)::

    python tests/e2e/harness/model_server.py --port 0 --variant v2 --latency-ms 5 --jitter-ms 2 \
        --error-rate 0 --seed 7

It prints its bound port on the first line of stdout, then serves:

- ``POST /predict`` (any path but the ones below, any method): after the configured latency (plus a
  uniform jitter in [-jitter, +jitter], never below 0), either ``500 {"error": ...}`` with probability
  ``error rate``, or ``200 {"score": <float>, "variant": <name>}``. The score is a pure function of
  (seed, variant, request body), so the same request always gets the same score from the same variant.
- ``GET /healthz``: ``ok``.
- ``GET /admin``: the current settings as JSON; ``POST /admin`` with any of ``latencyMs``, ``jitterMs``,
  ``errorRate``, ``disagreeRate`` changes them at once (for requests that start afterwards) and answers
  the new settings. ``disagreeRate`` is listed only once it has been set (it is 0 until then).
- ``GET /metrics``: its own Prometheus counters (``model_requests_total{variant,code}``), so a test can
  check that what the router says it sent is what the model received.

Answering like another variant (for judged shadow traffic): with ``--answer-as NAME`` the server
answers exactly what a server started with ``--variant NAME`` and the same ``--seed`` answers: the score
comes from (seed, NAME, body) and the body says ``"variant": NAME``. Its own name stays in its metrics and
logs. ``disagreeRate`` (default 0) then makes it disagree on a share of the requests: a request whose
body falls in that share (by a hash of the body alone, so the same body is always in or out, whatever
the variant or seed) gets its score moved by 0.5 modulo 1, which no comparison tolerance below 0.5 can
mistake for the original answer.

Only the standard library, aiohttp and prometheus_client are used; it binds 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import signal
import sys
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest


@dataclass
class Settings:
    """What the test controls; changed at runtime through ``POST /admin``."""

    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    error_rate: float = 0.0
    disagree_rate: float | None = None
    """Share of request bodies answered differently; None until set (listed only then, and acts as 0)."""

    _JSON_NAMES = {
        "latencyMs": "latency_ms",
        "jitterMs": "jitter_ms",
        "errorRate": "error_rate",
        "disagreeRate": "disagree_rate",
    }

    def update(self, changes: dict[str, Any]) -> None:
        """Apply ``changes`` (JSON names) after checking every value; raise ValueError on a bad one."""
        unknown = set(changes) - set(self._JSON_NAMES)
        if unknown:
            raise ValueError(f"unknown settings: {sorted(unknown)}")
        checked: dict[str, float] = {}
        for key, value in changes.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{key} must be a non-negative number")
            checked[self._JSON_NAMES[key]] = float(value)
        for field_name, json_name in (("error_rate", "errorRate"), ("disagree_rate", "disagreeRate")):
            if checked.get(field_name, 0.0) > 1.0:
                raise ValueError(f"{json_name} must be at most 1")
        for field_name, value in checked.items():
            setattr(self, field_name, value)

    def to_json(self) -> dict[str, float]:
        """The settings under their JSON names (``disagreeRate`` only once it was set)."""
        return {
            json_name: getattr(self, name)
            for json_name, name in self._JSON_NAMES.items()
            if getattr(self, name) is not None
        }


def score_of(seed: int, variant: str, body: bytes) -> float:
    """The model's answer: a stable number in [0, 1) for this seed, variant and input."""
    digest = hashlib.blake2b(body, digest_size=8, key=f"{seed}:{variant}".encode()).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def body_fraction(body: bytes) -> float:
    """A request body's fixed position in [0, 1), independent of variant and seed.

    ``disagreeRate`` r perturbs exactly the bodies below r, so two servers with the same rate disagree
    with the original on the same requests, and a body is never in the share on one try and out on the next.
    """
    digest = hashlib.blake2b(body, digest_size=8, key=b"disagree").digest()
    return int.from_bytes(digest, "big") / 2.0**64


class ModelServer:
    """The aiohttp application of one variant.

    Args:
        variant: its own name (metrics, logs).
        settings: what the test controls at runtime.
        seed: seeds the scores and the latency/error draws.
        answer_as: answer like this variant (see the module docstring); None: like itself.
    """

    def __init__(self, variant: str, settings: Settings, seed: int, answer_as: str | None = None) -> None:
        self.variant = variant
        self.answer_as = answer_as or variant
        self.settings = settings
        self.seed = seed
        self._random = random.Random(seed)
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "model_requests",
            "Predictions answered, by HTTP status code.",
            ["variant", "code"],
            registry=self.registry,
        )

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/admin", self.get_admin)
        app.router.add_post("/admin", self.post_admin)
        app.router.add_route("*", "/{tail:.*}", self.predict)
        return app

    async def predict(self, request: web.Request) -> web.Response:
        body = await request.read()
        settings = self.settings
        delay_ms = settings.latency_ms
        if settings.jitter_ms:
            delay_ms += self._random.uniform(-settings.jitter_ms, settings.jitter_ms)
        if delay_ms > 0:
            await asyncio.sleep(delay_ms / 1000.0)
        if settings.error_rate and self._random.random() < settings.error_rate:
            self.requests.labels(self.variant, "500").inc()
            return web.json_response({"error": "injected failure", "variant": self.answer_as}, status=500)
        self.requests.labels(self.variant, "200").inc()
        score = score_of(self.seed, self.answer_as, body)
        if settings.disagree_rate and body_fraction(body) < settings.disagree_rate:
            score = (score + 0.5) % 1.0
        return web.json_response({"score": score, "variant": self.answer_as})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def get_admin(self, request: web.Request) -> web.Response:
        return web.json_response(self.settings.to_json())

    async def post_admin(self, request: web.Request) -> web.Response:
        try:
            changes = await request.json()
            if not isinstance(changes, dict):
                raise ValueError("the body must be a JSON object")
            self.settings.update(changes)
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(self.settings.to_json())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="A model-variant stand-in for Arbiter's e2e tests.")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: a free one)")
    parser.add_argument("--variant", required=True, help="the variant name it reports")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--jitter-ms", type=float, default=0.0)
    parser.add_argument("--error-rate", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--answer-as",
        default=None,
        metavar="NAME",
        help="answer exactly like variant NAME with the same seed (a challenger that agrees with the champion)",
    )
    parser.add_argument(
        "--disagree-rate", type=float, default=None, help="share of request bodies answered differently"
    )
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    settings = Settings()
    settings.update({"latencyMs": args.latency_ms, "jitterMs": args.jitter_ms, "errorRate": args.error_rate})
    if args.disagree_rate is not None:
        settings.update({"disagreeRate": args.disagree_rate})
    server = ModelServer(args.variant, settings, args.seed, answer_as=args.answer_as)
    runner = web.AppRunner(server.app(), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", args.port)
    await site.start()
    print(runner.addresses[0][1], flush=True)
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopped.set)
    try:
        await stopped.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    asyncio.run(serve(parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
