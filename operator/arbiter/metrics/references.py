"""Resolve MetricTemplate references in a ModelExperiment spec into inline guardrails and metrics. Pure.

An entry of ``analysis.guardrails``, ``analysis.primary`` or ``analysis.secondary`` with a ``templateRef``
is replaced by the definition the engine always consumes: the template's queries with its parameters
substituted (:func:`arbiter.metrics.template.render_parameters`), its type and direction, its default
thresholds or minimum detectable effect overridden by the entry's own, and the entry's name,
``failureLimit`` and ``critical``. Because the resolved spec is what the engine sees, a template change
mid-experiment follows the ordinary spec-change rules (docs/rollout.md): a different primary question
restarts the analysis, a changed threshold does not.

Nothing here raises on bad input: every problem (a template that is missing, invalid or of the wrong
role, parameters that do not fit, a query that does not render) is returned with the entry it concerns.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from arbiter.api.metrictemplate import (
    GUARDRAIL_OVERRIDES,
    METRIC_OVERRIDES,
    MetricTemplateSpec,
    TemplateKind,
    TemplateRef,
    parse_template_spec,
)
from arbiter.api.v1alpha1 import Guardrail, Metric
from arbiter.metrics.template import TemplateError, render_parameters

REASON_NOT_FOUND = "TemplateNotFound"
REASON_INVALID = "TemplateInvalid"
REASON_PARAMETERS = "TemplateParametersInvalid"
REASON_READ_FAILED = "TemplateReadFailed"

_QUERY_FIELDS = ("query", "successes", "trials", "count", "sum", "sumSquares")
_RATE_FIELDS = ("successes", "trials", "count", "sum", "sumSquares")


class TemplateReadError(Exception):
    """A template could not be read (not: it does not exist)."""


#: Returns the raw ``spec`` of the named template, None when it does not exist; raises TemplateReadError.
TemplateLookup = Callable[[TemplateKind, str], "dict[str, Any] | None"]


@dataclass(frozen=True)
class TemplateProblem:
    """Why one reference could not be resolved."""

    reason: str
    entry: str
    message: str

    def __str__(self) -> str:
        return f"{self.entry}: {self.message}"


@dataclass(frozen=True)
class Resolution:
    """The spec with every reference resolved, or what stood in the way.

    Attributes:
        spec: the resolved spec (a copy; the input is untouched). Meaningful only without problems.
        references: ``entry -> Kind/name`` of every resolved reference.
        problems: one per reference that could not be resolved.
    """

    spec: dict[str, Any]
    references: Mapping[str, str] = field(default_factory=dict)
    problems: tuple[TemplateProblem, ...] = ()

    @property
    def ok(self) -> bool:
        """True when every reference was resolved."""
        return not self.problems

    def message(self) -> str:
        """One line about every problem, or about what was resolved."""
        if self.problems:
            return "; ".join(str(p) for p in self.problems)
        return "resolved " + ", ".join(f"{entry} from {ref}" for entry, ref in self.references.items())


def uses_templates(spec: Mapping[str, Any]) -> bool:
    """True when any guardrail or metric entry of the raw spec has a templateRef."""
    return any("templateRef" in entry for _, entry in _entries(spec))


def _entries(spec: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(label, raw entry) for every guardrail, the primary and every secondary metric."""
    analysis = spec.get("analysis") or {}
    found: list[tuple[str, dict[str, Any]]] = []
    for item in analysis.get("guardrails") or []:
        found.append((f"analysis.guardrails[{item.get('name')}]", item))
    if isinstance(analysis.get("primary"), dict):
        found.append(("analysis.primary", analysis["primary"]))
    for item in analysis.get("secondary") or []:
        found.append((f"analysis.secondary[{item.get('name')}]", item))
    return found


def _validation_message(exc: ValidationError) -> str:
    return "; ".join(
        (".".join(str(p) for p in err["loc"]) + ": " if err["loc"] else "") + err["msg"]
        for err in exc.errors()
    )


