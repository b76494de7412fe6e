"""Real receivers for notification tests: a local HTTP receiver and Debian's Alertmanager as a process.

- :class:`HttpReceiver`: an HTTP server on 127.0.0.1 (a thread of the test process) that records every
  request (path, headers, JSON body) and answers with scripted status codes (default 200).
- :class:`Alertmanager`: ``prometheus-alertmanager`` (hack/system-deps.sh installs it) on a free port
  with a minimal config and clustering off; its v2 API is read back with :meth:`Alertmanager.alerts`.
"""

from __future__ import annotations

import json
import shutil
import threading
import urllib.parse
import urllib.request
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from localcluster.procs import PidRecord, free_ports, spawn, stop, tail

from helpers import wait_for

ALERTMANAGER_BINARIES = ("prometheus-alertmanager", "alertmanager")


@dataclass(frozen=True)
class Received:
    """One request a receiver got."""

    path: str
    headers: dict[str, str]
    body: Any


class HttpReceiver:
    """A local HTTP receiver that records what arrives and answers ``responses`` in turn, then 200."""

    def __init__(self, responses: list[int] | None = None) -> None:
        self.requests: list[Received] = []
        self.responses: deque[int] = deque(responses or [])
        self.attempts = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    receiver.attempts += 1
                    code = receiver.responses.popleft() if receiver.responses else 200
                    if code < 300:
                        receiver.requests.append(
                            Received(self.path, dict(self.headers.items()), json.loads(raw or b"null"))
                        )
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="receiver", daemon=True)
        self._thread.start()

    def bodies(self) -> list[Any]:
        with self._lock:
            return [r.body for r in self.requests]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def closed_port_url() -> str:
    """A URL nothing listens on (a receiver that is down)."""
    (port,) = free_ports(1)
    return f"http://127.0.0.1:{port}"


def alertmanager_binary() -> str:
    for name in ALERTMANAGER_BINARIES:
        found = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
        if found:
            return found
    raise FileNotFoundError("prometheus-alertmanager is not installed: run hack/system-deps.sh")


class Alertmanager:
    """Debian's Alertmanager on 127.0.0.1, one receiver that notifies nobody, clustering off."""

    CONFIG = (
        "route:\n  receiver: nobody\n  group_wait: 0s\n  group_interval: 1s\n  repeat_interval: 1h\n"
        "receivers:\n  - name: nobody\n"
    )

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        (self.port,) = free_ports(1)
        self.url = f"http://127.0.0.1:{self.port}"
        self._record: PidRecord | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / "alertmanager.log"

    def start(self) -> Alertmanager:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "alertmanager.yml"
        config.write_text(self.CONFIG)
        _, self._record = spawn(
            "alertmanager",
            [
                alertmanager_binary(),
                f"--config.file={config}",
                f"--storage.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address=",
                "--log.level=info",
            ],
            log_path=self.log_path,
            pid_path=self.workdir / "alertmanager.pid",
            cwd=self.workdir,
            die_with_parent=True,
        )
        wait_for(self._ready, timeout=30, message=f"Alertmanager ready at {self.url}\n{tail(self.log_path)}")
        return self

    def _ready(self) -> bool:
        with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
            return bool(response.status == 200)

    def alerts(self, **filters: str) -> list[dict[str, Any]]:
        """The alerts Alertmanager holds (active, silenced, inhibited; not the resolved ones)."""
        query = urllib.parse.urlencode([("filter", f'{k}="{v}"') for k, v in filters.items()])
        with urllib.request.urlopen(f"{self.url}/api/v2/alerts?{query}", timeout=5) as response:
            return list(json.loads(response.read()))

    def stop(self) -> None:
        if self._record is not None:
            stop([self._record])
            self._record = None
