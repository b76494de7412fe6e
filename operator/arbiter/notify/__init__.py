"""Notifications: transitions of experiments sent to webhooks, Slack and Alertmanager.

:mod:`~arbiter.notify.transitions` finds what a status write changed (pure);
:mod:`~arbiter.notify.payloads` shapes it per receiver (pure); :mod:`~arbiter.notify.sender` delivers
it in the background; :mod:`~arbiter.notify.config` reads the operator's receivers. See
docs/notifications.md.
"""

from arbiter.notify.config import ConfigError, NotificationsConfig, load_config, parse_config
from arbiter.notify.sender import Notifier
from arbiter.notify.transitions import Kind, Notice, Severity, detect

__all__ = [
    "ConfigError",
    "Kind",
    "Notice",
    "NotificationsConfig",
    "Notifier",
    "Severity",
    "detect",
    "load_config",
    "parse_config",
]
