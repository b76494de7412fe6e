"""The operator and the router run with the chart's ServiceAccounts (TokenRequest tokens), not as admin.

Every e2e story gets its operator from the ``operator`` fixture, which runs ``arbiter run`` with a token
of the chart's operator ServiceAccount and fails the test when the API server refused the operator
anything. These tests check that identity, show that a permission missing from the chart does fail a
test, and run the router with the chart's router identity.
"""

from __future__ import annotations

import json
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import yaml
from harness.processes import RouterProcess
from localcluster import Cluster

from arbiter.router.config import RouterConfig, Variant
from arbiter_fixtures import (
    ROOT,
    OperatorIdentity,
    OperatorProcess,
    experiment_docs,
    forbidden_requests,
    install_operator_identity,
)
from chart_support import identity_docs, install_router_identity, render
from helpers import wait_for

CANARY = ROOT / "examples" / "canary.yaml"


def routes_yaml(v1: int, v2: int) -> str:
    """A routes.yaml with those weights (the upstreams are never called)."""
    variants = (
        Variant(name="v1", url="http://127.0.0.1:9", weight=v1),
        Variant(name="v2", url="http://127.0.0.1:9", weight=v2),
    )
    return RouterConfig(experiment="fraud-v2", variants=variants).to_yaml()


def test_the_operator_runs_as_the_charts_service_account(
    operator: OperatorProcess, operator_identity: OperatorIdentity
) -> None:
    assert operator.kubeconfig == operator_identity.kubeconfig
    whoami = json.loads(operator_identity.kubectl("auth", "whoami", "-o", "json").stdout)
    assert whoami["status"]["userInfo"]["username"] == "system:serviceaccount:arbiter-system:arbiter"
    assert "system:masters" not in whoami["status"]["userInfo"].get("groups", [])
    assert not operator_identity.can_i("get", "secrets", "--all-namespaces")
    assert not operator_identity.can_i("delete", "deployments.apps", "--all-namespaces")


def test_probe_hits_are_not_logged(operator: OperatorProcess) -> None:
    """Kubelet probes every few seconds; at --verbose the operator still writes none of them to its log."""
    for _ in range(5):
        with urllib.request.urlopen(operator.liveness_url, timeout=5) as response:
            assert response.status == 200
        assert "arbiter_" in operator.metrics()
    operator.assert_alive()
    assert "GET /healthz" not in operator.log()
    assert "GET /metrics" not in operator.log()


def test_a_permission_the_chart_lacks_fails_the_test(
    cluster: Any, arbiter_crd: str, namespace: str, tmp_path: Path
) -> None:
    """The chart's RBAC without `patch`/`update` on modelexperiments/status: the operator's status writes
    are refused, and the log shows it, which the ``operator`` fixture turns into a failed test."""
    release = f"rbac-{uuid.uuid4().hex[:6]}"
    docs = identity_docs(render(cluster.bin_dir, release=release, namespace=release))
    role = next(d for d in docs if d["kind"] == "ClusterRole")
    status_rule = next(r for r in role["rules"] if r["resources"] == ["modelexperiments/status"])
    status_rule["verbs"] = [v for v in status_rule["verbs"] if v not in ("patch", "update")]
    identity = install_operator_identity(cluster, tmp_path, namespace=release, docs=docs)
    process = OperatorProcess(identity.kubeconfig, tmp_path / "operator.log").start()
    try:
        process.wait_ready()
        (experiment,) = [d for d in experiment_docs(CANARY) if d["kind"] == "ModelExperiment"]
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(experiment))
        refused = wait_for(
            lambda: forbidden_requests(process.log()),
            timeout=60,
            message="the operator to be refused its status write",
        )
        # Status is written with a PUT carrying the resourceVersion it was decided from (verb update).
        assert any(
            'cannot update resource \\"modelexperiments/status\\"' in line
            or 'cannot patch resource \\"modelexperiments/status\\"' in line
            for line in refused
        ), refused
        stored = json.loads(
            cluster.kubectl(
                "get", "mexp", experiment["metadata"]["name"], "-n", namespace, "-o", "json"
            ).stdout
        )
        assert "phase" not in (stored.get("status") or {}), "a status was written without the permission"
    finally:
        process.stop()
        # The experiment's finalizer needs an operator; drop it so the namespace can go.
        cluster.kubectl(
            "patch",
            "mexp",
            "--all",
            "-n",
            namespace,
            "--type=merge",
            "-p",
            '{"metadata":{"finalizers":null}}',
            check=False,
        )
        for doc in (d for d in docs if d["kind"].startswith("Cluster")):
            cluster.kubectl("delete", doc["kind"].lower(), doc["metadata"]["name"], check=False)
        cluster.kubectl("delete", "namespace", release, "--wait=false", check=False)


def test_only_rbac_refusals_count_as_forbidden() -> None:
    """A 403 for a namespace being deleted (an earlier test's) is not a missing permission."""
    log = "\n".join(
        [
            'PATCH .../configmaps/r: 403 configmaps "r" is forbidden: unable to create new content in namespace'
            " t-x because it is being terminated",
            'Failed to post an event. Code: 403. Message: events is forbidden: User "system:serviceaccount:a:b"'
            ' cannot create resource "events" in API group "" in the namespace "t-y"',
        ]
    )
    assert forbidden_requests(log) == [log.splitlines()[1]]


def test_the_router_follows_its_configmap_as_the_charts_router_account(
    cluster: Any, namespace: str, tmp_path: Path
) -> None:
    """The router's Role names one ConfigMap: list and watch by name work, nothing else is readable."""
    kubeconfig = install_router_identity(cluster, namespace, "fraud-router", tmp_path)
    as_router = Cluster.from_kubeconfig(kubeconfig, cluster.bin_dir)
    whoami = json.loads(as_router.kubectl("auth", "whoami", "-o", "json").stdout)
    assert whoami["status"]["userInfo"]["username"] == f"system:serviceaccount:{namespace}:arbiter-router"

    def can_i(*args: str) -> bool:
        return as_router.kubectl("auth", "can-i", *args, "-n", namespace, check=False).stdout.strip() == "yes"

    wait_for(
        lambda: can_i("watch", "configmaps/fraud-router"), timeout=30, message="the router's RoleBinding"
    )
    assert not can_i("get", "configmaps/other")
    assert not can_i("list", "configmaps")  # without the name: every ConfigMap
    assert not can_i("get", "secrets")

    router = RouterProcess.start(
        ["--configmap", f"{namespace}/fraud-router"], tmp_path, {"KUBECONFIG": str(kubeconfig)}
    )
    try:
        assert not router.ready()
        configmap = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "fraud-router"},
            "data": {"routes.yaml": routes_yaml(70, 30)},
        }
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(configmap))
        wait_for(router.ready, timeout=30, message="the router to load the routes from its ConfigMap")
        assert router.weights() == {"v1": 70.0, "v2": 30.0}
        configmap["data"]["routes.yaml"] = routes_yaml(50, 50)
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(configmap))
        wait_for(
            lambda: router.weights() == {"v1": 50.0, "v2": 50.0}, timeout=30, message="the watched change"
        )
        router.assert_alive()
        assert forbidden_requests(router.log()) == []
    finally:
        router.stop()
