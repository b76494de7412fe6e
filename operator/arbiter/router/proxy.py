"""The model router: weighted sticky routing, judged shadow traffic, outcome feedback.

One `Router` serves the proxy port and (optionally) the metrics port from one event loop. Its
routes live in an immutable `_Routes` snapshot that is swapped in one assignment, so a reload is
atomic: a request uses the snapshot it started with from start to end.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import random
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from arbiter.router.assign import Assigner
from arbiter.router.attribution import (
    ATTRIBUTION_HEADER,
    Attribution,
    AttributionError,
    AttributionSigner,
)
from arbiter.router.compare import CompareRules
from arbiter.router.config import Limits, RouterConfig, RouterConfigError, parse_routes_yaml
from arbiter.router.http import HTTPRequest, HTTPResponse, HTTPServer
from arbiter.router.metrics import RouterMetrics
from arbiter.router.prediction_log import PredictionLog
from arbiter.router.upstream import (
    Headers,
    UpstreamClient,
    UpstreamError,
    UpstreamResponse,
    strip_hop_by_hop,
)

__all__ = ["FEEDBACK_PATH", "VARIANT_HEADER", "Router"]

log = logging.getLogger("arbiter.router")

VARIANT_HEADER = "x-arbiter-variant"
REQUEST_ID_HEADER = "x-request-id"
FEEDBACK_PATH = "/feedback"
_FEEDBACK_MAX_BYTES = 64 * 1024
_MAX_FEEDBACK_VALUE = 1e154  # its square still fits in a float
_NO_VARIANT = "none"
# Enough to attribute feedback that arrives minutes after the request at thousands of req/s.
_REQUEST_ID_MEMORY = 100_000
# A client's request id longer than this is not put in tokens or logs (a generated one is used).
_MAX_REQUEST_ID_CHARS = 200
_ATTRIBUTION_LOWER = ATTRIBUTION_HEADER.lower()


_DEFAULT_MAX_BODY = Limits().max_body_bytes
_JSON = ("Content-Type", "application/json")


@dataclass(frozen=True, slots=True)
class _Routes:
    """Everything a request needs from one configuration, precomputed."""

    config: RouterConfig
    experiment: str
    assigner: Assigner
    urls: dict[str, str]
    champion: str
    sticky_header: str | None
    sticky_cookie: str | None
    shadow_variant: str | None
    shadow_fraction: float
    shadow_timeout: float
    shadow_max_concurrent: int
    shadow_rules: CompareRules
    max_body_bytes: int
    upstream_timeout: float

    @classmethod
    def build(cls, config: RouterConfig) -> _Routes:
        shadow = config.shadow
        return cls(
            config=config,
            experiment=config.experiment,
            assigner=Assigner(config.experiment, [(v.name, v.weight) for v in config.served_variants]),
            urls={v.name: v.url for v in config.variants},
            champion=config.champion_name,
            sticky_header=config.stickiness.header if config.stickiness else None,
            sticky_cookie=config.stickiness.cookie if config.stickiness else None,
            shadow_variant=shadow.variant if shadow and shadow.percent > 0 else None,
            shadow_fraction=shadow.percent / 100.0 if shadow else 0.0,
            shadow_timeout=shadow.timeout_seconds if shadow else 0.0,
            shadow_max_concurrent=shadow.max_concurrent if shadow else 0,
            shadow_rules=CompareRules.build(shadow.compare) if shadow else CompareRules(),
            max_body_bytes=config.limits.max_body_bytes,
            upstream_timeout=config.limits.upstream_timeout_seconds,
        )

    def describe(self) -> str:
        weights = ",".join(f"{name}:{weight:g}" for name, weight in self.assigner.weights)
        if self.sticky_header:
            sticky = f"header {self.sticky_header}"
        elif self.sticky_cookie:
            sticky = f"cookie {self.sticky_cookie}"
        else:
            sticky = "random"
        shadow = f"{self.shadow_variant} {self.shadow_fraction * 100:g}%" if self.shadow_variant else "off"
        return (
            f"experiment={self.experiment} weights={weights} champion={self.champion}"
            f" assignment={sticky} shadow={shadow}"
        )


def _json_response(status: int, payload: dict[str, Any], variant: str | None = None) -> HTTPResponse:
    headers = [_JSON]
    if variant is not None:
        headers.append((VARIANT_HEADER, variant))
    return HTTPResponse(status, json.dumps(payload).encode(), headers)


class Router:
    """Arbiter's model router.

    Args:
        metrics: where to count; a fresh registry by default.
        upstream: the upstream connection pool; a new one by default.
        attribution: signs an `Arbiter-Attribution` token into every served response and verifies
            the ones posted to /feedback; None: no tokens.
        prediction_log: where served predictions and accepted outcomes are logged; None: nowhere.
            The router closes it in `close()`.
    """

    def __init__(
        self,
        *,
        metrics: RouterMetrics | None = None,
        upstream: UpstreamClient | None = None,
        attribution: AttributionSigner | None = None,
        prediction_log: PredictionLog | None = None,
    ) -> None:
        self.metrics = metrics if metrics is not None else RouterMetrics()
        self._upstream = upstream if upstream is not None else UpstreamClient()
        self._routes: _Routes | None = None
        self._shadow_in_flight = 0
        self._background: set[asyncio.Task[None]] = set()
        self._request_variants: OrderedDict[str, str] = OrderedDict()
        self._runners: list[web.BaseRunner] = []
        self._servers: list[HTTPServer] = []
        self._random = random.Random()
        self._attribution = attribution
        self._prediction_log = prediction_log

    # -- configuration -------------------------------------------------------------------------

    @property
    def config(self) -> RouterConfig | None:
        """The configuration in force, or None before the first good one."""
        return self._routes.config if self._routes is not None else None

    def apply_config(self, config: RouterConfig, source: str = "") -> None:
        """Switch to `config` at once; requests already in flight finish on the old routes."""
        routes = _Routes.build(config)
        self._routes = routes
        weights = {v.name: (v.weight if v.name != routes.shadow_variant else 0.0) for v in config.variants}
        shadow = (routes.shadow_variant, routes.shadow_fraction * 100) if routes.shadow_variant else None
        self.metrics.show_routes(routes.experiment, weights, shadow)
        self.metrics.config_reloads.labels("success").inc()
        log.info("routes loaded%s: %s", f" from {source}" if source else "", routes.describe())

    def apply_text(self, text: str, source: str = "") -> bool:
        """Parse `routes.yaml` text and switch to it; on error log it, count it and keep the old routes.

        Returns:
            True if the new routes are in force.
        """
        try:
            config = parse_routes_yaml(text)
        except RouterConfigError as exc:
            self.metrics.config_reloads.labels("failure").inc()
            kept = "keeping the previous routes" if self._routes is not None else "no routes in force yet"
            log.error("routes rejected%s: %s (%s)", f" from {source}" if source else "", exc, kept)
            return False
        self.apply_config(config, source)
        return True

    # -- serving -------------------------------------------------------------------------------

    async def start(self, host: str, port: int) -> int:
        """Serve the proxy on host:port (0 picks a free port); return the bound port."""
        server = HTTPServer(self.handle, max_body_bytes=self._max_body_bytes, on_rejected=self._rejected)
        bound = await server.start(host, port)
        self._servers.append(server)
        return bound

    def _max_body_bytes(self) -> int:
        routes = self._routes
        return routes.max_body_bytes if routes is not None else _DEFAULT_MAX_BODY

    def _rejected(self, status: int) -> None:
        routes = self._routes
        self.metrics.request_done(routes.experiment if routes else "", _NO_VARIANT, status, None)

    async def start_metrics(self, host: str, port: int) -> int:
        """Serve /metrics, /healthz and /readyz on host:port; return the bound port."""
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        return await self._start_runner(runner, host, port)

    async def _start_runner(self, runner: web.BaseRunner, host: str, port: int) -> int:
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
        self._runners.append(runner)
        sockets = runner.addresses
        return int(sockets[-1][1])

    async def close(self) -> None:
        """Stop serving, cancel shadow requests still in flight and close upstream connections."""
        for server in self._servers:
            await server.close()
        self._servers.clear()
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()
        for task in list(self._background):
            task.cancel()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self._upstream.close()
        if self._prediction_log is not None:
            await asyncio.to_thread(self._prediction_log.close)

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        if self._routes is None:
            return web.Response(status=503, text="no routes loaded yet\n")
        return web.Response(text=f"ok: {self._routes.describe()}\n")

    async def handle(self, request: HTTPRequest) -> HTTPResponse:
        """Proxy one request (or take feedback) using the routes in force when it arrived."""
        routes = self._routes
        if routes is None:
            self.metrics.request_done("", _NO_VARIANT, 503, None)
            return _json_response(503, {"error": "the router has no routes yet"})
        if request.method == "POST" and request.path == FEEDBACK_PATH:
            return self._feedback(request, routes)
        body = request.body
        if len(body) > routes.max_body_bytes:  # the limit shrank while this body was arriving
            self.metrics.request_done(routes.experiment, _NO_VARIANT, 413, None)
            return _json_response(413, {"error": f"request body over {routes.max_body_bytes} bytes"})

        key = self._sticky_key(request, routes)
        variant = routes.assigner.sticky(key) if key else routes.assigner.draw()
        headers = _forwarded_headers(request)

        loop = asyncio.get_running_loop()
        served: asyncio.Future[tuple[UpstreamResponse, float] | None] | None = None
        if routes.shadow_variant is not None and (
            routes.shadow_fraction >= 1.0 or self._random.random() < routes.shadow_fraction
        ):
            served = self._mirror(routes, request.method, request.target, headers, body)

        started = loop.time()
        clock_started = time.perf_counter()  # loop.time() may tick in milliseconds (uvloop)
        result: tuple[UpstreamResponse, float] | None = None
        try:
            served_by = await self._serve_upstream(routes, variant, request, headers)
            if isinstance(served_by, HTTPResponse):
                return served_by
            variant, response = served_by
            elapsed = loop.time() - started
            result = (response, elapsed)
        finally:
            # The shadow task waits for this to compare; it must be resolved on every path.
            if served is not None and not served.done():
                served.set_result(result)

        self.metrics.request_done(routes.experiment, variant, response.status, elapsed)
        request_id = request.header(REQUEST_ID_HEADER)
        if request_id:
            self._remember(request_id, variant)
        out_headers = response.headers.copy()
        out_headers.append((VARIANT_HEADER, variant))
        if self._attribution is not None or self._prediction_log is not None:
            if not request_id or len(request_id) > _MAX_REQUEST_ID_CHARS:
                request_id = os.urandom(12).hex()
            if self._attribution is not None:
                token = self._attribution.issue(routes.experiment, variant, request_id)
                # Only the router's token: a model server's header of that name would be read first.
                out_headers = [h for h in out_headers if h[0].lower() != _ATTRIBUTION_LOWER]
                out_headers.append((ATTRIBUTION_HEADER, token))
            if self._prediction_log is not None:
                self._prediction_log.prediction(
                    when=time.time(),
                    experiment=routes.experiment,
                    variant=variant,
                    request_id=request_id,
                    key=key,
                    status=response.status,
                    latency=time.perf_counter() - clock_started,
                    body=response.body,
                )
        return HTTPResponse(response.status, response.body, out_headers, response.reason)

    async def _serve_upstream(
        self, routes: _Routes, variant: str, request: HTTPRequest, headers: Headers
    ) -> tuple[str, UpstreamResponse] | HTTPResponse:
        """Send the request to `variant`; a challenger that fails is retried once on the champion.

        Returns:
            (the variant that answered, its response), or the 502/504 for the user when the
            champion failed (on the first try or on the retry).
        """
        while True:
            try:
                response = await self._upstream.request(
                    routes.urls[variant],
                    request.method,
                    request.target,
                    headers,
                    request.body,
                    routes.upstream_timeout,
                )
            except UpstreamError as exc:
                self.metrics.upstream_errors.labels(routes.experiment, variant, "serve", exc.reason).inc()
                if variant == routes.champion:
                    return self._failed(routes, variant, exc)
                # A failing challenger must not fail the user while the champion is healthy.
                log.warning("variant %s failed (%s); retrying on champion %s", variant, exc, routes.champion)
                self.metrics.retries.labels(routes.experiment, variant, exc.reason).inc()
                variant = routes.champion
                continue
            return variant, response

    def _sticky_key(self, request: HTTPRequest, routes: _Routes) -> str | None:
        if routes.sticky_header is not None:
            return request.header(routes.sticky_header)
        if routes.sticky_cookie is not None:
            return request.cookie(routes.sticky_cookie)
        return None

    def _failed(self, routes: _Routes, variant: str, exc: UpstreamError) -> HTTPResponse:
        status = 504 if exc.reason == "timeout" else 502
        self.metrics.request_done(routes.experiment, variant, status, None)
        return _json_response(status, {"error": f"variant {variant} failed: {exc}"}, variant)

    def _remember(self, request_id: str, variant: str) -> None:
        memory = self._request_variants
        memory[request_id] = variant
        if len(memory) > _REQUEST_ID_MEMORY:
            memory.popitem(last=False)

    # -- shadow --------------------------------------------------------------------------------

    def _mirror(
        self, routes: _Routes, method: str, path_qs: str, headers: Headers, body: bytes
    ) -> asyncio.Future[tuple[UpstreamResponse, float] | None] | None:
        """Start the shadow request in the background; return the future the served result goes to."""
        shadow = routes.shadow_variant
        assert shadow is not None
        if self._shadow_in_flight >= routes.shadow_max_concurrent:
            self.metrics.shadow_dropped.labels(routes.experiment, shadow).inc()
            return None
        served: asyncio.Future[tuple[UpstreamResponse, float] | None] = (
            asyncio.get_running_loop().create_future()
        )
        self._shadow_in_flight += 1
        task = asyncio.create_task(self._shadow(routes, shadow, method, path_qs, headers, body, served))
        self._background.add(task)
        task.add_done_callback(self._shadow_done)
        return served

    def _shadow_done(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        self._shadow_in_flight -= 1
        if not task.cancelled() and task.exception() is not None:
            log.error("shadow comparison crashed", exc_info=task.exception())

    async def _shadow(
        self,
        routes: _Routes,
        shadow: str,
        method: str,
        path_qs: str,
        headers: Headers,
        body: bytes,
        served: asyncio.Future[tuple[UpstreamResponse, float] | None],
    ) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            response = await self._upstream.request(
                routes.urls[shadow], method, path_qs, headers, body, routes.shadow_timeout
            )
        except UpstreamError as exc:
            self.metrics.upstream_errors.labels(routes.experiment, shadow, "shadow", exc.reason).inc()
            return
        elapsed = loop.time() - started
        reference = await served
        if reference is None:
            return  # the served request failed: nothing to compare with
        served_response, served_elapsed = reference
        result = routes.shadow_rules.compare(
            served_response.status, served_response.body, response.status, response.body
        )
        self.metrics.shadow_compared(routes.experiment, shadow, result, elapsed - served_elapsed)

    # -- feedback ------------------------------------------------------------------------------

    def _feedback(self, request: HTTPRequest, routes: _Routes) -> HTTPResponse:
        if len(request.body) > _FEEDBACK_MAX_BYTES:
            return _json_response(413, {"error": f"feedback body over {_FEEDBACK_MAX_BYTES} bytes"})
        try:
            payload = json.loads(request.body)
        except (ValueError, UnicodeDecodeError):
            return _json_response(400, {"error": "feedback body must be a JSON object"})
        problem, parsed = _parse_feedback(payload)
        if parsed is None:
            return _json_response(400, {"error": problem})
        key, request_id, success, value, token = parsed

        attribution = "requestId"
        issued: float | None = None
        variant = None
        if token is not None:
            verified = self._verify_token(token, routes)
            if isinstance(verified, HTTPResponse):
                return verified
            variant, request_id, issued = verified.variant, verified.request_id, float(verified.issued)
            attribution = "token"
        elif request_id:
            variant = self._request_variants.get(request_id)
        if variant is None:
            attribution = "key"
            if key is None:
                return _json_response(
                    404, {"error": f"requestId {request_id!r} is unknown and no key was given"}
                )
            if routes.sticky_header is None and routes.sticky_cookie is None:
                return _json_response(
                    409, {"error": "feedback by key needs stickiness in the routes (or a known requestId)"}
                )
            variant = routes.assigner.sticky(key)

        if self._prediction_log is not None:
            self._prediction_log.outcome(
                when=time.time(),
                experiment=routes.experiment,
                variant=variant,
                outcome=value if value is not None else bool(success),
                attribution=attribution,
                request_id=request_id,
                issued=issued,
                key=key,
            )
        m = self.metrics
        if value is not None:
            m.outcomes.labels(routes.experiment, variant, "value").inc()
            m.outcome_value.labels(routes.experiment, variant).observe(value)
            m.outcome_value_squares.labels(routes.experiment, variant).inc(value * value)
        else:
            result = "success" if success else "failure"
            m.outcomes.labels(routes.experiment, variant, result).inc()
        return _json_response(200, {"experiment": routes.experiment, "variant": variant})

    def _verify_token(self, token: str, routes: _Routes) -> Attribution | HTTPResponse:
        """The token's attribution, or the 4xx answer refusing it (counted; the token is never logged)."""
        if self._attribution is None:
            self.metrics.attribution_rejected.labels(routes.experiment, "disabled").inc()
            return _json_response(
                409, {"error": "this router has no attribution keys: it cannot verify a `token`"}
            )
        try:
            attribution = self._attribution.verify(token)
        except AttributionError as exc:
            self.metrics.attribution_rejected.labels(routes.experiment, exc.reason).inc()
            status = 400 if exc.reason == "malformed" else 403
            return _json_response(status, {"error": str(exc), "reason": exc.reason})
        if attribution.experiment != routes.experiment:
            self.metrics.attribution_rejected.labels(routes.experiment, "experiment").inc()
            return _json_response(
                409,
                {
                    "error": f"the token is for experiment {attribution.experiment!r},"
                    f" the routes in force are {routes.experiment!r}",
                    "reason": "experiment",
                },
            )
        if attribution.variant not in routes.urls:
            self.metrics.attribution_rejected.labels(routes.experiment, "variant").inc()
            return _json_response(
                409,
                {
                    "error": f"the token's variant {attribution.variant!r} is not in the routes",
                    "reason": "variant",
                },
            )
        return attribution


