"""Real HTTP fixtures for the router tests: model servers and routers on free 127.0.0.1 ports."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from router_testing import ModelServer, RunningRouter

from arbiter.router.config import RouterConfig, parse_routes_yaml
from arbiter.router.proxy import Router


@pytest.fixture
async def model_server() -> AsyncIterator[Callable[..., Awaitable[ModelServer]]]:
    """Start model servers on free ports: `await model_server("v1", reply={...})`."""
    started: list[ModelServer] = []

    async def start(name: str, **kwargs: Any) -> ModelServer:
        server = ModelServer(name, **kwargs)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", server.handle)
        server.runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await server.runner.setup()
        site = web.TCPSite(server.runner, "127.0.0.1", 0)
        await site.start()
        port = server.runner.addresses[0][1]
        server.url = f"http://127.0.0.1:{port}"
        started.append(server)
        return server

    yield start
    for server in started:
        if server.gate is not None:
            server.gate.set()
        await server.stop()


@pytest.fixture
async def start_router() -> AsyncIterator[Callable[[RouterConfig | str], Awaitable[RunningRouter]]]:
    """Start a router (proxy and metrics ports) with the given routes."""
    running: list[RunningRouter] = []

    async def start(routes: RouterConfig | str) -> RunningRouter:
        config = parse_routes_yaml(routes) if isinstance(routes, str) else routes
        router = Router()
        router.apply_config(config, "test")
        port = await router.start("127.0.0.1", 0)
        metrics_port = await router.start_metrics("127.0.0.1", 0)
        client = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
        handle = RunningRouter(
            router, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}/metrics", client
        )
        running.append(handle)
        return handle

    yield start
    for handle in running:
        await handle.client.close()
        await handle.router.close()
