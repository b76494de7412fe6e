"""Run a `Router` as a process: listen, watch the routes file, reload on SIGHUP, stop on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from arbiter.router.proxy import Router

__all__ = ["FileWatcher", "ServeOptions", "parse_listen", "serve"]

log = logging.getLogger("arbiter.router")


def parse_listen(value: str) -> tuple[str, int]:
    """Parse `HOST:PORT` (or `[v6]:PORT`, or `:PORT` for 127.0.0.1) into (host, port).

    Raises:
        ValueError: when the value is not of that form.
    """
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port out of range in {value!r}")
    host = host.strip("[]") or "127.0.0.1"
    return host, port


class FileWatcher:
    """Re-read a routes file when it changes (polled) and when asked (SIGHUP).

    Polling the file's identity (inode, size, mtime) catches both in-place edits and the
    rename-into-place of editors and of Kubernetes' projected ConfigMap volumes.

    Args:
        path: the routes file.
        router: where new text goes.
        interval: seconds between polls.
    """

    def __init__(self, path: str | Path, router: Router, interval: float = 1.0) -> None:
        self.path = Path(path)
        self.router = router
        self.interval = interval
        self._identity: tuple[int, int, int] | None = None
        self._last_text: str | None = None

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def check(self, force: bool = False) -> bool:
        """Load the file if it changed (or if `force`); return True if new routes were applied."""
        identity = self._stat()
        if identity is None:
            if force or self._identity is not None:
                log.error("routes file %s cannot be read; keeping the previous routes", self.path)
            self._identity = None
            return False
        if identity == self._identity and not force:
            return False
        self._identity = identity
        try:
            text = self.path.read_text(encoding="utf-8")
        except OSError as exc:
            log.error("routes file %s cannot be read (%s); keeping the previous routes", self.path, exc)
            return False
        if text == self._last_text and not force:
            return False
        self._last_text = text
        return self.router.apply_text(text, str(self.path))

    async def run(self) -> None:
        """Poll until cancelled."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                self.check()
            except Exception:  # a watcher that dies silently would freeze the routes
                log.exception("routes file watch failed; trying again")


@dataclass
class ServeOptions:
    """What `serve` runs.

    Args:
        listen: proxy (host, port).
        metrics_listen: metrics (host, port), or None for no metrics server.
        config_path: routes file to load and watch, or None.
        poll_interval: seconds between checks of the routes file.
        start_feed: for other sources (a ConfigMap watch): called with a thread-safe
            `submit(text, source)` once the loop runs; returns a function that stops the feed.
    """

    listen: tuple[str, int]
    metrics_listen: tuple[str, int] | None = None
    config_path: str | None = None
    poll_interval: float = 1.0
    start_feed: Callable[[Callable[[str, str], None]], Callable[[], None]] | None = None


async def serve(options: ServeOptions, router: Router | None = None) -> int:
    """Serve until SIGTERM or SIGINT; return the process exit code.

    A routes file that is missing or invalid at start is an error (exit code 2): a router must not
    start empty by mistake. Later bad versions are logged and ignored.
    """
    router = router if router is not None else Router()
    loop = asyncio.get_running_loop()
    watcher: FileWatcher | None = None
    if options.config_path is not None:
        watcher = FileWatcher(options.config_path, router, options.poll_interval)
        if not watcher.check(force=True):
            log.error("no usable routes in %s; not starting", options.config_path)
            await router.close()
            return 2

    stopped = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopped.set)
    if watcher is not None:
        hup_watcher = watcher

        def _on_hup() -> None:
            log.info("SIGHUP: re-reading %s", hup_watcher.path)
            hup_watcher.check(force=True)

        loop.add_signal_handler(signal.SIGHUP, _on_hup)

    tasks: list[asyncio.Task[None]] = []
    stop_feed: Callable[[], None] | None = None
    try:
        port = await router.start(*options.listen)
        log.info("routing on %s:%d", options.listen[0], port)
        if options.metrics_listen is not None:
            metrics_port = await router.start_metrics(*options.metrics_listen)
            log.info("metrics on http://%s:%d/metrics", options.metrics_listen[0], metrics_port)
        if watcher is not None:
            tasks.append(asyncio.create_task(watcher.run()))
        if options.start_feed is not None:

            def submit(text: str, source: str) -> None:
                # RuntimeError: the loop already closed during shutdown; the text no longer matters.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(router.apply_text, text, source)

            stop_feed = options.start_feed(submit)
        await stopped.wait()
        log.info("stopping")
        return 0
    finally:
        if stop_feed is not None:
            stop_feed()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(signum)
        await router.close()
