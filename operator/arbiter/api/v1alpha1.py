"""ModelExperiment (arbiter.dev/v1alpha1): the spec and status types, single source of the CRD.

Every rule here exists twice on purpose: as a CEL ``x-kubernetes-validations`` rule, so the API
server rejects a bad object with a field-level message, and as a pydantic validator, so the operator
never acts on an object that slipped past an older CRD. ``tests/unit/api`` checks both agree.
"""

from __future__ import annotations

import itertools
import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, JsonValue, model_validator
from pydantic.alias_generators import to_camel

JsonDict = dict[str, JsonValue]

GROUP = "arbiter.dev"
VERSION = "v1alpha1"
KIND = "ModelExperiment"
PLURAL = "modelexperiments"
SINGULAR = "modelexperiment"
SHORT_NAMES = ["mexp"]
API_VERSION = f"{GROUP}/{VERSION}"

MAX_CHALLENGERS = 10
MAX_STEPS = 20
MAX_METRICS = 20
MAX_QUERY_LENGTH = 4096
MAX_NAME_LENGTH = 63
MAX_HISTORY = 50
MAX_SAMPLES = 10**12

DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
#: A DNS-1123 subdomain: the name of most Kubernetes objects (Deployment, ConfigMap, HTTPRoute...).
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
#: A DNS-1035 label: the name of a Service (starts with a letter).
DNS_1035_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
#: An HTTP token (RFC 9110): header and cookie names.
HTTP_TOKEN_PATTERN = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$"
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Parse a Kubernetes-style duration such as ``30s``, ``10m``, ``1h30m`` or ``250ms``.

    Returns:
        The duration in seconds.

    Raises:
        ValueError: the text is not a duration.
    """
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"invalid duration {text!r}: use e.g. 30s, 10m, 1h30m")
    return sum(float(value) * _UNIT_SECONDS[unit] for value, unit in _DURATION_PART.findall(text))


def _duration_schema(minimum: str, maximum: str) -> Any:
    """The pattern plus a CEL rule bounding a duration string, so the API server refuses e.g. ``0s``."""
    rule = f"duration(self) >= duration('{minimum}') && duration(self) <= duration('{maximum}')"
    return Field(
        pattern=DURATION_PATTERN,
        max_length=32,
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": rule, "message": f"must be between {minimum} and {maximum}"}
            ]
        },
    )


def _duration_between(minimum: str, maximum: str) -> AfterValidator:
    """The pydantic twin of :func:`_duration_schema`'s CEL rule."""
    low, high = parse_duration(minimum), parse_duration(maximum)

    def check(text: str) -> str:
        if not low <= parse_duration(text) <= high:
            raise ValueError(f"must be between {minimum} and {maximum}")
        return text

    return AfterValidator(check)


# Every duration is positive and bounded: a zero or millisecond analysis interval would turn the
# operator into a load generator against the API server and Prometheus.
IntervalDuration = Annotated[str, _duration_schema("1s", "1h"), _duration_between("1s", "1h")]
TimeoutDuration = Annotated[str, _duration_schema("100ms", "5m"), _duration_between("100ms", "5m")]
HoldDuration = Annotated[str, _duration_schema("1s", "720h"), _duration_between("1s", "720h")]
LifetimeDuration = Annotated[str, _duration_schema("1s", "8760h"), _duration_between("1s", "8760h")]
VariantName = Annotated[str, Field(pattern=DNS_LABEL_PATTERN, min_length=1, max_length=MAX_NAME_LENGTH)]
ObjectName = Annotated[str, Field(pattern=DNS_SUBDOMAIN_PATTERN, min_length=1, max_length=253)]
ServiceName = Annotated[str, Field(pattern=DNS_1035_PATTERN, min_length=1, max_length=MAX_NAME_LENGTH)]
# A query must say something: at least one non-blank character.
Query = Annotated[str, Field(min_length=1, max_length=MAX_QUERY_LENGTH, pattern=r"\S")]
HttpToken = Annotated[str, Field(min_length=1, max_length=256, pattern=HTTP_TOKEN_PATTERN)]


class _Model(BaseModel):
    """Base for every API type: camelCase on the wire, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        use_enum_values=False,
    )


# pydantic leaves default_factory out of the JSON schema; an empty-object default makes the API server
# create the object and fill in its fields' own defaults.
_OBJECT_DEFAULT: JsonDict = {"default": {}}


def _cel(rule: str, message: str, field_path: str | None = None) -> JsonDict:
    """One ``x-kubernetes-validations`` entry."""
    entry: JsonDict = {"rule": rule, "message": message}
    if field_path is not None:
        entry["fieldPath"] = field_path
    return entry


class Mode(StrEnum):
    """How the challengers receive traffic."""

    CANARY = "Canary"
    SHADOW = "Shadow"
    AB_TEST = "ABTest"


class RoutingProviderName(StrEnum):
    """What carries the traffic."""

    ROUTER = "Router"
    GATEWAY_API = "GatewayAPI"
    ISTIO = "Istio"
    REPLICAS = "Replicas"


class MetricType(StrEnum):
    """How a metric is aggregated and tested."""

    PROPORTION = "Proportion"
    MEAN = "Mean"


class Direction(StrEnum):
    """Which way is better for a metric."""

    INCREASE = "Increase"
    DECREASE = "Decrease"


class TestMethod(StrEnum):
    """The significance test used for the primary and secondary metrics."""

    SEQUENTIAL = "Sequential"
    FIXED_HORIZON = "FixedHorizon"
    GROUP_SEQUENTIAL = "GroupSequential"


class SampleRatioMismatchMethod(StrEnum):
    """How the split is tested at every tick."""

    SEQUENTIAL = "Sequential"
    CHI_SQUARE = "ChiSquare"


class OnWin(StrEnum):
    """What to do when a challenger wins."""

    PROMOTE = "Promote"
    PAUSE = "Pause"


class OnLoss(StrEnum):
    """What to do when a challenger loses."""

    ROLLBACK = "Rollback"
    PAUSE = "Pause"


class OnTimeout(StrEnum):
    """What to do when maxDuration passes without a decision."""

    KEEP_CHAMPION = "KeepChampion"
    PAUSE = "Pause"


class Phase(StrEnum):
    """Where an experiment is in its life."""

    PENDING = "Pending"
    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    PROMOTED = "Promoted"
    ROLLED_BACK = "RolledBack"
    CONCLUDED = "Concluded"
    FAILED = "Failed"


TERMINAL_PHASES = frozenset({Phase.PROMOTED, Phase.ROLLED_BACK, Phase.CONCLUDED, Phase.FAILED})


class Variant(_Model):
    """A model variant: a Deployment (and the Service in front of it) in the experiment's namespace."""

    name: VariantName = Field(
        description="Variant name, a DNS label. It is the value of the `variant` label in metric queries "
        "({{variant}}) and the key of status.weights."
    )
    deployment: ObjectName = Field(description="Name of the Deployment serving this variant, same namespace.")
    service: ServiceName | None = Field(
        default=None,
        description="Name of the Service in front of the Deployment. Required by the Router, GatewayAPI "
        "and Istio providers; the Replicas provider shares one Service across variants.",
    )
    url: Annotated[str, Field(max_length=2048, pattern=r"^https?://[^/\s]+$")] | None = Field(
        default=None,
        description="Base URL the built-in router sends this variant's requests to (scheme://host:port). "
        "Default: http://<service>.<namespace>.svc:<first service port>. Set it for models served outside "
        "the cluster's DNS.",
    )


