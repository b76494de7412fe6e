"""The generated CRD on the real API server: examples apply, bad specs are refused with field-level messages."""

from __future__ import annotations

import copy
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from arbiter_fixtures import ROOT, experiment_docs
from chart_support import apply, render

EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
THIRD_PARTY_GROUPS = ("gateway.networking.k8s.io", "networking.istio.io")


def needs_third_party_crds(path: Path) -> bool:
    return any(d.get("apiVersion", "").split("/")[0] in THIRD_PARTY_GROUPS for d in experiment_docs(path))


def is_chart_values(path: Path) -> bool:
    """An example of the chart's values (examples/router.yaml) rather than of Kubernetes objects."""
    return all("kind" not in d for d in experiment_docs(path))


def apply_chart_values_example(path: Path, cluster: Any, namespace: str, workdir: Path) -> None:
    """Render the chart with the example's values into ``namespace`` and server-side apply every object."""
    values = experiment_docs(path)[0]
    for instance in values.get("router", {}).get("instances", []):
        instance["namespace"] = namespace  # the example names the user's namespace (ml)
    local = workdir / path.name
    local.write_text(yaml.safe_dump(values))
    release = f"ex-{uuid.uuid4().hex[:6]}"
    docs = render(cluster.bin_dir, release=release, namespace=namespace, values_files=(local,))
    try:
        output = apply(cluster, docs)
        assert output.count("serverside-applied") == len(docs), output
        routers = [d for d in docs if d["metadata"]["labels"].get("app.kubernetes.io/component") == "router"]
        assert {"Deployment", "Service", "PodDisruptionBudget", "PodMonitor", "Role"} <= {
            d["kind"] for d in routers
        }
    finally:
        for doc in docs:
            if doc["kind"].startswith("Cluster"):
                cluster.kubectl("delete", doc["kind"].lower(), doc["metadata"]["name"], check=False)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_applies(
    path: Path, cluster: Any, arbiter_crd: str, namespace: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    if is_chart_values(path):
        request.getfixturevalue("thirdparty_crds")  # the PodMonitor
        apply_chart_values_example(path, cluster, namespace, tmp_path)
        return
    if needs_third_party_crds(path):
        request.getfixturevalue("thirdparty_crds")
    cluster.kubectl("apply", "-n", namespace, "-f", str(path))
    for doc in experiment_docs(path):
        if doc["kind"] != "ModelExperiment":
            continue
        stored = json.loads(
            cluster.kubectl("get", "mexp", doc["metadata"]["name"], "-n", namespace, "-o", "json").stdout
        )
        # What the API server stored is what the example says, plus the schema's defaults.
        assert stored["spec"]["champion"] == {**doc["spec"]["champion"]}
        assert stored["spec"]["decision"]["onTimeout"] in ("KeepChampion", "Pause")
        assert stored["spec"]["analysis"]["test"]["alpha"] == doc["spec"]["analysis"].get("test", {}).get(
            "alpha", 0.05
        )


def canary_experiment(namespace: str) -> dict[str, Any]:
    docs = experiment_docs(ROOT / "examples" / "canary.yaml")
    experiment = copy.deepcopy(next(d for d in docs if d["kind"] == "ModelExperiment"))
    experiment["metadata"] = {"name": "invalid-probe", "namespace": namespace}
    return experiment


def _set(node: Any, path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for key in parents:
        node = node[int(key)] if key.isdigit() else node[key]
    if value is None:
        del node[last]
    elif last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value


# (case, path under the object, new value or None to delete, field the API server must name, message part)
INVALID = [
    ("unknown mode", "spec.mode", "Blue", "spec.mode", "Unsupported value"),
    ("unknown provider", "spec.routing.provider", "Linkerd", "spec.routing.provider", "Unsupported value"),
    (
        "unknown metric type",
        "spec.analysis.primary.type",
        "Ratio",
        "spec.analysis.primary.type",
        "Unsupported value",
    ),
    (
        "unknown method",
        "spec.analysis.test.method",
        "Bayesian",
        "spec.analysis.test.method",
        "Unsupported value",
    ),
    ("no challengers", "spec.challengers", [], "spec.challengers", "should have at least 1 items"),
    (
        "challenger named like the champion",
        "spec.challengers.0.name",
        "v1",
        "spec.challengers",
        "a challenger's name must differ from the champion's",
    ),
    (
        "duplicate challengers",
        "spec.challengers",
        [
            {"name": "v2", "deployment": "a", "service": "a"},
            {"name": "v2", "deployment": "b", "service": "b"},
        ],
        "spec.challengers[1]",
        "Duplicate value",
    ),
    (
        "steps not increasing",
        "spec.steps",
        [{"weight": 50}, {"weight": 25}],
        "spec.steps",
        "step weights must be strictly increasing",
    ),
    ("step weight zero", "spec.steps", [{"weight": 0}], "spec.steps[0].weight", "should be greater than 0"),
    (
        "step weight over 100",
        "spec.steps",
        [{"weight": 101}],
        "spec.steps[0].weight",
        "less than or equal to 100",
    ),
    ("alpha of 1", "spec.analysis.test.alpha", 1, "spec.analysis.test.alpha", "should be less than 1"),
    ("power of 0", "spec.analysis.test.power", 0, "spec.analysis.test.power", "should be greater than 0"),
    (
        "mde of zero",
        "spec.analysis.primary.minimumDetectableEffect",
        0,
        "spec.analysis.primary.minimumDetectableEffect",
        "should be greater than 0",
    ),
    (
        "guardrail without bounds",
        "spec.analysis.guardrails",
        [{"name": "g", "query": "up"}],
        "spec.analysis.guardrails[0]",
        "a guardrail needs min, max, maxIncreaseOverChampion or maxDecreaseFromChampion",
    ),
    (
        "provider without its block",
        "spec.routing.router",
        None,
        "spec.routing.router",
        "provider Router needs",
    ),
    (
        "proportion without trials",
        "spec.analysis.primary.trials",
        None,
        "spec.analysis.primary",
        "type Proportion needs the successes and trials queries",
    ),
    (
        "mean without sumSquares",
        "spec.analysis.primary",
        {"name": "m", "type": "Mean", "count": "a", "sum": "b", "minimumDetectableEffect": 0.1},
        "spec.analysis.primary",
        "type Mean needs the count, sum and sumSquares queries",
    ),
    ("bad duration", "spec.analysis.interval", "30 seconds", "spec.analysis.interval", "should match"),
    (
        "unknown SRM method",
        "spec.analysis.sampleRatioMismatch.method",
        "Bonferroni",
        "spec.analysis.sampleRatioMismatch.method",
        'supported values: "Sequential", "ChiSquare"',
    ),
    ("canary without steps", "spec.steps", None, "spec.steps", "mode Canary needs at least one step"),
    (
        "compare pointer without a leading slash",
        "spec.routing.shadow",
        {"compare": {"fields": ["outputs/0/data"]}},
        "spec.routing.shadow.compare.fields[0]",
        "should match",
    ),
    (
        "compare rules without provider Router",
        "spec.routing",
        {"provider": "Istio", "istio": {"virtualService": "vs"}, "shadow": {"compare": {"ignore": ["/id"]}}},
        "spec.routing.shadow.compare",
        "spec.routing.shadow.compare needs provider Router",
    ),
]


@pytest.mark.parametrize(("case", "path", "value", "field", "message"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_spec_is_rejected_by_the_api_server(
    case: str, path: str, value: Any, field: str, message: str, cluster: Any, arbiter_crd: str, namespace: str
) -> None:
    experiment = canary_experiment(namespace)
    _set(experiment, path, value)
    result = cluster.kubectl("create", "-f", "-", input=yaml.safe_dump(experiment), check=False)
    assert result.returncode != 0, f"{case}: the API server accepted an invalid spec"
    assert field in result.stderr, f"{case}: field {field!r} not named in: {result.stderr}"
    assert message in result.stderr, f"{case}: message {message!r} not in: {result.stderr}"
    assert cluster.kubectl("get", "mexp", "invalid-probe", "-n", namespace, check=False).returncode != 0


def test_shadow_with_replicas_is_rejected_by_the_api_server(
    cluster: Any, arbiter_crd: str, namespace: str
) -> None:
    experiment = canary_experiment(namespace)
    experiment["spec"]["mode"] = "Shadow"
    experiment["spec"]["routing"] = {"provider": "Replicas"}
    result = cluster.kubectl("create", "-f", "-", input=yaml.safe_dump(experiment), check=False)
    assert result.returncode != 0
    assert "spec.routing.provider" in result.stderr
    assert "mode Shadow needs a provider that can mirror traffic" in result.stderr


def test_shadow_with_two_challengers_is_rejected_by_the_api_server(
    cluster: Any, arbiter_crd: str, namespace: str
) -> None:
    experiment = canary_experiment(namespace)
    experiment["spec"]["mode"] = "Shadow"
    challenger = experiment["spec"]["challengers"][0]
    experiment["spec"]["challengers"].append({**challenger, "name": "v3"})
    result = cluster.kubectl("create", "-f", "-", input=yaml.safe_dump(experiment), check=False)
    assert result.returncode != 0
    assert "spec.challengers" in result.stderr
    assert "mode Shadow judges one challenger at a time" in result.stderr
    experiment["spec"]["challengers"].pop()
    accepted = cluster.kubectl("create", "-f", "-", input=yaml.safe_dump(experiment), check=False)
    assert accepted.returncode == 0, accepted.stderr


def test_a_valid_spec_is_accepted_by_the_same_path(cluster: Any, arbiter_crd: str, namespace: str) -> None:
    result = cluster.kubectl(
        "create", "-f", "-", input=yaml.safe_dump(canary_experiment(namespace)), check=False
    )
    assert result.returncode == 0, result.stderr


def test_kubectl_explain_prints_descriptions(cluster: Any, arbiter_crd: str) -> None:
    steps = cluster.kubectl("explain", "modelexperiment.spec.steps").stdout
    assert "strictly increasing" in steps
    assert "minDuration" in steps and "minSamples" in steps
    guardrails = cluster.kubectl("explain", "modelexperiment.spec.analysis.guardrails").stdout
    assert "failureLimit" in guardrails and "Consecutive breaches" in guardrails


def test_kubectl_get_shows_printer_columns(cluster: Any, arbiter_crd: str, namespace: str) -> None:
    cluster.kubectl("create", "-f", "-", input=yaml.safe_dump(canary_experiment(namespace)))
    cluster.kubectl(
        "patch",
        "mexp",
        "invalid-probe",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(
            {
                "status": {
                    "phase": "Progressing",
                    "currentStep": 1,
                    "challengerWeight": 25,
                    "decision": {"outcome": "Advance"},
                }
            }
        ),
    )
    header, row = cluster.kubectl("get", "mexp", "-n", namespace).stdout.splitlines()[:2]
    assert header.split() == ["NAME", "MODE", "PHASE", "STEP", "CHALLENGER", "DECISION", "DRY-RUN", "AGE"]
    assert row.split()[:7] == ["invalid-probe", "Canary", "Progressing", "1", "25", "Advance", "false"]
