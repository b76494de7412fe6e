"""Watch one ConfigMap and hand each new version of one data key to a callback.

`arbiter router --configmap NAMESPACE/NAME` uses this to follow the routes the operator writes.
The watch is the Kubernetes client's blocking stream, so it runs in a thread of its own; the
callback must be thread-safe (the router passes `loop.call_soon_threadsafe`).

Protocol: list the one object (by field selector) to learn its state and the collection's
resourceVersion, then watch from that resourceVersion; a watch that ends (server timeout) resumes
from the last resourceVersion seen (bookmarks included); "410 Gone" (the version fell out of the
watch cache) re-lists; any other failure re-lists after an exponential backoff. A deleted
ConfigMap, or one without the key, leaves the last good text in force.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from arbiter.k8s.config import api_client

__all__ = ["ROUTES_KEY", "ConfigMapWatcher"]

log = logging.getLogger("arbiter.k8s.configmap_watch")

ROUTES_KEY = "routes.yaml"
_GONE = 410


class ConfigMapWatcher:
    """Follow `data[key]` of ConfigMap `namespace/name`, calling `on_text(text, source)` on change.

    Args:
        namespace: the ConfigMap's namespace.
        name: the ConfigMap's name.
        on_text: called from the watch thread with the key's text and a description of its source
            (`configmap NAMESPACE/NAME@RESOURCEVERSION`); only when the text differs from the last.
        key: the data key to follow.
        watch_timeout_seconds: how long one watch request lasts before it is renewed; also bounds
            how long `stop()` can take to end the thread.
        initial_backoff: first delay after a failure, doubled per failure up to `max_backoff`.
        max_backoff: the longest delay between reconnection attempts.
        api: a CoreV1Api to use instead of one built from the default configuration.
    """

    def __init__(
        self,
        namespace: str,
        name: str,
        on_text: Callable[[str, str], None],
        *,
        key: str = ROUTES_KEY,
        watch_timeout_seconds: int = 30,
        initial_backoff: float = 0.5,
        max_backoff: float = 30.0,
        api: client.CoreV1Api | None = None,
    ) -> None:
        self.namespace = namespace
        self.name = name
        self.key = key
        self._on_text = on_text
        self._watch_timeout = watch_timeout_seconds
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff
        self._api = api
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._watch: watch.Watch | None = None
        self._last_text: str | None = None
        self.delivered = 0
        """How many texts were handed to `on_text` (for tests and logs)."""

    def start(self) -> None:
        """Start the watch thread (a daemon: it never keeps the process alive)."""
        if self._thread is not None:
            raise RuntimeError("already started")
        self._thread = threading.Thread(
            target=self.run, name=f"configmap-watch-{self.namespace}/{self.name}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Ask the thread to end and wait up to `timeout` seconds for it."""
        self._stopping.set()
        current = self._watch
        if current is not None:
            current.stop()  # type: ignore[no-untyped-call]
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self) -> None:
        """List, then watch, until stopped; failures back off and re-list."""
        backoff = self._initial_backoff
        while not self._stopping.is_set():
            try:
                api = self._core_api()
                resource_version = self._list(api)
                backoff = self._initial_backoff
                self._watch_from(api, resource_version)
            except ApiException as exc:
                if exc.status == _GONE:
                    log.info("watch of configmap %s/%s expired (410); re-listing", self.namespace, self.name)
                    continue
                log.warning(
                    "configmap %s/%s: API error %s %s; retrying in %.1fs",
                    self.namespace,
                    self.name,
                    exc.status,
                    exc.reason,
                    backoff,
                )
            except Exception as exc:  # network, TLS, config: all worth another try
                log.warning(
                    "configmap %s/%s: %s: %s; retrying in %.1fs",
                    self.namespace,
                    self.name,
                    type(exc).__name__,
                    exc,
                    backoff,
                )
            if self._stopping.wait(backoff):
                return
            backoff = min(backoff * 2, self._max_backoff)

    def _core_api(self) -> client.CoreV1Api:
        if self._api is None:
            self._api = client.CoreV1Api(api_client())
        return self._api

    def _field_selector(self) -> str:
        return f"metadata.name={self.name}"

    def _list(self, api: client.CoreV1Api) -> str:
        listing = api.list_namespaced_config_map(
            self.namespace, field_selector=self._field_selector(), _request_timeout=30
        )
        if listing.items:
            self._deliver(listing.items[0])
        else:
            log.warning(
                "configmap %s/%s does not exist (yet); %s",
                self.namespace,
                self.name,
                "keeping the last routes" if self._last_text is not None else "waiting for it",
            )
        return str(listing.metadata.resource_version) if listing.metadata else ""

    def _watch_from(self, api: client.CoreV1Api, resource_version: str) -> None:
        while not self._stopping.is_set():
            stream = watch.Watch()  # type: ignore[no-untyped-call]
            self._watch = stream
            try:
                for event in stream.stream(  # type: ignore[no-untyped-call]
                    api.list_namespaced_config_map,
                    self.namespace,
                    field_selector=self._field_selector(),
                    resource_version=resource_version,
                    allow_watch_bookmarks=True,
                    timeout_seconds=self._watch_timeout,
                    # The socket read must outlast the server-side timeout, else every renewal errors.
                    _request_timeout=(10, self._watch_timeout + 15),
                ):
                    self._handle(event)
                    if self._stopping.is_set():
                        return
            finally:
                self._watch = None
            # The Watch tracks the newest resourceVersion it saw, bookmarks included.
            if stream.resource_version:
                resource_version = str(stream.resource_version)

    def _handle(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind in ("ADDED", "MODIFIED"):
            self._deliver(event["object"])
        elif kind == "DELETED":
            log.warning(
                "configmap %s/%s was deleted; keeping the last routes until it comes back",
                self.namespace,
                self.name,
            )

    def _deliver(self, config_map: Any) -> None:
        data = config_map.data or {}
        text = data.get(self.key)
        version = config_map.metadata.resource_version
        if text is None:
            log.error(
                "configmap %s/%s@%s has no %r key; keeping the last routes",
                self.namespace,
                self.name,
                version,
                self.key,
            )
            return
        if text == self._last_text:
            return
        self._last_text = text
        self.delivered += 1
        self._on_text(text, f"configmap {self.namespace}/{self.name}@{version}")
