"""The operator tells receivers about an experiment's transitions, each once, also across a restart.

Real parts: the API server, the operator process with the chart's ServiceAccount (not admin), its
receivers file and cluster name as the chart passes them, an experiment's own Slack receiver whose URL
is a Secret the namespace owner lets the operator `get`, local HTTP receivers and Debian's Alertmanager.
The experiment's Prometheus is down, so the engine pauses it (MetricsUnavailable); a user aborts it.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from arbiter_fixtures import ROOT, OperatorIdentity, OperatorProcess, experiment_docs, forbidden_requests
from chart_support import find, render
from helpers import wait_for
from notify_support import Alertmanager, HttpReceiver, closed_port_url

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

NAME = "notified"


def workloads() -> list[dict[str, Any]]:
    return [d for d in experiment_docs(ROOT / "examples" / "canary.yaml") if d["kind"] == "Deployment"]


def experiment(prometheus_url: str) -> dict[str, Any]:
    return {
        "apiVersion": "arbiter.dev/v1alpha1",
        "kind": "ModelExperiment",
        "metadata": {"name": NAME},
        "spec": {
            "mode": "Canary",
            "champion": {"name": "v1", "deployment": "fraud-v1"},
            "challengers": [{"name": "v2", "deployment": "fraud-v2"}],
            "routing": {"provider": "Replicas"},
            "steps": [{"weight": 50, "minDuration": "1h"}],
            "analysis": {
                "interval": "1s",
                "consecutiveErrorLimit": 2,
                "prometheus": {"url": prometheus_url, "timeout": "1s"},
                "primary": {
                    "name": "conversion",
                    "type": "Proportion",
                    "successes": 'sum(outcomes{variant="{{variant}}",result="success"})',
                    "trials": 'sum(outcomes{variant="{{variant}}"})',
                    "minimumDetectableEffect": 0.05,
                },
            },
            "notifications": {
                "receivers": [
                    {
                        "name": "team-slack",
                        "type": "Slack",
                        "urlSecretRef": {"name": "hooks", "key": "slack"},
                    },
                    {"name": "nobody"},  # no such receiver in the operator: an Event says so
                ],
                "minSeverity": "Warning",
            },
        },
    }


def secret_access(namespace: str, identity: OperatorIdentity) -> list[dict[str, Any]]:
    """What docs/notifications.md asks a namespace owner to apply: `get` on the one Secret."""
    meta = {"name": "arbiter-read-hooks", "namespace": namespace}
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": meta,
            "rules": [
                {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["hooks"], "verbs": ["get"]}
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": meta,
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "arbiter-read-hooks",
            },
            "subjects": [
                {"kind": "ServiceAccount", "name": identity.service_account, "namespace": identity.namespace}
            ],
        },
    ]


@pytest.fixture
def receivers(tmp_path: Path) -> Iterator[tuple[HttpReceiver, HttpReceiver, Alertmanager]]:
    webhook, slack = HttpReceiver(), HttpReceiver()
    alertmanager = Alertmanager(tmp_path / "alertmanager").start()
    yield webhook, slack, alertmanager
    alertmanager.stop()
    webhook.close()
    slack.close()


def events(receiver: HttpReceiver) -> list[str]:
    return [b.get("event") or b["text"].split()[2].rstrip(":") for b in receiver.bodies()]


def ticks(operator: OperatorProcess) -> float:
    match = re.search(r"^arbiter_tick_duration_seconds_count (\S+)$", operator.metrics(), re.M)
    return float(match.group(1)) if match else 0.0


def test_an_experiment_run_is_told_to_every_receiver_once(
    cluster: Any,
    arbiter_crd: str,
    operator_identity: OperatorIdentity,
    namespace: str,
    receivers: tuple[HttpReceiver, HttpReceiver, Alertmanager],
    tmp_path: Path,
) -> None:
    webhook, slack, alertmanager = receivers
    # The receivers file as the chart renders it from its values (the ConfigMap the operator mounts).
    values = tmp_path / "values.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "notifications": {
                    "clusterName": "test-cluster",
                    "receivers": [
                        {"name": "audit", "type": "Webhook", "url": webhook.url + "/audit"},
                        {
                            "name": "pager",
                            "type": "Alertmanager",
                            "url": alertmanager.url,
                            "minSeverity": "Warning",
                        },
                    ],
                    "delivery": {"attempts": 3, "initialBackoff": "100ms", "timeout": "2s"},
                }
            }
        )
    )
    chart_docs = render(operator_identity.bin_dir, values_files=(values,))
    config = tmp_path / "notifications.yaml"
    config.write_text(find(chart_docs, "ConfigMap", "arbiter-notifications")["data"]["notifications.yaml"])
    settings = {"ARBITER_NOTIFICATIONS_CONFIG": str(config)}
    slack_url = slack.url + "/services/T0/B0/secret-token"
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "hooks"},
        "data": {"slack": base64.b64encode(slack_url.encode()).decode()},
    }
    docs = [*workloads(), secret, *secret_access(namespace, operator_identity)]
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(docs))

    operator = OperatorProcess(operator_identity.kubeconfig, tmp_path / "operator.log", env=settings).start()
    try:
        operator.wait_ready()
        doc = experiment(closed_port_url())
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc))
        wait_for(lambda: events(webhook) == ["Started", "MetricsUnavailable"], timeout=90, message="paused")
        wait_for(lambda: len(alertmanager.alerts(experiment=NAME)) == 1, timeout=30, message="alert fired")
        (paused,) = alertmanager.alerts(experiment=NAME)
        assert paused["labels"]["alertname"] == "ArbiterExperimentMetricsUnavailable"
        assert paused["labels"]["cluster"] == "test-cluster" and paused["labels"]["namespace"] == namespace

        cluster.kubectl("annotate", "mexp", NAME, "-n", namespace, "arbiter.dev/abort=now")
        wait_for(lambda: events(webhook)[-1:] == ["RolledBack"], timeout=60, message="rolled back")
        wait_for(
            lambda: (
                [a["labels"]["alertname"] for a in alertmanager.alerts(experiment=NAME)]
                == ["ArbiterExperimentRolledBack"]
            ),
            timeout=30,
            message="the MetricsUnavailable alert resolved and RolledBack fired",
        )
        wait_for(lambda: len(slack.requests) == 2, timeout=30, message="the experiment's Slack receiver")
        wait_for(
            lambda: (
                'arbiter_notifications_sent_total{event="RolledBack",receiver="audit"} 1.0'
                in operator.metrics()
            ),
            timeout=30,
            message="the operator's metric of sent notifications",
        )
        assert (
            f'arbiter_notifications_sent_total{{event="MetricsUnavailable",receiver="{namespace}/team-slack"}} 1.0'
            in (operator.metrics())
        )
        unknown = cluster.kubectl(
            "get",
            "events",
            "-n",
            namespace,
            "--field-selector",
            "reason=NotificationReceiverUnknown",
            "-o",
            "json",
        ).stdout
        messages = {e["message"] for e in json.loads(unknown)["items"]}
        assert messages and all("no receiver named 'nobody'" in m for m in messages), messages
    finally:
        operator.stop()
    log = operator.log()
    assert "secret-token" not in log, "a receiver URL from a Secret was logged"

    # Exactly these, once each, with the cluster's name; the Slack receiver only from Warning up.
    assert events(webhook) == ["Started", "MetricsUnavailable", "RolledBack"]
    assert {b["cluster"] for b in webhook.bodies()} == {"test-cluster"}
    assert {r.path for r in webhook.requests} == {"/audit"}
    assert {r.path for r in slack.requests} == {"/services/T0/B0/secret-token"}
    assert [b["text"].split(":")[0] for b in slack.bodies()] == [
        f"[test-cluster] {namespace}/{NAME} MetricsUnavailable",
        f"[test-cluster] {namespace}/{NAME} RolledBack",
    ]
    rolled_back = webhook.bodies()[-1]
    assert (
        rolled_back["decision"]["outcome"] == "Rollback"
        and "arbiter.dev/abort=now" in rolled_back["decision"]["reason"]
    )
    assert rolled_back["numbers"]["weights"] == {"v1": 100, "v2": 0}
    assert rolled_back["transition"]["ended"] == "MetricsUnavailable"

    # A restarted operator reads the stored status back: it ticks on, and tells nobody anything again.
    before = (len(webhook.requests), len(slack.requests), json.dumps(alertmanager.alerts(experiment=NAME)))
    restarted = OperatorProcess(
        operator_identity.kubeconfig, tmp_path / "operator-2.log", env=settings
    ).start()
    try:
        restarted.wait_ready()
        wait_for(lambda: ticks(restarted) >= 5, timeout=60, message="five ticks of the restarted operator")
        assert (len(webhook.requests), len(slack.requests)) == before[:2]
        assert json.dumps(alertmanager.alerts(experiment=NAME)) == before[2]
        # Deleted while the operator runs, so its finalizer does not outlive the test.
        cluster.kubectl("delete", "mexp", NAME, "-n", namespace, "--timeout=60s")
    finally:
        restarted.stop()
    refused = forbidden_requests(operator.log() + restarted.log())
    assert not refused, "the chart's RBAC refused requests:\n" + "\n".join(refused[:10])
