"""CPU cost of the router's HTTP handling, in process: this checkout against a git revision.

The wrk benchmark (run.py) measures the whole proxy through the kernel, and on a shared machine its
per-CPU-second figures move by 20-30% between runs, more than a parser change costs. This one
takes the sockets and the model server out and times, in CPU seconds of this process
(`time.process_time`, which neighbours disturb far less than wall time):

- `server_cycle_us`: one typical request (POST, five headers, a 34-byte JSON body) fed to the proxy
  port's connection protocol, parsed, handed to a handler that answers at once, and the response
  written to a transport that drops it;
- `upstream_cycle_us`: one typical model-server response (nginx's six headers, a JSON body)
  parsed by the upstream client's connection protocol.

`arbiter/router/http.py` and `upstream.py` of both versions are loaded side by side (they import
nothing else of Arbiter's) and measured in alternating rounds; the medians and their ratio
(this checkout over the baseline; > 1 means slower) are the last line, as JSON.

Usage: python bench/router/parsing.py [--baseline REF] [--rounds 9] [--requests 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
ROUTER = "operator/arbiter/router"
REQUEST = (
    b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nContent-Type: application/json\r\n"
    b"x-user-id: user-12345\r\nUser-Agent: wrk\r\nContent-Length: 34\r\n\r\n"
    b'{"features": [0.1, 0.2, 0.3, 0.4]}'
)
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sun, 29 Nov 2026 02:50:00 GMT\r\n"
    b"Content-Type: application/json\r\nContent-Length: 29\r\nConnection: keep-alive\r\n\r\n"
    b'{"score": 0.5, "label": "ok"}'
)


class NullTransport:
    """Enough of an asyncio transport for the protocols: counts writes, drops the bytes."""

    def __init__(self) -> None:
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else None

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass

    def close(self) -> None:
        pass


def load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is created
    spec.loader.exec_module(module)
    return module


def baseline_sources(ref: str, into: Path) -> Path:
    """Write http.py and upstream.py as of `ref` into `into`; return that directory."""
    for name in ("http.py", "upstream.py"):
        shown = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{ref}:{ROUTER}/{name}"], capture_output=True, check=False
        )
        if shown.returncode != 0:
            raise SystemExit(
                f"--baseline {ref}: cannot read {ROUTER}/{name}: {shown.stderr.decode().strip()}"
            )
        (into / name).write_bytes(shown.stdout)
    return into


async def server_cycle(http: ModuleType, requests: int) -> float:
    """CPU microseconds per request through the proxy port's protocol (parse, handle, write)."""
    reply = http.HTTPResponse(200, b'{"score": 0.5}', [("Content-Type", "application/json")])

    async def handler(request: Any) -> Any:
        return reply

    server = http.HTTPServer(handler, max_body_bytes=lambda: 1 << 20)
    connection = http._Connection(server)
    transport = NullTransport()
    connection.connection_made(transport)
    started = time.process_time()
    for _ in range(requests):
        connection.data_received(REQUEST)
        while connection.busy:
            await asyncio.sleep(0)
    elapsed = time.process_time() - started
    if transport.writes != requests:
        raise SystemExit(f"{http.__name__}: {transport.writes} responses for {requests} requests")
    return elapsed / requests * 1e6


async def upstream_cycle(upstream: ModuleType, requests: int) -> float:
    """CPU microseconds per response parsed by the upstream client's protocol."""
    connection = upstream._Connection()
    connection.connection_made(NullTransport())
    started = time.process_time()
    for _ in range(requests):
        waiter = connection.send(b"", False)
        connection.data_received(RESPONSE)
        response = waiter.result()
    elapsed = time.process_time() - started
    if response.status != 200 or not response.body:
        raise SystemExit(f"{upstream.__name__}: unexpected response {response}")
    return elapsed / requests * 1e6


async def measure(versions: dict[str, dict[str, ModuleType]], rounds: int, requests: int) -> dict[str, Any]:
    samples: dict[str, dict[str, list[float]]] = {
        kind: {version: [] for version in versions} for kind in ("server_cycle_us", "upstream_cycle_us")
    }
    for _ in range(rounds):
        for version, modules in versions.items():  # alternating, so drift touches both alike
            samples["server_cycle_us"][version].append(await server_cycle(modules["http"], requests))
            samples["upstream_cycle_us"][version].append(await upstream_cycle(modules["upstream"], requests))
    summary: dict[str, Any] = {}
    for kind, by_version in samples.items():
        medians = {version: round(statistics.median(values), 2) for version, values in by_version.items()}
        summary[kind] = dict(medians)
        if "baseline" in medians:
            summary[kind]["ratio"] = round(medians["current"] / medians["baseline"], 3)
        for version, values in by_version.items():
            print(f"  {kind} {version:8s} " + " ".join(f"{v:6.2f}" for v in sorted(values)), file=sys.stderr)
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", metavar="REF", help="git revision to compare with (e.g. HEAD~1)")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--requests", type=int, default=20000, help="requests per round and version")
    args = parser.parse_args()
    current = ROOT / ROUTER
    versions = {"current": {"http": load(current / "http.py", "current_http")}}
    versions["current"]["upstream"] = load(current / "upstream.py", "current_upstream")
    with tempfile.TemporaryDirectory() as tmp:
        if args.baseline:
            old = baseline_sources(args.baseline, Path(tmp))
            versions["baseline"] = {
                "http": load(old / "http.py", "baseline_http"),
                "upstream": load(old / "upstream.py", "baseline_upstream"),
            }
        print(
            f"router parsing benchmark: {args.rounds} alternating rounds of {args.requests} requests,"
            f" CPU time of this process; baseline {args.baseline or '(none)'}",
            file=sys.stderr,
        )
        try:
            import uvloop

            summary = uvloop.run(measure(versions, args.rounds, args.requests))
        except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
            summary = asyncio.run(measure(versions, args.rounds, args.requests))
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
