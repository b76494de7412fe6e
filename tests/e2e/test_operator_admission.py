"""The operator against the real control plane: Pending until kwok makes the Deployments ready, then
Progressing, with conditions, events and a bounded history; restarts resume from status."""

from __future__ import annotations

import json
from typing import Any

import yaml

from arbiter_fixtures import ROOT, OperatorProcess, experiment_docs
from helpers import wait_for

CANARY = ROOT / "examples" / "canary.yaml"


def get_experiment(cluster: Any, namespace: str, name: str) -> dict[str, Any]:
    return json.loads(cluster.kubectl("get", "mexp", name, "-n", namespace, "-o", "json").stdout)


def status_of(cluster: Any, namespace: str, name: str) -> dict[str, Any]:
    return get_experiment(cluster, namespace, name).get("status") or {}


def ready_message(status: dict[str, Any]) -> str:
    return next((c["message"] for c in status.get("conditions", []) if c["type"] == "Ready"), "")


def apply_docs(cluster: Any, namespace: str, docs: list[dict[str, Any]]) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(docs))


def event_reasons(cluster: Any, namespace: str, name: str) -> list[str]:
    events = json.loads(
        cluster.kubectl(
            "get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}", "-o", "json"
        ).stdout
    )
    return [e["reason"] for e in events["items"] if e["involvedObject"]["kind"] == "ModelExperiment"]


def test_waits_for_workloads_then_progresses(cluster: Any, namespace: str, operator: OperatorProcess) -> None:
    docs = experiment_docs(CANARY)
    experiment = [d for d in docs if d["kind"] == "ModelExperiment"]
    workloads = [d for d in docs if d["kind"] != "ModelExperiment"]
    # The example's Prometheus does not exist here, so every tick counts a query error; this story is about
    # admission and a restart, not the pause after three failing ticks (whose timing would race the restart).
    experiment[0]["spec"]["analysis"]["consecutiveErrorLimit"] = 100
    name = experiment[0]["metadata"]["name"]

    apply_docs(cluster, namespace, experiment)
    pending = wait_for(
        lambda: (s := status_of(cluster, namespace, name)).get("phase") == "Pending" and s,
        timeout=30,
        message="experiment never became Pending",
    )
    assert "Deployment fraud-v1 not found" in pending["message"]
    ready = next(c for c in pending["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["reason"] == "WorkloadsNotReady"

    apply_docs(cluster, namespace, workloads)
    progressing = wait_for(
        lambda: (s := status_of(cluster, namespace, name)).get("phase") == "Progressing" and s,
        timeout=90,
        message="experiment never became Progressing after kwok made the Deployments ready",
    )
    assert progressing["weights"] == {"v1": 100, "v2": 0}
    assert progressing["currentStep"] == 0
    assert (
        progressing["observedGeneration"]
        == get_experiment(cluster, namespace, name)["metadata"]["generation"]
    )
    assert [h["to"] for h in progressing["history"]] == ["Pending", "Progressing(step 0)"]
    ready = next(c for c in progressing["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"
    for deployment in ("fraud-v1", "fraud-v2"):
        body = json.loads(
            cluster.kubectl("get", "deployment", deployment, "-n", namespace, "-o", "json").stdout
        )
        assert body["status"]["readyReplicas"] == body["spec"]["replicas"]
    wait_for(
        lambda: {"WorkloadsNotReady", "Progressing"} <= set(event_reasons(cluster, namespace, name)),
        timeout=30,
        message="events for the transitions were not posted",
    )

    # The operator's own metrics count the experiment by phase and time every tick.
    def counted_as_progressing() -> str | None:
        text = operator.metrics()
        return text if 'arbiter_experiments{phase="Progressing"} 1.0' in text else None

    metrics = wait_for(
        counted_as_progressing,
        timeout=30,
        message="the operator's metrics to count the experiment as Progressing",
    )
    assert (
        f'arbiter_experiment_phase{{experiment="{name}",namespace="{namespace}",phase="Progressing"}} 1.0'
        in metrics
    )
    assert "arbiter_tick_duration_seconds_count" in metrics
    assert "arbiter_decisions_total" in metrics

    # A restart resumes from status: nothing is repeated, and the new process acts on the world as it
    # finds it. (The Service goes while the operator is down: deleted after the restart, it would be
    # noticed at once too, but through an extra tick, and with this example's unreachable Prometheus a
    # third failing tick pauses the experiment; that race is not what this story is about.)
    operator.stop()
    cluster.kubectl("delete", "service", "fraud-v2", "-n", namespace)
    operator.start().wait_ready()
    lost = wait_for(
        lambda: "Service fraud-v2 not found" in ready_message(s := status_of(cluster, namespace, name)) and s,
        timeout=30,
        message="the restarted operator did not notice the missing Service",
    )
    assert lost["phase"] == "Progressing"
    assert lost["history"] == progressing["history"]
    assert lost["startedAt"] == progressing["startedAt"]
    assert next(c for c in lost["conditions"] if c["type"] == "Ready")["status"] == "False"


def test_deleting_an_experiment_releases_its_finalizer(
    cluster: Any, namespace: str, operator: OperatorProcess
) -> None:
    docs = experiment_docs(CANARY)
    apply_docs(cluster, namespace, docs)
    name = next(d for d in docs if d["kind"] == "ModelExperiment")["metadata"]["name"]
    wait_for(
        lambda: (
            "arbiter.dev/finalizer"
            in get_experiment(cluster, namespace, name)["metadata"].get("finalizers", [])
        ),
        timeout=30,
        message="the operator did not add its finalizer",
    )
    cluster.kubectl("delete", "mexp", name, "-n", namespace, "--wait=true", "--timeout=60s")
    assert cluster.kubectl("get", "mexp", name, "-n", namespace, check=False).returncode != 0