class Stickiness(_Model):
    """Consistent-hash key for sticky assignment of users to variants."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "!(has(self.header) && has(self.cookie))",
                    "set either header or cookie, not both",
                )
            ]
        }
    )

    header: HttpToken | None = Field(
        default=None, description="Request header whose value is the hash key, e.g. x-user-id."
    )
    cookie: HttpToken | None = Field(
        default=None,
        description="Cookie whose value is the hash key. Requests without the key are assigned at random.",
    )

    @model_validator(mode="after")
    def _one_key(self) -> Stickiness:
        if self.header is not None and self.cookie is not None:
            raise ValueError("set either header or cookie, not both")
        return self


class RouterRouting(_Model):
    """Settings of the built-in Arbiter router provider."""

    config_map: ObjectName = Field(
        description="ConfigMap (same namespace) the operator writes the router's routes.yaml into; "
        "`arbiter router --configmap NAMESPACE/NAME` watches it."
    )


class GatewayAPIRouting(_Model):
    """Settings of the Gateway API provider."""

    http_route: ObjectName = Field(
        description="HTTPRoute (same namespace) whose backendRefs weights are set."
    )


class IstioRouting(_Model):
    """Settings of the Istio provider."""

    virtual_service: ObjectName = Field(
        description="VirtualService (same namespace) whose route weights are set."
    )
    route: Annotated[str, Field(min_length=1, max_length=253, pattern=r"\S")] | None = Field(
        default=None,
        description="Name of the HTTP route inside the VirtualService to manage; the first route when unset.",
    )


# RFC 6901: empty (the whole document) or "/"-separated tokens where "~" only escapes as ~0 or ~1.
JSON_POINTER_PATTERN = r"^(/([^~/]|~[01])*)*$"
JsonPointer = Annotated[str, Field(pattern=JSON_POINTER_PATTERN, max_length=1024)]
MAX_POINTERS = 32


class ShadowComparison(_Model):
    """How Arbiter's router compares the shadow's answers with the champion's (provider Router)."""

    fields: Annotated[list[JsonPointer], Field(max_length=MAX_POINTERS)] = Field(
        default_factory=list,
        description="JSON pointers (RFC 6901) of the answer parts that must agree, e.g. /outputs/0/data for "
        "the predicted class of a V2 answer; a pointer missing from either answer is a disagreement. Empty: "
        "the whole body, less `ignore`.",
    )
    ignore: Annotated[list[JsonPointer], Field(max_length=MAX_POINTERS)] = Field(
        default_factory=list,
        description="JSON pointers removed from both answers before comparing, e.g. /id and /model_version "
        "(model servers put ids and versions in every answer).",
    )
    numeric_tolerance: float = Field(
        default=0.0, ge=0, description="Two numbers agree when |a - b| <= numericTolerance (absolute)."
    )
    score: Annotated[str, Field(pattern=JSON_POINTER_PATTERN, min_length=1, max_length=1024)] | None = Field(
        default=None,
        description="JSON pointer of the model's score (a number or a list of numbers), e.g. /outputs/1/data/1; "
        "the router exports the distribution of |shadow - champion| as arbiter_router_shadow_score_delta.",
    )

    @model_validator(mode="after")
    def _unique(self) -> ShadowComparison:
        for name, pointers in (("fields", self.fields), ("ignore", self.ignore)):
            if len(set(pointers)) != len(pointers):
                raise ValueError(f"spec.routing.shadow.compare.{name} lists a JSON pointer twice")
        return self


class ShadowRouting(_Model):
    """Traffic mirroring for mode Shadow."""

    percent: int = Field(
        default=100,
        ge=0,
        le=100,
        description="Share of champion traffic mirrored to the challenger, in percent.",
    )
    timeout_seconds: float = Field(
        default=1.0,
        ge=0.01,
        le=60,
        description="Timeout of a mirrored request; it never delays the champion.",
    )
    compare: ShadowComparison | None = Field(
        default=None,
        description="How the shadow's answers are compared with the champion's (provider Router). Unset: the "
        "router's routes.yaml keeps what a human set there, else whole bodies are compared.",
    )


