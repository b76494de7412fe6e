"""`kubectl arbiter` as kubectl runs it (a plugin found on PATH) against the real API server."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from arbiter_fixtures import ROOT, experiment_docs

BIN = Path(sys.executable).parent


def kubectl(cluster: Any, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "KUBECONFIG": cluster.kubeconfig,
    }
    result = subprocess.run(
        [str(BIN / "kubectl"), *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr}")
    return result


def create_experiment(cluster: Any, namespace: str, status: dict[str, Any] | None = None) -> str:
    doc = copy.deepcopy(
        next(d for d in experiment_docs(ROOT / "examples" / "canary.yaml") if d["kind"] == "ModelExperiment")
    )
    doc["metadata"] = {"name": "plugin-probe", "namespace": namespace}
    cluster.kubectl("create", "-f", "-", input=yaml.safe_dump(doc))
    if status:
        cluster.kubectl(
            "patch",
            "mexp",
            "plugin-probe",
            "-n",
            namespace,
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps({"status": status}),
        )
    return "plugin-probe"


def stored(cluster: Any, namespace: str, name: str) -> dict[str, Any]:
    return json.loads(cluster.kubectl("get", "mexp", name, "-n", namespace, "-o", "json").stdout)


def test_get_and_status_explain_the_experiment(cluster: Any, arbiter_crd: str, namespace: str) -> None:
    name = create_experiment(
        cluster,
        namespace,
        {
            "phase": "Progressing",
            "currentStep": 1,
            "weights": {"v1": 75, "v2": 25},
            "decision": {"outcome": "Hold", "reason": "step 1 held: 12s of 600s"},
            "history": [
                {
                    "time": "2026-01-01T00:00:00Z",
                    "from": "Progressing(step 0)",
                    "to": "Progressing(step 1)",
                    "reason": "step 0 passed",
                }
            ],
        },
    )
    listing = kubectl(cluster, "arbiter", "get", "-n", namespace).stdout.splitlines()
    assert listing[0].split() == ["NAME", "MODE", "PHASE", "STEP", "WEIGHTS", "DECISION"]
    assert listing[1].split() == [name, "Canary", "Progressing", "1", "v1=75,v2=25", "Hold"]
    explained = kubectl(cluster, "arbiter", "status", name, "-n", namespace).stdout
    assert "phase Progressing" in explained and "v2 25%" in explained
    assert "decision: Hold: step 1 held: 12s of 600s" in explained
    assert "Progressing(step 0) -> Progressing(step 1): step 0 passed" in explained


def test_actions_write_the_documented_annotations(cluster: Any, arbiter_crd: str, namespace: str) -> None:
    name = create_experiment(cluster, namespace)
    kubectl(cluster, "arbiter", "abort", name, "-n", namespace)
    first = stored(cluster, namespace, name)["metadata"]["annotations"]["arbiter.dev/abort"]
    kubectl(cluster, "arbiter", "abort", name, "-n", namespace)
    second = stored(cluster, namespace, name)["metadata"]["annotations"]["arbiter.dev/abort"]
    assert first != second, "every request carries a fresh value, so the operator acts on each"
    kubectl(cluster, "arbiter", "promote", name, "-n", namespace, "--variant", "v2")
    assert stored(cluster, namespace, name)["metadata"]["annotations"]["arbiter.dev/promote"] == "v2"
    kubectl(cluster, "arbiter", "pause", name, "-n", namespace)
    assert stored(cluster, namespace, name)["spec"]["paused"] is True
    kubectl(cluster, "arbiter", "unpause", name, "-n", namespace)
    assert stored(cluster, namespace, name)["spec"]["paused"] is False


def test_a_missing_experiment_is_a_one_line_error(cluster: Any, arbiter_crd: str, namespace: str) -> None:
    result = kubectl(cluster, "arbiter", "status", "nope", "-n", namespace, check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: modelexperiment {namespace}/nope not found"
    result = kubectl(cluster, "arbiter", "abort", "nope", "-n", namespace, check=False)
    assert result.returncode == 1 and result.stderr.startswith("error: 404")