def _parameter_values(template: MetricTemplateSpec, ref: TemplateRef) -> tuple[dict[str, str], list[str]]:
    """The value of every parameter with one, and what does not fit."""
    given = dict(ref.parameters or {})
    declared = {p.name: p for p in template.parameters}
    errors = [
        f"unknown parameter {name!r} (the template declares {', '.join(sorted(declared)) or 'none'})"
        for name in sorted(set(given) - set(declared))
    ]
    values: dict[str, str] = {}
    for name, parameter in declared.items():
        if name in given:
            values[name] = given[name]
        elif parameter.default is not None:
            values[name] = parameter.default
        elif parameter.required:
            errors.append(
                f"parameter {name!r} is required"
                + (f" ({parameter.description})" if parameter.description else "")
            )
    return values, errors


def _render_queries(
    raw: dict[str, Any], fields: tuple[str, ...], values: dict[str, str], where: str
) -> dict[str, Any]:
    rendered = dict(raw)
    for name in fields:
        if isinstance(rendered.get(name), str):
            try:
                rendered[name] = render_parameters(rendered[name], values)
            except TemplateError as exc:
                raise TemplateError(f"{where}{name}: {exc}") from exc
    return rendered


def _definition(
    entry: dict[str, Any], template: MetricTemplateSpec, values: dict[str, str], metric: bool
) -> dict[str, Any]:
    """The inline entry: the template's definition, parameters substituted, the entry's overrides on top.

    Raises:
        TemplateError: a query does not render.
    """
    name = entry.get("name")
    overrides: tuple[str, ...]
    if not metric:
        assert template.guardrail is not None
        body = template.guardrail.model_dump(by_alias=True, exclude_none=True, mode="json")
        body = _render_queries(body, ("query",), values, "")
        if "rate" in body:
            body["rate"] = _render_queries(body["rate"], _RATE_FIELDS, values, "rate.")
        for key in ("failureLimit", "critical"):
            if key in entry:
                body[key] = entry[key]
        overrides = GUARDRAIL_OVERRIDES
    else:
        assert template.outcome is not None
        body = template.outcome.model_dump(by_alias=True, exclude_none=True, mode="json")
        body = _render_queries(body, _QUERY_FIELDS, values, "")
        overrides = METRIC_OVERRIDES
    for key in overrides:
        if entry.get(key) is not None:
            body[key] = entry[key]
    return {"name": name, **body}


def _resolve_entry(
    label: str, entry: dict[str, Any], lookup: TemplateLookup, metric: bool
) -> tuple[dict[str, Any] | None, str, TemplateProblem | None, MetricTemplateSpec | None]:
    """Resolve one entry. Returns (inline entry, 'Kind/name', problem, template)."""
    try:
        ref = TemplateRef.model_validate(entry["templateRef"])
    except ValidationError as exc:
        return (
            None,
            "",
            TemplateProblem(REASON_INVALID, label, f"templateRef: {_validation_message(exc)}"),
            None,
        )
    named = f"{ref.kind.value}/{ref.name}"
    try:
        raw = lookup(ref.kind, ref.name)
    except TemplateReadError as exc:
        return (
            None,
            named,
            TemplateProblem(REASON_READ_FAILED, label, f"{named} could not be read: {exc}"),
            None,
        )
    if raw is None:
        return None, named, TemplateProblem(REASON_NOT_FOUND, label, f"{named} not found"), None
    try:
        template = parse_template_spec(raw)
    except ValidationError as exc:
        return (
            None,
            named,
            TemplateProblem(REASON_INVALID, label, f"{named} is invalid: {_validation_message(exc)}"),
            None,
        )
    role = "outcome" if metric else "guardrail"
    if (template.outcome if metric else template.guardrail) is None:
        other = "a guardrail" if metric else "an outcome metric"
        return (
            None,
            named,
            TemplateProblem(
                REASON_INVALID, label, f"{named} is {other}; a {role} entry needs a template with spec.{role}"
            ),
            None,
        )
    if metric and template.outcome is not None:
        direction = entry.get("direction")
        # The API server defaults an entry's direction to Increase; only a deliberate other value conflicts.
        if direction not in (None, "Increase", template.outcome.direction.value):
            return (
                None,
                named,
                TemplateProblem(
                    REASON_INVALID,
                    label,
                    f"direction {direction} contradicts {named} ({template.outcome.direction.value}); the "
                    "direction is the template's",
                ),
                None,
            )
    values, errors = _parameter_values(template, ref)
    if errors:
        return None, named, TemplateProblem(REASON_PARAMETERS, label, f"{named}: " + "; ".join(errors)), None
    try:
        inline = _definition(entry, template, values, metric)
    except TemplateError as exc:
        return None, named, TemplateProblem(REASON_PARAMETERS, label, f"{named}: {exc}"), None
    try:
        (Metric if metric else Guardrail).model_validate(inline)
    except ValidationError as exc:
        return (
            None,
            named,
            TemplateProblem(
                REASON_INVALID,
                label,
                f"{named} resolved to an invalid {role} (set the missing value in the template or the "
                f"entry): {_validation_message(exc)}",
            ),
            None,
        )
    return inline, named, None, template


