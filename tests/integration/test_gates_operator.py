"""Webhook gates and dry runs, end to end: the operator process (chart identity), the real API server,
Deployments made ready by kwok, and local HTTP gate servers the test flips between answers.

The experiments have no metric queries (a canary with no primary metric promotes once every step passed),
so what decides is the steps' durations and the gates: nothing here depends on traffic statistics.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml
from kubernetes import client

from arbiter.api import GROUP, PLURAL, VERSION
from arbiter.router.config import RouterConfig
from arbiter.router.config import Variant as RouteVariant
from arbiter.routing.router import DATA_KEY
from arbiter_fixtures import OperatorProcess
from gate_server import GateServer
from helpers import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

VARIANTS = ("v1", "v2")


@pytest.fixture
def gates() -> Iterator[GateServer]:
    server = GateServer().start()
    yield server
    server.stop()


def workloads(namespace: str) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for variant in VARIANTS:
        labels = {"app": "model", "version": variant}
        docs.append(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": f"model-{variant}", "namespace": namespace, "labels": labels},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {
                            "containers": [{"name": "model", "image": f"registry.example.com/m:{variant}"}]
                        },
                    },
                },
            }
        )
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": f"model-{variant}", "namespace": namespace},
                "spec": {"selector": labels, "ports": [{"port": 80, "name": "http"}]},
            }
        )
    return docs


def experiment(name: str, *, gates: list[dict[str, Any]] | None = None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "mode": "Canary",
        "champion": {"name": "v1", "deployment": "model-v1", "service": "model-v1"},
        "challengers": [{"name": "v2", "deployment": "model-v2", "service": "model-v2"}],
        "routing": {"provider": "Router", "router": {"configMap": f"{name}-routes"}},
        "steps": [{"weight": 20, "minDuration": "2s"}, {"weight": 50, "minDuration": "2s"}],
        # No queries are made (no metric, guardrail or sample count): the URL is never called.
        "analysis": {"interval": "1s", "prometheus": {"url": "http://127.0.0.1:9"}},
        "decision": {"maxDuration": "5m"},
    }
    if gates is not None:
        body["gates"] = gates
    body.update(spec)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelExperiment",
        "metadata": {"name": name},
        "spec": body,
    }


def apply(cluster: Any, namespace: str, docs: list[dict[str, Any]]) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(docs))


def status_of(kube_api: Any, namespace: str, name: str) -> dict[str, Any]:
    body = client.CustomObjectsApi(kube_api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name
    )
    return dict(body.get("status") or {})


def wait_status(
    kube_api: Any,
    namespace: str,
    name: str,
    predicate: Callable[[dict[str, Any]], bool],
    message: str,
    timeout: float = 90,
) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def check() -> bool:
        nonlocal seen
        seen = status_of(kube_api, namespace, name)
        return predicate(seen)

    try:
        wait_for(check, timeout=timeout, message=message)
    except Exception as exc:
        raise AssertionError(f"{exc}\nlast status: {json.dumps(seen, indent=1)[:3000]}") from exc
    return seen


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c.get("type") == kind), {})


def event_reasons(kube_api: Any, namespace: str, name: str) -> list[str]:
    events = client.CoreV1Api(kube_api).list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name}", _request_timeout=5
    )
    return [str(e.reason) for e in events.items]


def tick_count(operator: OperatorProcess) -> float:
    """Ticks the operator has taken so far (its arbiter_tick_duration_seconds histogram's count)."""
    for line in operator.metrics().splitlines():
        if line.startswith("arbiter_tick_duration_seconds_count"):
            return float(line.split()[-1])
    return 0.0


def gate_entry(status: dict[str, Any], name: str) -> dict[str, Any]:
    return next((g for g in status.get("gates") or [] if g.get("name") == name), {})


def test_a_failing_confirm_promotion_gate_holds_until_the_server_says_yes(
    cluster: Any, kube_api: Any, namespace: str, operator: OperatorProcess, gates: GateServer
) -> None:
    gates.answer(503)
    apply(cluster, namespace, workloads(namespace))
    apply(
        cluster,
        namespace,
        [
            experiment(
                "approve",
                gates=[
                    {"name": "smoke", "type": "preRollout", "url": gates.url("/smoke"), "timeout": "2s"},
                    {"name": "load", "type": "step", "url": gates.url("/load"), "timeout": "2s"},
                    {
                        "name": "approval",
                        "type": "confirmPromotion",
                        "url": gates.url("/approval"),
                        "timeout": "2s",
                        "metadata": {"ticket": "ML-42"},
                    },
                ],
            )
        ],
    )
    # Everything fails at first: the preRollout gate keeps all traffic on the champion.
    held = wait_status(
        kube_api,
        namespace,
        "approve",
        lambda s: gate_entry(s, "smoke").get("attempts", 0) >= 2,
        "the preRollout gate to be asked twice",
    )
    assert held["phase"] == "Progressing" and held["weights"] == {"v1": 100, "v2": 0}
    assert (
        condition(held, "GatesPassed")["status"] == "False"
        and "smoke" in condition(held, "GatesPassed")["message"]
    )
    assert gate_entry(held, "smoke")["code"] == 503
    # Only the approval gate keeps failing: the steps go by, the promotion waits for it.
    gates.answer(200, "/smoke")
    gates.answer(200, "/load")
    wait_status(kube_api, namespace, "approve", lambda s: s.get("currentStep") == 1, "step 1")
    waiting = wait_status(
        kube_api,
        namespace,
        "approve",
        lambda s: gate_entry(s, "approval").get("attempts", 0) >= 2,
        "the confirmPromotion gate to fail twice",
    )
    assert waiting["phase"] == "Progressing" and waiting["weights"] == {"v1": 50, "v2": 50}
    assert "gate approval (confirmPromotion) failed before promote v2" in waiting["decision"]["reason"]
    wait_for(
        lambda: "GateFailed" in event_reasons(kube_api, namespace, "approve"),
        timeout=30,
        message="GateFailed Event",
    )
    gates.answer(200)
    promoted = wait_status(
        kube_api, namespace, "approve", lambda s: s.get("phase") == "Promoted", "the promotion"
    )
    assert promoted["weights"] == {"v1": 0, "v2": 100}
    # What the gates were told, and how often: the passed preRollout and step gates were not asked again.
    smoke = gates.received("/smoke")
    load = gates.received("/load")
    assert all(r["type"] == "preRollout" for r in smoke) and smoke[-1]["weights"] == {"v1": 100, "v2": 0}
    assert load and {r["step"] for r in load} == {1}, "step gates are asked before step 1 only"
    ticks = tick_count(operator)
    wait_for(lambda: tick_count(operator) >= ticks + 3, timeout=30, message="three more ticks")
    assert len(gates.received("/smoke")) == len(smoke), "a passed preRollout gate is not asked again"
    assert len(gates.received("/load")) == len(load), "a passed step gate is not asked again"
    approval = gates.received("/approval")[-1]
    assert approval["target"] == "v2" and approval["metadata"] == {"ticket": "ML-42"}
    assert (
        approval["name"] == "approve" and approval["namespace"] == namespace and approval["dryRun"] is False
    )


def test_on_failure_rollback_rolls_back_and_the_post_rollback_gate_is_told_once(
    cluster: Any, kube_api: Any, namespace: str, operator: OperatorProcess, gates: GateServer
) -> None:
    gates.answer(500)
    tell = GateServer().start()
    try:
        apply(cluster, namespace, workloads(namespace))
        apply(
            cluster,
            namespace,
            [
                experiment(
                    "strict",
                    gates=[
                        {"name": "load", "type": "step", "url": gates.url("/load"), "onFailure": "Rollback"},
                        {"name": "cleanup", "type": "postRollback", "url": tell.url("/cleanup")},
                    ],
                )
            ],
        )
        rolled = wait_status(
            kube_api, namespace, "strict", lambda s: s.get("phase") == "RolledBack", "the rollback"
        )
        assert rolled["weights"] == {"v1": 100, "v2": 0}
        assert "gate load (step) failed before advance to step 1" in rolled["decision"]["reason"]
        told = wait_status(
            kube_api, namespace, "strict", lambda s: bool(gate_entry(s, "cleanup")), "postRollback told"
        )
        assert gate_entry(told, "cleanup")["passed"] is True and gate_entry(told, "cleanup")["code"] == 200
        # Terminal ticks go on (every second here): the postRollback gate is never told again.
        ticks = tick_count(operator)
        wait_for(lambda: tick_count(operator) >= ticks + 3, timeout=30, message="three more ticks")
        resync = status_of(kube_api, namespace, "strict")
        assert len(tell.received("/cleanup")) == 1, tell.received()
        assert tell.received("/cleanup")[0]["type"] == "postRollback"
        assert resync["phase"] == "RolledBack"
    finally:
        tell.stop()


def test_a_gate_that_never_answers_is_bounded_by_its_timeout_and_by_max_duration(
    cluster: Any, kube_api: Any, namespace: str, operator: OperatorProcess, gates: GateServer
) -> None:
    gates.hang()
    apply(cluster, namespace, workloads(namespace))
    apply(
        cluster,
        namespace,
        [
            experiment(
                "silent",
                gates=[{"name": "approval", "type": "confirmPromotion", "url": gates.url(), "timeout": "1s"}],
                decision={"maxDuration": "15s", "onTimeout": "KeepChampion"},
            )
        ],
    )
    asked = wait_status(
        kube_api,
        namespace,
        "silent",
        lambda s: bool(gate_entry(s, "approval")),
        "the gate's timeout recorded",
    )
    assert gate_entry(asked, "approval") | {"time": None, "attempts": None} == gate_entry(
        asked, "approval"
    ) | {
        "time": None,
        "attempts": None,
        "passed": False,
        "message": "no answer within 1s",
    }
    ended = wait_status(kube_api, namespace, "silent", lambda s: s.get("phase") == "Concluded", "maxDuration")
    assert "maxDuration 15s reached" in ended["decision"]["reason"]
    assert ended["weights"] == {"v1": 100, "v2": 0}


def test_a_dry_run_reaches_its_decision_and_never_touches_the_route(
    cluster: Any, kube_api: Any, namespace: str, operator: OperatorProcess
) -> None:
    # The team's own tooling manages the split: 80/20 in the router's ConfigMap.
    routes = RouterConfig(
        experiment="watch",
        variants=(
            RouteVariant(name="v1", url="http://model-v1", weight=80),
            RouteVariant(name="v2", url="http://model-v2", weight=20),
        ),
        champion="v1",
    )
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "watch-routes", "namespace": namespace},
        "data": {DATA_KEY: routes.to_yaml()},
    }
    apply(cluster, namespace, [*workloads(namespace), config_map])
    core = client.CoreV1Api(kube_api)
    before = core.read_namespaced_config_map("watch-routes", namespace)
    apply(cluster, namespace, [experiment("watch", dryRun=True)])
    decided = wait_status(
        kube_api, namespace, "watch", lambda s: s.get("phase") == "Promoted", "the would-be promotion"
    )
    assert decided["decision"]["dryRun"] is True and decided["decision"]["winner"] == "v2"
    assert decided["dryRun"]["wouldHave"] == "promoted v2"
    assert decided["dryRun"]["wouldRoute"] == {"v1": 0, "v2": 100}
    assert decided["dryRun"]["observedWeights"] == {"v1": 80, "v2": 20}
    assert decided["weights"] == {"v1": 80, "v2": 20}, "status shows the live split"
    reasons = wait_for(
        lambda: (r := event_reasons(kube_api, namespace, "watch")) and "DryRunPromoted" in r and r,
        timeout=30,
        message="the DryRunPromoted Event",
    )
    assert "DryRunAdvanced" in reasons and "Promoted" not in reasons
    after = core.read_namespaced_config_map("watch-routes", namespace)
    assert after.metadata.resource_version == before.metadata.resource_version, "the route was never written"
    assert after.data == before.data
    printed = cluster.kubectl("get", "mexp", "watch", "-n", namespace).stdout
    assert "DRY-RUN" in printed.splitlines()[0] and "true" in printed.splitlines()[1]
    # Deleting a dry run hands nothing back: the route stays as the team left it.
    cluster.kubectl("delete", "mexp", "watch", "-n", namespace, "--timeout=60s")
    assert core.read_namespaced_config_map("watch-routes", namespace).metadata.resource_version == (
        before.metadata.resource_version
    )


