"""The Helm chart with the real helm: lint, render (default and every option), schema, RBAC, and a release
installed, upgraded and uninstalled on the real API server (with the prometheus-operator CRDs)."""

from __future__ import annotations

import copy
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from localcluster import binaries

from arbiter_fixtures import ROOT
from chart_support import (
    ALL_OPTIONS,
    CHART,
    RBAC_KINDS,
    HelmError,
    apply,
    find,
    helm,
    render,
)
from helpers import wait_for

# Everything the operator does to the API server, as (verb, resource, namespaced).
OPERATOR_ACCESS = [
    ("watch", "modelexperiments.arbiter.dev", False),
    ("patch", "modelexperiments.arbiter.dev", True),
    ("patch", "modelexperiments.arbiter.dev/status", True),
    ("list", "customresourcedefinitions.apiextensions.k8s.io", False),
    ("get", "metrictemplates.arbiter.dev", True),
    ("watch", "metrictemplates.arbiter.dev", False),
    ("get", "clustermetrictemplates.arbiter.dev", False),
    ("list", "clustermetrictemplates.arbiter.dev", False),
    ("create", "events", True),
    ("get", "deployments.apps", True),
    ("patch", "deployments.apps/scale", True),
    ("get", "services", True),
    ("create", "configmaps", True),
    ("patch", "configmaps", True),
    ("patch", "httproutes.gateway.networking.k8s.io", True),
    ("patch", "virtualservices.networking.istio.io", True),
]
# Roles nobody should bind an operator to.
ADMIN_ROLES = {"cluster-admin", "admin", "edit", "system:masters"}
# Verbs that hand out more than the role itself.
ESCALATING_VERBS = {"escalate", "bind", "impersonate"}
MODELS_NAMESPACE = "arbiter-ci-models"  # the second router of ci/all-options-values.yaml lives there


@pytest.fixture(scope="module")
def bin_dir() -> Path:
    """The directory of the cached helm (built with the control plane)."""
    return binaries.ensure_built()


def rendering(bin_dir: Path, name: str) -> list[dict[str, Any]]:
    """The default or the all-options rendering."""
    return render(bin_dir, values_files=(ALL_OPTIONS,) if name == "all-options" else ())


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


# -- lint and render ------------------------------------------------------------------------------------


@pytest.mark.parametrize("values", [None, ALL_OPTIONS], ids=["default", "all-options"])
def test_chart_lints(bin_dir: Path, values: Path | None) -> None:
    args = ["lint", str(CHART), "--strict", "--kube-version", "1.36.3"]
    if values is not None:
        args += ["--values", str(values)]
    assert "0 chart(s) failed" in helm(bin_dir, *args).stdout


