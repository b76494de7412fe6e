"""The operator's notification settings (`arbiter run --notifications-config FILE`, the chart's ConfigMap).

The file is read once at start; a receiver's URL comes from ``url`` (not a secret), or ``urlFile`` (a
mounted Secret key, read at every send so a rotated Secret is picked up), never from a flag. A bad
file stops ``arbiter run`` with a message naming the field, before anything is watched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from arbiter.api.v1alpha1 import (
    DNS_LABEL_PATTERN,
    NotificationEvent,
    NotificationReceiverType,
    NotificationSeverity,
    parse_duration,
)


class ConfigError(Exception):
    """The notifications file is unreadable or invalid; the message names the field."""


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class ReceiverConfig(_Model):
    """One receiver the operator knows by name."""

    name: Annotated[str, Field(pattern=DNS_LABEL_PATTERN, max_length=63)]
    type: NotificationReceiverType
    url: str | None = None
    url_file: str | None = None
    #: Send every experiment's transitions here (False: only experiments that list the receiver).
    all_experiments: bool = True
    min_severity: NotificationSeverity = NotificationSeverity.INFO
    events: list[NotificationEvent] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_url(self) -> ReceiverConfig:
        if (self.url is None) == (self.url_file is None):
            raise ValueError(f"receiver {self.name}: set exactly one of url or urlFile")
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise ValueError(f"receiver {self.name}: url must start with http:// or https://")
        return self


class DeliveryConfig(_Model):
    """How hard the sender tries."""

    queue_size: Annotated[int, Field(ge=1, le=100_000)] = 1000
    attempts: Annotated[int, Field(ge=1, le=100)] = 6
    initial_backoff: str = "1s"
    max_backoff: str = "1m"
    timeout: str = "10s"

    @model_validator(mode="after")
    def _durations(self) -> DeliveryConfig:
        for field in ("initial_backoff", "max_backoff", "timeout"):
            parse_duration(getattr(self, field))
        return self


class AlertmanagerConfig(_Model):
    """How long alerts stay firing when nothing resolves them earlier."""

    #: A state (Paused, SampleRatioMismatch, MetricsUnavailable, Failed) fires until the experiment leaves
    #: it, at most this long.
    state_alert_ttl: str = "168h"
    #: A one-off transition (Started, Promoted, RolledBack, ...) fires this long.
    event_alert_ttl: str = "1h"

    @model_validator(mode="after")
    def _durations(self) -> AlertmanagerConfig:
        parse_duration(self.state_alert_ttl)
        parse_duration(self.event_alert_ttl)
        return self


class NotificationsConfig(_Model):
    """The whole file."""

    cluster_name: str = ""
    #: A link to the experiment in every message, e.g. a Grafana dashboard; ``{namespace}`` and ``{name}``
    #: are filled in.
    link_template: str = ""
    receivers: list[ReceiverConfig] = Field(default_factory=list)
    delivery: DeliveryConfig = Field(default_factory=DeliveryConfig)
    alertmanager: AlertmanagerConfig = Field(default_factory=AlertmanagerConfig)

    @model_validator(mode="after")
    def _unique(self) -> NotificationsConfig:
        names = [r.name for r in self.receivers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"receiver names must be unique: {', '.join(dupes)}")
        return self

    def receiver(self, name: str) -> ReceiverConfig | None:
        return next((r for r in self.receivers if r.name == name), None)


def parse_config(raw: Any) -> NotificationsConfig:
    """Validate a loaded mapping.

    Raises:
        ConfigError: naming every invalid field.
    """
    try:
        return NotificationsConfig.model_validate(raw or {})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" if err["loc"] else err["msg"]
            for err in exc.errors()
        )
        raise ConfigError(problems) from None


def load_config(path: str | Path) -> NotificationsConfig:
    """Read and validate the YAML file at ``path``.

    Raises:
        ConfigError: unreadable, not YAML, or invalid (the message says which field).
    """
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror or exc}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with receivers, got {type(raw).__name__}")
    try:
        return parse_config(raw)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
