"""ConfigMapWatcher against the real API server: an expired watch (410 Gone) and an unreachable server."""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import Any

import pytest
from kubernetes import client

from arbiter.k8s.configmap_watch import ROUTES_KEY, ConfigMapWatcher
from helpers import wait_for


class Received:
    """Texts the watcher delivered, in order (thread-safe)."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, text: str, source: str) -> None:
        with self._lock:
            self.texts.append(text)

    def last(self) -> str | None:
        with self._lock:
            return self.texts[-1] if self.texts else None


class ListsTooOldFirst(ConfigMapWatcher):
    """Its first list reports resourceVersion 1, far older than the API server's watch cache keeps."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lists = 0

    def _list(self, api: client.CoreV1Api) -> str:
        version = super()._list(api)
        self.lists += 1
        return "1" if self.lists == 1 else version


def put(core: client.CoreV1Api, namespace: str, text: str) -> None:
    body = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="routes"), data={ROUTES_KEY: text})
    try:
        core.replace_namespaced_config_map("routes", namespace, body)
    except client.ApiException as err:
        if err.status != 404:
            raise
        core.create_namespaced_config_map(namespace, body)


@pytest.mark.cluster
def test_an_expired_watch_relists_and_keeps_following(
    kube_api: Any, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    core = client.CoreV1Api(kube_api)
    put(core, namespace, "experiment: one\n")
    received = Received()
    watcher = ListsTooOldFirst(namespace, "routes", received, api=core, watch_timeout_seconds=5)
    with caplog.at_level(logging.INFO, logger="arbiter.k8s.configmap_watch"):
        watcher.start()
        try:
            wait_for(lambda: received.last() == "experiment: one\n", timeout=20, message="the first text")
            # The API server answers the stale watch with 410 Gone; the watcher lists again and watches on.
            wait_for(lambda: watcher.lists >= 2, timeout=20, message="a second list after 410 Gone")
            put(core, namespace, "experiment: two\n")
            wait_for(lambda: received.last() == "experiment: two\n", timeout=20, message="the update")
        finally:
            watcher.stop(timeout=10)
    assert any("expired (410)" in r.getMessage() for r in caplog.records)
    assert received.texts == ["experiment: one\n", "experiment: two\n"], "each text once, in order"
    assert watcher.delivered == 2


def test_an_unreachable_api_server_backs_off_exponentially_and_stops_promptly(
    caplog: pytest.LogCaptureFixture, unused_tcp_port: int
) -> None:
    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{unused_tcp_port}"  # nothing listens: connection refused
    configuration.retries = 0
    api = client.CoreV1Api(client.ApiClient(configuration))
    watcher = ConfigMapWatcher("ns", "routes", Received(), api=api, initial_backoff=0.1, max_backoff=0.4)
    with caplog.at_level(logging.WARNING, logger="arbiter.k8s.configmap_watch"):
        watcher.start()
        wait_for(
            lambda: len([r for r in caplog.records if "retrying in" in r.getMessage()]) >= 5,
            timeout=20,
            message="five failed attempts",
        )
        started = time.monotonic()
        watcher.stop(timeout=5)
        stopped_in = time.monotonic() - started
    delays = [
        float(m.group(1))
        for r in caplog.records
        if (m := re.search(r"retrying in ([0-9.]+)s", r.getMessage()))
    ]
    assert delays[:4] == [0.1, 0.2, 0.4, 0.4], delays
    assert watcher.delivered == 0
    assert stopped_in < 5, "stop() ends the backoff wait at once"
    assert watcher._thread is not None and not watcher._thread.is_alive()
