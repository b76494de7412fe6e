"""Deliver notifications in the background: one bounded queue and one worker per receiver.

:meth:`Notifier.notify` is synchronous and never waits on the network: it finds the transitions of a
status write, picks the receivers and appends to their queues, so a tick never waits for a receiver.
Each receiver's worker sends in order, retrying with exponential backoff what may pass (connection
errors, timeouts, 408, 429, 5xx) up to ``delivery.attempts`` times, then gives up and counts it. A
full queue drops its oldest notification and counts it. A receiver that is down delays only itself.

URLs are credentials (a Slack webhook URL is one): they are read when sent (from the config, a mounted
file, or a Secret) and never logged; errors are logged by type and status only.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client import Counter, Gauge

import arbiter
from arbiter.api.v1alpha1 import NotificationReceiverType, parse_duration
from arbiter.notify.config import NotificationsConfig, ReceiverConfig
from arbiter.notify.payloads import (
    Message,
    alertmanager_payload,
    build_message,
    slack_payload,
    webhook_payload,
)
from arbiter.notify.transitions import SEVERITY_RANK, Kind, Notice, Severity, as_dry_run, detect

log = logging.getLogger("arbiter.notify")

SENT = Counter(
    "arbiter_notifications_sent",
    "Notifications a receiver accepted, by receiver and event.",
    ["receiver", "event"],
)
FAILED = Counter(
    "arbiter_notifications_failed",
    "Notifications given up on (attempts exhausted or refused with a 4xx), by receiver and event.",
    ["receiver", "event"],
)
DROPPED = Counter(
    "arbiter_notifications_dropped",
    "Notifications dropped because a receiver's queue was full (oldest first).",
    ["receiver"],
)
RETRIES = Counter(
    "arbiter_notification_retries", "Attempts to send that failed and were retried.", ["receiver"]
)
QUEUED = Gauge("arbiter_notifications_queued", "Notifications waiting to be sent, by receiver.", ["receiver"])

SecretReader = Callable[[str, str, str], bytes]
"""Reads ``(namespace, secret, key)``; blocking (it runs in a thread)."""


class DeliveryError(Exception):
    """One attempt failed; ``retryable`` says whether another may succeed. Never carries the URL."""

    def __init__(self, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class Filter:
    """Which notices pass: at or above ``min_severity`` and, when ``events`` is not empty, one of them."""

    min_severity: Severity = Severity.INFO
    events: frozenset[Kind] = frozenset()

    def passes(self, kind: Kind, severity: Severity) -> bool:
        return SEVERITY_RANK[severity] >= SEVERITY_RANK[self.min_severity] and (
            not self.events or kind in self.events
        )


@dataclass(frozen=True)
class Target:
    """A receiver as the sender sees it: a label for metrics, its type, where its URL comes from."""

    label: str
    type: NotificationReceiverType
    url: str | None = None
    url_file: str | None = None
    secret: tuple[str, str, str] | None = None  # namespace, name, key
    filters: tuple[Filter, ...] = field(default_factory=tuple)  # all must pass

    def wants(self, kind: Kind, severity: Severity) -> bool:
        return all(f.passes(kind, severity) for f in self.filters)


@dataclass
class _Lane:
    """One receiver's queue and worker."""

    target: Target
    queue: collections.deque[tuple[Message, Target]]
    ready: asyncio.Event
    worker: asyncio.Task[None] | None = None


