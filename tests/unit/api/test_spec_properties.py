"""Property-based tests of the spec types: no input makes parsing raise anything but a ValidationError.

The operator parses whatever the API server stored (possibly admitted by an older CRD); a crash there
would kill an experiment's loop, so every malformed spec must come back as pydantic's ValidationError,
whose field-located messages become the Failed condition.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from arbiter.api import parse_spec

EXAMPLES = Path(__file__).parents[3] / "examples"
VALID_SPECS = [
    d["spec"]
    for path in sorted(EXAMPLES.glob("*.yaml"))
    for d in yaml.safe_load_all(path.read_text())
    if d and d.get("kind") == "ModelExperiment" and "templateRef" not in str(d)  # parsed once resolved
]

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
    | st.sampled_from(["0s", "1ms", "30s", "1h30m", "-5s", "v1", "Router", "Canary", "Proportion", ""])
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside a JSON document."""
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, child in node.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            found += _paths(child, (*prefix, index))
    return found


def _parse_or_validation_error(spec: Any) -> None:
    try:
        parsed = parse_spec(spec)
    except ValidationError:
        return
    # What parses also survives its own round trip (the status and the CRD speak the same JSON).
    again = parse_spec(parsed.model_dump(by_alias=True, mode="json", exclude_none=True))
    assert again == parsed


@settings(max_examples=300, deadline=None)
@given(JSON)
def test_arbitrary_json_never_crashes_the_parser(value: Any) -> None:
    _parse_or_validation_error(value)


@st.composite
def mutated_specs(draw: st.DrawFn) -> dict[str, Any]:
    """A valid example with a few of its values replaced by arbitrary JSON, or deleted."""
    spec = copy.deepcopy(draw(st.sampled_from(VALID_SPECS)))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        paths = _paths(spec)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent: Any = spec
        for key in path[:-1]:
            parent = parent[key]
        if draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(JSON)
    return spec


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_specs())
def test_mutated_examples_never_crash_the_parser(spec: dict[str, Any]) -> None:
    _parse_or_validation_error(spec)


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(VALID_SPECS),
    st.text(alphabet="0123456789.smh-", min_size=1, max_size=40),
)
def test_any_duration_text_is_a_validation_error_or_in_bounds(spec: dict[str, Any], interval: str) -> None:
    candidate = copy.deepcopy(spec)
    candidate["analysis"]["interval"] = interval
    try:
        parsed = parse_spec(candidate)
    except ValidationError:
        return
    from arbiter.api import parse_duration

    assert 1 <= parse_duration(parsed.analysis.interval) <= 3600