def test_default_rendering_runs_one_operator_safely(bin_dir: Path) -> None:
    docs = render(bin_dir, namespace="ops", settings=("watchNamespaces={ml,ranking}", "log.level=debug"))
    assert sorted(d["kind"] for d in docs) == [
        *["ClusterMetricTemplate"] * 5,  # the library for the router's metrics (metricTemplates.library)
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",  # the two Grafana dashboards (dashboards.enabled)
        "ConfigMap",
        "Deployment",
        "Service",
        "ServiceAccount",
    ]
    deployment = find(docs, "Deployment", "arbiter")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}, "two operators must never overlap"
    operator = container(deployment)
    assert operator["args"][:3] == ["run", "--namespace=ml", "--namespace=ranking"]
    assert "--log-level=debug" in operator["args"] and "--log-format=full" in operator["args"]
    assert not any(a.startswith("--leader-election") for a in operator["args"])
    assert operator["image"].endswith(":0.1.0"), "the image tag defaults to the chart's appVersion"
    # Probes hit Kopf's liveness endpoint; metrics are served and exposed by the Service.
    assert operator["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert operator["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert "--liveness=http://0.0.0.0:8080/healthz" in operator["args"]
    assert "--metrics-port=8081" in operator["args"]
    ports = {p["name"]: p["containerPort"] for p in operator["ports"]}
    assert ports == {"health": 8080, "metrics": 8081}
    service = find(docs, "Service", "arbiter-metrics")
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 8081, "targetPort": "metrics", "protocol": "TCP"}
    ]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    # Non-root, read-only root filesystem; the one writable path is an emptyDir.
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert operator["securityContext"]["readOnlyRootFilesystem"] is True
    assert operator["securityContext"]["allowPrivilegeEscalation"] is False
    assert operator["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert operator["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert pod["volumes"][0]["emptyDir"] == {"sizeLimit": "64Mi"}
    assert {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"} in operator["env"]


def test_two_replicas_elect_a_leader_and_get_a_disruption_budget(bin_dir: Path) -> None:
    docs = render(bin_dir, namespace="ops", settings=("replicas=2",))
    deployment = find(docs, "Deployment", "arbiter")
    operator = container(deployment)
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert "--leader-election-namespace=$(POD_NAMESPACE)" in operator["args"]
    assert "--leader-election-name=arbiter" in operator["args"]
    assert {"name": "ARBITER_LEADER_ELECTION", "value": "true"} in operator["env"]
    role = find(docs, "Role", "arbiter-leader-election")
    assert role["metadata"]["namespace"] == "ops"
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": ["arbiter"],
            "verbs": ["get", "update", "watch"],
        },
    ]
    binding = find(docs, "RoleBinding", "arbiter-leader-election")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "arbiter", "namespace": "ops"}]
    pdb = find(docs, "PodDisruptionBudget", "arbiter")
    assert pdb["spec"]["selector"] == deployment["spec"]["selector"]
    # ...and explicitly off means off.
    off = render(bin_dir, settings=("replicas=2", "leaderElection.enabled=false", "pdb.enabled=false"))
    assert not [d for d in off if d["kind"] in ("Role", "PodDisruptionBudget")]
    assert not any(
        a.startswith("--leader-election") for a in container(find(off, "Deployment", "arbiter"))["args"]
    )


