"""What each kind of receiver is sent: generic webhook JSON, a Slack message, Alertmanager alerts.

Pure functions of a :class:`Message`; :mod:`arbiter.notify.sender` posts them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from arbiter.api.v1alpha1 import GROUP, PLURAL, VERSION
from arbiter.notify.transitions import Kind, Notice

#: Version of the webhook payload's shape; bumped when a field changes meaning or goes away.
WEBHOOK_VERSION = "1"
_EMOJI = {"Info": ":information_source:", "Warning": ":warning:", "Critical": ":rotating_light:"}


@dataclass(frozen=True)
class Message:
    """One transition of one experiment, with everything a receiver shows about it."""

    cluster: str
    namespace: str
    name: str
    notice: Notice
    status: Mapping[str, Any]
    time: dt.datetime
    mode: str = ""
    uid: str = ""
    link: str = ""
    numbers: Mapping[str, Any] = field(default_factory=dict)

    @property
    def api_path(self) -> str:
        return f"/apis/{GROUP}/{VERSION}/namespaces/{self.namespace}/{PLURAL}/{self.name}"


def build_message(
    *,
    cluster: str,
    namespace: str,
    name: str,
    notice: Notice,
    status: Mapping[str, Any],
    now: dt.datetime,
    mode: str = "",
    uid: str = "",
    link_template: str = "",
) -> Message:
    """A :class:`Message` with the decision's numbers picked out of ``status``."""
    link = (
        link_template.replace("{namespace}", quote(namespace)).replace("{name}", quote(name))
        if link_template
        else ""
    )
    return Message(cluster, namespace, name, notice, status, now, mode, uid, link, numbers_of(status))


def numbers_of(status: Mapping[str, Any]) -> dict[str, Any]:
    """The numbers behind the decision: step, weights, the primary metric per challenger, guardrails, SRM."""
    analysis = status.get("analysis") or {}
    numbers: dict[str, Any] = {
        "step": status.get("currentStep"),
        "weights": status.get("weights"),
        "challengerWeight": status.get("challengerWeight"),
    }
    if status.get("leading"):
        numbers["leading"] = status["leading"]
    primary = analysis.get("primary") or {}
    rows = [
        {k: r.get(k) for k in _PRIMARY_KEYS if r.get(k) is not None}
        for r in primary.get("results") or []
        if isinstance(r, Mapping)
    ]
    if rows:
        numbers["primary"] = {"metric": primary.get("metric"), "results": rows}
    breached = [g for g in status.get("guardrails") or [] if isinstance(g, Mapping) and g.get("breached")]
    if breached:
        numbers["breachedGuardrails"] = breached
    if analysis.get("srm"):
        numbers["srm"] = analysis["srm"]
    return numbers


_PRIMARY_KEYS = (
    "variant",
    "verdict",
    "controlN",
    "treatmentN",
    "controlValue",
    "treatmentValue",
    "difference",
    "relativeLift",
    "ciLow",
    "ciHigh",
    "pValue",
)


def _time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def summary(message: Message) -> str:
    """One line: ``[cluster] ns/name RolledBack: why``."""
    where = f"[{message.cluster}] " if message.cluster else ""
    what = message.notice.kind.value
    if message.notice.pause_reason and message.notice.kind is Kind.PAUSED:
        what = f"Paused ({message.notice.pause_reason})"
    return f"{where}{message.namespace}/{message.name} {what}: {message.notice.reason}"


def webhook_payload(message: Message) -> dict[str, Any]:
    """The generic webhook's JSON document (docs/notifications.md shows one)."""
    status = message.status
    history = status.get("history") or []
    last = history[-1] if history and isinstance(history[-1], Mapping) else {}
    payload: dict[str, Any] = {
        "version": WEBHOOK_VERSION,
        "cluster": message.cluster,
        "event": message.notice.kind.value,
        "severity": message.notice.severity.value,
        "time": _time(message.time),
        "summary": summary(message),
        "experiment": {
            "namespace": message.namespace,
            "name": message.name,
            "uid": message.uid,
            "mode": message.mode,
        },
        "transition": {
            "phase": status.get("phase"),
            "pauseReason": message.notice.pause_reason,
            "from": last.get("from"),
            "to": last.get("to"),
            "reason": message.notice.reason,
            "ended": message.notice.ended.value if message.notice.ended else None,
        },
        "decision": status.get("decision"),
        "numbers": dict(message.numbers),
        "links": _links(message),
    }
    return payload


