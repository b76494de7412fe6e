"""The Router provider's document: the routes.yaml it builds parses back to the same weights."""

from __future__ import annotations

import pytest

from arbiter.router.config import Limits, RouterConfig, Shadow, ShadowCompare, Stickiness, parse_routes_yaml
from arbiter.routing import InvalidTargetError, Mirror, TrafficState
from arbiter.routing.router import build_config, service_port, state_of

URLS = {"v1": "http://a.ns.svc:80", "v2": "http://b.ns.svc:8080", "v3": "http://c.ns.svc:80"}


def test_round_trip_through_yaml() -> None:
    config = build_config(
        "exp", "v1", URLS, {"v1": 80, "v2": 15, "v3": 5}, None, Stickiness(cookie="uid"), 1.0
    )
    parsed = parse_routes_yaml(config.to_yaml())
    assert parsed == config
    assert parsed.champion == "v1"
    assert state_of(parsed) == TrafficState({"v1": 80, "v2": 15, "v3": 5})


def test_shadow_keeps_the_humans_tuning_and_limits() -> None:
    current = RouterConfig.model_validate(
        {
            "experiment": "exp",
            "variants": [
                {"name": "v1", "url": "http://a", "weight": 1},
                {"name": "v2", "url": "http://b", "weight": 0},
            ],
            "shadow": {
                "variant": "v2",
                "percent": 50,
                "maxConcurrent": 7,
                "compare": {"numericTolerance": 0.01},
            },
            "limits": {"maxBodyBytes": 1000},
        }
    )
    config = build_config("exp", "v1", URLS, {"v1": 100}, Mirror("v3", 30), None, 2.0, current)
    assert config.shadow == Shadow(
        variant="v3",
        percent=30,
        timeout_seconds=2.0,
        max_concurrent=7,
        compare=ShadowCompare(numeric_tolerance=0.01),
    )
    assert config.limits == Limits(max_body_bytes=1000)
    assert state_of(config) == TrafficState({"v1": 100, "v2": 0, "v3": 0}, Mirror("v3", 30))


def test_state_of_relative_weights_written_by_a_human() -> None:
    config = RouterConfig.model_validate(
        {
            "experiment": "exp",
            "variants": [
                {"name": "v1", "url": "http://a", "weight": 2},
                {"name": "v2", "url": "http://b", "weight": 1},
                {"name": "v3", "url": "http://c", "weight": 5},
            ],
            "shadow": {"variant": "v3", "percent": 12.6},
        }
    )
    # The shadow serves nobody whatever its weight says.
    assert state_of(config) == TrafficState({"v1": 67, "v2": 33, "v3": 0}, Mirror("v3", 13))


def test_service_port_prefers_http() -> None:
    assert (
        service_port({"spec": {"ports": [{"name": "grpc", "port": 9000}, {"name": "http", "port": 8080}]}})
        == 8080
    )
    assert service_port({"spec": {"ports": [{"port": 9000}]}}) == 9000
    with pytest.raises(InvalidTargetError, match="no ports"):
        service_port({"metadata": {"name": "s"}, "spec": {"ports": []}})


def test_the_specs_compare_rules_replace_the_humans_and_none_keeps_them() -> None:
    human = ShadowCompare(numeric_tolerance=0.01)
    current = build_config("exp", "v1", URLS, {"v1": 100}, Mirror("v2", 100), None, 1.0)
    current = current.model_copy(update={"shadow": current.shadow.model_copy(update={"compare": human})})  # type: ignore[union-attr]
    rules = ShadowCompare(fields=("/outputs/0/data",), ignore=("/id",), score="/outputs/1/data/1")
    config = build_config(
        "exp", "v1", URLS, {"v1": 100}, Mirror("v2", 100), None, 1.0, current, compare=rules
    )
    assert config.shadow is not None and config.shadow.compare == rules
    assert parse_routes_yaml(config.to_yaml()) == config
    kept = build_config("exp", "v1", URLS, {"v1": 100}, Mirror("v2", 100), None, 1.0, current)
    assert kept.shadow is not None and kept.shadow.compare == human
