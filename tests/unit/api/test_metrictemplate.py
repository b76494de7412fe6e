"""MetricTemplate types: the pydantic twins of the CEL rules, the generated CRDs and the templateRef schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from arbiter.api import crd
from arbiter.api.metrictemplate import parse_template_spec
from arbiter.api.template_crd import crds, render

ROOT = Path(__file__).parents[3]
GUARDRAIL = {"guardrail": {"query": 'e{variant="{{variant}}"}', "max": 0.1}}
OUTCOME = {"outcome": {"type": "Proportion", "successes": "s", "trials": "t"}}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({**GUARDRAIL, **OUTCOME}, "set exactly one of guardrail or outcome"),
        ({}, "set exactly one of guardrail or outcome"),
        ({**GUARDRAIL, "parameters": [{"name": "namespace"}]}, "filled by the operator"),
        ({**GUARDRAIL, "parameters": [{"name": "w", "required": True, "default": "1m"}]}, "has no default"),
        ({**GUARDRAIL, "parameters": [{"name": "w"}, {"name": "w"}]}, "parameter names must be unique"),
        ({"guardrail": {"max": 1}}, "needs query or rate"),
        ({"guardrail": {"query": "q", "min": 2, "max": 1}}, "min must not exceed max"),
        ({"outcome": {"type": "Mean", "count": "c", "sum": "s"}}, "needs the count, sum and sumSquares"),
        ({**GUARDRAIL, "bogus": 1}, "Extra inputs are not permitted"),
    ],
)
def test_the_operator_refuses_what_the_api_server_refuses(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        parse_template_spec(spec)


def test_a_template_without_default_thresholds_is_valid() -> None:
    """Thresholds and the MDE may come from the experiment; resolution checks the result is complete."""
    template = parse_template_spec({**OUTCOME, "parameters": [{"name": "job", "required": True}]})
    assert template.outcome is not None and template.outcome.minimum_detectable_effect is None


def test_both_crds_are_generated_with_their_scope_and_rules() -> None:
    namespaced, cluster = crds()
    assert (namespaced["spec"]["scope"], cluster["spec"]["scope"]) == ("Namespaced", "Cluster")
    assert namespaced["metadata"]["name"] == "metrictemplates.arbiter.dev"
    assert cluster["metadata"]["name"] == "clustermetrictemplates.arbiter.dev"
    spec = cluster["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    rules = [r["rule"] for r in spec["x-kubernetes-validations"]]
    assert "has(self.guardrail) != has(self.outcome)" in rules
    assert spec["properties"]["parameters"]["items"]["required"] == ["name"]
    assert (ROOT / "crds" / "metrictemplates.yaml").read_text() == render()


def test_the_experiment_schema_takes_template_refs_and_guards_the_inline_rules() -> None:
    analysis = crd.openapi_schema()["properties"]["spec"]["properties"]["analysis"]["properties"]
    primary = analysis["primary"]
    assert "templateRef" in primary["properties"]
    assert "type" not in primary.get("required", []) and "minimumDetectableEffect" not in primary.get(
        "required", []
    )
    ref = primary["properties"]["templateRef"]
    assert ref["properties"]["kind"]["enum"] == ["MetricTemplate", "ClusterMetricTemplate"]
    assert ref["required"] == ["name"]
    guardrail_rules = [r["rule"] for r in analysis["guardrails"]["items"]["x-kubernetes-validations"]]
    # Every rule about an inline guardrail holds only when there is one.
    assert all(
        r.startswith("has(self.templateRef) ||") or r.startswith("!has(self.templateRef)")
        for r in guardrail_rules
    )