def test_every_option_reaches_the_objects(bin_dir: Path) -> None:
    values = yaml.safe_load(ALL_OPTIONS.read_text())
    docs = render(bin_dir, namespace="ops", values_files=(ALL_OPTIONS,))
    deployment = find(docs, "Deployment", "arbiter")
    pod = deployment["spec"]["template"]["spec"]
    operator = container(deployment)
    assert deployment["spec"]["replicas"] == 3
    assert operator["image"] == "registry.example.com/platform/arbiter:0.2.0-rc.1"
    library = sorted(d["metadata"]["name"] for d in docs if d["kind"] == "ClusterMetricTemplate")
    assert library == [
        f"ci-router-{n}"
        for n in ("conversion", "error-rate", "mean-value", "p95-latency", "shadow-agreement")
    ]
    assert operator["imagePullPolicy"] == "Always"
    assert pod["imagePullSecrets"] == [{"name": "registry-credentials"}]
    assert pod["serviceAccountName"] == "arbiter-operator"
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert pod["securityContext"] == values["podSecurityContext"]
    assert operator["securityContext"] == values["securityContext"]
    assert pod["nodeSelector"] == values["nodeSelector"] and pod["tolerations"] == values["tolerations"]
    assert pod["affinity"] == values["affinity"]
    assert deployment["spec"]["template"]["metadata"]["annotations"] == values["podAnnotations"]
    assert deployment["spec"]["template"]["metadata"]["labels"]["team"] == "ml-platform"
    assert operator["resources"] == values["resources"]
    assert {"name": "ARBITER_RESYNC_SECONDS", "value": "30"} in operator["env"]
    for arg in (
        "--namespace=ml",
        "--namespace=ranking-*",
        "--liveness=http://0.0.0.0:9808/healthz",
        "--log-level=debug",
        "--log-format=json",
        "--metrics-port=9464",
        "--leader-election-name=arbiter-leader",
        "--metrics-address=0.0.0.0",
        "--prometheus-url=https://mimir.monitoring:8080/prometheus",
        "--prometheus-header=X-Scope-OrgID=ml-platform",
        "--prometheus-basic-auth-username=arbiter",
        "--prometheus-basic-auth-password-file=/etc/arbiter/prometheus/password",
        "--prometheus-ca-file=/etc/arbiter/prometheus/ca.crt",
    ):
        assert arg in operator["args"], arg
    # The default Prometheus connection's credentials: a Secret mounted read-only, readable by the pod's group.
    assert {
        "name": "prometheus-credentials",
        "mountPath": "/etc/arbiter/prometheus",
        "readOnly": True,
    } in operator["volumeMounts"]
    assert {
        "name": "prometheus-credentials",
        "secret": {"secretName": "prometheus-credentials", "defaultMode": 0o440},
    } in pod["volumes"]
    assert (
        operator["livenessProbe"]["periodSeconds"] == 15
        and operator["readinessProbe"]["failureThreshold"] == 2
    )
    # A topology constraint without a selector gets the operator's own; one with a selector keeps it.
    spread = pod["topologySpreadConstraints"]
    assert spread[0]["labelSelector"] == {"matchLabels": deployment["spec"]["selector"]["matchLabels"]}
    assert spread[1]["labelSelector"] == {"matchLabels": {"app.kubernetes.io/name": "arbiter"}}
    assert find(docs, "Role", "arbiter-leader-election")["rules"][1]["resourceNames"] == ["arbiter-leader"]
    assert find(docs, "ServiceAccount", "arbiter-operator")["metadata"]["annotations"] == {
        "iam.example.com/role": "arbiter"
    }
    # Monitoring: the Service and both monitors point at the metrics port.
    assert find(docs, "Service", "arbiter-metrics")["spec"]["ports"][0]["port"] == 8443
    monitor = find(docs, "ServiceMonitor", "arbiter")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert (
        endpoint["port"] == "metrics" and endpoint["interval"] == "15s" and endpoint["scrapeTimeout"] == "10s"
    )
    assert endpoint["metricRelabelings"] == values["metrics"]["serviceMonitor"]["metricRelabelings"]
    assert find(docs, "PodMonitor", "arbiter")["spec"]["podMetricsEndpoints"][0]["interval"] == "20s"
    assert find(docs, "PodDisruptionBudget", "arbiter")["spec"]["maxUnavailable"] == 1
    # Routers: one per instance, in its namespace, with the instance's overrides.
    fraud = find(docs, "Deployment", "arbiter-router-fraud")
    ranking = find(docs, "Deployment", "arbiter-router-ranking")
    assert fraud["metadata"]["namespace"] == "ops" and ranking["metadata"]["namespace"] == MODELS_NAMESPACE
    assert fraud["spec"]["replicas"] == 2 and ranking["spec"]["replicas"] == 3
    router = container(fraud)
    assert router["image"] == "registry.example.com/platform/arbiter-router:0.2.0-rc.1"
    assert router["args"] == [
        "router",
        "--configmap=ops/fraud-router",
        "--listen=0.0.0.0:8090",
        "--metrics-listen=0.0.0.0:9191",
        "--log-level=WARNING",
        "--poll-interval=2",
    ]
    assert container(ranking)["args"][1] == f"--configmap={MODELS_NAMESPACE}/ranking-routes"
    assert container(ranking)["resources"] == values["router"]["instances"][1]["resources"]
    assert router["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert router["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert router["securityContext"] == values["router"]["securityContext"]
    assert ranking["spec"]["template"]["metadata"]["labels"]["model"] == "ranking"
    assert ranking["spec"]["template"]["metadata"]["annotations"] == {
        "example.com/component": "router",
        "example.com/owner": "ranking-team",
    }
    service = find(docs, "Service", "arbiter-router-fraud")
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {"http": 8080, "metrics": 9191}
    assert service["spec"]["selector"] == fraud["spec"]["selector"]["matchLabels"]
    assert find(docs, "PodDisruptionBudget", "arbiter-router-fraud")["spec"]["maxUnavailable"] == "50%"
    assert find(docs, "PodMonitor", "arbiter-router-ranking")["metadata"]["namespace"] == MODELS_NAMESPACE
    # The operator's selector must not catch the routers' Pods, nor one router's another's.
    operator_selector = deployment["spec"]["selector"]["matchLabels"].items()
    assert not operator_selector <= fraud["spec"]["template"]["metadata"]["labels"].items()
    assert (
        not fraud["spec"]["selector"]["matchLabels"].items()
        <= ranking["spec"]["template"]["metadata"]["labels"].items()
    )
    # Each router may read its own ConfigMap, nothing else.
    role = find(docs, "Role", "arbiter-router-ranking")
    assert role["metadata"]["namespace"] == MODELS_NAMESPACE
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": ["ranking-routes"],
            "verbs": ["get", "list", "watch"],
        }
    ]
    accounts = {
        (d["metadata"]["namespace"], d["metadata"]["name"]) for d in docs if d["kind"] == "ServiceAccount"
    }
    assert accounts == {
        ("ops", "arbiter-operator"),
        ("ops", "model-router"),
        (MODELS_NAMESPACE, "model-router"),
    }


