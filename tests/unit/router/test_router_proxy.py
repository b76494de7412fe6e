"""The router over real HTTP: routing, stickiness, headers, limits, failures, shadow, feedback, reloads."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from router_testing import RunningRouter, eventually, free_port, routes_yaml

from arbiter.router.assign import Assigner
from arbiter.router.proxy import Router


async def post(router: RunningRouter, path: str = "/predict", **kwargs: object) -> tuple[int, str, bytes]:
    async with router.client.post(router.url + path, **kwargs) as response:  # type: ignore[arg-type]
        return response.status, response.headers.get("x-arbiter-variant", ""), await response.read()


async def test_every_response_names_the_variant_that_served_it(model_server, start_router) -> None:
    v1, v2 = await model_server("v1"), await model_server("v2")
    router = await start_router(routes_yaml("e", ("v1", v1.url, 50), ("v2", v2.url, 50)))
    served = Counter()
    for _ in range(200):
        status, variant, body = await post(router, json={"x": 1})
        assert status == 200
        assert json.loads(body)["model"] == variant, "the header names the server that answered"
        served[variant] += 1
    assert set(served) == {"v1", "v2"}
    assert len(v1.seen) == served["v1"] and len(v2.seen) == served["v2"]
    assert await router.metric("arbiter_router_requests_total", variant="v1", code="200") == served["v1"]
    assert await router.metric("arbiter_router_request_duration_seconds_count", variant="v2") == served["v2"]


async def test_sticky_by_header_follows_the_hash(model_server, start_router) -> None:
    v1, v2 = await model_server("v1"), await model_server("v2")
    router = await start_router(
        routes_yaml("fraud", ("v1", v1.url, 70), ("v2", v2.url, 30), extra="stickiness: {header: x-user-id}")
    )
    expected = Assigner("fraud", [("v1", 70), ("v2", 30)])
    seen = set()
    for user in range(60):
        key = f"user-{user}"
        variants = {(await post(router, headers={"X-User-Id": key}))[1] for _ in range(3)}
        assert variants == {expected.sticky(key)}, key
        seen |= variants
    assert seen == {"v1", "v2"}


async def test_sticky_by_cookie(model_server, start_router) -> None:
    v1, v2 = await model_server("v1"), await model_server("v2")
    router = await start_router(
        routes_yaml("shop", ("v1", v1.url, 50), ("v2", v2.url, 50), extra="stickiness: {cookie: uid}")
    )
    expected = Assigner("shop", [("v1", 50), ("v2", 50)])
    for user in range(40):
        key = f"u{user}"
        for _ in range(2):
            _, variant, _ = await post(router, headers={"Cookie": f"theme=dark; uid={key}"})
            assert variant == expected.sticky(key)


async def test_request_is_forwarded_faithfully_without_hop_by_hop_headers(model_server, start_router) -> None:
    v1 = await model_server(
        "v1", extra_headers={"Keep-Alive": "timeout=9", "X-Model-Version": "3", "Proxy-Authenticate": "Basic"}
    )
    router = await start_router(routes_yaml("e", ("v1", v1.url, 1)))
    async with router.client.put(
        router.url + "/v2/models/fraud:predict?explain=1&x=%20y",
        data=b'{"features": [1, 2]}',
        headers={
            "Content-Type": "application/json",
            "X-App": "checkout",
            "Connection": "keep-alive, X-Private-Hop",
            "X-Private-Hop": "secret",
            "Keep-Alive": "timeout=5",
            "TE": "trailers",
            "Proxy-Authorization": "Basic c2VjcmV0",
        },
    ) as response:
        assert response.status == 200
        assert response.headers["X-Model-Version"] == "3"
        assert "Proxy-Authenticate" not in response.headers
        assert response.headers.get("Keep-Alive") is None
    [seen] = v1.seen
    assert seen.method == "PUT"
    assert seen.path_qs == "/v2/models/fraud:predict?explain=1&x=%20y"
    assert seen.body == b'{"features": [1, 2]}'
    assert seen.headers["x-app"] == "checkout"
    assert seen.headers["content-type"] == "application/json"
    assert seen.headers["x-forwarded-for"] == "127.0.0.1"
    for hop in ("x-private-hop", "keep-alive", "te", "proxy-authorization"):
        assert hop not in seen.headers, hop


async def test_head_and_bodiless_responses(model_server, start_router) -> None:
    v1 = await model_server("v1")
    router = await start_router(routes_yaml("e", ("v1", v1.url, 1)))
    async with router.client.head(router.url + "/health") as response:
        assert response.status == 200
        assert response.headers["x-arbiter-variant"] == "v1"
    v1.status = 204
    v1.reply = ""
    async with router.client.delete(router.url + "/cache") as response:
        assert response.status == 204
        assert await response.read() == b""
    async with router.client.get(router.url + "/after") as response:
        assert response.status == 204, "the pooled connection is still usable after bodiless answers"
    assert [s.method for s in v1.seen] == ["HEAD", "DELETE", "GET"]


async def test_large_bodies_pass_and_oversized_ones_are_refused(model_server, start_router) -> None:
    v1 = await model_server("v1")
    big_reply = {"embedding": [0.125] * 200_000}  # about 1.4 MB of JSON
    v1.reply = big_reply
    router = await start_router(routes_yaml("e", ("v1", v1.url, 1), extra="limits: {maxBodyBytes: 100000}"))
    status, _, body = await post(router, data=b"x" * 100_000)
    assert status == 200
    assert json.loads(body) == big_reply
    status, _variant, body = await post(router, data=b"x" * 100_001)
    assert status == 413
    assert "100000" in json.loads(body)["error"]

    async def chunks():  # no Content-Length: the limit is enforced while reading
        for _ in range(30):
            yield b"y" * 5000

    status, _, _ = await post(router, data=chunks())
    assert status == 413
    assert len(v1.seen) == 1, "refused bodies never reach a model"
    assert await router.metric("arbiter_router_requests_total", variant="none", code="413") == 2


async def test_upstream_timeout_answers_504(model_server, start_router) -> None:
    v1 = await model_server("v1", gate=asyncio.Event())
    router = await start_router(
        routes_yaml("e", ("v1", v1.url, 1), extra="limits: {upstreamTimeoutSeconds: 0.2}")
    )
    status, variant, _ = await post(router)
    assert (status, variant) == (504, "v1")
    assert (
        await router.metric(
            "arbiter_router_upstream_errors_total", variant="v1", role="serve", reason="timeout"
        )
        == 1
    )
    assert await router.metric("arbiter_router_requests_total", variant="v1", code="504") == 1


async def test_a_dead_champion_answers_502(start_router) -> None:
    router = await start_router(routes_yaml("e", ("v1", f"http://127.0.0.1:{free_port()}", 1)))
    status, variant, body = await post(router)
    assert (status, variant) == (502, "v1")
    assert "v1" in json.loads(body)["error"]
    assert await router.metric("arbiter_router_upstream_errors_total", variant="v1", reason="connect") == 1


async def test_a_refusing_challenger_is_retried_once_on_the_champion(model_server, start_router) -> None:
    champion = await model_server("champ")
    # The champion has weight 0 so every request first goes to the dead challenger.
    router = await start_router(
        routes_yaml("e", ("champ", champion.url, 0), ("chall", f"http://127.0.0.1:{free_port()}", 100))
    )
    for _ in range(3):
        status, variant, body = await post(router, json={"a": 1})
        assert (status, variant) == (200, "champ")
        assert json.loads(body)["model"] == "champ"
    assert [s.body for s in champion.seen] == [b'{"a": 1}'] * 3, "the retry carries the same body"
    assert await router.metric("arbiter_router_retries_total", variant="chall", reason="connect") == 3
    assert await router.metric("arbiter_router_requests_total", variant="champ", code="200") == 3


async def test_a_slow_challenger_is_retried_once_on_the_champion(model_server, start_router) -> None:
    champion = await model_server("champ")
    slow = await model_server("slow", gate=asyncio.Event())
    router = await start_router(
        routes_yaml(
            "e",
            ("champ", champion.url, 0),
            ("slow", slow.url, 1),
            extra="limits: {upstreamTimeoutSeconds: 0.2}",
        )
    )
    status, variant, _ = await post(router)
    assert (status, variant) == (200, "champ")
    assert len(slow.seen) == 1
    assert await router.metric("arbiter_router_retries_total", variant="slow", reason="timeout") == 1


async def test_an_erroring_challenger_is_answered_as_is(model_server, start_router) -> None:
    """A 5xx is an answer (counted per variant for the guardrails), not a transport failure."""
    champion = await model_server("champ")
    broken = await model_server("broken", status=500, reply={"error": "boom"})
    router = await start_router(routes_yaml("e", ("champ", champion.url, 0), ("broken", broken.url, 1)))
    status, variant, _ = await post(router)
    assert (status, variant) == (500, "broken")
    assert not champion.seen
    assert await router.metric("arbiter_router_requests_total", variant="broken", code="500") == 1


SHADOW = "shadow: {variant: v2, percent: 100, timeoutSeconds: 5}\n"


async def test_shadow_answers_are_compared_with_the_served_ones(model_server, start_router) -> None:
    v1 = await model_server("v1", reply={"score": 0.5})
    v2 = await model_server("v2", reply={"score": 0.5})
    router = await start_router(routes_yaml("e", ("v1", v1.url, 90), ("v2", v2.url, 10), extra=SHADOW))
    for _ in range(4):
        status, variant, _ = await post(router, json={"x": 1})
        assert (status, variant) == (200, "v1"), "the shadow variant never serves"

    async def compared(n: int, agree: str) -> bool:
        return await router.metric("arbiter_router_shadow_comparisons_total", variant="v2", agree=agree) == n

    await eventually(lambda: compared(4, "true"), message="4 agreeing comparisons")
    assert [s.body for s in v2.seen] == [b'{"x": 1}'] * 4, "the mirror gets the same request"
    assert await router.metric("arbiter_router_shadow_latency_delta_seconds_count", variant="v2") == 4

    v2.reply = {"score": 0.9}
    await post(router)
    await eventually(lambda: compared(1, "false"), message="a disagreeing comparison")


async def test_shadow_numeric_tolerance(model_server, start_router) -> None:
    v1 = await model_server("v1", reply={"label": "fraud", "score": 0.5})
    v2 = await model_server("v2", reply={"label": "fraud", "score": 0.505})
    extra = "shadow: {variant: v2, compare: {numericTolerance: 0.01}}\n"
    router = await start_router(routes_yaml("e", ("v1", v1.url, 1), ("v2", v2.url, 0), extra=extra))
    await post(router)

    async def agreed() -> bool:
        return await router.metric("arbiter_router_shadow_comparisons_total", agree="true") == 1

    await eventually(agreed)
    v2.reply = {"label": "fraud", "score": 0.52}
    await post(router)

    async def disagreed() -> bool:
        return await router.metric("arbiter_router_shadow_comparisons_total", agree="false") == 1

    await eventually(disagreed)


async def test_a_stuck_shadow_never_delays_the_served_response(model_server, start_router) -> None:
    v1 = await model_server("v1", reply={"score": 1})
    v2 = await model_server("v2", reply={"score": 1}, gate=asyncio.Event())
    router = await start_router(routes_yaml("e", ("v1", v1.url, 1), ("v2", v2.url, 0), extra=SHADOW))
    assert v2.gate is not None
    status, variant, _ = await post(router)
    # The served response is complete while the shadow model still holds the mirrored request.
    assert (status, variant) == (200, "v1")
    await asyncio.wait_for(v2.entered.wait(), 10)
    assert not v2.gate.is_set()
    assert await router.metric("arbiter_router_shadow_comparisons_total") == 0
    v2.gate.set()

    async def compared() -> bool:
        return await router.metric("arbiter_router_shadow_comparisons_total", agree="true") == 1

    await eventually(compared, message="the comparison once the shadow answers")


async def test_shadow_timeouts_and_refusals_are_counted_not_served(model_server, start_router) -> None:
    v1 = await model_server("v1")
    v2 = await model_server("v2", gate=asyncio.Event())
    extra = "shadow: {variant: v2, timeoutSeconds: 0.1}\n"
    router = await start_router(routes_yaml("e", ("v1", v1.url, 1), ("v2", v2.url, 0), extra=extra))
    assert (await post(router))[0] == 200

    async def timed_out() -> bool:
        return (
            await router.metric(
                "arbiter_router_upstream_errors_total", variant="v2", role="shadow", reason="timeout"
            )
            == 1
        )

    await eventually(timed_out)
    await v2.stop()
    assert (await post(router))[0] == 200

    async def refused() -> bool:
        return (
            await router.metric(
                "arbiter_router_upstream_errors_total", variant="v2", role="shadow", reason="connect"
            )
            == 1
        )

    await eventually(refused)
    assert await router.metric("arbiter_router_shadow_comparisons_total") == 0


async def test_shadow_concurrency_is_bounded_and_excess_is_dropped(model_server, start_router) -> None:
    v1 = await model_server("v1", reply={"score": 1})
    v2 = await model_server("v2", reply={"score": 1}, gate=asyncio.Event())
    extra = "shadow: {variant: v2, maxConcurrent: 2, timeoutSeconds: 30}\n"
    router = await start_router(routes_yaml("e", ("v1", v1.url, 1), ("v2", v2.url, 0), extra=extra))
    for _ in range(5):
        assert (await post(router))[0] == 200

    async def two_waiting() -> bool:
        return len(v2.seen) == 2

    await eventually(two_waiting)
    assert await router.metric("arbiter_router_shadow_dropped_total", variant="v2") == 3
    assert v2.gate is not None
    v2.gate.set()

    async def compared() -> bool:
        return await router.metric("arbiter_router_shadow_comparisons_total", agree="true") == 2

    await eventually(compared)
    assert len(v2.seen) == 2


async def test_shadow_percent_mirrors_a_share(model_server, start_router) -> None:
    v1, v2 = await model_server("v1"), await model_server("v2")
    extra = "shadow: {variant: v2, percent: 25}\n"
    router = await start_router(routes_yaml("e", ("v1", v1.url, 1), ("v2", v2.url, 0), extra=extra))
    for _ in range(400):
        await post(router)

    async def settled() -> bool:
        compared = await router.metric("arbiter_router_shadow_comparisons_total")
        return compared == len(v2.seen)

    await eventually(settled)
    # Binomial(400, 0.25): mean 100, sd 8.7; 60..140 is beyond 4.5 sd.
    assert 60 <= len(v2.seen) <= 140


async def test_feedback_is_attributed_to_the_keys_variant(model_server, start_router) -> None:
    v1, v2 = await model_server("v1"), await model_server("v2")
    router = await start_router(
        routes_yaml("conv", ("v1", v1.url, 50), ("v2", v2.url, 50), extra="stickiness: {header: x-user-id}")
    )
    served = {}
    for user in ("alice", "bob", "carol", "dave", "erin", "frank"):
        served[user] = (await post(router, headers={"x-user-id": user}))[1]
    assert set(served.values()) == {"v1", "v2"}
    for user, variant in served.items():
        status, _, body = await post(router, "/feedback", json={"key": user, "success": user < "c"})
        assert status == 200
        assert json.loads(body) == {"experiment": "conv", "variant": variant}
    for user, value in (("alice", 12.5), ("alice", -2.5), ("erin", 3.0)):
        assert (await post(router, "/feedback", json={"key": user, "value": value}))[0] == 200

    for variant in ("v1", "v2"):
        users = [u for u, v in served.items() if v == variant]
        successes = sum(1 for u in users if u < "c")
        assert (
            await router.metric(
                "arbiter_router_outcomes_total", experiment="conv", variant=variant, result="success"
            )
            == successes
        )
        assert (
            await router.metric("arbiter_router_outcomes_total", variant=variant, result="failure")
            == len(users) - successes
        )
        values = [x for u, x in (("alice", 12.5), ("alice", -2.5), ("erin", 3.0)) if served[u] == variant]
        assert await router.metric("arbiter_router_outcome_value_count", variant=variant) == len(values)
        assert await router.metric("arbiter_router_outcome_value_sum", variant=variant) == sum(values)
        assert await router.metric("arbiter_router_outcome_value_squares_total", variant=variant) == sum(
            x * x for x in values
        )
        assert await router.metric("arbiter_router_outcomes_total", variant=variant, result="value") == len(
            values
        )
    assert len(v1.seen) + len(v2.seen) == 6, "feedback never reaches a model"


async def test_feedback_by_request_id_without_stickiness(model_server, start_router) -> None:
    v1, v2 = await model_server("v1"), await model_server("v2")
    router = await start_router(routes_yaml("e", ("v1", v1.url, 50), ("v2", v2.url, 50)))
    served = {}
    for i in range(20):
        served[f"req-{i}"] = (await post(router, headers={"X-Request-Id": f"req-{i}"}))[1]
    for request_id, variant in served.items():
        status, _, body = await post(router, "/feedback", json={"requestId": request_id, "success": True})
        assert (status, json.loads(body)["variant"]) == (200, variant)
    for variant in ("v1", "v2"):
        assert await router.metric("arbiter_router_outcomes_total", variant=variant, result="success") == sum(
            1 for v in served.values() if v == variant
        )
    status, _, body = await post(router, "/feedback", json={"key": "someone", "success": True})
    assert status == 409, "without stickiness a key says nothing about the variant"
    status, _, _ = await post(router, "/feedback", json={"requestId": "never-seen", "success": True})
    assert status == 404


async def test_bad_feedback_is_rejected(model_server, start_router) -> None:
    v1 = await model_server("v1")
    router = await start_router(routes_yaml("e", ("v1", v1.url, 1), extra="stickiness: {header: x-user-id}"))
    for payload in (
        b"not json",
        b"[1, 2]",
        json.dumps({"success": True}).encode(),
        json.dumps({"key": "a"}).encode(),
        json.dumps({"key": "a", "success": True, "value": 1}).encode(),
        json.dumps({"key": "a", "success": "yes"}).encode(),
        json.dumps({"key": "a", "value": True}).encode(),
        json.dumps({"key": "a", "value": "12"}).encode(),
        json.dumps({"key": "", "success": True}).encode(),
        json.dumps({"key": "a", "success": True, "extra": 1}).encode(),
        b'{"key": "a", "value": NaN}',
        b'{"key": "a", "value": -Infinity}',
        b'{"key": "a", "value": 1' + b"0" * 400 + b"}",  # an integer no float can hold
        b'{"key": "a", "value": 1e200}',  # finite, but its square (for the Σx² counter) is not
    ):
        status, _, body = await post(router, "/feedback", data=payload)
        assert status == 400, payload
        assert json.loads(body)["error"]
    assert await router.metric("arbiter_router_outcomes_total") == 0
    # GET /feedback is not feedback: it is proxied like any other path.
    async with router.client.get(router.url + "/feedback") as response:
        assert response.headers["x-arbiter-variant"] == "v1"


async def test_without_routes_the_router_answers_503() -> None:
    router = Router()
    port = await router.start("127.0.0.1", 0)
    metrics_port = await router.start_metrics("127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as client:
            async with client.get(f"http://127.0.0.1:{port}/x") as response:
                assert response.status == 503
            async with client.get(f"http://127.0.0.1:{metrics_port}/readyz") as response:
                assert response.status == 503
            async with client.get(f"http://127.0.0.1:{metrics_port}/healthz") as response:
                assert response.status == 200
    finally:
        await router.close()


async def test_reload_is_atomic_and_a_bad_config_keeps_the_old_routes(model_server, start_router) -> None:
    v1 = await model_server("v1", gate=asyncio.Event())
    v2 = await model_server("v2")
    router = await start_router(routes_yaml("e", ("v1", v1.url, 1)))
    assert v1.gate is not None

    in_flight = asyncio.create_task(post(router))
    await asyncio.wait_for(v1.entered.wait(), 10)
    assert router.router.apply_text(routes_yaml("e", ("v2", v2.url, 1)), "test")
    v1.gate.set()
    assert (await in_flight)[:2] == (200, "v1"), "a request finishes on the routes it started with"
    assert (await post(router))[:2] == (200, "v2")

    assert not router.router.apply_text("experiment: e\nvariants: []\n", "test")
    assert not router.router.apply_text("{not yaml", "test")
    assert (await post(router))[:2] == (200, "v2"), "a rejected config leaves the old one serving"
    assert await router.metric("arbiter_router_config_reloads_total", result="failure") == 2
    assert await router.metric("arbiter_router_config_reloads_total", result="success") == 2
    assert await router.metric("arbiter_router_variant_weight", variant="v2") == 1
    assert await router.metric("arbiter_router_variant_weight", variant="v1") == 0, (
        "old variants are forgotten"
    )


async def test_readyz_describes_the_routes(model_server, start_router) -> None:
    v1 = await model_server("v1")
    router = await start_router(routes_yaml("fraud", ("v1", v1.url, 1)))
    async with router.client.get(router.metrics_url.replace("/metrics", "/readyz")) as response:
        assert response.status == 200
        assert "experiment=fraud" in await response.text()


async def test_counters_a_query_divides_by_exist_at_zero_once_routes_load(model_server, start_router) -> None:
    """Before any traffic: outcomes success/failure and a 500 count per variant, agree true/false for the
    shadow. A variant that never converts (or a shadow that never agrees) then reads 0, not no data."""
    v1, v2, v3 = await model_server("v1"), await model_server("v2"), await model_server("v3")
    extra = "shadow: {variant: v3}\n"
    router = await start_router(
        routes_yaml("z", ("v1", v1.url, 90), ("v2", v2.url, 10), ("v3", v3.url, 0), extra=extra)
    )
    async with router.client.get(router.metrics_url) as response:
        text = await response.text()
    series = {
        (s.name, tuple(sorted(s.labels.items())), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }

    def has(name: str, **labels: str) -> bool:
        return (name, tuple(sorted({"experiment": "z", **labels}.items())), 0.0) in series

    for variant in ("v1", "v2", "v3"):
        for result in ("success", "failure"):
            assert has("arbiter_router_outcomes_total", variant=variant, result=result), (variant, result)
        assert has("arbiter_router_requests_total", variant=variant, code="500"), variant
    for agree in ("true", "false"):
        assert has("arbiter_router_shadow_comparisons_total", variant="v3", agree=agree), agree
    assert not any(
        name == "arbiter_router_shadow_comparisons_total" and dict(labels)["variant"] != "v3"
        for name, labels, _ in series
    ), "only the shadow variant is compared"
