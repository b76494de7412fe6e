"""Tell receivers about transitions: the handler's side of :mod:`arbiter.notify`.

``arbiter run`` calls :func:`configure` with the operator's receivers before Kopf starts; the
experiment loop calls :func:`publish` after every status write that succeeded. Sending happens in
background workers on Kopf's event loop, so a tick never waits for a receiver; at shutdown the
queues get a few seconds to drain.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf

from arbiter.k8s.secrets import read_secret_key
from arbiter.notify import NotificationsConfig, Notifier

#: Seconds the queues may take to drain when the operator stops.
DRAIN_SECONDS = 5.0

_notifier = Notifier(secret_reader=read_secret_key)


def configure(config: NotificationsConfig | None, cluster_name: str = "") -> None:
    """Use these receivers (and cluster name) from now on; call before the operator starts."""
    global _notifier
    _notifier = Notifier(config, secret_reader=read_secret_key, cluster_name=cluster_name)


def notifier() -> Notifier:
    """The operator's notifier."""
    return _notifier


def publish(
    body: Mapping[str, Any], ref: kopf.Body, before: Mapping[str, Any], after: Mapping[str, Any], logger: Any
) -> None:
    """Queue the transitions of a status write that succeeded; a misconfigured receiver is an Event."""
    try:
        notices, problems = _notifier.notify(body, before, after)
    except Exception:  # the status is written; a notification bug must not fail the tick's Events
        logger.exception("could not queue the notifications of this status write")
        return
    for notice in notices:
        logger.debug("notifying %s (%s)", notice.kind.value, notice.severity.value)
    for problem in problems:
        logger.warning("%s", problem)
        kopf.event(ref, type="Warning", reason="NotificationReceiverUnknown", message=problem[:1024])


@kopf.on.cleanup()
async def drain_notifications(**_: Any) -> None:
    """Give queued notifications a moment to go out before the process ends."""
    await _notifier.close(timeout=DRAIN_SECONDS)