class Routing(_Model):
    """Which provider carries the traffic, and its settings."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "self.provider != 'Router' || has(self.router)",
                    "provider Router needs spec.routing.router",
                    ".router",
                ),
                _cel(
                    "self.provider != 'GatewayAPI' || has(self.gatewayAPI)",
                    "provider GatewayAPI needs spec.routing.gatewayAPI",
                    ".gatewayAPI",
                ),
                _cel(
                    "self.provider != 'Istio' || has(self.istio)",
                    "provider Istio needs spec.routing.istio",
                    ".istio",
                ),
                _cel(
                    "self.provider == 'Router' || !has(self.shadow) || !has(self.shadow.compare)",
                    "spec.routing.shadow.compare needs provider Router (only Arbiter's router compares answers)",
                    ".shadow.compare",
                ),
            ]
        }
    )

    provider: RoutingProviderName = Field(
        description="What carries the traffic: Router (Arbiter's own router), GatewayAPI (HTTPRoute weights), "
        "Istio (VirtualService weights) or Replicas (replica counts behind one Service)."
    )
    stickiness: Stickiness | None = Field(
        default=None, description="Sticky assignment of users to variants by a header or cookie."
    )
    router: RouterRouting | None = Field(default=None, description="Settings for provider Router.")
    gateway_api: GatewayAPIRouting | None = Field(
        default=None, alias="gatewayAPI", description="Settings for provider GatewayAPI."
    )
    istio: IstioRouting | None = Field(default=None, description="Settings for provider Istio.")
    shadow: ShadowRouting | None = Field(default=None, description="Mirroring settings for mode Shadow.")

    @model_validator(mode="after")
    def _provider_block(self) -> Routing:
        blocks = {
            RoutingProviderName.ROUTER: ("router", self.router),
            RoutingProviderName.GATEWAY_API: ("gatewayAPI", self.gateway_api),
            RoutingProviderName.ISTIO: ("istio", self.istio),
        }
        if self.provider in blocks:
            field, block = blocks[self.provider]
            if block is None:
                raise ValueError(f"provider {self.provider.value} needs spec.routing.{field}")
        if (
            self.shadow is not None
            and self.shadow.compare is not None
            and self.provider is not RoutingProviderName.ROUTER
        ):
            raise ValueError(
                "spec.routing.shadow.compare needs provider Router (only Arbiter's router compares answers)"
            )
        return self


class Step(_Model):
    """One canary step: the challengers' share of traffic and how long to hold it."""

    weight: int = Field(
        gt=0,
        le=100,
        description="Challenger traffic share in percent, 0 < weight <= 100. With several challengers each "
        "gets an equal part of it.",
    )
    min_duration: HoldDuration | None = Field(
        default=None, description="Hold the step at least this long (Kubernetes duration, e.g. 10m)."
    )
    min_samples: int | None = Field(
        default=None,
        ge=0,
        le=MAX_SAMPLES,
        description="Hold the step until every variant has at least this many samples.",
    )


SecretKey = Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")]
FilePath = Annotated[str, Field(min_length=2, max_length=4096, pattern=r"^/")]
HEADER_NAME_PATTERN = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$"
MAX_HEADERS = 20


class SecretKeySelector(_Model):
    """One key of a Secret in the experiment's namespace."""

    name: ObjectName = Field(description="Name of the Secret (same namespace as the experiment).")
    key: SecretKey = Field(description="Key inside the Secret's data.")


class BearerToken(_Model):
    """A bearer token sent as ``Authorization: Bearer <token>``: from a Secret, or a file the operator reads."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "has(self.secretKeyRef) != has(self.file)",
                    "set exactly one of secretKeyRef or file",
                )
            ]
        }
    )

    secret_key_ref: SecretKeySelector | None = Field(
        default=None,
        description="The token's Secret key. The operator needs `get` on that Secret (a namespaced Role "
        "with resourceNames); see docs/operations.md.",
    )
    file: FilePath | None = Field(
        default=None,
        description="Absolute path of a token file in the operator's pod (re-read at every tick, so "
        "rotated tokens work). Only files under the operator's --prometheus-credentials-dir are read.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> BearerToken:
        if (self.secret_key_ref is None) == (self.file is None):
            raise ValueError("set exactly one of secretKeyRef or file")
        return self


class BasicAuth(_Model):
    """HTTP basic authentication, both parts from Secrets."""

    username: SecretKeySelector = Field(description="The Secret key holding the user name.")
    password: SecretKeySelector = Field(description="The Secret key holding the password.")


class PrometheusTLS(_Model):
    """How the Prometheus server's certificate is verified (https URLs)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "!(has(self.caSecretRef) && has(self.caFile))",
                    "set either caSecretRef or caFile, not both",
                    ".caFile",
                ),
                _cel(
                    "!(has(self.insecureSkipVerify) && self.insecureSkipVerify && "
                    "(has(self.caSecretRef) || has(self.caFile)))",
                    "insecureSkipVerify turns verification off; it cannot be combined with a CA",
                    ".insecureSkipVerify",
                ),
            ]
        }
    )

    ca_secret_ref: SecretKeySelector | None = Field(
        default=None,
        description="The Secret key holding the PEM CA bundle that signed the server's certificate.",
    )
    ca_file: FilePath | None = Field(
        default=None,
        description="Absolute path of a PEM CA bundle in the operator's pod (under "
        "--prometheus-credentials-dir). Default: the system's trust store.",
    )
    insecure_skip_verify: bool = Field(
        default=False, description="Do not verify the server's certificate (testing only)."
    )

    @model_validator(mode="after")
    def _consistent(self) -> PrometheusTLS:
        if self.ca_secret_ref is not None and self.ca_file is not None:
            raise ValueError("set either caSecretRef or caFile, not both")
        if self.insecure_skip_verify and (self.ca_secret_ref is not None or self.ca_file is not None):
            raise ValueError("insecureSkipVerify turns verification off; it cannot be combined with a CA")
        return self


