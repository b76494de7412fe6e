"""A local HTTP gate server for tests: answers every POST with the status the test sets, or never.

A real HTTP server on a loopback port (``http.server`` in a thread), so the operator's gate calls go
over a real socket: ``GateServer().start()``; ``.url(path)``; ``.answer(503)`` flips what it says;
``.answer(200, "/smoke")`` only for one path; ``.hang()`` accepts connections and never answers; ``.requests`` holds every JSON body received.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class GateServer:
    """A webhook gate the test controls."""

    def __init__(self, code: int = 200) -> None:
        self.code = code
        self.codes: dict[str, int] = {}
        self.hanging = False
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._release = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                with server._lock:
                    server.requests.append({"path": self.path, **body})
                    hanging, code = server.hanging, server.codes.get(self.path, server.code)
                if hanging:
                    server._release.wait(120)
                    return
                text = f"gate says {code}".encode()
                self.send_response(code)
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)

            def log_message(self, *_: Any) -> None:
                return

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="gate-server", daemon=True)

    def start(self) -> GateServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def url(self, path: str = "/gate") -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}{path}"

    def answer(self, code: int, path: str | None = None) -> None:
        """From now on, answer ``code`` (at ``path`` only, when given)."""
        with self._lock:
            self.hanging = False
            if path is None:
                self.code = code
                self.codes.clear()
            else:
                self.codes[path] = code

    def hang(self) -> None:
        """From now on, accept and never answer."""
        with self._lock:
            self.hanging = True

    def received(self, path: str | None = None) -> list[dict[str, Any]]:
        """The JSON bodies received (at ``path``)."""
        with self._lock:
            return [r for r in self.requests if path is None or r["path"] == path]
