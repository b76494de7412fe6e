"""The router's `routes.yaml` format: a pydantic model, a parser and a serializer.

This module is the public contract between the `Router` routing provider (which writes the
ConfigMap) and `arbiter router` (which reads it). It imports no aiohttp, so the operator can
import it cheaply. The format is documented in docs/router.md.

Example::

    experiment: fraud-v2
    variants:
      - {name: v1, url: http://127.0.0.1:9001, weight: 90}
      - {name: v2, url: http://127.0.0.1:9002, weight: 10}
    stickiness: {header: x-user-id}
    shadow: {variant: v2, percent: 100, timeoutSeconds: 1}
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

__all__ = [
    "Limits",
    "RouterConfig",
    "RouterConfigError",
    "Shadow",
    "ShadowCompare",
    "Stickiness",
    "Variant",
    "load_routes_file",
    "parse_json_pointer",
    "parse_routes_yaml",
]

# RFC 7230 token characters: what an HTTP header or cookie name may contain.
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_VARIANT_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")


class RouterConfigError(ValueError):
    """A `routes.yaml` document that cannot be used; the message says what is wrong and where."""


class _Model(BaseModel):
    # camelCase on the wire (like the Kubernetes objects it sits in), snake_case in Python;
    # unknown keys are errors so a typo never silently turns a feature off. YAML spells infinity
    # and NaN (`.inf`, `.nan`); no number here means anything then (an infinite weight would make
    # every sticky score 0), so they are refused.
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        str_strip_whitespace=True,
        allow_inf_nan=False,
    )


class Variant(_Model):
    """One model server that can serve (or shadow) requests.

    Args:
        name: the name reported in `x-arbiter-variant` and in metric labels.
        url: base URL `http(s)://host:port[/prefix]`; the request path is appended to it.
        weight: relative share of served traffic; weights need not sum to 100, 0 serves nothing.
    """

    name: str
    url: str
    weight: float = Field(ge=0)

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _VARIANT_NAME.match(value):
            raise ValueError(
                "must be 1-63 letters, digits, '.', '_' or '-', starting and ending with a letter or digit"
            )
        return value

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an absolute http:// or https:// URL with a host")
        if parts.query or parts.fragment:
            raise ValueError("must not carry a query or fragment")
        try:
            parts.port  # noqa: B018  (raises on a malformed port)
        except ValueError as exc:
            raise ValueError(f"has an invalid port: {exc}") from None
        return value.rstrip("/")

    @field_serializer("weight")
    def _dump_weight(self, weight: float) -> float | int:
        # Keep `weight: 90` as written rather than `90.0`.
        return int(weight) if weight.is_integer() else weight


class Stickiness(_Model):
    """Where the sticky key comes from: exactly one of a request header or a cookie."""

    header: str | None = None
    cookie: str | None = None

    @field_validator("header")
    @classmethod
    def _check_header(cls, value: str | None) -> str | None:
        if value is not None and not _TOKEN.match(value):
            raise ValueError("is not a valid HTTP header name")
        return value.lower() if value is not None else None

    @field_validator("cookie")
    @classmethod
    def _check_cookie(cls, value: str | None) -> str | None:
        if value is not None and not _TOKEN.match(value):
            raise ValueError("is not a valid cookie name")
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> Stickiness:
        if (self.header is None) == (self.cookie is None):
            raise ValueError("stickiness needs exactly one of `header` or `cookie`")
        return self


MAX_POINTERS = 32


def parse_json_pointer(pointer: str) -> tuple[str, ...]:
    """Split an RFC 6901 JSON pointer into its unescaped reference tokens (``""`` is the whole document).

    Raises:
        ValueError: the pointer is neither empty nor starts with ``/``, or has a bad ``~`` escape.
    """
    if pointer == "":
        return ()
    if not pointer.startswith("/"):
        raise ValueError(f"JSON pointer {pointer!r} must be empty or start with '/'")
    tokens = []
    for raw in pointer[1:].split("/"):
        if re.search(r"~(?![01])", raw):
            raise ValueError(
                f"JSON pointer {pointer!r}: '~' must be followed by 0 or 1 (~0 is '~', ~1 is '/')"
            )
        tokens.append(raw.replace("~1", "/").replace("~0", "~"))
    return tuple(tokens)


def _check_pointers(pointers: tuple[str, ...]) -> tuple[str, ...]:
    if len(set(pointers)) != len(pointers):
        raise ValueError("lists a JSON pointer twice")
    for pointer in pointers:
        parse_json_pointer(pointer)
    return pointers


class ShadowCompare(_Model):
    """How a shadow response is compared with the served one.

    Two answers agree when their status codes are equal and the compared parts of their JSON bodies are
    equal (numbers within ``numericTolerance``). Model servers put request ids, model names and versions
    in every answer, so comparing whole bodies calls every answer a disagreement: name what to compare
    (``fields``) or what to leave out (``ignore``).

    Args:
        numeric_tolerance: `numericTolerance`; two JSON numbers agree when
            `|a - b| <= numericTolerance` (absolute). 0 means exact equality.
        fields: JSON pointers (RFC 6901) of the parts compared; all must agree, and a pointer missing from
            either answer is a disagreement (a typo must not make everything agree). Empty: the whole body.
        ignore: JSON pointers removed from both answers before comparing (missing ones are fine).
        score: JSON pointer of the model's score (a number, or a list of numbers); its absolute
            difference between the answers (the largest, for a list) is observed in
            `arbiter_router_shadow_score_delta`. It does not decide agreement unless also in `fields`.
    """

    numeric_tolerance: float = Field(default=0.0, ge=0)
    fields: tuple[str, ...] = Field(default=(), max_length=MAX_POINTERS)
    ignore: tuple[str, ...] = Field(default=(), max_length=MAX_POINTERS)
    score: str | None = None

    @field_validator("fields", "ignore")
    @classmethod
    def _check_pointer_list(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _check_pointers(value)

    @field_validator("score")
    @classmethod
    def _check_score(cls, value: str | None) -> str | None:
        if value is not None:
            if value == "":
                raise ValueError("must point into the answer (a number or a list of numbers), not be empty")
            parse_json_pointer(value)
        return value


class Shadow(_Model):
    """Mirror a share of requests to one variant and compare its answers with the served ones.

    The shadow variant never serves users: requests are served by the other variants.

    Args:
        variant: name of the variant that receives the mirrored requests.
        percent: share of requests mirrored, 0-100.
        timeout_seconds: `timeoutSeconds`; the mirrored request's own time limit.
        max_concurrent: `maxConcurrent`; mirrored requests in flight at most; more are dropped
            and counted in `arbiter_router_shadow_dropped_total`.
        compare: how bodies are compared.
    """

    variant: str
    percent: float = Field(default=100.0, ge=0, le=100)
    timeout_seconds: float = Field(default=1.0, gt=0, le=300)
    max_concurrent: int = Field(default=100, ge=1, le=100_000)
    compare: ShadowCompare = ShadowCompare()

    @field_serializer("percent")
    def _dump_percent(self, percent: float) -> float | int:
        return int(percent) if percent.is_integer() else percent


class Limits(_Model):
    """Request limits.

    Args:
        max_body_bytes: `maxBodyBytes`; larger request bodies get 413 without reaching a model.
        upstream_timeout_seconds: `upstreamTimeoutSeconds`; a served request's total time limit
            per upstream attempt (connect, send, wait, read); on expiry the user gets 504.
    """

    max_body_bytes: int = Field(default=1024 * 1024, ge=0, le=1024 * 1024 * 1024)
    upstream_timeout_seconds: float = Field(default=10.0, gt=0, le=3600)


class RouterConfig(_Model):
    """A complete `routes.yaml` document.

    Args:
        experiment: experiment name; a metric label and the salt of the sticky hash.
        variants: the model servers, in order; the first that is not the shadow is the champion
            unless `champion` names one.
        champion: the variant that absorbs a failed challenger request (retried once on it).
        stickiness: where the sticky key comes from; absent means random weighted assignment.
        shadow: optional mirroring to one variant.
        limits: request body and upstream time limits.
    """

    experiment: str = Field(min_length=1, max_length=253)
    variants: tuple[Variant, ...] = Field(min_length=1)
    champion: str | None = None
    stickiness: Stickiness | None = None
    shadow: Shadow | None = None
    limits: Limits = Limits()

    @model_validator(mode="after")
    def _consistent(self) -> RouterConfig:
        names = [v.name for v in self.variants]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"variant names must be unique; repeated: {', '.join(duplicates)}")
        if self.shadow is not None and self.shadow.variant not in names:
            raise ValueError(f"shadow.variant {self.shadow.variant!r} is not one of the variants {names}")
        if self.champion is not None:
            if self.champion not in names:
                raise ValueError(f"champion {self.champion!r} is not one of the variants {names}")
            if self.shadow is not None and self.champion == self.shadow.variant:
                raise ValueError("the champion cannot also be the shadow variant")
        served = self.served_variants
        if not served:
            raise ValueError("no variant is left to serve requests (all are the shadow)")
        if sum(v.weight for v in served) <= 0:
            raise ValueError("the variants that serve requests have a total weight of 0")
        return self

    @property
    def served_variants(self) -> tuple[Variant, ...]:
        """The variants that serve users: every variant except the shadow one."""
        shadow = self.shadow.variant if self.shadow is not None else None
        return tuple(v for v in self.variants if v.name != shadow)

    @property
    def champion_name(self) -> str:
        """The explicit champion, else the first variant that is not the shadow."""
        return self.champion if self.champion is not None else self.served_variants[0].name

    def variant(self, name: str) -> Variant:
        """Return the variant called `name`; raise KeyError if there is none."""
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(name)

    def to_yaml(self) -> str:
        """Serialize to `routes.yaml` text that `parse_routes_yaml` reads back to an equal config.

        Fields left at their defaults are omitted, so the output is stable and minimal.
        """
        data = self.model_dump(mode="json", by_alias=True, exclude_defaults=True)
        # `variants` and `experiment` have no defaults; keep them first for humans.
        ordered: dict[str, Any] = {k: data[k] for k in ("experiment", "variants") if k in data}
        ordered.update({k: v for k, v in data.items() if k not in ordered})
        return yaml.safe_dump(ordered, sort_keys=False, default_flow_style=None, width=120)


def _format_validation_error(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "(document)"
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"{where}: {message}")
    return "; ".join(lines)


def parse_routes_data(data: Any) -> RouterConfig:
    """Validate an already-decoded `routes.yaml` document.

    Raises:
        RouterConfigError: when the document is not a valid router configuration.
    """
    if not isinstance(data, dict):
        raise RouterConfigError(f"routes.yaml must be a mapping, got {type(data).__name__}")
    try:
        return RouterConfig.model_validate(data)
    except ValidationError as exc:
        raise RouterConfigError(_format_validation_error(exc)) from None


_SAFE_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def parse_routes_yaml(text: str) -> RouterConfig:
    """Parse and validate `routes.yaml` text.

    Raises:
        RouterConfigError: when the text is not YAML or not a valid router configuration.
    """
    try:
        # libyaml's safe loader when built in: the operator reads routes.yaml at every tick (to verify
        # the route), and the pure-Python loader costs ~10x more CPU (~0.8 ms for a small document).
        data = yaml.load(text, Loader=_SAFE_LOADER)
    except yaml.YAMLError as exc:
        raise RouterConfigError(f"not valid YAML: {exc}") from None
    except ValueError as exc:
        # PyYAML's own constructors raise bare ValueErrors (a timestamp like 2001-13-01).
        raise RouterConfigError(f"not valid YAML: {exc}") from None
    except RecursionError:
        raise RouterConfigError("not valid YAML: nested too deeply") from None
    return parse_routes_data(data)


def load_routes_file(path: str | Path) -> RouterConfig:
    """Read and parse a `routes.yaml` file.

    Raises:
        RouterConfigError: when the file cannot be read or is not a valid configuration.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise RouterConfigError(f"cannot read {path}: {exc}") from None
    return parse_routes_yaml(text)
