"""Resolving MetricTemplate references into the inline guardrails and metrics the engine consumes."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from arbiter.api import parse_spec
from arbiter.api.metrictemplate import TemplateKind, parse_template_spec
from arbiter.metrics.base import QueryContext, QueryPath
from arbiter.metrics.references import (
    REASON_INVALID,
    REASON_NOT_FOUND,
    REASON_PARAMETERS,
    REASON_READ_FAILED,
    TemplateReadError,
    resolve,
    uses_templates,
)
from arbiter.metrics.template import TemplateError, plan_queries, render_parameters
from arbiter.rollout.controls import identity_hash

ROOT = Path(__file__).parents[3]
LIBRARY = {
    t["name"]: t["spec"]
    for t in yaml.safe_load((ROOT / "charts/arbiter/files/metric-templates.yaml").read_text())
}

LATENCY = {
    "parameters": [
        {"name": "quantile", "default": "0.95"},
        {"name": "window", "default": "1m"},
        {"name": "job", "required": True, "description": "the scrape job"},
    ],
    "guardrail": {
        "query": 'histogram_quantile({{quantile}}, sum by (le) (rate(lat_bucket{job="{{job}}",'
        'variant="{{variant}}"}[{{window}}])))',
        "max": 0.5,
    },
}
CONVERSION = {
    "prometheus": {"url": "http://prom.team:9090"},
    "outcome": {
        "type": "Proportion",
        "successes": 'sum(conv{experiment="{{experiment}}",variant="{{variant}}"})',
        "trials": 'sum(reqs{experiment="{{experiment}}",variant="{{variant}}"})',
        "direction": "Increase",
        "minimumDetectableEffect": 0.05,
    },
}


def experiment_spec(**analysis: Any) -> dict[str, Any]:
    return {
        "mode": "Canary",
        "champion": {"name": "v1", "deployment": "m-v1", "service": "m-v1"},
        "challengers": [{"name": "v2", "deployment": "m-v2", "service": "m-v2"}],
        "routing": {"provider": "Router", "router": {"configMap": "r"}},
        "steps": [{"weight": 10}],
        "analysis": {"prometheus": {"timeout": "10s"}, **analysis},
    }


def store(**templates: dict[str, Any]) -> Any:
    def lookup(kind: TemplateKind, name: str) -> dict[str, Any] | None:
        found = templates.get(f"{kind.value}/{name}")
        return copy.deepcopy(found) if found is not None else None

    return lookup


def test_guardrail_reference_resolves_to_the_inline_guardrail_with_overrides() -> None:
    spec = experiment_spec(
        guardrails=[
            {
                "name": "p99",
                "templateRef": {
                    "kind": "MetricTemplate",
                    "name": "latency",
                    "parameters": {"job": "api", "quantile": "0.99"},
                },
                "max": 0.8,
                "failureLimit": 3,
                "critical": True,
            }
        ]
    )
    before = copy.deepcopy(spec)
    resolution = resolve(spec, store(**{"MetricTemplate/latency": LATENCY}))
    assert resolution.ok, resolution.message()
    assert spec == before, "the input spec must not change"
    (guardrail,) = resolution.spec["analysis"]["guardrails"]
    assert guardrail == {
        "name": "p99",
        "query": 'histogram_quantile(0.99, sum by (le) (rate(lat_bucket{job="api",variant="{{variant}}"}[1m])))',
        "max": 0.8,
        "failureLimit": 3,
        "critical": True,
    }
    assert resolution.references == {"analysis.guardrails[p99]": "MetricTemplate/latency"}
    parsed = parse_spec(resolution.spec)
    assert parsed.analysis.guardrails[0].max == 0.8


def test_outcome_reference_takes_type_direction_mde_and_the_connection() -> None:
    spec = experiment_spec(
        primary={
            "name": "conv",
            "templateRef": {"kind": "ClusterMetricTemplate", "name": "conv"},
            "direction": "Increase",
        },
        secondary=[
            {
                "name": "conv2",
                "templateRef": {"kind": "ClusterMetricTemplate", "name": "conv"},
                "minimumDetectableEffect": 0.2,
            }
        ],
    )
    resolution = resolve(spec, store(**{"ClusterMetricTemplate/conv": CONVERSION}))
    assert resolution.ok, resolution.message()
    parsed = parse_spec(resolution.spec)
    assert parsed.analysis.primary is not None
    assert parsed.analysis.primary.minimum_detectable_effect == 0.05
    assert parsed.analysis.primary.successes == CONVERSION["outcome"]["successes"]
    assert parsed.analysis.secondary[0].minimum_detectable_effect == 0.2
    assert parsed.analysis.prometheus.url == "http://prom.team:9090"


def test_the_experiments_own_prometheus_url_wins() -> None:
    spec = experiment_spec(
        primary={"name": "conv", "templateRef": {"kind": "ClusterMetricTemplate", "name": "conv"}}
    )
    spec["analysis"]["prometheus"] = {"url": "http://mine:9090"}
    resolution = resolve(spec, store(**{"ClusterMetricTemplate/conv": CONVERSION}))
    assert resolution.spec["analysis"]["prometheus"] == {"url": "http://mine:9090"}


def test_templates_with_different_connections_are_a_problem() -> None:
    other = copy.deepcopy(CONVERSION)
    other["prometheus"]["url"] = "http://elsewhere:9090"
    spec = experiment_spec(
        primary={"name": "a", "templateRef": {"kind": "ClusterMetricTemplate", "name": "conv"}},
        secondary=[{"name": "b", "templateRef": {"kind": "ClusterMetricTemplate", "name": "other"}}],
    )
    resolution = resolve(
        spec, store(**{"ClusterMetricTemplate/conv": CONVERSION, "ClusterMetricTemplate/other": other})
    )
    assert not resolution.ok
    assert "different Prometheus connections" in resolution.message()


def test_a_spec_without_references_comes_back_unchanged() -> None:
    spec = experiment_spec(guardrails=[{"name": "g", "query": "up", "max": 1}])
    assert not uses_templates(spec)
    resolution = resolve(spec, store())
    assert resolution.ok and resolution.spec == spec and resolution.references == {}


@pytest.mark.parametrize(
    ("entry", "templates", "reason", "message"),
    [
        (
            {"name": "g", "templateRef": {"name": "nope"}},
            {},
            REASON_NOT_FOUND,
            "analysis.guardrails[g]: MetricTemplate/nope not found",
        ),
        (
            {"name": "g", "templateRef": {"name": "latency", "parameters": {"job": "a", "jbo": "x"}}},
            {"MetricTemplate/latency": LATENCY},
            REASON_PARAMETERS,
            "unknown parameter 'jbo' (the template declares job, quantile, window)",
        ),
        (
            {"name": "g", "templateRef": {"name": "latency"}},
            {"MetricTemplate/latency": LATENCY},
            REASON_PARAMETERS,
            "parameter 'job' is required (the scrape job)",
        ),
        (
            {"name": "g", "templateRef": {"name": "latency", "parameters": {"job": "a", "window": "5 m"}}},
            {"MetricTemplate/latency": LATENCY},
            REASON_PARAMETERS,
            "{{window}} is outside a string literal",
        ),
        (
            {"name": "g", "templateRef": {"name": "conv"}},
            {"MetricTemplate/conv": CONVERSION},
            REASON_INVALID,
            "MetricTemplate/conv is an outcome metric; a guardrail entry needs a template with spec.guardrail",
        ),
        (
            {"name": "g", "templateRef": {"name": "broken"}},
            {"MetricTemplate/broken": {"guardrail": {"max": 1}}},
            REASON_INVALID,
            "MetricTemplate/broken is invalid: guardrail: Value error, a guardrail template needs query or rate",
        ),
        (
            {"name": "g", "templateRef": {"name": "nothreshold"}},
            {"MetricTemplate/nothreshold": {"guardrail": {"query": 'x{variant="{{variant}}"}'}}},
            REASON_INVALID,
            "resolved to an invalid guardrail",
        ),
        (
            {"name": "g", "templateRef": {"name": "undeclared"}},
            {"MetricTemplate/undeclared": {"guardrail": {"query": 'x{job="{{job}}"}', "max": 1}}},
            REASON_PARAMETERS,
            "{{job}} is not a declared parameter with a value",
        ),
    ],
    ids=[
        "missing",
        "unknown-parameter",
        "missing-required",
        "unsafe-value",
        "wrong-role",
        "invalid-template",
        "no-threshold",
        "undeclared-placeholder",
    ],
)
def test_problems_are_reported_never_raised(
    entry: dict[str, Any], templates: dict[str, Any], reason: str, message: str
) -> None:
    spec = experiment_spec(guardrails=[entry, {"name": "inline", "query": "up", "max": 1}])
    resolution = resolve(spec, store(**templates))
    assert not resolution.ok
    (problem,) = resolution.problems
    assert problem.reason == reason
    assert problem.entry == "analysis.guardrails[g]"
    assert message in str(problem), str(problem)


def test_a_read_failure_is_its_own_reason() -> None:
    def failing(kind: TemplateKind, name: str) -> dict[str, Any] | None:
        raise TemplateReadError("HTTP 403 Forbidden")

    resolution = resolve(experiment_spec(primary={"name": "p", "templateRef": {"name": "x"}}), failing)
    assert [p.reason for p in resolution.problems] == [REASON_READ_FAILED]
    assert "HTTP 403 Forbidden" in resolution.message()


def test_a_contradicting_direction_is_refused() -> None:
    spec = experiment_spec(primary={"name": "p", "templateRef": {"name": "conv"}, "direction": "Decrease"})
    resolution = resolve(spec, store(**{"MetricTemplate/conv": CONVERSION}))
    assert "direction Decrease contradicts MetricTemplate/conv (Increase)" in resolution.message()


def primary_identity(template: dict[str, Any], guardrail_max: float | None = None) -> str:
    spec = experiment_spec(
        primary={"name": "p", "templateRef": {"name": "conv"}},
        guardrails=[{"name": "g", "templateRef": {"name": "lat", "parameters": {"job": "a"}}}],
    )
    latency = copy.deepcopy(LATENCY)
    if guardrail_max is not None:
        latency["guardrail"]["max"] = guardrail_max
    resolution = resolve(spec, store(**{"MetricTemplate/conv": template, "MetricTemplate/lat": latency}))
    assert resolution.ok, resolution.message()
    return identity_hash(parse_spec(resolution.spec))


def test_template_changes_follow_the_spec_change_rules() -> None:
    """A changed primary question restarts the analysis; a changed guardrail threshold does not."""
    base = primary_identity(CONVERSION)
    assert primary_identity(CONVERSION, guardrail_max=0.9) == base
    changed = copy.deepcopy(CONVERSION)
    changed["outcome"]["successes"] = 'sum(other{experiment="{{experiment}}",variant="{{variant}}"})'
    assert primary_identity(changed) != base


@pytest.mark.parametrize("name", sorted(LIBRARY))
def test_every_library_template_is_valid_and_resolves_with_its_defaults(name: str) -> None:
    template = parse_template_spec(LIBRARY[name])
    key = "primary" if template.outcome is not None else "guardrails"
    entry = {"name": "m", "templateRef": {"kind": "ClusterMetricTemplate", "name": name}}
    spec = experiment_spec(**{key: entry if key == "primary" else [entry]})
    resolution = resolve(spec, store(**{f"ClusterMetricTemplate/{name}": LIBRARY[name]}))
    assert resolution.ok, resolution.message()
    rendered = str(resolution.spec["analysis"][key])
    assert "{{variant}}" in rendered and "arbiter_router_" in rendered
    assert "{{quantile}}" not in rendered and "{{window}}" not in rendered
    parse_spec(resolution.spec)
    # The router's metrics carry the variant label: every library query costs one query per tick.
    resolved = resolution.spec["analysis"][key]
    resolved = resolved if key == "primary" else resolved[0]
    queries = [
        resolved[k] for k in ("query", "successes", "trials", "count", "sum", "sumSquares") if k in resolved
    ]
    queries += [v for k, v in (resolved.get("rate") or {}).items() if k != "type"]
    for query in queries:
        plan = plan_queries(query, QueryContext("fraud", "ml"), ["v1", "v2"])
        assert plan.path is QueryPath.BY_VARIANT, (query, plan.reason)


def test_render_parameters_escapes_by_context_and_keeps_the_operators_placeholders() -> None:
    query = 'sum(m{team="{{team}}",path=~"{{path}}",variant="{{variant}}"}[{{window}}]) > {{limit}}'
    rendered = render_parameters(query, {"team": 'a"b', "path": "/v1.x", "window": "5m", "limit": "0.5"})
    assert rendered == 'sum(m{team="a\\"b",path=~"/v1\\\\.x",variant="{{variant}}"}[5m]) > 0.5'
    with pytest.raises(TemplateError, match="outside a string literal"):
        render_parameters("m[{{window}}]", {"window": "5m]) or vector(1"})
    with pytest.raises(TemplateError, match="must not contain"):
        render_parameters('m{a="{{a}}"}', {"a": "{{namespace}}"})


def test_the_example_resolves_with_its_own_template_and_the_chart_library() -> None:
    docs = [d for d in yaml.safe_load_all((ROOT / "examples/metric-templates.yaml").read_text()) if d]
    templates = {
        f"{d['kind']}/{d['metadata']['name']}": d["spec"]
        for d in docs
        if d["kind"].endswith("MetricTemplate")
    }
    templates.update({f"ClusterMetricTemplate/{name}": spec for name, spec in LIBRARY.items()})
    (experiment,) = [d for d in docs if d["kind"] == "ModelExperiment"]
    resolution = resolve(experiment["spec"], store(**templates))
    assert resolution.ok, resolution.message()
    parsed = parse_spec(resolution.spec)
    latency, errors = parsed.analysis.guardrails
    assert latency.max == 0.5 and latency.query is not None and "histogram_quantile(0.99," in latency.query
    assert "[2m]" in latency.query
    assert errors.critical and errors.query is not None and errors.max_increase_over_champion == 0.01
    assert parsed.analysis.primary is not None and parsed.analysis.primary.minimum_detectable_effect == 0.03
