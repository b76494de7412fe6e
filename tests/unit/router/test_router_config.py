"""The routes.yaml contract: what parses, what is rejected and why, and the YAML round trip."""

from __future__ import annotations

import pytest

from arbiter.router.config import (
    RouterConfig,
    RouterConfigError,
    Shadow,
    Stickiness,
    Variant,
    load_routes_file,
    parse_routes_yaml,
)

ISSUE_EXAMPLE = """
experiment: fraud-v2
variants:                       # weights are relative (they need not sum to 100)
  - {name: v1, url: http://127.0.0.1:9001, weight: 90}
  - {name: v2, url: http://127.0.0.1:9002, weight: 10}
stickiness: {header: x-user-id} # or {cookie: uid}; without the key: random assignment
shadow: {variant: v2, percent: 100, timeoutSeconds: 1}   # optional: mirror to v2, serve from the rest
"""


def test_the_issue_example_parses() -> None:
    config = parse_routes_yaml(ISSUE_EXAMPLE)
    assert config.experiment == "fraud-v2"
    assert [(v.name, v.url, v.weight) for v in config.variants] == [
        ("v1", "http://127.0.0.1:9001", 90),
        ("v2", "http://127.0.0.1:9002", 10),
    ]
    assert config.stickiness == Stickiness(header="x-user-id")
    assert config.shadow is not None
    assert (config.shadow.variant, config.shadow.percent, config.shadow.timeout_seconds) == ("v2", 100, 1)
    # The shadow variant serves nobody; the first other variant is the champion.
    assert [v.name for v in config.served_variants] == ["v1"]
    assert config.champion_name == "v1"


def test_defaults_and_optional_keys() -> None:
    config = parse_routes_yaml(
        "experiment: e\nvariants: [{name: a, url: 'http://h:1/', weight: 1}, {name: b, url: 'https://h', weight: 0}]"
    )
    assert config.stickiness is None
    assert config.shadow is None
    assert config.champion_name == "a"
    assert config.limits.max_body_bytes == 1024 * 1024
    assert config.limits.upstream_timeout_seconds == 10
    assert config.variants[0].url == "http://h:1", "a trailing slash is dropped so paths join cleanly"


def test_camel_case_options() -> None:
    config = parse_routes_yaml(
        """
experiment: e
champion: b
variants:
  - {name: a, url: 'http://h:1', weight: 1}
  - {name: b, url: 'http://h:2', weight: 1}
  - {name: c, url: 'http://h:3', weight: 0}
stickiness: {cookie: uid}
shadow: {variant: c, percent: 12.5, timeoutSeconds: 0.25, maxConcurrent: 7, compare: {numericTolerance: 0.01}}
limits: {maxBodyBytes: 2048, upstreamTimeoutSeconds: 3}
"""
    )
    assert config.champion_name == "b"
    assert config.stickiness == Stickiness(cookie="uid")
    assert config.shadow == Shadow(
        variant="c", percent=12.5, timeout_seconds=0.25, max_concurrent=7, compare={"numeric_tolerance": 0.01}
    )
    assert (config.limits.max_body_bytes, config.limits.upstream_timeout_seconds) == (2048, 3)