def _links(message: Message) -> dict[str, str]:
    links = {
        "api": message.api_path,
        "kubectl": f"kubectl arbiter status {message.name} -n {message.namespace}",
    }
    if message.link:
        links["dashboard"] = message.link
    return links


def slack_payload(message: Message) -> dict[str, Any]:
    """A Slack incoming-webhook message: ``text`` (the notification's fallback) and blocks."""
    numbers = message.numbers
    facts = [f"*Severity:* {message.notice.severity.value}"]
    if numbers.get("weights"):
        facts.append("*Weights:* " + ", ".join(f"{k} {v}%" for k, v in numbers["weights"].items()))
    if numbers.get("step") is not None:
        facts.append(f"*Step:* {numbers['step']}")
    leading = numbers.get("leading") or {}
    if leading.get("relativeLift") is not None:
        facts.append(f"*Lift of {leading.get('variant')}:* {leading['relativeLift']:+.1%}")
    if leading.get("pValue") is not None:
        facts.append(f"*p-value:* {leading['pValue']:.4g}")
    title = summary(message)
    context = f"`kubectl arbiter status {message.name} -n {message.namespace}`"
    if message.link:
        context += f" | <{message.link}|dashboard>"
    return {
        "text": title,
        "blocks": [
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": f"{_EMOJI[message.notice.severity.value]} {title}"},
            },
            {"type": "section", "fields": [{"type": "mrkdwn", "text": f} for f in facts]},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": context}]},
        ],
    }


def alert_labels(message: Message, kind: Kind) -> dict[str, str]:
    """The labels that identify an alert (the same for its firing and its resolution)."""
    labels = {
        "alertname": f"ArbiterExperiment{kind.value}",
        "event": kind.value,
        "namespace": message.namespace,
        "experiment": message.name,
        "source": "arbiter",
    }
    if message.cluster:
        labels["cluster"] = message.cluster
    return labels


def alertmanager_payload(
    message: Message, *, fire: bool, resolve: bool, state_ttl: float, event_ttl: float
) -> list[dict[str, Any]]:
    """Alerts for Alertmanager's ``POST /api/v2/alerts``.

    Args:
        fire: include the alert of this transition (a state alert fires until resolved or ``state_ttl``;
            a one-off transition fires for ``event_ttl``).
        resolve: include the resolution (``endsAt`` now) of the state this transition left.
    """
    from arbiter.notify.transitions import STATE_KINDS

    alerts: list[dict[str, Any]] = []
    notice = message.notice
    if resolve and notice.ended is not None:
        alerts.append(
            {
                "labels": {
                    **alert_labels(message, notice.ended),
                    "severity": (notice.ended_severity or notice.severity).value.lower(),
                },
                "annotations": {"summary": summary(message), "resolution": notice.kind.value},
                "endsAt": _time(message.time),
                "generatorURL": message.link or None,
            }
        )
    if fire:
        ttl = state_ttl if notice.kind in STATE_KINDS else event_ttl
        labels = {**alert_labels(message, notice.kind), "severity": notice.severity.value.lower()}
        annotations = {"summary": summary(message), "description": notice.reason}
        if notice.pause_reason:
            annotations["pause_reason"] = notice.pause_reason
        leading = message.numbers.get("leading") or {}
        for key in ("relativeLift", "pValue"):
            if leading.get(key) is not None:
                annotations[key] = f"{leading[key]:.4g}"
        if message.numbers.get("weights"):
            annotations["weights"] = ",".join(f"{k}={v}" for k, v in message.numbers["weights"].items())
        alerts.append(
            {
                "labels": labels,
                "annotations": annotations,
                "startsAt": _time(message.time),
                "endsAt": _time(message.time + dt.timedelta(seconds=ttl)),
                "generatorURL": message.link or None,
            }
        )
    for alert in alerts:
        if alert["generatorURL"] is None:
            del alert["generatorURL"]
    return alerts