def test_the_rendered_command_lines_parse(bin_dir: Path) -> None:
    """What the chart passes to `arbiter run` and `arbiter router` is what their parsers accept, including
    the leader-election and default-Prometheus flags of ci/all-options-values.yaml."""
    from arbiter.cli import build_parser

    docs = render(
        bin_dir,
        settings=(
            "watchNamespaces={ml,ranking-*}",
            "log.level=warning",
            "log.format=json",
            "metrics.port=9464",
            "router.enabled=true",
            "router.instances[0].name=fraud,router.instances[0].configMap=fraud-router",
        ),
    )
    operator = build_parser().parse_args(container(find(docs, "Deployment", "arbiter"))["args"])
    assert (operator.namespace, operator.log_level, operator.log_format) == (
        ["ml", "ranking-*"],
        "warning",
        "json",
    )
    assert operator.metrics_port == 9464 and operator.liveness == "http://0.0.0.0:8080/healthz"
    for doc in (d for d in rendering(bin_dir, "all-options") if d["kind"] == "Deployment"):
        if "router" in doc["metadata"]["name"]:
            router = build_parser().parse_args(container(doc)["args"])
            assert router.listen == ("0.0.0.0", 8090) and router.log_level == "WARNING"
        else:
            env = {e["name"]: e.get("value") for e in container(doc).get("env", [])}
            assert env.get("ARBITER_LEADER_ELECTION") == "true", "replicas > 1 turns leader election on"
            args = [a.replace("$(POD_NAMESPACE)", "arbiter-system") for a in container(doc)["args"]]
            operator = build_parser().parse_args(args)
            assert operator.leader_election_namespace == "arbiter-system"


# -- values that must fail ------------------------------------------------------------------------------

BAD_VALUES = [
    ("replicas=two", "at '/replicas': got string, want integer"),
    ("log.format=xml", "at '/log/format': value must be one of"),
    ("log.level=verbose", "at '/log/level': value must be one of"),
    ("replica=2", "additional properties 'replica' not allowed"),
    ("metrics.port=70000", "at '/metrics/port'"),
    ("metrics.serviceMonitor.interval=soon", "at '/metrics/serviceMonitor/interval'"),
    ("pdb.maxUnavailable=lots", "at '/pdb/maxUnavailable'"),
    ("router.instances[0].name=Fraud_Router", "at '/router/instances/0/name'"),
    ("router.instances[0].name=fraud", "missing property 'configMap'"),
    ("router.logLevel=info", "at '/router/logLevel': value must be one of"),
    ("leaderElection.enabled=yes-please", "at '/leaderElection/enabled'"),
    ("prometheus.url=ftp://prometheus", "at '/prometheus/url'"),
    ("prometheus.headers.Authorization=Bearer x", "invalid propertyName 'Authorization'"),
    # Rules the schema cannot express, enforced by the templates.
    ("prometheus.caKey=ca.crt", "name keys of prometheus.credentialsSecret: set it"),
    (
        "prometheus.basicAuthUsername=arbiter",
        "basicAuthUsername and prometheus.basicAuthPasswordKey go together",
    ),
    (
        "prometheus.credentialsSecret=p,prometheus.bearerTokenKey=t,prometheus.basicAuthUsername=u,"
        "prometheus.basicAuthPasswordKey=p",
        "a bearer token or basic auth, not both",
    ),
    (
        "prometheus.credentialsSecret=p,prometheus.caKey=ca,prometheus.insecureSkipVerify=true",
        "caKey or insecureSkipVerify",
    ),
    ("router.enabled=true", "router.enabled needs at least one router.instances entry"),
    ("metricTemplates.namePrefix=Bad_", "at '/metricTemplates/namePrefix'"),
    (
        "metrics.serviceMonitor.enabled=true,metrics.service.enabled=false",
        "needs metrics.enabled and metrics.service.enabled",
    ),
]