def test_header_names_are_case_insensitive() -> None:
    config = parse_routes_yaml(
        "experiment: e\nvariants: [{name: a, url: 'http://h', weight: 1}]\nstickiness: {header: X-User-ID}"
    )
    assert config.stickiness is not None
    assert config.stickiness.header == "x-user-id"


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("- just\n- a list\n", "must be a mapping"),
        ("experiment: [unclosed\n", "not valid YAML"),
        ("variants: [{name: a, url: 'http://h', weight: 1}]", "experiment: Field required"),
        ("experiment: e\nvariants: []", "variants"),
        ("experiment: e\nvariants: [{name: a, url: 'http://h', weight: -1}]", "variants.0.weight"),
        ("experiment: e\nvariants: [{name: a, url: 'ftp://h', weight: 1}]", "http:// or https://"),
        ("experiment: e\nvariants: [{name: a, url: 'http://h?x=1', weight: 1}]", "query"),
        ("experiment: e\nvariants: [{name: 'a b', url: 'http://h', weight: 1}]", "variants.0.name"),
        (
            "experiment: e\nvariants: [{name: a, url: 'http://h', weight: 1}, {name: a, url: 'http://g', weight: 1}]",
            "unique; repeated: a",
        ),
        ("experiment: e\nvariants: [{name: a, url: 'http://h', weight: 0}]", "total weight of 0"),
        (
            "experiment: e\nvariants: [{name: a, url: 'http://h', weight: 1}]\nshadow: {variant: z}",
            "shadow.variant",
        ),
        (
            "experiment: e\nvariants: [{name: a, url: 'http://h', weight: 1}]\nshadow: {variant: a}",
            "no variant is left",
        ),
        (
            "experiment: e\nvariants: [{name: a, url: 'http://h', weight: 1}, {name: b, url: 'http://g', weight: 1}]\n"
            "champion: b\nshadow: {variant: b}",
            "cannot also be the shadow",
        ),
        ("experiment: e\nvariants: [{name: a, url: 'http://h', weight: 1}]\nchampion: z", "champion"),
        (
            "experiment: e\nvariants: [{name: a, url: 'http://h', weight: 1}]\nstickiness: {header: a, cookie: b}",
            "exactly one",
        ),
        ("experiment: e\nvariants: [{name: a, url: 'http://h', weight: 1}]\nstickiness: {}", "exactly one"),
        (
            "experiment: e\nvariants: [{name: a, url: 'http://h', weight: 1}]\nstickiness: {header: 'a b'}",
            "header",
        ),
        (
            "experiment: e\nvariants: [{name: a, url: 'http://h', weight: 1}, {name: b, url: 'http://g', weight: 1}]\n"
            "shadow: {variant: b, percent: 101}",
            "shadow.percent",
        ),
        (
            "experiment: e\nvariants: [{name: a, url: 'http://h', weight: 1}]\nstickyness: {header: x}",
            "stickyness",
        ),
    ],
)
def test_bad_documents_are_rejected_with_a_reason(text: str, complaint: str) -> None:
    with pytest.raises(RouterConfigError) as caught:
        parse_routes_yaml(text)
    assert complaint in str(caught.value)


def test_to_yaml_round_trips_and_omits_defaults() -> None:
    config = parse_routes_yaml(ISSUE_EXAMPLE)
    text = config.to_yaml()
    assert parse_routes_yaml(text) == config
    assert "timeoutSeconds" not in text, "fields at their default are left out"
    assert "limits" not in text
    assert text.index("experiment") < text.index("variants") < text.index("stickiness")
    assert "weight: 90\n" in text.replace("}", "\n").replace(",", "\n"), "integral weights stay integers"


def test_built_in_python_round_trips() -> None:
    """The routing provider builds configs in Python with snake_case names and serializes them."""
    config = RouterConfig(
        experiment="churn",
        variants=(
            Variant(name="champion", url="http://champion.ns.svc:8080", weight=75),
            Variant(name="challenger", url="http://challenger.ns.svc:8080", weight=25.5),
            Variant(name="shadowed", url="http://shadowed.ns.svc:8080", weight=0),
        ),
        stickiness=Stickiness(header="x-user-id"),
        shadow=Shadow(variant="shadowed", percent=50, timeout_seconds=2),
    )
    again = parse_routes_yaml(config.to_yaml())
    assert again == config
    assert again.to_yaml() == config.to_yaml(), "serialization is deterministic"
    assert config.variant("challenger").weight == 25.5
    with pytest.raises(KeyError):
        config.variant("nope")


def test_load_routes_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "routes.yaml"
    path.write_text(ISSUE_EXAMPLE)
    assert load_routes_file(path).experiment == "fraud-v2"
    with pytest.raises(RouterConfigError, match="cannot read"):
        load_routes_file(tmp_path / "missing.yaml")