class Notifier:
    """Finds transitions, queues them per receiver and sends them from background workers.

    Args:
        config: the operator's receivers and delivery settings.
        secret_reader: reads a Secret key for receivers an experiment declares itself.
        cluster_name: overrides ``config.cluster_name`` when not empty.
    """

    def __init__(
        self,
        config: NotificationsConfig | None = None,
        secret_reader: SecretReader | None = None,
        cluster_name: str = "",
    ) -> None:
        self.config = config or NotificationsConfig()
        self.cluster = cluster_name or self.config.cluster_name
        self._secret_reader = secret_reader
        delivery = self.config.delivery
        self._attempts = delivery.attempts
        self._backoff = parse_duration(delivery.initial_backoff)
        self._max_backoff = parse_duration(delivery.max_backoff)
        self._timeout = parse_duration(delivery.timeout)
        self._state_ttl = parse_duration(self.config.alertmanager.state_alert_ttl)
        self._event_ttl = parse_duration(self.config.alertmanager.event_alert_ttl)
        self._lanes: dict[str, _Lane] = {}
        #: A worker with nothing to send for this long ends (a new one starts with the next notification).
        self.idle_seconds = 300.0
        self._session: aiohttp.ClientSession | None = None
        self._closing = False

    # ------------------------------------------------------------------ the tick's side (sync)

    def notify(
        self,
        experiment: Mapping[str, Any],
        before: Mapping[str, Any],
        after: Mapping[str, Any],
        now: dt.datetime | None = None,
    ) -> tuple[list[Notice], list[str]]:
        """Queue the transitions from ``before`` to ``after`` (a status write that succeeded).

        Must run on the event loop the workers run on; it never waits.

        Args:
            experiment: the object (metadata and spec; its status is not read).
            before: the status the tick read.
            after: the status the tick wrote.

        Returns:
            The notices found, and problems to tell the experiment's owner about (an unknown receiver).
        """
        notices = detect(before, after)
        if not notices:
            return [], []
        meta = experiment.get("metadata") or {}
        spec = experiment.get("spec") or {}
        if spec.get("dryRun") is True:
            notices = [as_dry_run(notice) for notice in notices]
        namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
        try:
            targets, problems = self.targets_for(namespace, spec)
        except (ValueError, TypeError, AttributeError, KeyError):
            # An object the API server let through but the types refuse (an older CRD): the operator's
            # receivers still hear about it (a Failed spec is news for them).
            targets, _ = self.targets_for(namespace, {})
            problems = ["spec.notifications is invalid: only the operator's receivers were told"]
        moment = now or dt.datetime.now(dt.UTC)
        for notice in notices:
            message = build_message(
                cluster=self.cluster,
                namespace=namespace,
                name=name,
                notice=notice,
                status=after,
                now=moment,
                mode=str(spec.get("mode", "")),
                uid=str(meta.get("uid", "")),
                link_template=self.config.link_template,
            )
            for target in targets:
                fire = target.wants(notice.kind, notice.severity)
                resolve = (
                    target.type is NotificationReceiverType.ALERTMANAGER
                    and notice.ended is not None
                    and target.wants(notice.ended, notice.ended_severity or notice.severity)
                )
                if fire or resolve:
                    self._enqueue(target, message)
        return notices, problems

    def targets_for(self, namespace: str, spec: Mapping[str, Any]) -> tuple[list[Target], list[str]]:
        """The receivers of one experiment (each once) and the references that name no receiver."""
        settings = spec.get("notifications") or {}
        listed = settings.get("receivers") or []
        own_filter = Filter(
            Severity(settings.get("minSeverity") or Severity.INFO.value),
            frozenset(Kind(e) for e in settings.get("events") or ()),
        )
        targets: dict[str, Target] = {}
        problems: list[str] = []
        referenced = {r.get("name") for r in listed if not r.get("type")}
        for receiver in self.config.receivers:
            filters = [_filter_of(receiver)]
            if receiver.name in referenced:
                # Listed by the experiment: its own minimum and events narrow the receiver's.
                filters.append(own_filter)
            elif not receiver.all_experiments:
                continue
            targets[receiver.name] = Target(
                receiver.name, receiver.type, receiver.url, receiver.url_file, None, tuple(filters)
            )
        for ref in listed:
            if ref.get("type"):
                secret = ref.get("urlSecretRef") or {}
                label = f"{namespace}/{ref['name']}"
                targets[label] = Target(
                    label,
                    NotificationReceiverType(ref["type"]),
                    secret=(namespace, str(secret.get("name")), str(secret.get("key"))),
                    filters=(own_filter,),
                )
            elif self.config.receiver(str(ref.get("name"))) is None:
                problems.append(
                    f"spec.notifications.receivers: no receiver named {ref.get('name')!r} is configured in "
                    "the operator; give it a type and urlSecretRef, or add it to the chart's "
                    "notifications.receivers"
                )
        return list(targets.values()), problems

    def _enqueue(self, target: Target, message: Message) -> None:
        lane = self._lanes.get(target.label)
        if lane is None or lane.target != target:
            if lane is None:
                lane = _Lane(target, collections.deque(), asyncio.Event())
                self._lanes[target.label] = lane
            else:
                lane.target = target
        if len(lane.queue) >= self.config.delivery.queue_size:
            dropped, _ = lane.queue.popleft()
            DROPPED.labels(target.label).inc()
            log.warning(
                "notification queue of receiver %s is full: dropped %s of %s/%s",
                target.label,
                dropped.notice.kind.value,
                dropped.namespace,
                dropped.name,
            )
        lane.queue.append((message, target))
        QUEUED.labels(target.label).set(len(lane.queue))
        lane.ready.set()
        if lane.worker is None and not self._closing:
            lane.worker = asyncio.get_running_loop().create_task(
                self._work(lane), name=f"notify-{target.label}"
            )

    # ------------------------------------------------------------------ the workers (async)

    async def close(self, timeout: float = 5.0) -> None:
        """Give the queues up to ``timeout`` seconds to drain, then stop the workers."""
        self._closing = True
        workers = [lane.worker for lane in self._lanes.values() if lane.worker is not None]
        for lane in self._lanes.values():
            lane.ready.set()
        if workers:
            _, pending = await asyncio.wait(workers, timeout=timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    def queued(self, label: str) -> int:
        """Notifications waiting for receiver ``label``."""
        lane = self._lanes.get(label)
        return len(lane.queue) if lane else 0

    async def _work(self, lane: _Lane) -> None:
        while True:
            if not lane.queue:
                if self._closing:
                    return
                lane.ready.clear()
                try:
                    await asyncio.wait_for(lane.ready.wait(), timeout=self.idle_seconds)
                except TimeoutError:
                    if not lane.queue:
                        # Idle (e.g. the receiver of a deleted experiment): free the worker; the next
                        # notification starts a new one. No await between the check and the removal.
                        self._lanes.pop(lane.target.label, None)
                        QUEUED.remove(lane.target.label)
                        return
                continue
            message, target = lane.queue.popleft()
            QUEUED.labels(lane.target.label).set(len(lane.queue))
            try:
                await self._deliver(target, message)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not end the worker: log it (without the URL) and go on
                log.exception("sending to receiver %s failed unexpectedly", target.label)

    async def _deliver(self, target: Target, message: Message) -> None:
        event = message.notice.kind.value
        where = f"{message.namespace}/{message.name}"
        delay = self._backoff
        for attempt in range(1, self._attempts + 1):
            try:
                await self._send_once(target, message)
            except DeliveryError as exc:
                final = not exc.retryable or attempt == self._attempts
                if final:
                    FAILED.labels(target.label, event).inc()
                    log.warning(
                        "gave up sending %s of %s to receiver %s after %d attempt(s): %s",
                        event,
                        where,
                        target.label,
                        attempt,
                        exc,
                    )
                    return
                RETRIES.labels(target.label).inc()
                log.info(
                    "sending %s of %s to receiver %s failed (attempt %d of %d, next in %.1fs): %s",
                    event,
                    where,
                    target.label,
                    attempt,
                    self._attempts,
                    delay,
                    exc,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_backoff)
                continue
            SENT.labels(target.label, event).inc()
            log.info("sent %s of %s to receiver %s", event, where, target.label)
            return

    async def _send_once(self, target: Target, message: Message) -> None:
        url = await self._url(target)
        body: Any
        if target.type is NotificationReceiverType.ALERTMANAGER:
            url = url.rstrip("/") + "/api/v2/alerts"
            fire = target.wants(message.notice.kind, message.notice.severity)
            ended = message.notice.ended
            resolve = ended is not None and target.wants(
                ended, message.notice.ended_severity or message.notice.severity
            )
            body = alertmanager_payload(
                message, fire=fire, resolve=resolve, state_ttl=self._state_ttl, event_ttl=self._event_ttl
            )
        elif target.type is NotificationReceiverType.SLACK:
            body = slack_payload(message)
        else:
            body = webhook_payload(message)
        session = self._client()
        try:
            async with session.post(url, json=body) as response:
                if response.status < 300:
                    return
                retryable = response.status >= 500 or response.status in (408, 429)
                raise DeliveryError(f"HTTP {response.status}", retryable)
        except aiohttp.ClientError as exc:
            raise DeliveryError(_describe(exc), True) from None
        except TimeoutError:
            raise DeliveryError(f"no answer within {self._timeout:g}s", True) from None

    async def _url(self, target: Target) -> str:
        if target.url is not None:
            return target.url
        try:
            if target.url_file is not None:
                raw = await asyncio.to_thread(Path(target.url_file).read_bytes)
            else:
                assert target.secret is not None
                reader = self._secret_reader or _read_secret
                raw = await asyncio.to_thread(reader, *target.secret)
        except Exception as exc:  # SecretError says which Secret and key (never a value)
            detail = (
                str(exc) if target.url_file is None else f"cannot read its urlFile ({type(exc).__name__})"
            )
            raise DeliveryError(detail, True) from None
        url = raw.decode(errors="replace").strip()
        if not url.startswith(("http://", "https://")):
            raise DeliveryError("its URL does not start with http:// or https://", False)
        return url

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                headers={"User-Agent": f"arbiter/{arbiter.__version__} (notifications)"},
            )
        return self._session


def _filter_of(receiver: ReceiverConfig) -> Filter:
    return Filter(receiver.min_severity, frozenset(receiver.events))


def _describe(exc: aiohttp.ClientError) -> str:
    """An error without its URL: the type, and the OS error for a refused or reset connection."""
    os_error = getattr(exc, "os_error", None)
    if isinstance(os_error, OSError) and os_error.strerror:
        return f"{type(exc).__name__}: {os_error.strerror}"
    return type(exc).__name__


def _read_secret(namespace: str, name: str, key: str) -> bytes:
    from arbiter.k8s.secrets import read_secret_key

    return read_secret_key(namespace, name, key)