def resolve(spec: Mapping[str, Any], lookup: TemplateLookup) -> Resolution:
    """Replace every templateRef entry of a raw ModelExperiment spec with its inline definition.

    Args:
        spec: the raw spec as stored in the API server.
        lookup: reads a template's raw spec by kind and name.

    Returns:
        The resolution; a spec without references comes back unchanged (a copy) with no problems.
    """
    resolved = copy.deepcopy(dict(spec))
    analysis = resolved.get("analysis")
    if not isinstance(analysis, dict):
        return Resolution(resolved)
    references: dict[str, str] = {}
    problems: list[TemplateProblem] = []
    connections: dict[str, dict[str, Any]] = {}

    def resolve_item(label: str, entry: Any, metric: bool) -> Any:
        if not isinstance(entry, dict) or "templateRef" not in entry:
            return entry
        inline, named, problem, template = _resolve_entry(label, entry, lookup, metric)
        if problem is not None:
            problems.append(problem)
            return entry
        references[label] = named
        if template is not None and template.prometheus is not None:
            connections[named] = template.prometheus.model_dump(by_alias=True, exclude_none=True, mode="json")
        return inline

    if isinstance(analysis.get("guardrails"), list):
        analysis["guardrails"] = [
            resolve_item(f"analysis.guardrails[{g.get('name') if isinstance(g, dict) else i}]", g, False)
            for i, g in enumerate(analysis["guardrails"])
        ]
    if "primary" in analysis:
        analysis["primary"] = resolve_item("analysis.primary", analysis["primary"], True)
    if isinstance(analysis.get("secondary"), list):
        analysis["secondary"] = [
            resolve_item(f"analysis.secondary[{m.get('name') if isinstance(m, dict) else i}]", m, True)
            for i, m in enumerate(analysis["secondary"])
        ]
    problem = _connection(analysis, connections)
    if problem is not None:
        problems.append(problem)
    return Resolution(resolved, references, tuple(problems))


def _connection(analysis: dict[str, Any], connections: dict[str, dict[str, Any]]) -> TemplateProblem | None:
    """Use the templates' Prometheus connection when the experiment names none (one experiment, one server)."""
    if not connections:
        return None
    own = analysis.get("prometheus") or {}
    if own.get("url"):
        return None  # the experiment's own connection wins (documented)
    distinct = {repr(sorted(c.items())): named for named, c in connections.items()}
    if len(distinct) > 1:
        return TemplateProblem(
            REASON_INVALID,
            "analysis.prometheus",
            "the templates " + ", ".join(sorted(connections)) + " name different Prometheus connections; "
            "set analysis.prometheus.url in the experiment",
        )
    (connection,) = list(connections.values())[:1]
    analysis["prometheus"] = {**own, **connection}
    return None
