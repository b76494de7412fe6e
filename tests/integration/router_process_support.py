"""Run `arbiter router` and small model servers as real processes on loopback, for integration tests."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from helpers import wait_for

__all__ = [
    "ARBITER",
    "MODEL_SERVER",
    "Process",
    "call",
    "free_port",
    "metric",
    "model_server_processes",
    "start_router",
]

ARBITER = Path(sys.executable).with_name("arbiter")

MODEL_SERVER = textwrap.dedent(
    """
    import json, sys
    from aiohttp import web

    name, score = sys.argv[1], float(sys.argv[2])

    async def predict(request):
        await request.read()
        body = json.dumps({"score": score, "labels": ["ok"]}).encode()
        return web.Response(body=body, content_type="application/json", headers={"X-Served-By": name})

    async def main():
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", predict)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        print(runner.addresses[0][1], flush=True)
        await asyncio.Event().wait()

    import asyncio
    asyncio.run(main())
    """
)


@dataclass
class Process:
    """A child process whose stderr is collected line by line in the background."""

    popen: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.popen.stderr is not None
        for line in self.popen.stderr:
            self.lines.append(line.rstrip("\n"))

    def log(self) -> str:
        return "\n".join(self.lines)

    def find(self, pattern: str) -> re.Match[str] | None:
        for line in list(self.lines):
            match = re.search(pattern, line)
            if match:
                return match
        return None

    def stop(self) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                return self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                return self.popen.wait(5)
        return self.popen.returncode


def free_port() -> int:
    """A port nothing listens on (bound then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def model_server_processes(tmp_path: Path, scores: dict[str, float]) -> Iterator[dict[str, str]]:
    """Start one model-server process per name (answering `{"score": scores[name]}`); yield their URLs."""
    script = tmp_path / "model_server.py"
    script.write_text(MODEL_SERVER)
    children: list[subprocess.Popen[str]] = []
    urls = {}
    try:
        for name, score in scores.items():
            child = subprocess.Popen(
                [sys.executable, str(script), name, str(score)], stdout=subprocess.PIPE, text=True
            )
            children.append(child)
            assert child.stdout is not None
            urls[name] = f"http://127.0.0.1:{int(child.stdout.readline())}"
        yield urls
    finally:
        for child in children:
            child.terminate()
            child.wait(10)


def start_router(*args: str, env: dict[str, str] | None = None) -> tuple[Process, str, str]:
    """Run `arbiter router ARGS` on free ports; return it with its proxy and metrics base URLs."""
    popen = subprocess.Popen(
        [str(ARBITER), "router", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    process = Process(popen)
    try:
        wait_for(
            lambda: process.find(r"metrics on http://") or popen.poll() is not None,
            timeout=30,
            message="the router to listen",
        )
    except AssertionError:
        process.stop()
        raise
    if popen.poll() is not None:
        raise AssertionError(f"arbiter router exited with {popen.returncode}:\n{process.log()}")
    proxy = process.find(r"routing on (\S+):(\d+)")
    metrics = process.find(r"metrics on (http://\S+)/metrics")
    assert proxy and metrics, process.log()
    return process, f"http://{proxy[1]}:{proxy[2]}", metrics[1]


def call(
    url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, headers=headers or {}, method="POST" if body else "GET")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


def metric(metrics_url: str, name: str, **labels: str) -> float:
    text = call(metrics_url + "/metrics")[2].decode()
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )
