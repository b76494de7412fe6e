"""MetricTemplate, ClusterMetricTemplate and templateRef on the real API server: valid objects are
accepted, invalid ones refused with a field-level message."""

from __future__ import annotations

import copy
import json
import uuid
from typing import Any

import pytest
import yaml

from arbiter_fixtures import ROOT, experiment_docs

LIBRARY = yaml.safe_load((ROOT / "charts/arbiter/files/metric-templates.yaml").read_text())
GUARDRAIL = {
    "parameters": [{"name": "window", "default": "1m"}],
    "guardrail": {"query": 'sum(rate(e{variant="{{variant}}"}[{{window}}]))', "max": 0.1},
}


def template(namespace: str, spec: dict[str, Any], kind: str = "MetricTemplate") -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": f"t-{uuid.uuid4().hex[:8]}"}
    if kind == "MetricTemplate":
        metadata["namespace"] = namespace
    return {"apiVersion": "arbiter.dev/v1alpha1", "kind": kind, "metadata": metadata, "spec": spec}


def templated_experiment(namespace: str) -> dict[str, Any]:
    docs = experiment_docs(ROOT / "examples" / "metric-templates.yaml")
    experiment = copy.deepcopy(next(d for d in docs if d["kind"] == "ModelExperiment"))
    experiment["metadata"] = {"name": "templated-probe", "namespace": namespace}
    return experiment


def create(cluster: Any, obj: dict[str, Any]) -> Any:
    return cluster.kubectl("create", "-f", "-", input=yaml.safe_dump(obj), check=False)


def test_the_chart_library_is_accepted_and_listed_with_its_columns(cluster: Any, arbiter_crd: str) -> None:
    prefix = f"lib-{uuid.uuid4().hex[:6]}-"
    try:
        for entry in LIBRARY:
            obj = template("", entry["spec"], kind="ClusterMetricTemplate")
            obj["metadata"]["name"] = prefix + entry["name"]
            result = create(cluster, obj)
            assert result.returncode == 0, f"{entry['name']}: {result.stderr}"
        table = cluster.kubectl("get", "cmtpl").stdout
        header = table.splitlines()[0].split()
        assert header[:4] == ["NAME", "OUTCOME", "DIRECTION", "DESCRIPTION"]
        conversion = next(
            line for line in table.splitlines() if line.startswith(prefix + "router-conversion")
        )
        assert "Proportion" in conversion and "Increase" in conversion
        stored = json.loads(
            cluster.kubectl("get", "cmtpl", prefix + "router-p95-latency", "-o", "json").stdout
        )
        assert stored["spec"]["parameters"][0] == {
            "name": "quantile",
            "description": "The quantile, 0 < q < 1.",
            "default": "0.95",
            "required": False,
        }
    finally:
        for entry in LIBRARY:
            cluster.kubectl("delete", "cmtpl", prefix + entry["name"], check=False)


def test_a_namespaced_template_and_an_experiment_referencing_it_are_accepted(
    cluster: Any, arbiter_crd: str, namespace: str
) -> None:
    result = create(cluster, template(namespace, GUARDRAIL))
    assert result.returncode == 0, result.stderr
    assert "metrictemplate" in cluster.kubectl("get", "mtpl", "-n", namespace, "-o", "name").stdout
    result = create(cluster, templated_experiment(namespace))
    assert result.returncode == 0, result.stderr
    stored = json.loads(
        cluster.kubectl("get", "mexp", "templated-probe", "-n", namespace, "-o", "json").stdout
    )
    guardrail = stored["spec"]["analysis"]["guardrails"][0]
    assert guardrail["templateRef"] == {
        "kind": "MetricTemplate",
        "name": "fraud-latency",
        "parameters": {"quantile": "0.99"},
    }
    assert "query" not in guardrail
    assert "type" not in stored["spec"]["analysis"]["primary"]


def _without(spec: dict[str, Any], *path: str) -> dict[str, Any]:
    changed = copy.deepcopy(spec)
    node = changed
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return changed


def _with(spec: dict[str, Any], value: Any, *path: str) -> dict[str, Any]:
    changed = copy.deepcopy(spec)
    node = changed
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return changed


OUTCOME = {
    "outcome": {"type": "Proportion", "successes": "s", "trials": "t", "minimumDetectableEffect": 0.05}
}