class PrometheusSource(_Model):
    """Where metrics are read from, and how to authenticate. Unset fields use the operator's default
    connection (`arbiter run --prometheus-url ...`, set by the chart)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "!(has(self.bearerToken) && has(self.basicAuth))",
                    "set either bearerToken or basicAuth, not both",
                    ".basicAuth",
                ),
                _cel(
                    "!has(self.headers) || self.headers.all(k, !k.matches('(?i)^authorization$'))",
                    "headers must not set Authorization: use bearerToken or basicAuth, which read a Secret",
                    ".headers",
                ),
                _cel(
                    '!has(self.headers) || self.headers.all(k, k.matches("' + HEADER_NAME_PATTERN + '"))',
                    "header names must be HTTP tokens (letters, digits and !#$%&'*+.^_`|~-)",
                    ".headers",
                ),
                _cel(
                    "!has(self.tls) || !has(self.url) || self.url.startsWith('https://')",
                    "tls needs an https:// url",
                    ".tls",
                ),
            ]
        }
    )

    url: (
        Annotated[str, Field(min_length=1, max_length=2048, pattern=r"^https?://[^/@\s]+([/?#]\S*)?$")] | None
    ) = Field(
        default=None,
        description="Base URL of the Prometheus HTTP API, e.g. http://prometheus.monitoring:9090 (no "
        "user:password@: use basicAuth). Default: the operator's --prometheus-url; the operator's own "
        "credentials are only ever sent to that URL.",
    )
    timeout: TimeoutDuration = Field(default="10s", description="Timeout of every query.")
    bearer_token: BearerToken | None = Field(
        default=None, description="Send a bearer token (e.g. a ServiceAccount token for a proxy)."
    )
    basic_auth: BasicAuth | None = Field(default=None, description="Send HTTP basic authentication.")
    tls: PrometheusTLS | None = Field(default=None, description="Certificate verification for https URLs.")
    headers: (
        Annotated[dict[str, Annotated[str, Field(max_length=4096)]], Field(max_length=MAX_HEADERS)] | None
    ) = Field(
        default=None,
        description="Extra HTTP headers, e.g. X-Scope-OrgID: tenant-a for Mimir, Cortex or Thanos "
        "tenants. Not for credentials (Authorization is refused): use bearerToken or basicAuth.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> PrometheusSource:
        if self.bearer_token is not None and self.basic_auth is not None:
            raise ValueError("set either bearerToken or basicAuth, not both")
        for name in self.headers or {}:
            if name.lower() == "authorization":
                raise ValueError(
                    "headers must not set Authorization: use bearerToken or basicAuth, which read a Secret"
                )
            if not re.fullmatch(HEADER_NAME_PATTERN, name):
                raise ValueError("header names must be HTTP tokens (letters, digits and !#$%&'*+.^_`|~-)")
        if self.tls is not None and self.url is not None and not self.url.startswith("https://"):
            raise ValueError("tls needs an https:// url")
        return self


_PROPORTION_RULE = _cel(
    "self.type != 'Proportion' || (has(self.successes) && has(self.trials))",
    "type Proportion needs the successes and trials queries",
)
_MEAN_RULE = _cel(
    "self.type != 'Mean' || (has(self.count) && has(self.sum) && has(self.sumSquares))",
    "type Mean needs the count, sum and sumSquares queries",
)


def _check_queries(kind: MetricType, queries: dict[str, str | None]) -> None:
    """The pydantic twin of _PROPORTION_RULE and _MEAN_RULE."""
    if kind is MetricType.PROPORTION and (queries["successes"] is None or queries["trials"] is None):
        raise ValueError("type Proportion needs the successes and trials queries")
    if kind is MetricType.MEAN and any(queries[k] is None for k in ("count", "sum", "sum_squares")):
        raise ValueError("type Mean needs the count, sum and sumSquares queries")


class RateQueries(_Model):
    """Cumulative counters for a guardrail judged statistically against the champion."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [_PROPORTION_RULE, _MEAN_RULE]})

    type: MetricType = Field(
        description="Proportion (successes/trials: e.g. errors/requests) or Mean (count/sum/sumSquares: e.g. "
        "latency observations)."
    )
    successes: Query | None = Field(
        default=None,
        description="Proportion: cumulative count of the events the guardrail watches (e.g. errors).",
    )
    trials: Query | None = Field(default=None, description="Proportion: cumulative count of all events.")
    count: Query | None = Field(default=None, description="Mean: cumulative observation count query.")
    sum: Query | None = Field(default=None, description="Mean: cumulative sum of values query.")
    sum_squares: Query | None = Field(
        default=None, description="Mean: cumulative sum of squared values query."
    )

    @model_validator(mode="after")
    def _queries(self) -> RateQueries:
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


class Guardrail(_Model):
    """A health check on every challenger.

    Absolute: the ``query`` value must stay inside [min, max]. Relative to the champion: the challenger
    may be worse by at most ``maxIncreaseOverChampion`` / ``maxDecreaseFromChampion`` (absolute units).
    With ``rate`` the relative check is a one-sided always-valid test for harm beyond that margin, so
    noise alone never breaches it and real harm does at any look; without ``rate`` it compares the
    ``query`` values directly.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "has(self.min) || has(self.max) || has(self.maxIncreaseOverChampion) || "
                    "has(self.maxDecreaseFromChampion)",
                    "a guardrail needs min, max, maxIncreaseOverChampion or maxDecreaseFromChampion",
                ),
                _cel(
                    "!has(self.min) || !has(self.max) || self.min <= self.max",
                    "min must not exceed max",
                    ".min",
                ),
                _cel(
                    "has(self.query) || (!has(self.min) && !has(self.max) && has(self.rate))",
                    "query is required for min/max bounds and for relative bounds without rate",
                    ".query",
                ),
                _cel(
                    "!has(self.rate) || has(self.maxIncreaseOverChampion) || has(self.maxDecreaseFromChampion)",
                    "rate needs maxIncreaseOverChampion or maxDecreaseFromChampion",
                    ".rate",
                ),
            ]
        }
    )

    name: VariantName = Field(description="Guardrail name, unique in the experiment.")
    query: Query | None = Field(
        default=None,
        description="PromQL query returning one value per variant; {{experiment}}, {{namespace}} and "
        "{{variant}} are substituted.",
    )
    min: float | None = Field(default=None, description="Lowest healthy value of query.")
    max: float | None = Field(default=None, description="Highest healthy value of query.")
    max_increase_over_champion: float | None = Field(
        default=None,
        ge=0,
        description="The challenger may exceed the champion by at most this much (absolute, e.g. 0.005 = "
        "half a point of error rate).",
    )
    max_decrease_from_champion: float | None = Field(
        default=None, ge=0, description="The challenger may fall below the champion by at most this much."
    )
    rate: RateQueries | None = Field(
        default=None,
        description="Judge the relative bound statistically from these cumulative counters instead of query.",
    )
    failure_limit: int = Field(
        default=1, ge=1, le=1000, description="Consecutive breaches that trigger a rollback."
    )
    critical: bool = Field(default=False, description="Roll back on the first breach, ignoring failureLimit.")

    @model_validator(mode="after")
    def _bounds(self) -> Guardrail:
        relative = self.max_increase_over_champion is not None or self.max_decrease_from_champion is not None
        if self.min is None and self.max is None and not relative:
            raise ValueError("a guardrail needs min, max, maxIncreaseOverChampion or maxDecreaseFromChampion")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min must not exceed max")
        if self.query is None and (self.min is not None or self.max is not None or self.rate is None):
            raise ValueError("query is required for min/max bounds and for relative bounds without rate")
        if self.rate is not None and not relative:
            raise ValueError("rate needs maxIncreaseOverChampion or maxDecreaseFromChampion")
        return self

    @property
    def relative(self) -> bool:
        """True when the guardrail compares the challenger with the champion."""
        return self.max_increase_over_champion is not None or self.max_decrease_from_champion is not None


class Metric(_Model):
    """An outcome metric compared between champion and challengers with a significance test."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [_PROPORTION_RULE, _MEAN_RULE]})

    name: VariantName = Field(description="Metric name, unique in the experiment.")
    type: MetricType = Field(
        description="Proportion (successes/trials queries) or Mean (count/sum/sumSquares queries)."
    )
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
    minimum_detectable_effect: float = Field(
        gt=0,
        le=10,
        description="Smallest relative change worth detecting (0.05 = 5%); sizes the test and the sequential "
        "mixing variance.",
    )

    @model_validator(mode="after")
    def _queries(self) -> Metric:
        if self.type is MetricType.PROPORTION and (self.successes is None or self.trials is None):
            raise ValueError("type Proportion needs the successes and trials queries")
        if self.type is MetricType.MEAN and (
            self.count is None or self.sum is None or self.sum_squares is None
        ):
            raise ValueError("type Mean needs the count, sum and sumSquares queries")
        return self


