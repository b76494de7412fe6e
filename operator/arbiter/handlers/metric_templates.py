"""MetricTemplate references of an experiment: resolved every tick, or the experiment holds.

The handler resolves the raw spec before parsing it (:func:`resolve_for`); the engine only ever sees
inline guardrails and metrics. When a reference cannot be resolved (a missing template, parameters that
do not fit, a query that does not render) the experiment holds where it is: condition
``MetricTemplatesResolved=False`` with the reason and a Warning Event, no decision and no traffic change
(so never a promotion on missing data), until the template or the reference is fixed; then the condition
turns True, a Normal Event says so, and the experiment goes on from its stored status.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from arbiter.api import Phase
from arbiter.api.conditions import get_condition, set_condition
from arbiter.api.metrictemplate import TemplateKind
from arbiter.k8s import metric_templates as k8s_templates
from arbiter.metrics.references import Resolution, TemplateReadError, resolve, uses_templates
from arbiter.rollout.lifecycle import Event

CONDITION = "MetricTemplatesResolved"
REASON_RESOLVED = "Resolved"


def resolve_for(namespace: str, spec: Mapping[str, Any]) -> Resolution:
    """Resolve the experiment's template references, reading the templates from the API server."""
    if not uses_templates(spec):
        return Resolution(dict(spec))

    def lookup(kind: TemplateKind, name: str) -> dict[str, Any] | None:
        try:
            return k8s_templates.get_template_spec(namespace, kind, name)
        except k8s_templates.TemplateReadFailure as exc:
            raise TemplateReadError(str(exc)) from exc

    return resolve(spec, lookup)


def hold(
    status: dict[str, Any], resolution: Resolution, generation: int | None, now: str
) -> tuple[dict[str, Any], list[Event]]:
    """The status and events of a tick whose references could not be resolved: nothing else changes."""
    new = dict(status)
    reason = resolution.problems[0].reason
    message = "metric templates: " + resolution.message()
    previous = get_condition(status.get("conditions"), CONDITION)
    events: list[Event] = []
    if previous is None or previous.get("status") != "False" or previous.get("message") != message:
        events.append(Event("Warning", reason, message))
    new["conditions"] = set_condition(
        status.get("conditions"), CONDITION, "False", reason, message, now, generation
    )
    if not new.get("phase"):
        new["phase"] = Phase.PENDING.value
        new["message"] = message
    return new, events


def mark_resolved(
    status: dict[str, Any], resolution: Resolution, generation: int | None, now: str
) -> tuple[dict[str, Any], list[Event]]:
    """The status with ``MetricTemplatesResolved=True`` when the experiment uses templates (or used to)."""
    previous = get_condition(status.get("conditions"), CONDITION)
    if not resolution.references and previous is None:
        return status, []
    message = resolution.message() if resolution.references else "no metric template references"
    events: list[Event] = []
    if previous is not None and previous.get("status") == "False":
        events.append(Event("Normal", CONDITION, message))
    new = dict(status)
    new["conditions"] = set_condition(
        status.get("conditions"), CONDITION, "True", REASON_RESOLVED, message, now, generation
    )
    return new, events


def spec_for_cleanup(namespace: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    """The resolved spec, or with unresolvable references left out: enough to hand traffic back on delete."""
    resolution = resolve_for(namespace, spec)
    if resolution.ok:
        return resolution.spec
    resolved = resolution.spec
    analysis = resolved.get("analysis") or {}
    for key in ("guardrails", "secondary"):
        if isinstance(analysis.get(key), list):
            analysis[key] = [e for e in analysis[key] if not (isinstance(e, dict) and "templateRef" in e)]
    if isinstance(analysis.get("primary"), dict) and "templateRef" in analysis["primary"]:
        del analysis["primary"]
    return resolved
