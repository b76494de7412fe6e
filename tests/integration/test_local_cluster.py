"""The local control plane behaves like a small real cluster: nodes, Deployments, Services, RBAC."""

from __future__ import annotations

import base64
import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from localcluster import Cluster, ClusterError, KubectlError, binaries, down, up
from localcluster import cluster as localcluster_cluster

from helpers import wait_for

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      containers:
      - name: web
        image: registry.invalid/web:1
        ports:
        - containerPort: 8080
"""


def _get_json(cluster: Cluster, *args: str) -> Any:
    return json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)


def test_kubectl_lists_the_fake_node_ready(cluster: Cluster) -> None:
    nodes = _get_json(cluster, "nodes")["items"]

    fake = [n for n in nodes if n["metadata"].get("annotations", {}).get("kwok.x-k8s.io/node") == "fake"]
    assert fake, f"no kwok node among {[n['metadata']['name'] for n in nodes]}"
    for node in fake:
        ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"]
        assert ready == "True", node["metadata"]["name"]


def test_server_and_kubeconfig_point_at_the_same_loopback_api_server(cluster: Cluster) -> None:
    assert cluster.server.startswith("https://127.0.0.1:")
    assert cluster.kubectl("get", "--raw=/readyz").stdout == "ok"
    version = json.loads(cluster.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == binaries.versions()["KUBE_VERSION"]


def test_kubectl_failure_carries_stderr(cluster: Cluster) -> None:
    with pytest.raises(KubectlError, match='configmaps "does-not-exist" not found'):
        cluster.kubectl("get", "configmap", "does-not-exist", "-n", "default")
    assert cluster.kubectl("get", "configmap", "does-not-exist", "-n", "default", check=False).returncode != 0


def test_deployment_reaches_ready_replicas_on_the_kwok_node(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=DEPLOYMENT.format(replicas=3))

    def ready_replicas() -> int:
        return int(
            _get_json(cluster, "deployment", "web", "-n", namespace).get("status", {}).get("readyReplicas", 0)
        )

    wait_for(lambda: ready_replicas() == 3, timeout=60, message="Deployment web never had 3 ready replicas")
    pods = _get_json(cluster, "pods", "-n", namespace, "-l", "app=web")["items"]
    assert len(pods) == 3
    for pod in pods:
        assert pod["spec"]["nodeName"].startswith("kwok-node-")
        assert pod["status"]["phase"] == "Running"
        assert ipaddress.ip_address(pod["status"]["podIP"]) in ipaddress.ip_network(
            localcluster_cluster.POD_CIDR
        )
        assert pod["spec"]["serviceAccountName"] == "default"


def test_scaling_a_deployment_down_deletes_pods(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=DEPLOYMENT.format(replicas=2))
    wait_for(
        lambda: len(_get_json(cluster, "pods", "-n", namespace, "-l", "app=web")["items"]) == 2,
        timeout=60,
        message="2 pods never appeared",
    )

    cluster.kubectl("scale", "deployment/web", "--replicas=0", "-n", namespace)

    wait_for(
        lambda: _get_json(cluster, "pods", "-n", namespace, "-l", "app=web")["items"] == [],
        timeout=60,
        message="pods of a scaled-down Deployment were never deleted",
    )


def test_service_gets_a_cluster_ip(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("create", "service", "clusterip", "web", "--tcp=80:8080", "-n", namespace)

    service = _get_json(cluster, "service", "web", "-n", namespace)

    assert ipaddress.ip_address(service["spec"]["clusterIP"]) in ipaddress.ip_network("10.96.0.0/16")


def test_configmap_round_trips_through_the_python_client(kube_api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(kube_api)
    body = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="settings"), data={"weight": "10"})
    core.create_namespaced_config_map(namespace, body)

    core.patch_namespaced_config_map("settings", namespace, {"data": {"weight": "25", "mode": "canary"}})

    read = core.read_namespaced_config_map("settings", namespace)
    assert read.data == {"weight": "25", "mode": "canary"}


def test_every_namespace_gets_the_cluster_ca(
    kube_api: client.ApiClient, cluster: Cluster, namespace: str
) -> None:
    """The controller-manager publishes --root-ca-file as kube-root-ca.crt into each namespace."""
    core = client.CoreV1Api(kube_api)
    config_map = wait_for(
        lambda: core.read_namespaced_config_map("kube-root-ca.crt", namespace),
        timeout=30,
        message="kube-root-ca.crt was not published",
    )
    kubeconfig = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    cluster_ca = base64.b64decode(kubeconfig["clusters"][0]["cluster"]["certificate-authority-data"]).decode()
    assert config_map.data is not None
    assert config_map.data["ca.crt"].strip() == cluster_ca.strip()


def test_a_service_account_token_authenticates_as_that_service_account(
    kube_api: client.ApiClient, cluster: Cluster, namespace: str
) -> None:
    core = client.CoreV1Api(kube_api)
    request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[]))
    issued = core.create_namespaced_service_account_token("default", namespace, request).status
    assert issued is not None and issued.token
    token = issued.token

    config = client.Configuration()
    config.host = cluster.server
    config.ssl_ca_cert = kube_api.configuration.ssl_ca_cert
    config.api_key = {"authorization": f"Bearer {token}"}
    with client.ApiClient(config) as as_service_account:
        review = client.AuthenticationV1Api(as_service_account).create_self_subject_review(
            client.V1SelfSubjectReview()
        )

    assert review.status is not None and review.status.user_info is not None
    assert review.status.user_info.username == f"system:serviceaccount:{namespace}:default"


def test_rbac_denies_a_service_account_by_default(kube_api: client.ApiClient, namespace: str) -> None:
    review = client.AuthorizationV1Api(kube_api).create_subject_access_review(
        client.V1SubjectAccessReview(
            spec=client.V1SubjectAccessReviewSpec(
                user=f"system:serviceaccount:{namespace}:default",
                resource_attributes=client.V1ResourceAttributes(
                    verb="list", resource="secrets", namespace=namespace
                ),
            )
        )
    )
    assert review.status is not None
    assert review.status.allowed is False


@pytest.mark.cluster
@pytest.mark.slow
def test_up_is_idempotent_and_down_leaves_nothing_running(tmp_path: Path) -> None:
    """A second cluster in its own directory, so the session cluster is untouched."""
    first = up(tmp_path, die_with_parent=True)
    layout = localcluster_cluster.Layout(tmp_path)
    records = layout.records()
    assert {r.name for r in records} == set(localcluster_cluster.COMPONENTS)
    assert all(r.alive() for r in records)

    again = up(tmp_path, die_with_parent=True)
    assert again == first
    assert layout.records() == records

    stopped = down(tmp_path)

    assert sorted(stopped) == sorted(localcluster_cluster.COMPONENTS)
    assert not any(r.alive() for r in records)
    assert layout.records() == []
    assert down(tmp_path) == []


@pytest.mark.cluster
def test_a_failed_up_reports_the_log_and_leaves_nothing_running(tmp_path: Path) -> None:
    with pytest.raises(ClusterError, match="kube-apiserver exited") as failure:
        up(tmp_path, die_with_parent=True, extra_args={"kube-apiserver": ["--no-such-flag"]})

    assert "unknown flag: --no-such-flag" in str(failure.value)
    records = localcluster_cluster.Layout(tmp_path).records()
    assert {r.name for r in records} >= {"etcd", "kube-apiserver"}
    assert not any(r.alive() for r in records)
    assert down(tmp_path) == []