def _parse_feedback(
    payload: Any,
) -> tuple[str, tuple[str | None, str | None, bool | None, float | None, str | None] | None]:
    """Validate a feedback body; return (problem, None) or ("", (key, requestId, success, value, token))."""
    if not isinstance(payload, dict):
        return "feedback body must be a JSON object", None
    unknown = set(payload) - {"key", "requestId", "success", "value", "token"}
    if unknown:
        return f"unknown feedback fields: {', '.join(sorted(unknown))}", None
    key = payload.get("key")
    request_id = payload.get("requestId")
    if key is not None and (not isinstance(key, str) or not key):
        return "`key` must be a non-empty string", None
    if request_id is not None and (not isinstance(request_id, str) or not request_id):
        return "`requestId` must be a non-empty string", None
    token = payload.get("token")
    if token is not None and (not isinstance(token, str) or not token):
        return "`token` must be a non-empty string (the Arbiter-Attribution header)", None
    if key is None and request_id is None and token is None:
        return (
            "feedback needs `token` (the Arbiter-Attribution header), `key` (the stickiness value) or `requestId`",
            None,
        )
    has_success = "success" in payload
    has_value = "value" in payload
    if has_success == has_value:
        return "feedback needs exactly one of `success` (boolean) or `value` (number)", None
    success = payload.get("success")
    value = payload.get("value")
    if has_success and not isinstance(success, bool):
        return "`success` must be true or false", None
    if has_value:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return "`value` must be a finite number", None
        try:
            value = float(value)  # JSON integers have no size limit: 1e400 written out overflows
        except OverflowError:
            return "`value` must be a finite number", None
        # The square too: a value whose square is infinite would poison the Σx² counter for good.
        if not math.isfinite(value * value):
            return f"`value` must be a finite number of magnitude below {_MAX_FEEDBACK_VALUE:g}", None
    return "", (key, request_id, success if has_success else None, value if has_value else None, token)


def _forwarded_headers(request: HTTPRequest) -> Headers:
    """The request's end-to-end headers, with the client appended to X-Forwarded-For."""
    headers = strip_hop_by_hop(request.headers)
    if request.peer:
        for index, (name, value) in enumerate(headers):
            if name.lower() == "x-forwarded-for":
                headers[index] = (name, f"{value}, {request.peer}")
                break
        else:
            headers.append(("X-Forwarded-For", request.peer))
    return headers