@pytest.mark.parametrize(("setting", "message"), BAD_VALUES, ids=[s for s, _ in BAD_VALUES])
def test_bad_values_fail_with_the_value_named(bin_dir: Path, setting: str, message: str) -> None:
    with pytest.raises(HelmError) as failure:
        render(bin_dir, settings=(setting,))
    assert message in str(failure.value)


def test_two_routers_of_one_name_in_one_namespace_fail(bin_dir: Path, tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "router": {
                    "enabled": True,
                    "instances": [{"name": "fraud", "configMap": "a"}, {"name": "fraud", "configMap": "b"}],
                }
            }
        )
    )
    with pytest.raises(HelmError, match='two routers named "fraud" in one namespace'):
        render(bin_dir, values_files=(values,))


def test_a_router_instance_of_zero_replicas_keeps_zero(bin_dir: Path) -> None:
    """An instance's `replicas: 0` (a router parked between experiments) is not replaced by the default."""
    docs = render(
        bin_dir,
        settings=(
            "router.enabled=true",
            "router.instances[0].name=parked,router.instances[0].configMap=a,router.instances[0].replicas=0",
            "router.instances[1].name=live,router.instances[1].configMap=b",
        ),
    )
    assert find(docs, "Deployment", "arbiter-router-parked")["spec"]["replicas"] == 0
    assert find(docs, "Deployment", "arbiter-router-live")["spec"]["replicas"] == 2


# -- RBAC -----------------------------------------------------------------------------------------------


def rbac_problems(docs: list[dict[str, Any]]) -> list[str]:
    """What a platform team would refuse in a chart's RBAC: wildcards, Secrets, deletes, admin roles."""
    problems = []
    for doc in (d for d in docs if d["kind"] in RBAC_KINDS):
        where = f"{doc['kind']} {doc['metadata']['name']}"
        if doc["kind"].endswith("Binding"):
            if doc["roleRef"]["name"] in ADMIN_ROLES:
                problems.append(f"{where} binds {doc['roleRef']['name']}")
            continue
        if "aggregationRule" in doc:
            problems.append(f"{where} aggregates other roles")
        for rule in doc.get("rules", []):
            if rule.get("nonResourceURLs"):
                problems.append(f"{where}: nonResourceURLs {rule['nonResourceURLs']}")
            for field in ("apiGroups", "resources", "verbs", "resourceNames"):
                if any("*" in item for item in rule.get(field, [])):
                    problems.append(f"{where}: wildcard in {field}: {rule[field]}")
            if {"secrets", "serviceaccounts/token"} & set(rule.get("resources", [])):
                problems.append(f"{where}: {rule['resources']}")
            if ESCALATING_VERBS & set(rule.get("verbs", [])):
                problems.append(f"{where}: verbs {rule['verbs']}")
            if {"delete", "deletecollection"} & set(rule.get("verbs", [])):
                problems.append(f"{where}: deletes {rule['resources']}")
    return problems


@pytest.mark.parametrize("name", ["default", "all-options"])
def test_rbac_has_no_wildcards_secrets_or_admin_roles(bin_dir: Path, name: str) -> None:
    docs = rendering(bin_dir, name)
    assert any(d["kind"] == "ClusterRole" for d in docs)
    assert rbac_problems(docs) == []


def test_rbac_check_finds_what_it_forbids(bin_dir: Path) -> None:
    """Guard the guard: on a tampered rendering the check reports every planted problem."""
    docs = copy.deepcopy(rendering(bin_dir, "default"))
    role = next(d for d in docs if d["kind"] == "ClusterRole")
    role["rules"] += [
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
        {"apiGroups": ["*"], "resources": ["pods"], "verbs": ["list"]},
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["delete"]},
    ]
    next(d for d in docs if d["kind"] == "ClusterRoleBinding")["roleRef"]["name"] = "cluster-admin"
    assert rbac_problems(docs) == [
        "ClusterRole arbiter: ['secrets']",
        "ClusterRole arbiter: wildcard in apiGroups: ['*']",
        "ClusterRole arbiter: deletes ['deployments']",
        "ClusterRoleBinding arbiter binds cluster-admin",
    ]


