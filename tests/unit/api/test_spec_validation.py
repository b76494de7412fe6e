"""The pydantic types accept the examples and reject each invalid spec with a message naming the problem."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from arbiter.api import ModelExperimentSpec, Phase, parse_duration, parse_spec
from arbiter.api.v1alpha1 import RoutingProviderName

EXAMPLES = sorted(
    p
    for p in (Path(__file__).parents[3] / "examples").glob("*.yaml")
    if "kind: ModelExperiment" in p.read_text()
)


def experiment_specs(path: Path) -> list[dict[str, Any]]:
    """The spec of every ModelExperiment document in an example file."""
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    return [d["spec"] for d in docs if d.get("kind") == "ModelExperiment"]


def valid_spec() -> dict[str, Any]:
    return copy.deepcopy(experiment_specs(Path(__file__).parents[3] / "examples" / "canary.yaml")[0])


def test_the_examples_cover_every_mode() -> None:
    modes = {spec.get("mode", "Canary") for path in EXAMPLES for spec in experiment_specs(path)}
    assert modes == {"Canary", "Shadow", "ABTest"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_parses(path: Path) -> None:
    specs = experiment_specs(path)
    assert specs, f"{path.name} has no ModelExperiment"
    for spec in specs:
        if "templateRef" in str(spec):
            continue  # parsed once resolved: tests/unit/metrics/test_references.py
        parsed = parse_spec(spec)
        assert parsed.variants[0] == parsed.champion


def test_defaults_fill_in() -> None:
    spec = parse_spec(valid_spec())
    assert spec.decision.on_timeout.value == "KeepChampion"
    assert spec.analysis.test.alpha == 0.05
    assert spec.paused is False
    assert spec.routing.provider is RoutingProviderName.ROUTER


def _set(spec: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    node: Any = spec
    for key in parents:
        node = node[int(key)] if key.isdigit() else node[key]
    if value is _DELETE:
        del node[last]
    elif last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value


_DELETE = object()

INVALID_CASES = [
    ("unknown mode", "mode", "Blue", "mode"),
    ("unknown provider", "routing.provider", "Linkerd", "provider"),
    ("unknown metric type", "analysis.primary.type", "Ratio", "type"),
    ("unknown test method", "analysis.test.method", "Bayesian", "method"),
    ("no challengers", "challengers", [], "challengers"),
    ("challenger named like the champion", "challengers.0.name", "v1", "differ from the champion"),
    (
        "duplicate challengers",
        "challengers",
        [
            {"name": "v2", "deployment": "a", "service": "a"},
            {"name": "v2", "deployment": "b", "service": "b"},
        ],
        "unique",
    ),
    ("steps not increasing", "steps", [{"weight": 50}, {"weight": 25}], "strictly increasing"),
    ("equal steps", "steps", [{"weight": 25}, {"weight": 25}], "strictly increasing"),
    ("step weight zero", "steps", [{"weight": 0}], "greater than 0"),
    ("step weight over 100", "steps", [{"weight": 101}], "less than or equal to 100"),
    ("alpha of 1", "analysis.test.alpha", 1.0, "alpha"),
    ("alpha of 0", "analysis.test.alpha", 0, "alpha"),
    ("power above 1", "analysis.test.power", 1.5, "power"),
    ("mde of zero", "analysis.primary.minimumDetectableEffect", 0, "minimumDetectableEffect"),
    ("negative mde", "analysis.primary.minimumDetectableEffect", -0.1, "minimumDetectableEffect"),
    (
        "guardrail without bounds",
        "analysis.guardrails",
        [{"name": "g", "query": "up"}],
        "a guardrail needs min, max, maxIncreaseOverChampion or maxDecreaseFromChampion",
    ),
    ("provider without its block", "routing.router", _DELETE, "needs spec.routing.router"),
    ("proportion without trials", "analysis.primary.trials", _DELETE, "successes and trials"),
    (
        "mean without sumSquares",
        "analysis.primary",
        {"name": "m", "type": "Mean", "count": "a", "sum": "b", "minimumDetectableEffect": 0.1},
        "count, sum and sumSquares",
    ),
    ("bad duration", "analysis.interval", "30 seconds", "interval"),
    ("canary without steps", "steps", _DELETE, "at least one step"),
    (
        "compare pointer without a leading slash",
        "routing.shadow",
        {"compare": {"fields": ["outputs/0/data"]}},
        "should match pattern",
    ),
    (
        "compare pointer with a bad escape",
        "routing.shadow",
        {"compare": {"ignore": ["/a~2"]}},
        "should match pattern",
    ),
    (
        "compare pointer twice",
        "routing.shadow",
        {"compare": {"ignore": ["/id", "/id"]}},
        "lists a JSON pointer twice",
    ),
    ("compare empty score pointer", "routing.shadow", {"compare": {"score": ""}}, "at least 1 character"),
    (
        "compare negative tolerance",
        "routing.shadow",
        {"compare": {"numericTolerance": -1}},
        "greater than or equal to 0",
    ),
]


@pytest.mark.parametrize(
    ("title", "path", "value", "expected"), INVALID_CASES, ids=[c[0] for c in INVALID_CASES]
)
def test_invalid_spec_is_rejected_with_a_clear_message(
    title: str, path: str, value: Any, expected: str
) -> None:
    spec = valid_spec()
    _set(spec, path, value)
    with pytest.raises(ValidationError) as excinfo:
        parse_spec(spec)
    assert expected in str(excinfo.value), f"{title}: {excinfo.value}"


def test_shadow_with_replicas_is_rejected() -> None:
    spec = valid_spec()
    spec["mode"] = "Shadow"
    spec["routing"] = {"provider": "Replicas"}
    with pytest.raises(ValidationError, match="mode Shadow needs a provider that can mirror"):
        parse_spec(spec)


def test_shadow_takes_exactly_one_challenger() -> None:
    spec = valid_spec()
    spec["mode"] = "Shadow"
    parse_spec(spec)
    spec["challengers"].append({**spec["challengers"][0], "name": "v3"})
    with pytest.raises(ValidationError, match="mode Shadow judges one challenger at a time"):
        parse_spec(spec)


def test_istio_without_block_names_the_field() -> None:
    spec = valid_spec()
    spec["routing"]["provider"] = "Istio"
    with pytest.raises(ValidationError, match=r"needs spec\.routing\.istio"):
        parse_spec(spec)


def test_replicas_provider_does_not_need_services() -> None:
    spec = valid_spec()
    spec["routing"] = {"provider": "Replicas"}
    del spec["champion"]["service"]
    del spec["challengers"][0]["service"]
    assert parse_spec(spec).routing.provider is RoutingProviderName.REPLICAS


def test_router_provider_needs_services() -> None:
    spec = valid_spec()
    del spec["challengers"][0]["service"]
    with pytest.raises(ValidationError, match="needs a service"):
        parse_spec(spec)


def test_round_trip_keeps_wire_names() -> None:
    spec = parse_spec(valid_spec())
    dumped = spec.model_dump(by_alias=True, exclude_none=True, mode="json")
    assert dumped["routing"]["router"] == {"configMap": "fraud-router"}
    assert ModelExperimentSpec.model_validate(dumped) == spec


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("10m", 600), ("168h", 604800), ("1h30m", 5400), ("250ms", 0.25), ("1.5s", 1.5)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "30", "s", "10 m", "1d", "-5s"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_phase_values_are_the_public_names() -> None:
    assert [p.value for p in Phase] == [
        "Pending",
        "Progressing",
        "Paused",
        "Promoted",
        "RolledBack",
        "Concluded",
        "Failed",
    ]


RELATIVE_GUARDRAILS = [
    (
        {
            "name": "err",
            "maxIncreaseOverChampion": 0.005,
            "rate": {"type": "Proportion", "successes": "a", "trials": "b"},
        },
        None,
    ),
    ({"name": "err", "query": "q", "maxIncreaseOverChampion": 0.005}, None),
    ({"name": "err", "maxIncreaseOverChampion": 0.005}, "query is required"),
    (
        {
            "name": "err",
            "query": "q",
            "max": 1,
            "rate": {"type": "Mean", "count": "c", "sum": "s", "sumSquares": "q"},
        },
        "rate needs maxIncreaseOverChampion",
    ),
    (
        {"name": "err", "maxDecreaseFromChampion": 0.1, "rate": {"type": "Mean", "count": "c"}},
        "count, sum and sumSquares",
    ),
    ({"name": "err", "query": "q", "maxIncreaseOverChampion": -1}, "greater than or equal to 0"),
]


@pytest.mark.parametrize(("guardrail", "error"), RELATIVE_GUARDRAILS)
def test_relative_guardrails(guardrail: dict[str, Any], error: str | None) -> None:
    spec = valid_spec()
    spec["analysis"]["guardrails"] = [guardrail]
    if error is None:
        parsed = parse_spec(spec).analysis.guardrails[0]
        assert parsed.relative
    else:
        with pytest.raises(ValidationError, match=error):
            parse_spec(spec)


def test_variant_url_override_must_be_a_base_url() -> None:
    spec = valid_spec()
    spec["challengers"][0]["url"] = "http://127.0.0.1:9002"
    assert parse_spec(spec).challengers[0].url == "http://127.0.0.1:9002"
    spec["challengers"][0]["url"] = "http://127.0.0.1:9002/predict"
    with pytest.raises(ValidationError, match="url"):
        parse_spec(spec)


def test_shadow_compare_rules_parse_and_need_provider_router() -> None:
    spec = valid_spec()
    spec["routing"]["shadow"] = {
        "compare": {
            "fields": ["/outputs/0/data"],
            "ignore": ["/id", "/a~1b~0c"],
            "score": "/outputs/1/data/1",
        }
    }
    compare = parse_spec(spec).routing.shadow.compare  # type: ignore[union-attr]
    assert compare is not None
    assert (compare.fields, compare.ignore, compare.score) == (
        ["/outputs/0/data"],
        ["/id", "/a~1b~0c"],
        "/outputs/1/data/1",
    )
    spec["routing"] = {
        "provider": "GatewayAPI",
        "gatewayAPI": {"httpRoute": "r"},
        "shadow": spec["routing"]["shadow"],
    }
    with pytest.raises(ValidationError, match=r"shadow\.compare needs provider Router"):
        parse_spec(spec)