class TestConfig(_Model):
    """The significance test."""

    __test__ = False  # not a pytest class

    method: TestMethod = Field(
        default=TestMethod.SEQUENTIAL,
        description="Sequential (always-valid p-values, safe to look every tick), FixedHorizon (decide only at "
        "the planned sample size) or GroupSequential (alpha spending).",
    )
    alpha: float = Field(
        default=0.05, gt=0, lt=1, description="Family-wise false positive rate, 0 < alpha < 1."
    )
    power: float = Field(
        default=0.8, gt=0, lt=1, description="Power at the minimum detectable effect, 0 < power < 1."
    )


class SampleRatioMismatch(_Model):
    """The check that observed traffic matches the configured split."""

    method: SampleRatioMismatchMethod = Field(
        default=SampleRatioMismatchMethod.SEQUENTIAL,
        description="Sequential (default): an anytime-valid multinomial test, so a correct split is paused "
        "with probability at most pValueThreshold however long the experiment runs. ChiSquare: Pearson's "
        "chi-square at every tick (each look alone is exact, but repeated looks raise false pauses).",
    )
    p_value_threshold: float = Field(
        default=0.001, gt=0, lt=1, description="Pause when the SRM p-value falls below this."
    )


class ShadowAnalysis(_Model):
    """How long a shadow experiment is judged before it concludes."""

    min_duration: HoldDuration = Field(default="10m", description="Judge the shadow at least this long.")
    min_samples: int = Field(
        default=0,
        ge=0,
        le=MAX_SAMPLES,
        description="...and until the challenger has at least this many samples (see sampleCount).",
    )
    continue_as_canary: bool = Field(
        default=False,
        description="When the shadow is judged safe, go on as a canary through spec.steps instead of concluding.",
    )


class Analysis(_Model):
    """How and from where the experiment is judged."""

    interval: IntervalDuration = Field(
        default="30s", description="How often metrics are read and a decision is made."
    )
    prometheus: PrometheusSource = Field(
        default_factory=PrometheusSource,
        json_schema_extra=_OBJECT_DEFAULT,
        description="The Prometheus server to query; empty for the operator's default connection.",
    )
    guardrails: Annotated[list[Guardrail], Field(max_length=MAX_METRICS)] = Field(
        default_factory=list, description="Per-variant health checks; a breach counts toward a rollback."
    )
    primary: Metric | None = Field(
        default=None, description="The metric that decides promotion or rollback. Required in mode ABTest."
    )
    secondary: Annotated[list[Metric], Field(max_length=MAX_METRICS)] = Field(
        default_factory=list,
        description="Metrics reported with multiplicity-corrected p-values; they never decide alone.",
    )
    sample_count: Query | None = Field(
        default=None,
        description="Cumulative per-variant sample count, for minSamples and the sample-ratio check. Default: "
        "the primary metric's trials (Proportion) or count (Mean).",
    )
    consecutive_error_limit: int = Field(
        default=3,
        ge=1,
        le=1000,
        description="Consecutive ticks with a failing query before the experiment pauses (condition "
        "MetricsAvailable=False names the query); it resumes by itself when the data returns.",
    )
    shadow: ShadowAnalysis = Field(
        default_factory=ShadowAnalysis,
        json_schema_extra=_OBJECT_DEFAULT,
        description="Mode Shadow: how long to judge before concluding.",
    )
    test: TestConfig = Field(
        default_factory=TestConfig, json_schema_extra=_OBJECT_DEFAULT, description="The significance test."
    )
    sample_ratio_mismatch: SampleRatioMismatch = Field(
        default_factory=SampleRatioMismatch,
        json_schema_extra=_OBJECT_DEFAULT,
        description="Sample-ratio mismatch check.",
    )


class DecisionPolicy(_Model):
    """What to do with the verdict."""

    on_win: OnWin = Field(default=OnWin.PROMOTE, description="Promote, or Pause for a manual promote.")
    on_loss: OnLoss = Field(default=OnLoss.ROLLBACK, description="Rollback, or Pause for a human to look.")
    max_duration: LifetimeDuration = Field(default="168h", description="Longest the experiment may run.")
    on_timeout: OnTimeout = Field(
        default=OnTimeout.KEEP_CHAMPION,
        description="KeepChampion (champion 100%, phase Concluded) or Pause when maxDuration passes.",
    )


class GateType(StrEnum):
    """When a webhook gate is asked (Flagger's pre-rollout, rollout, confirm-promotion and rollback hooks)."""

    PRE_ROLLOUT = "preRollout"
    STEP = "step"
    CONFIRM_PROMOTION = "confirmPromotion"
    POST_ROLLBACK = "postRollback"


class GateFailure(StrEnum):
    """What a failing gate (non-2xx, timeout, connection error) does."""

    HOLD = "Hold"
    ROLLBACK = "Rollback"


MAX_GATES = 20
MAX_GATE_METADATA = 20
GateTimeout = Annotated[str, _duration_schema("100ms", "1m"), _duration_between("100ms", "1m")]


