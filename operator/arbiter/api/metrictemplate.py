"""MetricTemplate and ClusterMetricTemplate (arbiter.dev/v1alpha1): one reusable guardrail or outcome metric.

A template holds the queries (with ``{{experiment}}``, ``{{namespace}}``, ``{{variant}}`` and its own
declared ``{{parameters}}``), the metric's type and direction, default thresholds or minimum detectable
effect, and optionally the Prometheus connection. A ModelExperiment's guardrail, primary or secondary
entry names a template with ``templateRef`` instead of spelling the queries out; the operator resolves
the reference into the same inline definition (:class:`~arbiter.api.v1alpha1.Guardrail`,
:class:`~arbiter.api.v1alpha1.Metric`) the engine always consumes (see ``arbiter.metrics.references``).

As in :mod:`arbiter.api.v1alpha1`, every rule is both a CEL rule (the API server refuses a bad template
with a field-level message) and a pydantic validator (the operator never uses one that slipped past).
"""

from __future__ import annotations

import copy
from enum import StrEnum
from typing import Annotated, Any

from pydantic import ConfigDict, Field, JsonValue, model_validator

from arbiter.api.v1alpha1 import (
    _MEAN_RULE,
    _PROPORTION_RULE,
    Direction,
    MetricType,
    ObjectName,
    PrometheusSource,
    Query,
    RateQueries,
    _cel,
    _check_queries,
    _Model,
)

TEMPLATE_KIND = "MetricTemplate"
TEMPLATE_PLURAL = "metrictemplates"
CLUSTER_TEMPLATE_KIND = "ClusterMetricTemplate"
CLUSTER_TEMPLATE_PLURAL = "clustermetrictemplates"
TEMPLATE_SHORT_NAMES = ["mtpl"]
CLUSTER_TEMPLATE_SHORT_NAMES = ["cmtpl"]

MAX_PARAMETERS = 20
MAX_PARAMETER_VALUE = 1024
PARAMETER_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
#: Placeholders the operator fills itself; a parameter may not take their names.
RESERVED_PARAMETERS = ("experiment", "namespace", "variant")

ParameterName = Annotated[str, Field(pattern=PARAMETER_NAME_PATTERN, min_length=1, max_length=63)]
ParameterValue = Annotated[str, Field(max_length=MAX_PARAMETER_VALUE)]


class TemplateKind(StrEnum):
    """Which kind of template a reference names."""

    METRIC_TEMPLATE = TEMPLATE_KIND
    CLUSTER_METRIC_TEMPLATE = CLUSTER_TEMPLATE_KIND


class TemplateParameter(_Model):
    """One ``{{name}}`` a template's queries use, filled from the experiment's reference."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "!(self.name in " + str(list(RESERVED_PARAMETERS)) + ")",
                    "experiment, namespace and variant are filled by the operator; pick another name",
                    ".name",
                ),
                _cel(
                    "!(has(self.required) && self.required && has(self.default))",
                    "a required parameter has no default",
                    ".default",
                ),
            ]
        }
    )

    name: ParameterName = Field(description="The placeholder's name: the queries use {{name}}.")
    description: Annotated[str, Field(max_length=1024)] = Field(
        default="", description="What the parameter means (shown to whoever references the template)."
    )
    default: ParameterValue | None = Field(
        default=None, description="Value used when the reference does not give one."
    )
    required: bool = Field(default=False, description="The reference must give a value (no default).")

    @model_validator(mode="after")
    def _consistent(self) -> TemplateParameter:
        if self.name in RESERVED_PARAMETERS:
            raise ValueError(
                "experiment, namespace and variant are filled by the operator; pick another name"
            )
        if self.required and self.default is not None:
            raise ValueError("a required parameter has no default")
        return self


class TemplateGuardrail(_Model):
    """A guardrail's queries and default thresholds; the experiment adds name, failureLimit and critical."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel("has(self.query) || has(self.rate)", "a guardrail template needs query or rate"),
                _cel(
                    "!has(self.min) || !has(self.max) || self.min <= self.max",
                    "min must not exceed max",
                    ".min",
                ),
            ]
        }
    )

    query: Query | None = Field(
        default=None,
        description="PromQL returning one value per variant; {{experiment}}, {{namespace}}, {{variant}} "
        "and the declared parameters are substituted.",
    )
    rate: RateQueries | None = Field(
        default=None, description="Cumulative counters for a statistical relative bound (see Guardrail.rate)."
    )
    min: float | None = Field(default=None, description="Default lowest healthy value of query.")
    max: float | None = Field(default=None, description="Default highest healthy value of query.")
    max_increase_over_champion: float | None = Field(
        default=None, ge=0, description="Default: how much the challenger may exceed the champion."
    )
    max_decrease_from_champion: float | None = Field(
        default=None, ge=0, description="Default: how much the challenger may fall below the champion."
    )

    @model_validator(mode="after")
    def _consistent(self) -> TemplateGuardrail:
        if self.query is None and self.rate is None:
            raise ValueError("a guardrail template needs query or rate")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min must not exceed max")
        return self


