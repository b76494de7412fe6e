"""A canary decided by statistics, told to a webhook and to Alertmanager as it happens.

The story of test_rollout_canary's better challenger (v2 converts 15% against v1's 10%) on real parts,
with the operator started as the chart starts it when notifications are configured: the receivers file
rendered by the chart from its values, the chart's ServiceAccount. Nobody tells the operator anything;
the receivers hear Started, Advanced and Promoted, in that order, once each, with the numbers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness.env import RolloutEnv
from harness.experiment import conversion_metric, latency_guardrail, wait_for_phase

from arbiter_fixtures import OperatorIdentity, OperatorProcess, forbidden_requests
from chart_support import find, render
from helpers import wait_for
from notify_support import Alertmanager, HttpReceiver

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(240)]

STEPS = [{"weight": 20, "minDuration": "3s"}, {"weight": 50, "minDuration": "3s"}]


@pytest.fixture
def webhook() -> Iterator[HttpReceiver]:
    receiver = HttpReceiver()
    yield receiver
    receiver.close()


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[Alertmanager]:
    server = Alertmanager(tmp_path / "alertmanager").start()
    yield server
    server.stop()


@pytest.fixture
def notifying_operator(
    cluster: Any,
    arbiter_crd: str,
    operator_identity: OperatorIdentity,
    webhook: HttpReceiver,
    alertmanager: Alertmanager,
    tmp_path: Path,
) -> Iterator[OperatorProcess]:
    """The operator with the chart's identity and the receivers file the chart renders for these values."""
    values = tmp_path / "values.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "notifications": {
                    "clusterName": "e2e",
                    "receivers": [
                        {"name": "audit", "type": "Webhook", "url": webhook.url},
                        {"name": "am", "type": "Alertmanager", "url": alertmanager.url},
                    ],
                    "delivery": {"initialBackoff": "200ms"},
                }
            }
        )
    )
    rendered = find(
        render(operator_identity.bin_dir, values_files=(values,)), "ConfigMap", "arbiter-notifications"
    )
    config = tmp_path / "notifications.yaml"
    config.write_text(rendered["data"]["notifications.yaml"])
    process = OperatorProcess(
        operator_identity.kubeconfig,
        tmp_path / "operator.log",
        env={"ARBITER_NOTIFICATIONS_CONFIG": str(config)},
    )
    process.start()
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()
    assert not forbidden_requests(process.log()), "the chart's RBAC refused requests of the operator"


def test_a_promotion_is_told_step_by_step_with_its_numbers(
    rollout_env: Any,
    notifying_operator: OperatorProcess,
    kube_api: Any,
    webhook: HttpReceiver,
    alertmanager: Alertmanager,
) -> None:
    env: RolloutEnv = rollout_env(experiment="told")
    experiment = env.experiment(
        steps=STEPS, guardrails=[latency_guardrail(max_seconds=0.5)], primary=conversion_metric(mde=0.2)
    )
    env.apply([experiment])
    env.traffic({"v1": 0.10, "v2": 0.15}, rate=150, max_seconds=200, seed=11)
    promoted = wait_for_phase(
        kube_api,
        env.namespace,
        "told",
        "Promoted",
        timeout=180,
        forbid_phases={"RolledBack", "Concluded", "Failed", "Paused"},
    )
    wait_for(lambda: len(webhook.requests) == 3, timeout=30, message="three notifications")
    started, advanced, told = webhook.bodies()
    assert [started["event"], advanced["event"], told["event"]] == ["Started", "Advanced", "Promoted"]
    assert {b["cluster"] for b in webhook.bodies()} == {"e2e"}
    assert advanced["numbers"]["step"] == 1 and advanced["numbers"]["weights"] == {"v1": 50, "v2": 50}
    # The promotion carries the decision and the statistics behind it, as the status has them.
    assert told["decision"] == promoted["decision"]
    (result,) = [r for r in told["numbers"]["primary"]["results"] if r["variant"] == "v2"]
    assert result["verdict"] == "Win" and result["pValue"] <= 0.05 and result["relativeLift"] > 0
    assert told["numbers"]["weights"] == {"v1": 0, "v2": 100}

    wait_for(lambda: alertmanager.alerts(experiment="told"), timeout=30, message="the promotion alert")
    alerts = {a["labels"]["alertname"]: a for a in alertmanager.alerts(experiment="told")}
    # One-off transitions fire for eventAlertTtl (1h): all three are there, each once.
    assert sorted(alerts) == [
        "ArbiterExperimentAdvanced",
        "ArbiterExperimentPromoted",
        "ArbiterExperimentStarted",
    ]
    assert alerts["ArbiterExperimentPromoted"]["labels"]["severity"] == "info"
    assert alerts["ArbiterExperimentPromoted"]["labels"]["cluster"] == "e2e"
    assert len(webhook.requests) == 3, "nothing was told twice"