class Gate(_Model):
    """A webhook asked before a traffic change (or told after a rollback); HTTP 2xx passes.

    The gate receives a JSON POST describing the experiment and the pending action (docs/rollout.md).
    """

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel("has(self.url) != has(self.secretKeyRef)", "set exactly one of url or secretKeyRef"),
                _cel(
                    "self.type != 'postRollback' || self.onFailure == 'Hold'",
                    "a postRollback gate runs after the rollback and only reports: onFailure must be Hold",
                    ".onFailure",
                ),
            ]
        }
    )

    name: VariantName = Field(description="The gate's name (a DNS label), unique in spec.gates.")
    type: GateType = Field(
        description="preRollout (before any traffic goes to a challenger), step (before each step change), "
        "confirmPromotion (before an automatic promotion) or postRollback (once, after a rollback; "
        "the result is only reported)."
    )
    url: Annotated[str, Field(min_length=8, max_length=2048, pattern=r"^https?://[^\s]+$")] | None = Field(
        default=None, description="The http(s) URL the gate's JSON is POSTed to."
    )
    secret_key_ref: SecretKeySelector | None = Field(
        default=None,
        description="A Secret key holding the URL (e.g. one carrying a token). The operator needs `get` on "
        "that Secret (see docs/operations.md).",
    )
    timeout: GateTimeout = Field(
        default="10s", description="How long one call may take (100ms to 1m); a timeout fails the gate."
    )
    metadata: (
        Annotated[dict[str, Annotated[str, Field(max_length=1024)]], Field(max_length=MAX_GATE_METADATA)]
        | None
    ) = Field(default=None, description="Free-form strings passed to the gate in the payload's metadata.")
    on_failure: GateFailure = Field(
        default=GateFailure.HOLD,
        description="Hold (the experiment waits, asking again every interval; maxDuration still applies) or "
        "Rollback (all traffic back to the champion).",
    )

    @model_validator(mode="after")
    def _one_target(self) -> Gate:
        if (self.url is None) == (self.secret_key_ref is None):
            raise ValueError("set exactly one of url or secretKeyRef")
        if self.type is GateType.POST_ROLLBACK and self.on_failure is not GateFailure.HOLD:
            raise ValueError(
                "a postRollback gate runs after the rollback and only reports: onFailure must be Hold"
            )
        return self


class NotificationSeverity(StrEnum):
    """How loud a notification is; a receiver sends those at or above its minimum."""

    INFO = "Info"
    WARNING = "Warning"
    CRITICAL = "Critical"


class NotificationEvent(StrEnum):
    """A transition receivers can be told about (docs/notifications.md maps each to its severity)."""

    STARTED = "Started"
    ADVANCED = "Advanced"
    PAUSED = "Paused"
    RESUMED = "Resumed"
    PROMOTED = "Promoted"
    ROLLED_BACK = "RolledBack"
    CONCLUDED = "Concluded"
    SAMPLE_RATIO_MISMATCH = "SampleRatioMismatch"
    METRICS_UNAVAILABLE = "MetricsUnavailable"
    METRICS_RECOVERED = "MetricsRecovered"
    FAILED = "Failed"


class NotificationReceiverType(StrEnum):
    """What a receiver speaks."""

    WEBHOOK = "Webhook"
    SLACK = "Slack"
    ALERTMANAGER = "Alertmanager"


class NotificationReceiver(_Model):
    """A receiver of this experiment's notifications: one the operator is configured with, or its own."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "has(self.type) == has(self.urlSecretRef)",
                    "set type and urlSecretRef together (an own receiver), or neither (the operator's "
                    "receiver of that name)",
                )
            ]
        }
    )

    name: VariantName = Field(
        description="Without type: the name of a receiver configured in the operator (the chart's "
        "notifications.receivers). With type: this receiver's own name."
    )
    type: NotificationReceiverType | None = Field(
        default=None, description="Webhook (JSON), Slack (incoming webhook) or Alertmanager (its v2 API)."
    )
    url_secret_ref: SecretKeySelector | None = Field(
        default=None,
        description="The Secret key holding the receiver's URL (a Slack webhook URL is a credential); the "
        "operator needs `get` on that Secret (docs/notifications.md).",
    )

    @model_validator(mode="after")
    def _own_or_referenced(self) -> NotificationReceiver:
        if (self.type is None) != (self.url_secret_ref is None):
            raise ValueError(
                "set type and urlSecretRef together (an own receiver), or neither (the operator's "
                "receiver of that name)"
            )
        return self


class Notifications(_Model):
    """Who hears about this experiment's transitions."""

    receivers: Annotated[list[NotificationReceiver], Field(max_length=10)] = Field(
        default_factory=list,
        description="Receivers told about this experiment (besides the operator's "
        "receivers for all experiments).",
    )
    min_severity: NotificationSeverity = Field(
        default=NotificationSeverity.INFO,
        description="Send transitions at or above this severity to the receivers listed here: Info, "
        "Warning or Critical.",
    )
    events: Annotated[list[NotificationEvent], Field(max_length=16)] = Field(
        default_factory=list,
        description="Send only these transitions to the receivers listed here; empty means all.",
    )


_SPEC_RULES: list[JsonValue] = [
    _cel(
        "self.challengers.all(c, c.name != self.champion.name)",
        "a challenger's name must differ from the champion's",
        ".challengers",
    ),
    _cel(
        "self.mode != 'Canary' || (has(self.steps) && size(self.steps) > 0)",
        "mode Canary needs at least one step",
        ".steps",
    ),
    _cel(
        "!has(self.steps) || [" + ",".join(str(i) for i in range(MAX_STEPS - 1)) + "].all(i, "
        "i >= size(self.steps) - 1 || self.steps[i].weight < self.steps[i + 1].weight)",
        "step weights must be strictly increasing",
        ".steps",
    ),
    _cel(
        "self.mode != 'Shadow' || self.routing.provider != 'Replicas'",
        "mode Shadow needs a provider that can mirror traffic (Router, GatewayAPI or Istio), not Replicas",
        ".routing.provider",
    ),
    _cel(
        "self.mode != 'Shadow' || size(self.challengers) == 1",
        "mode Shadow judges one challenger at a time (one mirror target); list one challenger",
        ".challengers",
    ),
    _cel(
        "self.mode != 'ABTest' || has(self.analysis.primary)",
        "mode ABTest needs spec.analysis.primary",
        ".analysis",
    ),
    _cel(
        "self.routing.provider == 'Replicas' || "
        "(has(self.champion.service) && self.challengers.all(c, has(c.service)))",
        "every variant needs a service unless the provider is Replicas",
        ".routing.provider",
    ),
]