class TemplateOutcome(_Model):
    """An outcome metric's queries, type, direction and default minimum detectable effect."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [_PROPORTION_RULE, _MEAN_RULE]})

    type: MetricType = Field(description="Proportion (successes/trials) or Mean (count/sum/sumSquares).")
    successes: Query | None = Field(default=None, description="Proportion: cumulative successes query.")
    trials: Query | None = Field(default=None, description="Proportion: cumulative trials query.")
    count: Query | None = Field(default=None, description="Mean: cumulative observation count query.")
    sum: Query | None = Field(default=None, description="Mean: cumulative sum of values query.")
    sum_squares: Query | None = Field(
        default=None, description="Mean: cumulative sum of squared values query."
    )
    direction: Direction = Field(
        default=Direction.INCREASE, description="Which way is better: Increase or Decrease."
    )
    minimum_detectable_effect: float | None = Field(
        default=None,
        gt=0,
        le=10,
        description="Default smallest relative change worth detecting (0.05 = 5%); an experiment may override it.",
    )

    @model_validator(mode="after")
    def _queries(self) -> TemplateOutcome:
        _check_queries(
            self.type,
            {
                "successes": self.successes,
                "trials": self.trials,
                "count": self.count,
                "sum": self.sum,
                "sum_squares": self.sum_squares,
            },
        )
        return self


class MetricTemplateSpec(_Model):
    """One named guardrail or outcome metric, reusable by any experiment that references it."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "has(self.guardrail) != has(self.outcome)",
                    "set exactly one of guardrail or outcome",
                    ".guardrail",
                ),
                _cel(
                    "!has(self.parameters) || self.parameters.all(p, self.parameters.exists_one(q, q.name == p.name))",
                    "parameter names must be unique",
                    ".parameters",
                ),
            ]
        }
    )

    description: Annotated[str, Field(max_length=4096)] = Field(
        default="", description="What the metric measures and how to read it."
    )
    parameters: Annotated[list[TemplateParameter], Field(max_length=MAX_PARAMETERS)] = Field(
        default_factory=list,
        description="Placeholders the queries use besides experiment, namespace, variant.",
    )
    prometheus: PrometheusSource | None = Field(
        default=None,
        description="Where the queries run, when the experiment does not set analysis.prometheus.url. "
        "Secrets it names are read in the experiment's namespace.",
    )
    guardrail: TemplateGuardrail | None = Field(
        default=None, description="The template is a guardrail (for analysis.guardrails)."
    )
    outcome: TemplateOutcome | None = Field(
        default=None, description="The template is an outcome metric (for analysis.primary or secondary)."
    )

    @model_validator(mode="after")
    def _one_metric(self) -> MetricTemplateSpec:
        if (self.guardrail is None) == (self.outcome is None):
            raise ValueError("set exactly one of guardrail or outcome")
        names = [p.name for p in self.parameters]
        if len(set(names)) != len(names):
            raise ValueError("parameter names must be unique")
        return self


def parse_template_spec(spec: dict[str, Any]) -> MetricTemplateSpec:
    """Validate a raw template ``spec`` mapping.

    Raises:
        pydantic.ValidationError: with a field path for every problem.
    """
    return MetricTemplateSpec.model_validate(spec)


