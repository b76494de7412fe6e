"""Builders shared by the routing integration tests: experiment specs and the objects providers manage."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import yaml

from arbiter.api.v1alpha1 import ModelExperimentSpec, parse_spec

if TYPE_CHECKING:
    from localcluster import Cluster

# Another field manager, standing in for a GitOps tool that owns the objects Arbiter patches.
GITOPS = "gitops"


def experiment_spec(
    routing: dict[str, Any], challengers: int = 1, mode: str = "Canary"
) -> ModelExperimentSpec:
    """A minimal valid spec: champion v1, challengers v2.., Deployments/Services named fraud-<variant>."""
    names = [f"v{i}" for i in range(1, challengers + 2)]
    variants = [{"name": n, "deployment": f"fraud-{n}", "service": f"fraud-{n}"} for n in names]
    return parse_spec(
        {
            "mode": mode,
            "champion": variants[0],
            "challengers": variants[1:],
            "routing": routing,
            "steps": [{"weight": 10}, {"weight": 50}],
            "analysis": {"prometheus": {"url": "http://127.0.0.1:9"}},
        }
    )


def apply(cluster: Cluster, namespace: str, *objects: dict[str, Any], manager: str = GITOPS) -> None:
    """Server-side apply ``objects`` as field manager ``manager`` (like a GitOps tool would)."""
    cluster.kubectl(
        "apply",
        "--server-side",
        f"--field-manager={manager}",
        "-n",
        namespace,
        "-f",
        "-",
        input=yaml.safe_dump_all(objects),
    )


def get(cluster: Cluster, namespace: str, kind: str, name: str) -> dict[str, Any]:
    """Read an object with kubectl (independent of the code under test), managedFields included."""
    out = cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json", "--show-managed-fields").stdout
    result: dict[str, Any] = json.loads(out)
    return result


def managers(obj: dict[str, Any]) -> dict[str, str]:
    """Field manager -> the JSON of the fields it owns (to assert on ownership)."""
    return {
        entry["manager"]: json.dumps(entry.get("fieldsV1", {}), sort_keys=True)
        for entry in obj["metadata"].get("managedFields", [])
    }


def service(name: str, port: int = 8080) -> dict[str, Any]:
    """A Service fronting one variant's pods (app=fraud, variant label = name)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {
            "selector": {"app": "fraud", "deployment": name},
            "ports": [{"name": "metrics", "port": 9100}, {"name": "http", "port": port, "targetPort": 8080}],
        },
    }


def deployment(name: str, replicas: int) -> dict[str, Any]:
    """A Deployment whose pods kwok's fake node runs and marks Ready."""
    labels = {"app": "fraud", "deployment": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"team": "ml"}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "model", "image": "registry.example.com/fraud:1"}]},
            },
        },
    }
