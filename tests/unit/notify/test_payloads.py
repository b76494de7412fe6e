"""What each receiver type is sent, from one transition of one experiment."""

from __future__ import annotations

import datetime as dt
from typing import Any

from arbiter.notify.payloads import alertmanager_payload, build_message, slack_payload, webhook_payload
from arbiter.notify.transitions import detect

NOW = dt.datetime(2026, 11, 29, 6, 0, 0, tzinfo=dt.UTC)
PAUSED = {"phase": "Paused", "pauseReason": "MetricsUnavailable", "currentStep": 1}
ROLLED_BACK: dict[str, Any] = {
    "phase": "RolledBack",
    "currentStep": 1,
    "weights": {"v1": 100, "v2": 0},
    "challengerWeight": 0,
    "message": "v2 loses on conversion: lift -12.0% (CI -20.0%..-4.0%), p=0.0031",
    "decision": {"outcome": "Rollback", "reason": "v2 loses", "winner": "v1"},
    "history": [{"from": "Paused", "to": "RolledBack", "reason": "v2 loses", "time": "t"}],
    "leading": {"variant": "v2", "relativeLift": -0.12, "pValue": 0.0031},
    "analysis": {
        "primary": {
            "metric": "conversion",
            "results": [
                {
                    "variant": "v2",
                    "verdict": "Loss",
                    "controlN": 5000,
                    "treatmentN": 1200,
                    "relativeLift": -0.12,
                    "ciLow": -0.2,
                    "ciHigh": -0.04,
                    "pValue": 0.0031,
                    "internal": "not sent",
                }
            ],
        },
        "srm": {"pValue": 0.4},
    },
    "guardrails": [
        {"name": "p95", "variant": "v2", "breached": True, "value": 0.31},
        {"name": "errors", "variant": "v2", "breached": False},
    ],
}


def message(before: dict[str, Any] = PAUSED, after: dict[str, Any] = ROLLED_BACK, cluster: str = "prod-eu"):  # type: ignore[no-untyped-def]
    (notice,) = detect(before, after)
    return build_message(
        cluster=cluster,
        namespace="ml",
        name="fraud v2",
        notice=notice,
        status=after,
        now=NOW,
        mode="Canary",
        uid="u-1",
        link_template="https://grafana.example.com/d/x?ns={namespace}&exp={name}",
    )


def test_the_webhook_carries_the_decision_and_its_numbers() -> None:
    body = webhook_payload(message())
    assert body["cluster"] == "prod-eu" and body["event"] == "RolledBack" and body["severity"] == "Critical"
    assert body["experiment"] == {"namespace": "ml", "name": "fraud v2", "uid": "u-1", "mode": "Canary"}
    assert body["transition"]["from"] == "Paused" and body["transition"]["to"] == "RolledBack"
    assert body["transition"]["ended"] == "MetricsUnavailable"
    assert body["decision"]["outcome"] == "Rollback"
    numbers = body["numbers"]
    assert numbers["step"] == 1 and numbers["weights"] == {"v1": 100, "v2": 0}
    (row,) = numbers["primary"]["results"]
    assert row["pValue"] == 0.0031 and row["ciLow"] == -0.2 and "internal" not in row
    assert [g["name"] for g in numbers["breachedGuardrails"]] == ["p95"]
    assert numbers["srm"] == {"pValue": 0.4}
    assert body["links"]["api"] == "/apis/arbiter.dev/v1alpha1/namespaces/ml/modelexperiments/fraud v2"
    # The link template's placeholders are URL-quoted.
    assert body["links"]["dashboard"] == "https://grafana.example.com/d/x?ns=ml&exp=fraud%20v2"
    assert body["time"] == "2026-11-29T06:00:00.000000Z"


def test_slack_gets_text_and_blocks_with_the_cluster_and_lift() -> None:
    body = slack_payload(message())
    assert body["text"].startswith("[prod-eu] ml/fraud v2 RolledBack: v2 loses on conversion")
    fields = [f["text"] for f in body["blocks"][1]["fields"]]
    assert "*Severity:* Critical" in fields and "*Lift of v2:* -12.0%" in fields
    assert "*p-value:* 0.0031" in fields and "*Weights:* v1 100%, v2 0%" in fields


def test_alertmanager_resolves_the_state_left_and_fires_the_new_one() -> None:
    alerts = alertmanager_payload(message(), fire=True, resolve=True, state_ttl=3600, event_ttl=60)
    resolved, fired = alerts
    assert resolved["labels"] == {
        "alertname": "ArbiterExperimentMetricsUnavailable",
        "event": "MetricsUnavailable",
        "namespace": "ml",
        "experiment": "fraud v2",
        "source": "arbiter",
        "cluster": "prod-eu",
        "severity": "warning",
    }
    assert resolved["endsAt"] == "2026-11-29T06:00:00.000000Z" and "startsAt" not in resolved
    assert fired["labels"]["alertname"] == "ArbiterExperimentRolledBack"
    assert fired["labels"]["severity"] == "critical"
    assert fired["endsAt"] == "2026-11-29T06:01:00.000000Z"  # a one-off transition: event_ttl
    assert fired["annotations"]["pValue"] == "0.0031" and fired["annotations"]["weights"] == "v1=100,v2=0"


def test_a_state_alert_fires_for_the_state_ttl_and_a_resolution_alone_is_possible() -> None:
    paused = message(before={"phase": "Progressing"}, after=PAUSED)
    (alert,) = alertmanager_payload(paused, fire=True, resolve=True, state_ttl=3600, event_ttl=60)
    assert alert["endsAt"] == "2026-11-29T07:00:00.000000Z"
    assert alert["annotations"]["pause_reason"] == "MetricsUnavailable"
    only = alertmanager_payload(message(), fire=False, resolve=True, state_ttl=3600, event_ttl=60)
    assert [a["labels"]["alertname"] for a in only] == ["ArbiterExperimentMetricsUnavailable"]


def test_without_a_cluster_name_no_cluster_label_or_prefix() -> None:
    plain = message(cluster="")
    assert (
        "cluster"
        not in alertmanager_payload(plain, fire=True, resolve=False, state_ttl=1, event_ttl=1)[0]["labels"]
    )
    assert slack_payload(plain)["text"].startswith("ml/fraud v2 RolledBack")
