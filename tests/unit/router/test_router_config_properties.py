"""routes.yaml under arbitrary input: RouterConfigError or a usable config, never anything else.

The router re-reads this document from a file or a ConfigMap anyone with write access can edit; an
exception other than `RouterConfigError` would escape the reload path (which keeps the previous
routes only on that error). Three generators: raw text, arbitrary YAML-shaped data, and documents
that are nearly right (every key present, with values of any type and range).
"""

from __future__ import annotations

import math
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from arbiter.router.assign import Assigner
from arbiter.router.config import RouterConfig, RouterConfigError, parse_routes_data, parse_routes_yaml

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Scalars YAML can produce, the odd ones included (NaN, infinities, huge integers, bytes-like text).
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(["", " ", "http://", "http://h", "https://h:99999", "http://[::1", "x-user-id", "v1"]),
)
yaml_data = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=12), st.integers()), children, max_size=5),
    ),
    max_leaves=25,
)
names = st.one_of(st.sampled_from(["v1", "v2", "v3"]), st.text(max_size=70), scalars)
urls = st.one_of(
    st.sampled_from(
        [
            "http://127.0.0.1:9001",
            "https://m.ns.svc:8443/prefix/",
            "http://h:0",
            "http://h:65536",
            "http://[::1]:80",
            "http://[::1",
            "http://user:pw@h",
            "ftp://h",
            "http://h/?q=1",
            "http:///nohost",
            "http://h#frag",
        ]
    ),
    st.text(max_size=40),
    scalars,
)
numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70), st.floats(allow_nan=True, allow_infinity=True), scalars
)


@st.composite
def near_valid_documents(draw: st.DrawFn) -> dict[str, Any]:
    """Every key of the format, each with a plausible or hostile value; some keys left out."""
    variants = draw(
        st.lists(
            st.fixed_dictionaries({"name": names, "url": urls, "weight": numbers}), min_size=0, max_size=4
        )
    )
    document: dict[str, Any] = {
        "experiment": draw(st.one_of(st.text(max_size=300), scalars)),
        "variants": variants,
    }
    optional = {
        "champion": names,
        "stickiness": st.one_of(
            st.fixed_dictionaries({"header": st.one_of(st.text(max_size=20), scalars)}),
            st.fixed_dictionaries({"cookie": st.one_of(st.text(max_size=20), scalars)}),
            yaml_data,
        ),
        "shadow": st.one_of(
            st.fixed_dictionaries(
                {"variant": names},
                optional={
                    "percent": numbers,
                    "timeoutSeconds": numbers,
                    "maxConcurrent": numbers,
                    "compare": st.one_of(st.fixed_dictionaries({"numericTolerance": numbers}), yaml_data),
                },
            ),
            yaml_data,
        ),
        "limits": st.fixed_dictionaries(
            {}, optional={"maxBodyBytes": numbers, "upstreamTimeoutSeconds": numbers}
        ),
    }
    for key, strategy in optional.items():
        if draw(st.booleans()):
            document[key] = draw(strategy)
    return document


def check_usable(config: RouterConfig) -> None:
    """A config that parsed is one the router can serve with: finite weights, a working assigner."""
    served = config.served_variants
    assert served and config.champion_name in {v.name for v in served}
    weights = [(v.name, v.weight) for v in served]
    assert all(math.isfinite(w) and w >= 0 for _, w in weights)
    assert sum(w for _, w in weights) > 0
    assigner = Assigner(config.experiment, weights)
    assert assigner.sticky("some-user") in {v.name for v in served if v.weight > 0}
    assert assigner.draw() in {v.name for v in served if v.weight > 0}
    if config.shadow is not None:
        assert math.isfinite(config.shadow.percent) and math.isfinite(config.shadow.timeout_seconds)
        assert math.isfinite(config.shadow.compare.numeric_tolerance)
    assert math.isfinite(config.limits.upstream_timeout_seconds)
    # What parses must serialize to the same thing (the provider compares ConfigMap texts).
    assert parse_routes_yaml(config.to_yaml()) == config


@SETTINGS
@given(st.text(max_size=300))
@example("a: 2001-13-01")  # PyYAML's timestamp constructor raises a bare ValueError
@example("experiment: 2001-02-30 10:00:00\nvariants: []")
@example("[" * 2000)  # nesting deep enough to exhaust the recursion limit
@example("!!python/object:os.system {}")
def test_any_text_parses_or_is_refused_with_a_config_error(text: str) -> None:
    try:
        config = parse_routes_yaml(text)
    except RouterConfigError as exc:
        assert str(exc), "a refusal says why"
        return
    check_usable(config)


@SETTINGS
@given(yaml_data)
def test_any_yaml_shaped_data_parses_or_is_refused(data: Any) -> None:
    try:
        config = parse_routes_data(data)
    except RouterConfigError:
        return
    check_usable(config)


@SETTINGS
@given(near_valid_documents())
@example(
    {"experiment": "e", "variants": [{"name": "v1", "url": "http://h", "weight": math.inf}]}
)  # an infinite weight would make every sticky score 0
@example({"experiment": "e", "variants": [{"name": "v1", "url": "http://h", "weight": math.nan}]})
@example(
    {
        "experiment": "e",
        "variants": [{"name": "v1", "url": "http://h", "weight": 1}],
        "limits": {"upstreamTimeoutSeconds": math.nan},
    }
)
def test_nearly_right_documents_parse_to_usable_routes_or_are_refused(document: dict[str, Any]) -> None:
    try:
        config = parse_routes_data(document)
    except RouterConfigError as exc:
        assert str(exc)
        return
    check_usable(config)