# -- against the API server -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["default", "all-options"])
def test_rendered_objects_pass_server_side_dry_run(
    cluster: Any, arbiter_crd: str, thirdparty_crds: list[str], namespace: str, tmp_path: Path, name: str
) -> None:
    """The API server (with the real prometheus-operator CRDs) accepts every rendered object as it is."""
    values_files: tuple[Path, ...] = ()
    if name == "all-options":
        values = yaml.safe_load(ALL_OPTIONS.read_text())
        values["router"]["instances"][1]["namespace"] = namespace  # the second router's namespace must exist
        values_files = (tmp_path / "values.yaml",)
        values_files[0].write_text(yaml.safe_dump(values))
    docs = render(
        cluster.bin_dir, release=f"dry-{uuid.uuid4().hex[:6]}", namespace=namespace, values_files=values_files
    )
    output = apply(cluster, docs, "--dry-run=server")
    assert output.count("serverside-applied (server dry run)") == len(docs), output
    kinds = {d["kind"] for d in docs}
    if name == "all-options":
        assert {"ServiceMonitor", "PodMonitor", "PodDisruptionBudget", "Role"} <= kinds


def _json(cluster: Any, *args: str) -> dict[str, Any]:
    return dict(json.loads(cluster.kubectl("get", *args, "-o", "json").stdout))


def _ready(cluster: Any, namespace: str, deployment: str, replicas: int) -> bool:
    status = _json(cluster, "deployment", deployment, "-n", namespace).get("status", {})
    return bool(status.get("readyReplicas") == replicas and status.get("updatedReplicas") == replicas)


def test_helm_install_upgrade_uninstall(
    cluster: Any, arbiter_crd: str, thirdparty_crds: list[str], namespace: str, tmp_path: Path
) -> None:
    """Install the defaults, check the permissions; upgrade to every option; uninstall leaves only the CRD."""
    release = f"arbiter-{uuid.uuid4().hex[:6]}"
    system = f"{release}-system"
    kubeconfig = str(cluster.kubeconfig)
    helm(
        cluster.bin_dir,
        "install",
        release,
        str(CHART),
        "-n",
        system,
        "--create-namespace",
        kubeconfig=kubeconfig,
    )
    try:
        wait_for(
            lambda: _ready(cluster, system, release, 1), timeout=60, message="the operator Deployment (kwok)"
        )
        account = f"system:serviceaccount:{system}:{release}"
        denied = []
        for verb, resource, namespaced in OPERATOR_ACCESS:
            scope = ["-n", "some-team"] if namespaced else ["--all-namespaces"]
            answer = cluster.kubectl("auth", "can-i", verb, resource, "--as", account, *scope, check=False)
            if answer.stdout.strip() != "yes":
                denied.append(f"{verb} {resource}")
        assert denied == []
        notes = helm(cluster.bin_dir, "get", "notes", release, "-n", system, kubeconfig=kubeconfig).stdout
        assert f"kubectl -n {system} rollout status deployment/{release}" in notes
        assert "kubectl apply --server-side --force-conflicts -f charts/arbiter/crds/" in notes
        assert "Routers" not in notes and "elect a leader" not in notes
        for verb, resource in (
            ("delete", "deployments"),
            ("get", "secrets"),
            ("create", "leases.coordination.k8s.io"),
        ):
            answer = cluster.kubectl(
                "auth", "can-i", verb, resource, "--as", account, "-n", system, check=False
            )
            assert answer.stdout.strip() == "no", f"{verb} {resource}"

        # Upgrade to every option, with the second router next to this test's "models".
        values = yaml.safe_load(ALL_OPTIONS.read_text())
        values["router"]["instances"][1]["namespace"] = namespace
        upgraded = tmp_path / "values.yaml"
        upgraded.write_text(yaml.safe_dump(values))
        helm(
            cluster.bin_dir,
            "upgrade",
            release,
            str(CHART),
            "-n",
            system,
            "-f",
            str(upgraded),
            kubeconfig=kubeconfig,
        )
        wait_for(
            lambda: _ready(cluster, system, release, 3), timeout=90, message="3 operator replicas (kwok)"
        )
        wait_for(
            lambda: _ready(cluster, namespace, f"{release}-router-ranking", 3),
            timeout=90,
            message="the ranking router",
        )
        account = f"system:serviceaccount:{system}:arbiter-operator"
        lease = ("-n", system, "--as", account)
        assert (
            cluster.kubectl("auth", "can-i", "create", "leases.coordination.k8s.io", *lease).stdout.strip()
            == "yes"
        )
        assert (
            cluster.kubectl(
                "auth", "can-i", "update", "leases.coordination.k8s.io/arbiter-leader", *lease
            ).stdout.strip()
            == "yes"
        )
        assert (
            cluster.kubectl(
                "auth", "can-i", "update", "leases.coordination.k8s.io/other", *lease, check=False
            ).stdout.strip()
            == "no"
        )
        assert (
            _json(cluster, "servicemonitor", release, "-n", system)["spec"]["endpoints"][0]["port"]
            == "metrics"
        )
        assert (
            _json(cluster, "poddisruptionbudget", f"{release}-router-ranking", "-n", namespace)["spec"][
                "maxUnavailable"
            ]
            == "50%"
        )
        notes = helm(cluster.bin_dir, "get", "notes", release, "-n", system, kubeconfig=kubeconfig).stdout
        assert f"3 operator replicas elect a leader through Lease {system}/arbiter-leader" in notes
        assert (
            f"http://{release}-router-ranking.{namespace}.svc:8080  follows ConfigMap {namespace}/ranking-routes"
            in notes
        )
        history = json.loads(
            helm(
                cluster.bin_dir, "history", release, "-n", system, "-o", "json", kubeconfig=kubeconfig
            ).stdout
        )
        assert [h["status"] for h in history] == ["superseded", "deployed"]
    finally:
        helm(cluster.bin_dir, "uninstall", release, "-n", system, "--wait", kubeconfig=kubeconfig)
    left = cluster.kubectl(
        "get",
        "deployments,services,serviceaccounts,roles,rolebindings,poddisruptionbudgets,servicemonitors,podmonitors",
        "-A",
        "-l",
        f"app.kubernetes.io/instance={release}",
        "-o",
        "name",
    ).stdout.split()
    assert left == []
    assert cluster.kubectl("get", "clusterrole", release, check=False).returncode != 0
    # Helm never deletes the CRD, so the experiments survive an uninstall.
    cluster.kubectl("get", "crd", "modelexperiments.arbiter.dev")
    cluster.kubectl("delete", "namespace", system, "--wait=false", check=False)