class ModelExperimentSpec(_Model):
    """The desired experiment: champion, challengers, traffic, analysis and decision policy."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": _SPEC_RULES})

    mode: Mode = Field(
        default=Mode.CANARY,
        description="Canary (weighted steps), Shadow (mirrored traffic, challenger serves nobody) or ABTest "
        "(fixed sticky split).",
    )
    champion: Variant = Field(description="The model in production.")
    challengers: Annotated[list[Variant], Field(min_length=1, max_length=MAX_CHALLENGERS)] = Field(
        description="One or more challengers; names unique and never equal to the champion's."
    )
    routing: Routing = Field(description="What carries the traffic.")
    steps: Annotated[list[Step], Field(max_length=MAX_STEPS)] | None = Field(
        default=None,
        description="Canary steps: challenger traffic share in percent, strictly increasing, 0 < weight <= 100. "
        "ABTest uses the last step's weight (50 when unset).",
    )
    analysis: Analysis = Field(description="Metrics, guardrails and the significance test.")
    decision: DecisionPolicy = Field(
        default_factory=DecisionPolicy,
        json_schema_extra=_OBJECT_DEFAULT,
        description="What to do with the verdict.",
    )
    paused: bool = Field(default=False, description="Freeze the experiment where it is; set false to resume.")
    notifications: Notifications | None = Field(
        default=None,
        description="Notify receivers of transitions (started, advanced, paused, promoted, ...).",
    )
    gates: Annotated[list[Gate], Field(max_length=MAX_GATES)] | None = Field(
        default=None,
        description="Webhook gates asked before the first step, each step change and promotion, and told "
        "after a rollback (docs/rollout.md, Gates).",
    )
    dry_run: bool = Field(
        default=False,
        description="Analyse and decide as usual, record what would have been done (status.dryRun, "
        "Events), but never change traffic: the live split is read, never written.",
    )

    @model_validator(mode="after")
    def _cross_field(self) -> ModelExperimentSpec:
        names = [c.name for c in self.challengers]
        if self.champion.name in names:
            raise ValueError("a challenger's name must differ from the champion's")
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"challenger names must be unique: {', '.join(duplicates)}")
        if self.mode is Mode.CANARY and not self.steps:
            raise ValueError("mode Canary needs at least one step")
        weights = [s.weight for s in self.steps or []]
        if any(a >= b for a, b in itertools.pairwise(weights)):
            raise ValueError("step weights must be strictly increasing")
        if self.mode is Mode.SHADOW and self.routing.provider is RoutingProviderName.REPLICAS:
            raise ValueError(
                "mode Shadow needs a provider that can mirror traffic (Router, GatewayAPI or Istio), not Replicas"
            )
        if self.mode is Mode.SHADOW and len(self.challengers) != 1:
            raise ValueError(
                "mode Shadow judges one challenger at a time (one mirror target); list one challenger"
            )
        if self.mode is Mode.AB_TEST and self.analysis.primary is None:
            raise ValueError("mode ABTest needs spec.analysis.primary")
        if self.routing.provider is not RoutingProviderName.REPLICAS:
            missing = [v.name for v in self.variants if v.service is None]
            if missing:
                raise ValueError(
                    f"every variant needs a service unless the provider is Replicas (missing: {', '.join(missing)})"
                )
        gate_names = [g.name for g in self.gates or []]
        gate_dupes = sorted({n for n in gate_names if gate_names.count(n) > 1})
        if gate_dupes:
            raise ValueError(f"gate names must be unique: {', '.join(gate_dupes)}")
        for kind, items in (
            ("guardrail", self.analysis.guardrails),
            ("secondary metric", self.analysis.secondary),
        ):
            item_names = [g.name for g in items]
            dupes = sorted({n for n in item_names if item_names.count(n) > 1})
            if dupes:
                raise ValueError(f"{kind} names must be unique: {', '.join(dupes)}")
        return self

    @property
    def variants(self) -> list[Variant]:
        """The champion first, then the challengers in spec order."""
        return [self.champion, *self.challengers]


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(_Model):
    """A standard metav1.Condition."""

    model_config = ConfigDict(extra="ignore")

    type: Annotated[str, Field(max_length=316)] = Field(description="Condition type, e.g. Ready.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: Annotated[str, Field(max_length=1024)] = Field(default="", description="CamelCase reason.")
    message: Annotated[str, Field(max_length=32768)] = Field(default="", description="Human readable detail.")
    last_transition_time: str | None = Field(
        default=None, description="When the status last changed (RFC 3339)."
    )
    observed_generation: int | None = Field(
        default=None, description="The generation the condition is about."
    )


class Transition(_Model):
    """One entry of the phase/step history."""

    model_config = ConfigDict(extra="ignore")

    time: str = Field(description="When it happened (RFC 3339).")
    from_: str = Field(alias="from", description="Phase (and step) before.")
    to: str = Field(description="Phase (and step) after.")
    reason: str = Field(default="", description="Why.")


class DecisionRecord(_Model):
    """The last decision and the human reason behind it."""

    model_config = ConfigDict(extra="ignore")

    outcome: str = Field(description="Wait, Hold, Advance, Promote, Rollback, Pause, Resume or Conclude.")
    reason: str = Field(default="", description="Why, with the numbers behind it.")
    time: str | None = Field(default=None, description="When (RFC 3339).")
    winner: str | None = Field(
        default=None, description="The variant that got all traffic, on a final decision."
    )
    dry_run: bool | None = Field(
        default=None, description="True when made by a dry run (spec.dryRun): nothing was routed."
    )


class GuardrailState(_Model):
    """One guardrail on one challenger at the last tick."""

    model_config = ConfigDict(extra="ignore")

    name: str = Field(description="Guardrail name.")
    variant: str = Field(description="The challenger judged.")
    value: float | None = Field(default=None, description="The challenger's value.")
    champion_value: float | None = Field(
        default=None, description="The champion's value, for relative bounds."
    )
    estimate: float | None = Field(
        default=None, description="Estimated harm (challenger minus champion, worse-way)."
    )
    p_value: float | None = Field(
        default=None, description="Always-valid p-value of the harm test (rate guardrails)."
    )
    breaches: int = Field(default=0, description="Consecutive breaches so far.")
    breached: bool = Field(default=False, description="Breached at the last tick.")
    reason: str | None = Field(default=None, description="Human explanation with the numbers.")


class TrafficStatus(_Model):
    """Whether the data plane carries the weights the engine set (read back from the provider)."""

    model_config = ConfigDict(extra="ignore")

    verified: str = Field(description="Yes, No, CannotTell or Finalized.")
    reason: str = Field(default="", description="What was observed.")
    weights: dict[str, int] | None = Field(default=None, description="The weights that were verified.")
    overwrites: int | None = Field(
        default=None,
        ge=0,
        description="Ticks in a row that found the route changed by someone else (absent when in place).",
    )


class LeadingChallenger(_Model):
    """The challenger ahead on the primary metric, for `kubectl get mexp -o wide` and dashboards."""

    model_config = ConfigDict(extra="ignore")

    variant: str = Field(description="The challenger: the winner of a final decision, else the best lift.")
    relative_lift: float | None = Field(
        default=None, description="Its relative lift over the champion (0.05 = +5%)."
    )
    p_value: float | None = Field(default=None, description="Its p-value on the primary metric.")


class GateResult(_Model):
    """The last answer of one webhook gate (kept so a restart never asks a passed gate again)."""

    model_config = ConfigDict(extra="ignore")

    name: str = Field(description="The gate's name.")
    type: str = Field(description="preRollout, step, confirmPromotion or postRollback.")
    passed: bool = Field(description="HTTP 2xx.")
    step: int | None = Field(default=None, description="For a step gate: the step it was asked about.")
    code: int | None = Field(default=None, description="The HTTP status (none after a timeout or error).")
    message: str = Field(default="", description="What happened, e.g. the error or the answer's start.")
    time: str | None = Field(default=None, description="When it answered (RFC 3339).")
    attempts: int = Field(default=1, description="Calls for this action so far.")
    action: str = Field(default="", description="The pending action it was asked about.")
    target: str | None = Field(
        default=None, description="For a confirmPromotion gate: the challenger to be promoted."
    )


class DryRunStatus(_Model):
    """What a dry run would have done (spec.dryRun): the traffic it would have routed, the split it saw."""

    model_config = ConfigDict(extra="ignore")

    would_route: dict[str, int] | None = Field(
        default=None, description="The weights the experiment would have routed after the last tick."
    )
    observed_weights: dict[str, int] | None = Field(
        default=None, description="The live split read from the routing provider (never written)."
    )
    observed: str = Field(default="", description="How the live split was read, or why it could not be.")
    would_have: str | None = Field(
        default=None, description="The last traffic change it would have made, e.g. 'promoted v2'."
    )


class DecisionForecast(_Model):
    """When the primary metric's test is expected to decide for the leading challenger (docs/statistics.md)."""

    model_config = ConfigDict(extra="ignore")

    variant: str = Field(description="The challenger forecast: a winner, else the best estimate still in.")
    method: str | None = Field(
        default=None, description="The test: Sequential, GroupSequential or FixedHorizon."
    )
    seconds_to_decision: float | None = Field(
        default=None,
        description="Median seconds until a final verdict at the observed traffic if the true effect is the MDE.",
    )
    decision_in: str | None = Field(
        default=None, description="secondsToDecision for people: ~40s, ~12m, ~3h."
    )
    samples_control: float | None = Field(default=None, description="Further champion samples in that time.")
    samples_treatment: float | None = Field(
        default=None, description="Further challenger samples in that time."
    )
    conditional_power: float | None = Field(
        default=None, description="P(Win) if the true effect is the observed one, given the data so far."
    )
    mde: float | None = Field(
        default=None, description="The MDE in the metric's units (towards improvement)."
    )
    observed_effect: float | None = Field(
        default=None, description="The observed difference in the metric's units (positive = better)."
    )
    rate_control: float | None = Field(default=None, description="Champion units per second at this split.")
    rate_treatment: float | None = Field(
        default=None, description="Challenger units per second at this split."
    )
    horizon_seconds: float | None = Field(default=None, description="The latest look the forecast places.")
    summary: str | None = Field(default=None, description="The forecast in one sentence.")
    reason: str | None = Field(default=None, description="Why there is no forecast.")
    rate_basis: dict[str, Any] | None = Field(
        default=None, description="Counts when the current split was first seen (the rate's start); internal."
    )
    computed_at: str | None = Field(
        default=None, description="When the forecast was computed (every 60 s at most)."
    )


