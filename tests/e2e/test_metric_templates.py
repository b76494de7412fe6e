"""Experiments that take their metrics from MetricTemplates, on real parts: the chart's library of
ClusterMetricTemplates (rendered by the real helm), the operator with the chart's RBAC, the router,
Prometheus scraping it and the model servers whose truth the test sets.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from harness.env import RolloutEnv
from harness.experiment import condition, event_reasons, wait_for_events, wait_for_phase, wait_for_status

from arbiter_fixtures import OperatorProcess
from chart_support import apply, render
from helpers import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(240)]

STEPS = [{"weight": 20, "minDuration": "3s"}, {"weight": 50, "minDuration": "3s"}]
RESOLVED = "MetricTemplatesResolved"


@pytest.fixture
def library(cluster: Any, arbiter_crd: str) -> Any:
    """The chart's ClusterMetricTemplates as `helm template` renders them, under a prefix of this test."""
    prefix = f"e2e-{uuid.uuid4().hex[:6]}-"
    docs = [
        d
        for d in render(cluster.bin_dir, settings=(f"metricTemplates.namePrefix={prefix}",))
        if d["kind"] == "ClusterMetricTemplate"
    ]
    assert len(docs) == 5
    apply(cluster, docs)
    yield prefix
    for doc in docs:
        cluster.kubectl("delete", "cmtpl", doc["metadata"]["name"], check=False)


def cluster_ref(name: str, **parameters: str) -> dict[str, Any]:
    ref: dict[str, Any] = {"kind": "ClusterMetricTemplate", "name": name}
    if parameters:
        ref["parameters"] = parameters
    return ref


def test_an_experiment_built_from_the_chart_library_reaches_a_decision(
    library: str, rollout_env: Any, operator: OperatorProcess, kube_api: Any
) -> None:
    """Latency guardrail and conversion from the library: v2 converts 15% against 10% and is promoted."""
    # The library's queries select by experiment and variant only: a name of its own keeps the series of
    # earlier tests in the session's Prometheus out.
    name = f"tmpl-{uuid.uuid4().hex[:6]}"
    env: RolloutEnv = rollout_env(experiment=name)
    experiment = env.experiment(
        steps=STEPS,
        guardrails=[
            {
                "name": "p95-latency",
                "templateRef": cluster_ref(f"{library}router-p95-latency", window="5s"),
                "max": 0.5,  # overrides the library's default
            },
            {"name": "error-rate", "templateRef": cluster_ref(f"{library}router-error-rate")},
        ],
        primary={
            "name": "conversion",
            "templateRef": cluster_ref(f"{library}router-conversion"),
            "minimumDetectableEffect": 0.2,
        },
    )
    env.apply([experiment])
    traffic = env.traffic({"v1": 0.10, "v2": 0.15}, rate=150, max_seconds=200, seed=11)
    promoted = wait_for_phase(
        kube_api,
        env.namespace,
        name,
        "Promoted",
        timeout=180,
        forbid_phases={"RolledBack", "Concluded", "Failed", "Paused"},
    )
    traffic.stop()
    decision = promoted["decision"]
    assert decision["outcome"] == "Promote" and decision.get("winner") == "v2", decision
    result = next(r for r in promoted["analysis"]["primary"]["results"] if r["variant"] == "v2")
    assert result["verdict"] == "Win" and result["treatmentValue"] > result["controlValue"], result
    resolved = condition(promoted, RESOLVED)
    assert resolved["status"] == "True", resolved
    assert f"analysis.primary from ClusterMetricTemplate/{library}router-conversion" in resolved["message"]
    assert (
        f"analysis.guardrails[error-rate] from ClusterMetricTemplate/{library}router-error-rate"
        in (resolved["message"])
    )
    # The guardrails were evaluated from the templates' queries (one state per guardrail in status).
    guardrails = {g["name"] for g in promoted.get("guardrails") or []}
    assert {"p95-latency", "error-rate"} <= guardrails, promoted.get("guardrails")
    wait_for(
        lambda: env.router is not None and env.router.weights() == {"v2": 100}, timeout=30, message="v2 only"
    )


def test_a_missing_template_holds_the_experiment_until_it_is_created(
    cluster: Any, rollout_env: Any, operator: OperatorProcess, kube_api: Any
) -> None:
    """A reference to a MetricTemplate that does not exist: condition and Warning Event, no traffic moves;
    creating the template resolves it and the experiment starts."""
    env: RolloutEnv = rollout_env(experiment="missing")
    experiment = env.experiment(
        steps=STEPS,
        primary={"name": "conversion", "templateRef": {"name": "team-conversion"}},
    )
    env.apply([experiment])
    held = wait_for_status(
        kube_api,
        env.namespace,
        "missing",
        lambda s: condition(s, RESOLVED).get("status") == "False",
        timeout=60,
        message="the experiment to report the missing template",
    )
    missing = condition(held, RESOLVED)
    assert missing["reason"] == "TemplateNotFound", missing
    assert (
        missing["message"] == "metric templates: analysis.primary: MetricTemplate/team-conversion not found"
    )
    assert held["phase"] == "Pending" and "weights" not in held, held
    wait_for_events(kube_api, env.namespace, "missing", "TemplateNotFound")
    operator.assert_alive()

    conversion = {
        "apiVersion": "arbiter.dev/v1alpha1",
        "kind": "MetricTemplate",
        "metadata": {"name": "team-conversion", "namespace": env.namespace},
        "spec": {
            "parameters": [{"name": "job", "default": env.job}],
            "outcome": {
                "type": "Proportion",
                "successes": 'sum(arbiter_router_outcomes_total{job="{{job}}",experiment="{{experiment}}",'
                'variant="{{variant}}",result="success"})',
                "trials": 'sum(arbiter_router_outcomes_total{job="{{job}}",experiment="{{experiment}}",'
                'variant="{{variant}}",result=~"success|failure"})',
                "minimumDetectableEffect": 0.2,
            },
        },
    }
    apply(cluster, [conversion])
    running = wait_for_status(
        kube_api,
        env.namespace,
        "missing",
        lambda s: (
            condition(s, RESOLVED).get("status") == "True"
            and s.get("phase") == "Progressing"
            and bool((s.get("engine") or {}).get("identity"))
        ),
        timeout=60,
        message="the experiment to resolve the template and start",
    )
    assert "analysis.primary from MetricTemplate/team-conversion" in condition(running, RESOLVED)["message"]
    reasons = wait_for_events(kube_api, env.namespace, "missing", RESOLVED, "Progressing")
    assert reasons.index("TemplateNotFound") < reasons.index(RESOLVED), reasons
    assert event_reasons(kube_api, env.namespace, "missing").count("TemplateNotFound") == 1

    # A different question in the template restarts the analysis (docs/rollout.md, spec changes).
    identity = running["engine"]["identity"]
    conversion["spec"]["outcome"]["trials"] = conversion["spec"]["outcome"]["trials"].replace(
        "success|failure", "failure|success"
    )
    apply(cluster, [conversion])
    restarted = wait_for_status(
        kube_api,
        env.namespace,
        "missing",
        lambda s: (s.get("engine") or {}).get("identity") not in (None, identity),
        timeout=60,
        message="the changed template to change the experiment's identity",
    )
    assert restarted["phase"] == "Progressing" and restarted.get("currentStep") == 0, restarted
    wait_for_events(kube_api, env.namespace, "missing", "Restarted")