class TemplateRef(_Model):
    """The template an experiment's guardrail or metric entry takes its definition from."""

    kind: TemplateKind = Field(
        default=TemplateKind.METRIC_TEMPLATE,
        description="MetricTemplate (in the experiment's namespace) or ClusterMetricTemplate.",
    )
    name: ObjectName = Field(description="The template's name.")
    parameters: Annotated[dict[str, ParameterValue], Field(max_length=MAX_PARAMETERS)] | None = Field(
        default=None, description="Values of the template's declared parameters."
    )


# --- the reference in a ModelExperiment ------------------------------------------------------------------
# Guardrail and Metric stay exactly what the engine consumes; only the CRD's schema of the entries gains
# `templateRef` (below), and the operator replaces each reference with the inline definition before it
# parses the spec.

#: Fields of a guardrail entry that override the template's default thresholds.
GUARDRAIL_OVERRIDES = ("min", "max", "maxIncreaseOverChampion", "maxDecreaseFromChampion")
#: Fields of a metric entry that override the template's defaults.
METRIC_OVERRIDES = ("minimumDetectableEffect",)
_GUARDRAIL_FROM_TEMPLATE = ("query", "rate")
_METRIC_FROM_TEMPLATE = ("type", "successes", "trials", "count", "sum", "sumSquares")
_METRIC_REQUIRED = ("type", "minimumDetectableEffect")


def _absent(fields: tuple[str, ...]) -> str:
    return " && ".join(f"!has(self.{f})" for f in fields)


def _allow_reference(item: dict[str, Any], ref_schema: dict[str, Any], metric: bool) -> None:
    """Let one guardrail or metric item schema take ``templateRef`` instead of its own queries."""
    item["properties"]["templateRef"] = {
        **copy.deepcopy(ref_schema),
        "description": "Take the queries, type and default thresholds from a MetricTemplate or "
        "ClusterMetricTemplate instead of spelling them out; thresholds set here override the template's.",
    }
    rules: list[JsonValue] = []
    for rule in item.get("x-kubernetes-validations", []):
        # A rule about the inline definition holds only when there is one (and, for a metric, a type).
        guard = "has(self.templateRef) || " + ("!has(self.type) || " if metric else "")
        rules.append({**rule, "rule": guard + "(" + rule["rule"] + ")"})
    if metric:
        item["required"] = [r for r in item.get("required", []) if r not in _METRIC_REQUIRED]
        rules.append(
            _cel(
                "has(self.templateRef) || has(self.type)",
                "type is required unless templateRef is set",
                ".type",
            )
        )
        rules.append(
            _cel(
                "has(self.templateRef) || has(self.minimumDetectableEffect)",
                "minimumDetectableEffect is required unless templateRef is set",
                ".minimumDetectableEffect",
            )
        )
    from_template = _METRIC_FROM_TEMPLATE if metric else _GUARDRAIL_FROM_TEMPLATE
    rules.append(
        _cel(
            "!has(self.templateRef) || (" + _absent(from_template) + ")",
            f"with templateRef the template supplies {', '.join(from_template)}; do not set them here",
            ".templateRef",
        )
    )
    item["x-kubernetes-validations"] = rules


def allow_template_refs(spec_schema: dict[str, Any], ref_schema: dict[str, Any]) -> dict[str, Any]:
    """The ModelExperiment spec schema with ``templateRef`` allowed on guardrails, primary and secondary.

    Args:
        spec_schema: the structural schema generated from ModelExperimentSpec.
        ref_schema: the structural schema generated from :class:`TemplateRef`.
    """
    schema = copy.deepcopy(spec_schema)
    analysis = schema["properties"]["analysis"]["properties"]
    _allow_reference(analysis["guardrails"]["items"], ref_schema, metric=False)
    _allow_reference(analysis["primary"], ref_schema, metric=True)
    _allow_reference(analysis["secondary"]["items"], ref_schema, metric=True)
    return schema


__all__ = [
    "CLUSTER_TEMPLATE_KIND",
    "CLUSTER_TEMPLATE_PLURAL",
    "GUARDRAIL_OVERRIDES",
    "METRIC_OVERRIDES",
    "TEMPLATE_KIND",
    "TEMPLATE_PLURAL",
    "MetricTemplateSpec",
    "TemplateGuardrail",
    "TemplateKind",
    "TemplateOutcome",
    "TemplateParameter",
    "TemplateRef",
    "allow_template_refs",
    "parse_template_spec",
]
