"""Helpers for the router tests: recording model servers, metric reading, waiting."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from arbiter.router.proxy import Router


@dataclass
class Seen:
    """One request as an upstream received it."""

    method: str
    path_qs: str
    headers: dict[str, str]
    body: bytes


@dataclass
class ModelServer:
    """A small model server: answers `reply` (JSON) and records what it received.

    Set `gate` to an unset asyncio.Event to hold every response until the test sets it; `entered`
    is set when a request is waiting at the gate.
    """

    name: str
    url: str = ""
    reply: Any = None
    status: int = 200
    extra_headers: dict[str, str] = field(default_factory=dict)
    gate: asyncio.Event | None = None
    entered: asyncio.Event = field(default_factory=asyncio.Event)
    seen: list[Seen] = field(default_factory=list)
    runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(
            Seen(
                request.method,
                request.path_qs,
                {k.lower(): v for k, v in request.headers.items()},
                await request.read(),
            )
        )
        if self.gate is not None:
            self.entered.set()
            await self.gate.wait()
        reply = self.reply if self.reply is not None else {"model": self.name, "score": 0.5}
        return web.Response(
            status=self.status,
            body=json.dumps(reply).encode(),
            content_type="application/json",
            headers=self.extra_headers,
        )

    async def stop(self) -> None:
        if self.gate is not None:
            self.gate.set()  # else shutdown waits for the held requests
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


@dataclass
class RunningRouter:
    router: Router
    url: str
    metrics_url: str
    client: aiohttp.ClientSession

    async def metric(self, name: str, **labels: str) -> float:
        """Read one sample from the real /metrics endpoint (0 if absent)."""
        async with self.client.get(self.metrics_url) as response:
            text = await response.text()
        return sample(text, name, **labels)


def sample(text: str, name: str, **labels: str) -> float:
    """Sum the samples called `name` whose labels include `labels`."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def routes_yaml(experiment: str, *variants: tuple[str, str, float], extra: str = "") -> str:
    """Build routes.yaml text for (name, url, weight) variants plus extra top-level YAML."""
    lines = [f"experiment: {experiment}", "variants:"]
    lines += [f"  - {{name: {n}, url: '{u}', weight: {w}}}" for n, u, w in variants]
    return "\n".join(lines) + "\n" + extra


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0, message: str = "") -> None:
    """Await `check()` until it is true; fail after `timeout` seconds (a bound, not a measurement)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(message or "condition not met in time")
        await asyncio.sleep(0.02)


def free_port() -> int:
    """A port nothing listens on (bound then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