def test_a_gate_url_from_a_secret_needs_a_role_for_that_secret_and_then_is_called(
    cluster: Any,
    kube_api: Any,
    namespace: str,
    operator: OperatorProcess,
    operator_identity: Any,
    gates: GateServer,
) -> None:
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="approval-webhook"),
            string_data={"url": gates.url("/from-secret")},
        ),
    )
    apply(cluster, namespace, workloads(namespace))
    gate = {
        "name": "approval",
        "type": "confirmPromotion",
        "secretKeyRef": {"name": "approval-webhook", "key": "url"},
    }
    apply(cluster, namespace, [experiment("secret", gates=[gate])])
    # The chart grants no Secret access: the gate fails, naming what to grant, and the promotion waits.
    refused = wait_status(
        kube_api,
        namespace,
        "secret",
        lambda s: bool(gate_entry(s, "approval")),
        "the gate to fail on the Secret",
    )
    assert refused["phase"] == "Progressing" and not gate_entry(refused, "approval")["passed"]
    assert "may not read Secret" in gate_entry(refused, "approval")["message"]
    assert not gates.received(), "no URL, no call"
    rbac = client.RbacAuthorizationV1Api(kube_api)
    rbac.create_namespaced_role(
        namespace,
        client.V1Role(
            metadata=client.V1ObjectMeta(name="arbiter-read-approval-webhook"),
            rules=[
                client.V1PolicyRule(
                    api_groups=[""], resources=["secrets"], resource_names=["approval-webhook"], verbs=["get"]
                )
            ],
        ),
    )
    rbac.create_namespaced_role_binding(
        namespace,
        client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name="arbiter-read-approval-webhook"),
            role_ref=client.V1RoleRef(
                api_group="rbac.authorization.k8s.io", kind="Role", name="arbiter-read-approval-webhook"
            ),
            subjects=[
                client.RbacV1Subject(
                    kind="ServiceAccount",
                    name=operator_identity.service_account,
                    namespace=operator_identity.namespace,
                )
            ],
        ),
    )
    promoted = wait_status(
        kube_api, namespace, "secret", lambda s: s.get("phase") == "Promoted", "the promotion"
    )
    assert gate_entry(promoted, "approval")["passed"] is True
    assert [r["gate"] for r in gates.received("/from-secret")] == ["approval"]
