"""The Helm chart, installed by the real helm into the real API server (the GitOps path)."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from arbiter_fixtures import ROOT
from helpers import wait_for

CHART = ROOT / "charts" / "arbiter"

# Everything the operator does to the API server, as (verb, resource, namespaced).
OPERATOR_ACCESS = [
    ("watch", "modelexperiments.arbiter.dev", False),
    ("patch", "modelexperiments.arbiter.dev", True),
    ("patch", "modelexperiments.arbiter.dev/status", True),
    ("list", "customresourcedefinitions.apiextensions.k8s.io", False),
    ("create", "events", True),
    ("get", "deployments.apps", True),
    ("patch", "deployments.apps/scale", True),
    ("get", "services", True),
    ("create", "configmaps", True),
    ("patch", "configmaps", True),
    ("patch", "httproutes.gateway.networking.k8s.io", True),
    ("patch", "virtualservices.networking.istio.io", True),
]


def helm(cluster: Any, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(Path(cluster.bin_dir) / "helm"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "KUBECONFIG": cluster.kubeconfig, "HELM_CACHE_HOME": "/tmp/arbiter-helm-cache"},
        check=False,
    )
    assert result.returncode == 0, f"helm {' '.join(args)}: {result.stderr}"
    return result


def test_chart_lints_and_renders_the_operator(cluster: Any) -> None:
    helm(cluster, "lint", str(CHART))
    rendered = helm(
        cluster,
        "template",
        "arbiter",
        str(CHART),
        "--namespace",
        "ops",
        "--kube-version",  # helm template alone assumes Kubernetes 1.20
        "1.36.3",
        "--set",
        "watchNamespaces={ml,ranking}",
        "--set",
        "verbose=true",
    ).stdout
    docs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(rendered) if d}
    container = docs[("Deployment", "arbiter")]["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][:3] == ["run", "--namespace=ml", "--namespace=ranking"]
    assert "--verbose" in container["args"]
    assert container["image"].endswith(":0.1.0"), "the image tag defaults to the chart's appVersion"
    assert ("ClusterRole", "arbiter") in docs and ("ServiceAccount", "arbiter") in docs


def test_helm_install_gives_the_operator_every_permission_it_uses(cluster: Any, arbiter_crd: str) -> None:
    release = f"arbiter-{uuid.uuid4().hex[:6]}"
    namespace = f"{release}-system"
    helm(
        cluster,
        "install",
        release,
        str(CHART),
        "--namespace",
        namespace,
        "--create-namespace",
        "--wait=false",
    )
    try:
        deployment = f"{release}"
        wait_for(
            lambda: (
                json.loads(
                    cluster.kubectl("get", "deployment", deployment, "-n", namespace, "-o", "json").stdout
                )
                .get("status", {})
                .get("readyReplicas")
                == 1
            ),
            timeout=60,
            message="the operator Deployment to become ready (kwok)",
        )
        account = f"system:serviceaccount:{namespace}:{release}"
        denied = []
        for verb, resource, namespaced in OPERATOR_ACCESS:
            scope = ["-n", "some-team"] if namespaced else ["--all-namespaces"]
            answer = cluster.kubectl("auth", "can-i", verb, resource, "--as", account, *scope, check=False)
            if answer.stdout.strip() != "yes":
                denied.append(f"{verb} {resource}")
        assert denied == []
        # ...and nothing broader than it needs.
        assert (
            cluster.kubectl(
                "auth", "can-i", "delete", "deployments", "--as", account, "-n", "x", check=False
            ).stdout.strip()
            == "no"
        )
        assert (
            cluster.kubectl(
                "auth", "can-i", "get", "secrets", "--as", account, "-n", "x", check=False
            ).stdout.strip()
            == "no"
        )
    finally:
        helm(cluster, "uninstall", release, "--namespace", namespace)
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


@pytest.mark.parametrize("path", [ROOT / "crds" / "modelexperiment.yaml"], ids=["crd"])
def test_the_chart_ships_the_generated_crd(path: Path) -> None:
    assert (CHART / "crds" / "modelexperiment.yaml").read_text() == path.read_text()