# (case, template spec, field the API server must name, message part)
INVALID_TEMPLATES = [
    (
        "guardrail and outcome",
        {**GUARDRAIL, **OUTCOME},
        "spec.guardrail",
        "set exactly one of guardrail or outcome",
    ),
    ("neither", {"description": "nothing"}, "spec.guardrail", "set exactly one of guardrail or outcome"),
    (
        "reserved parameter",
        _with(GUARDRAIL, [{"name": "variant"}], "parameters"),
        "spec.parameters[0].name",
        "experiment, namespace and variant are filled by the operator",
    ),
    (
        "required with a default",
        _with(GUARDRAIL, [{"name": "w", "required": True, "default": "1m"}], "parameters"),
        "spec.parameters[0].default",
        "a required parameter has no default",
    ),
    (
        "duplicate parameters",
        _with(GUARDRAIL, [{"name": "w"}, {"name": "w"}], "parameters"),
        "spec.parameters",
        "parameter names must be unique",
    ),
    (
        "bad parameter name",
        _with(GUARDRAIL, [{"name": "my-window"}], "parameters"),
        "spec.parameters[0].name",
        "should match",
    ),
    (
        "guardrail without a query",
        _without(GUARDRAIL, "guardrail", "query"),
        "spec.guardrail",
        "needs query or rate",
    ),
    (
        "min above max",
        _with(GUARDRAIL, 1.0, "guardrail", "min"),
        "spec.guardrail.min",
        "min must not exceed max",
    ),
    (
        "proportion without trials",
        _without(OUTCOME, "outcome", "trials"),
        "spec.outcome",
        "needs the successes and trials",
    ),
    ("unknown type", _with(OUTCOME, "Ratio", "outcome", "type"), "spec.outcome.type", "Unsupported value"),
    (
        "negative mde",
        _with(OUTCOME, -1, "outcome", "minimumDetectableEffect"),
        "spec.outcome.minimumDetectableEffect",
        "greater than 0",
    ),
    (
        "tls without https",
        {**GUARDRAIL, "prometheus": {"url": "http://p:9090", "tls": {"insecureSkipVerify": True}}},
        "spec.prometheus.tls",
        "tls needs an https:// url",
    ),
]


@pytest.mark.parametrize("kind", ["MetricTemplate", "ClusterMetricTemplate"])
@pytest.mark.parametrize(
    ("case", "spec", "field", "message"), INVALID_TEMPLATES, ids=[c[0] for c in INVALID_TEMPLATES]
)
def test_invalid_templates_are_refused_with_the_field(
    cluster: Any,
    arbiter_crd: str,
    namespace: str,
    kind: str,
    case: str,
    spec: dict[str, Any],
    field: str,
    message: str,
) -> None:
    obj = template(namespace, spec, kind)
    result = create(cluster, obj)
    if result.returncode == 0:
        cluster.kubectl("delete", kind.lower(), obj["metadata"]["name"], "-n", namespace, check=False)
    assert result.returncode != 0, f"{case}: the API server accepted an invalid template"
    assert field in result.stderr, f"{case}: field {field!r} not named in: {result.stderr}"
    assert message in result.stderr, f"{case}: message {message!r} not in: {result.stderr}"


# (case, change to the templated example experiment, field, message part)
INVALID_REFERENCES = [
    (
        "query next to templateRef",
        lambda e: e["spec"]["analysis"]["guardrails"][0].update(query="up"),
        "spec.analysis.guardrails[0].templateRef",
        "with templateRef the template supplies query, rate",
    ),
    (
        "type next to templateRef",
        lambda e: e["spec"]["analysis"]["primary"].update(type="Mean"),
        "spec.analysis.primary.templateRef",
        "with templateRef the template supplies type",
    ),
    (
        "neither templateRef nor type",
        lambda e: e["spec"]["analysis"]["primary"].pop("templateRef"),
        "spec.analysis.primary.type",
        "type is required unless templateRef is set",
    ),
    (
        "unknown kind",
        lambda e: e["spec"]["analysis"]["primary"]["templateRef"].update(kind="Template"),
        "spec.analysis.primary.templateRef.kind",
        "Unsupported value",
    ),
    (
        "no name",
        lambda e: e["spec"]["analysis"]["primary"]["templateRef"].pop("name"),
        "spec.analysis.primary.templateRef.name",
        "Required value",
    ),
    (
        "inline guardrail still needs a bound",
        lambda e: e["spec"]["analysis"]["guardrails"].append({"name": "inline", "query": "up"}),
        "spec.analysis.guardrails[2]",
        "a guardrail needs min, max",
    ),
]


@pytest.mark.parametrize(
    ("case", "change", "field", "message"), INVALID_REFERENCES, ids=[c[0] for c in INVALID_REFERENCES]
)
def test_invalid_references_are_refused_with_the_field(
    cluster: Any, arbiter_crd: str, namespace: str, case: str, change: Any, field: str, message: str
) -> None:
    experiment = templated_experiment(namespace)
    change(experiment)
    result = create(cluster, experiment)
    assert result.returncode != 0, f"{case}: the API server accepted an invalid reference"
    assert field in result.stderr, f"{case}: field {field!r} not named in: {result.stderr}"
    assert message in result.stderr, f"{case}: message {message!r} not in: {result.stderr}"


def test_kubectl_explain_prints_the_template_descriptions(cluster: Any, arbiter_crd: str) -> None:
    def explain(field: str) -> str:
        return " ".join(cluster.kubectl("explain", field).stdout.split())  # kubectl wraps lines

    parameters = explain("metrictemplate.spec.parameters")
    assert "Placeholders the queries use" in parameters and "required" in parameters
    outcome = explain("clustermetrictemplate.spec.outcome.minimumDetectableEffect")
    assert "an experiment may override it" in outcome
    reference = explain("modelexperiment.spec.analysis.primary.templateRef")
    assert "MetricTemplate or ClusterMetricTemplate" in reference and "parameters" in reference
