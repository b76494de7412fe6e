"""shadow.compare rules on real model-server answers: JSON pointers compared or ignored, score deltas.

The answers are shaped like MLServer's V2 (Open Inference Protocol) responses, whose `id` and
`model_version` differ between any two servers: compared whole, no two such answers ever agree.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from router_testing import eventually, routes_yaml

from arbiter.router.compare import MISSING, CompareRules, Comparison, resolve_pointer
from arbiter.router.config import RouterConfigError, ShadowCompare, parse_json_pointer, parse_routes_data


def v2_answer(version: str, request_id: str, label: int, scores: list[float]) -> bytes:
    return json.dumps(
        {
            "model_name": "fraud",
            "model_version": version,
            "id": request_id,
            "parameters": {},
            "outputs": [
                {"name": "predict", "shape": [1, 1], "datatype": "INT64", "data": [label]},
                {"name": "predict_proba", "shape": [1, 2], "datatype": "FP64", "data": scores},
            ],
        }
    ).encode()


CHAMPION = v2_answer("v1", "7f0c", 0, [0.93, 0.07])
SAME_CLASS = v2_answer("v2", "11aa", 0, [0.81, 0.19])
OTHER_CLASS = v2_answer("v2", "22bb", 1, [0.35, 0.65])
SAME_EVERYTHING = v2_answer("v2", "33cc", 0, [0.93, 0.07])


def rules(**compare: Any) -> CompareRules:
    return CompareRules.build(ShadowCompare.model_validate(compare))


def test_whole_bodies_of_two_v2_servers_never_agree() -> None:
    """Without rules, the id and version alone make every pair of answers disagree (the bug to avoid)."""
    assert rules().compare(200, CHAMPION, 200, SAME_EVERYTHING) == Comparison(False)


def test_ignoring_the_volatile_fields_compares_the_rest() -> None:
    ignore = rules(ignore=["/id", "/model_version"])
    assert ignore.compare(200, CHAMPION, 200, SAME_EVERYTHING).agree
    assert not ignore.compare(200, CHAMPION, 200, SAME_CLASS).agree  # the scores differ
    assert not ignore.compare(200, CHAMPION, 500, SAME_EVERYTHING).agree  # a status always counts


def test_class_agreement_with_a_score_delta() -> None:
    by_class = rules(fields=["/outputs/0/data"], score="/outputs/1/data/1")
    same = by_class.compare(200, CHAMPION, 200, SAME_CLASS)
    assert same.agree
    assert same.score_delta == pytest.approx(0.12)
    other = by_class.compare(200, CHAMPION, 200, OTHER_CLASS)
    assert not other.agree
    assert other.score_delta == pytest.approx(0.58)
    assert other.unreadable == ""


def test_score_agreement_within_a_tolerance_and_list_scores() -> None:
    by_score = rules(fields=["/outputs/1/data"], numericTolerance=0.15, score="/outputs/1/data")
    same = by_score.compare(200, CHAMPION, 200, SAME_CLASS)
    assert same.agree
    assert same.score_delta == pytest.approx(0.12)  # the largest over the list
    assert not by_score.compare(200, CHAMPION, 200, OTHER_CLASS).agree


def test_a_missing_field_is_a_disagreement_never_a_silent_agreement() -> None:
    """A typo in a pointer must not make every answer agree (both sides lack the field)."""
    typo = rules(fields=["/outputs/0/dta"])
    result = typo.compare(200, CHAMPION, 200, SAME_EVERYTHING)
    assert result == Comparison(False, None, "field")
    beyond = rules(fields=["/outputs/5/data"]).compare(200, CHAMPION, 200, CHAMPION)
    assert beyond.unreadable == "field"


def test_unreadable_answers() -> None:
    by_class = rules(fields=["/outputs/0/data"], score="/outputs/1/data/1")
    assert by_class.compare(200, CHAMPION, 200, b"<html>oops</html>") == Comparison(False, None, "not_json")
    no_score = v2_answer("v2", "x", 0, [])
    result = by_class.compare(200, CHAMPION, 200, no_score)
    assert result == Comparison(True, None, "score"), "the class agrees; only the score is unreadable"
    text_score = by_class.compare(200, CHAMPION, 200, CHAMPION.replace(b"0.07", b'"0.07"'))
    assert text_score.unreadable == "score"


def test_ignore_inside_lists_keeps_the_other_indexes() -> None:
    served = b'{"outputs": [{"id": 1, "v": 5}, {"id": 2, "v": 6}]}'
    shadow = b'{"outputs": [{"id": 9, "v": 5}, {"id": 8, "v": 6}]}'
    assert rules(ignore=["/outputs/0/id", "/outputs/1/id"]).compare(200, served, 200, shadow).agree
    # Ignoring a whole element nulls it in both answers rather than shifting the next one.
    assert rules(ignore=["/outputs/0"], fields=["/outputs/1/v"]).compare(200, served, 200, shadow).agree
    assert not rules(ignore=["/outputs/0"]).compare(200, served, 200, shadow).agree


@pytest.mark.parametrize(
    ("pointer", "tokens"),
    [
        ("", ()),
        ("/a", ("a",)),
        ("/a~1b/~0c", ("a/b", "~c")),
        ("/outputs/0/data", ("outputs", "0", "data")),
        ("/", ("",)),
    ],
)
def test_json_pointer_parsing(pointer: str, tokens: tuple[str, ...]) -> None:
    assert parse_json_pointer(pointer) == tokens


def test_json_pointer_resolution_follows_rfc_6901() -> None:
    document = {"a": [10, 20], "": 1, "x/y": 2}
    assert resolve_pointer(document, ("a", "1")) == 20
    assert resolve_pointer(document, ("",)) == 1
    assert resolve_pointer(document, ("x/y",)) == 2
    assert resolve_pointer(document, ("a", "01")) is MISSING  # no leading zeros
    assert resolve_pointer(document, ("a", "-")) is MISSING
    assert resolve_pointer(document, ("a", "0", "z")) is MISSING
    assert resolve_pointer({"n": None}, ("n",)) is None


@pytest.mark.parametrize(
    ("compare", "message"),
    [
        ({"fields": ["outputs/0"]}, "must be empty or start with '/'"),
        ({"ignore": ["/a~2"]}, "'~' must be followed by 0 or 1"),
        ({"fields": ["/a", "/a"]}, "twice"),
        ({"score": ""}, "not be empty"),
        ({"scores": "/a"}, "scores: Extra inputs are not permitted"),
        ({"fields": [f"/{i}" for i in range(33)]}, "at most 32"),
    ],
)
def test_bad_rules_are_rejected_with_the_key(compare: dict[str, Any], message: str) -> None:
    document = {
        "experiment": "e",
        "variants": [
            {"name": "v1", "url": "http://a", "weight": 1},
            {"name": "v2", "url": "http://b", "weight": 0},
        ],
        "shadow": {"variant": "v2", "compare": compare},
    }
    with pytest.raises(RouterConfigError, match=r"shadow\.compare") as caught:
        parse_routes_data(document)
    assert message in str(caught.value)


def test_rules_round_trip_through_routes_yaml() -> None:
    from arbiter.router.config import RouterConfig, parse_routes_yaml

    config = RouterConfig.model_validate(
        {
            "experiment": "e",
            "variants": [
                {"name": "v1", "url": "http://a", "weight": 1},
                {"name": "v2", "url": "http://b", "weight": 0},
            ],
            "shadow": {
                "variant": "v2",
                "compare": {"fields": ["/outputs/0/data"], "ignore": ["/id"], "score": "/outputs/1/data/1"},
            },
        }
    )
    text = config.to_yaml()
    assert "score: /outputs/1/data/1" in text
    assert parse_routes_yaml(text) == config


CLASS_RULES = (
    "shadow:\n  variant: v2\n  compare:\n    fields: [/outputs/0/data]\n    score: /outputs/1/data/1\n"
)


async def test_the_router_exports_agreement_score_delta_and_unreadable_answers(
    model_server, start_router
) -> None:
    v1 = await model_server("v1", reply=json.loads(CHAMPION))
    v2 = await model_server("v2", reply=json.loads(SAME_CLASS))
    router = await start_router(routes_yaml("e", ("v1", v1.url, 1), ("v2", v2.url, 0), extra=CLASS_RULES))

    async def post() -> None:
        async with router.client.post(router.url + "/v2/models/fraud/infer", json={}) as response:
            assert response.status == 200
            assert response.headers["x-arbiter-variant"] == "v1"

    async def count(name: str, n: float, **labels: str) -> bool:
        return await router.metric(name, **labels) == n

    for _ in range(3):
        await post()
    await eventually(lambda: count("arbiter_router_shadow_comparisons_total", 3, agree="true"))
    v2.reply = json.loads(OTHER_CLASS)
    await post()
    await eventually(lambda: count("arbiter_router_shadow_comparisons_total", 1, agree="false"))
    delta = "arbiter_router_shadow_score_delta"
    assert await router.metric(f"{delta}_count", variant="v2") == 4
    assert await router.metric(f"{delta}_sum", variant="v2") == pytest.approx(3 * 0.12 + 0.58)
    assert await router.metric(f"{delta}_bucket", variant="v2", le="0.2") == 3
    assert await router.metric(f"{delta}_bucket", variant="v2", le="0.75") == 4
    assert await router.metric("arbiter_router_shadow_latency_delta_seconds_count", variant="v2") == 4

    v2.reply = {"error": "model not loaded"}
    await post()
    await eventually(lambda: count("arbiter_router_shadow_unreadable_total", 1, reason="field"))
    assert await router.metric("arbiter_router_shadow_comparisons_total", agree="false") == 2