class ModelExperimentStatus(_Model):
    """What the operator observed and decided. Everything needed to resume lives here."""

    model_config = ConfigDict(extra="ignore", frozen=False)

    phase: Phase | None = Field(
        default=None, description="Pending, Progressing, Paused, Promoted, RolledBack, Concluded or Failed."
    )
    observed_generation: int | None = Field(default=None, description="The spec generation last acted on.")
    current_step: int | None = Field(default=None, description="Index of the current step (0-based).")
    weights: dict[str, int] | None = Field(default=None, description="Traffic percent per variant.")
    challenger_weight: int | None = Field(default=None, description="Total challenger traffic percent.")
    started_at: str | None = Field(default=None, description="When the experiment started progressing.")
    step_started_at: str | None = Field(default=None, description="When the current step started.")
    message: str | None = Field(default=None, description="Human summary of the current state.")
    decision: DecisionRecord | None = Field(default=None, description="The last decision.")
    history: Annotated[list[Transition], Field(max_length=MAX_HISTORY)] | None = Field(
        default=None, description=f"The last {MAX_HISTORY} transitions."
    )
    conditions: list[Condition] | None = Field(default=None, description="Standard conditions.")
    pause_reason: str | None = Field(
        default=None,
        description="Why the experiment is Paused: Spec, SampleRatioMismatch, MetricsUnavailable, "
        "AwaitingPromotion, Loss or Timeout.",
    )
    guardrails: list[GuardrailState] | None = Field(
        default=None, description="Guardrail states per challenger."
    )
    analysis: dict[str, Any] | None = Field(
        default=None,
        description="The numbers behind the decision: primary (per challenger: n, values, difference, lift, CI, "
        "p-value, verdict; per variant: n, value and its own interval), secondary (Holm-adjusted p-values) and srm (method, p-value, observed and expected "
        "counts).",
    )
    traffic: TrafficStatus | None = Field(
        default=None, description="Whether the data plane carries the weights."
    )
    leading: LeadingChallenger | None = Field(
        default=None,
        description="The challenger ahead on the primary metric, with its lift and p-value (a summary of "
        "analysis.primary, written by the operator).",
    )
    forecast: DecisionForecast | None = Field(
        default=None,
        description="When the primary metric is expected to decide for the leading challenger, and P(win).",
    )
    handled_actions: dict[str, str] | None = Field(
        default=None, description="The arbiter.dev/<action> annotation values already acted on."
    )
    gates: list[GateResult] | None = Field(
        default=None, description="The last answer of each webhook gate (spec.gates)."
    )
    dry_run: DryRunStatus | None = Field(
        default=None, description="What a dry run (spec.dryRun) would have done, and the live split it read."
    )
    engine: dict[str, Any] | None = Field(
        default=None,
        description="The engine's memory between ticks (counter baselines, sequential test state); internal.",
    )


def parse_spec(spec: dict[str, Any]) -> ModelExperimentSpec:
    """Validate a raw ``spec`` mapping (as stored in the API server) into the typed spec.

    Raises:
        pydantic.ValidationError: with a field path for every problem.
    """
    return ModelExperimentSpec.model_validate(spec)