def test_crd_upgrade_is_the_documented_server_side_apply(cluster: Any, arbiter_crd: str) -> None:
    """`helm upgrade` never touches the CRD; `kubectl apply --server-side --force-conflicts -f
    charts/arbiter/crds/` (README "Upgrading", NOTES.txt) brings an old one up to date."""
    crd = "crd/modelexperiments.arbiter.dev"
    columns = [c["name"] for c in _json(cluster, crd)["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert "Mode" in columns
    release = f"crd-{uuid.uuid4().hex[:6]}"
    system = f"{release}-system"
    kubeconfig = str(cluster.kubeconfig)
    try:
        # An "older" CRD: one printer column fewer, written by another field manager.
        cluster.kubectl(
            "patch",
            crd,
            "--type=json",
            "-p",
            json.dumps([{"op": "remove", "path": "/spec/versions/0/additionalPrinterColumns/0"}]),
        )
        helm(
            cluster.bin_dir,
            "install",
            release,
            str(CHART),
            "-n",
            system,
            "--create-namespace",
            kubeconfig=kubeconfig,
        )
        helm(
            cluster.bin_dir,
            "upgrade",
            release,
            str(CHART),
            "-n",
            system,
            "--set",
            "log.level=debug",
            kubeconfig=kubeconfig,
        )
        old = [c["name"] for c in _json(cluster, crd)["spec"]["versions"][0]["additionalPrinterColumns"]]
        assert "Mode" not in old, "helm upgraded the CRD: the README's Upgrading section is wrong"
    finally:
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CHART / "crds"))
        helm(cluster.bin_dir, "uninstall", release, "-n", system, kubeconfig=kubeconfig, check=False)
        cluster.kubectl("delete", "namespace", system, "--wait=false", check=False)
    current = [c["name"] for c in _json(cluster, crd)["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert current == columns


@pytest.mark.parametrize(
    "path",
    [ROOT / "crds" / "modelexperiment.yaml", ROOT / "crds" / "metrictemplates.yaml"],
    ids=["crd", "metric-templates"],
)
def test_the_chart_ships_the_generated_crd(path: Path) -> None:
    assert (CHART / "crds" / path.name).read_text() == path.read_text()
