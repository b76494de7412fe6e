"""A sharded operator handles its shard only: `arbiter run -n` (namespaces) and `--selector` (labels).

Against the real API server with the real operator process. An experiment whose Deployments do not
exist is enough: a handling operator writes its status (Pending, naming the missing Deployment) and
adds its finalizer; an ignoring one leaves the object exactly as applied.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from arbiter_fixtures import ROOT, OperatorProcess, experiment_docs
from helpers import wait_for


def _experiment(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    doc = next(
        d for d in experiment_docs(ROOT / "examples" / "canary.yaml") if d["kind"] == "ModelExperiment"
    )
    doc["metadata"] = {"name": name, "labels": labels or {}}
    return doc


def _get(cluster: Any, namespace: str, name: str) -> dict[str, Any]:
    return dict(json.loads(cluster.kubectl("get", "mexp", name, "-n", namespace, "-o", "json").stdout))


def _handled(cluster: Any, namespace: str, name: str) -> bool:
    obj = _get(cluster, namespace, name)
    return (obj.get("status") or {}).get("phase") == "Pending" and "arbiter.dev/finalizer" in obj[
        "metadata"
    ].get("finalizers", [])


def _untouched(obj: dict[str, Any]) -> None:
    assert "status" not in obj, f"the other shard's experiment got a status: {obj.get('status')}"
    assert not obj["metadata"].get("finalizers"), obj["metadata"].get("finalizers")
    assert not any(k.startswith("arbiter.dev/") for k in obj["metadata"].get("annotations") or {})


def _release(cluster: Any, namespace: str) -> None:
    """Delete the handled experiments while the operator runs, so no finalizer outlives the test."""
    cluster.kubectl("delete", "mexp", "--all", "-n", namespace, "--timeout=60s")


def _start(cluster: Any, tmp_path: Path, scope: list[str]) -> OperatorProcess:
    operator = OperatorProcess(cluster.kubeconfig, tmp_path / "operator.log", scope=scope).start()
    operator.wait_ready()
    return operator


def test_an_operator_limited_to_namespace_a_ignores_namespace_b(
    cluster: Any, arbiter_crd: str, namespace: str, tmp_path: Path
) -> None:
    other = f"{namespace}-b"
    cluster.kubectl("create", "namespace", other)
    try:
        # B's experiment exists first: had it been in scope, it would have been handled before A's.
        cluster.kubectl("apply", "-n", other, "-f", "-", input=yaml.safe_dump(_experiment("outside")))
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(_experiment("inside")))
        operator = _start(cluster, tmp_path, ["-n", namespace])
        try:
            wait_for(
                lambda: _handled(cluster, namespace, "inside"), timeout=60, message="A's experiment handled"
            )
            _untouched(_get(cluster, other, "outside"))
            _release(cluster, namespace)
        finally:
            operator.stop()
    finally:
        cluster.kubectl("delete", "namespace", other, "--wait=false")


def test_an_operator_with_a_label_selector_handles_only_matching_experiments(
    cluster: Any, arbiter_crd: str, namespace: str, tmp_path: Path
) -> None:
    shard_b = _experiment("shard-b", {"arbiter.dev/shard": "b"})
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(shard_b))
    shard_a = _experiment("shard-a", {"arbiter.dev/shard": "a"})
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(shard_a))
    operator = _start(cluster, tmp_path, ["--selector", "arbiter.dev/shard=a"])
    try:
        wait_for(lambda: _handled(cluster, namespace, "shard-a"), timeout=60, message="shard a handled")
        _untouched(_get(cluster, namespace, "shard-b"))
        # Moving an experiment into the shard is picked up at once: the filter is live, not a startup list.
        cluster.kubectl("label", "mexp", "shard-b", "-n", namespace, "arbiter.dev/shard=a", "--overwrite")
        wait_for(lambda: _handled(cluster, namespace, "shard-b"), timeout=60, message="relabelled experiment")
        _release(cluster, namespace)
    finally:
        operator.stop()
