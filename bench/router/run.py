"""Benchmark `arbiter router` against Debian's nginx and a direct baseline, with wrk, on loopback.

Layout (2-core machine): the proxy under test (nginx with one worker, or `arbiter router`, one
process) is pinned to CPU 1; wrk (one thread) and the trivial upstream (nginx, one worker, static
JSON) share CPU 0. Each proxy is measured in three modes:

- plain:  random weighted split 90/10 over v1/v2
- sticky: split 90/10 keyed on the x-user-id header (nginx `split_clients`, Arbiter's hash)
- shadow: serve from v1, mirror every request to v2 (nginx `mirror`; Arbiter also compares bodies)

at a fixed request rate (wrk's Lua `delay()` paces each connection; Debian's wrk has no -R) and at
saturation (64 connections, no pacing). "Added" latency is the proxy's percentile minus that of a
direct run at the same rate taken just before it. The last line printed is the JSON summary;
everything else (stderr) is context.

With `--baseline REF` (a git revision, e.g. `HEAD~1`), the router's code as of REF is measured too,
in the same run and under the same conditions: `git archive REF operator/` is unpacked into the
work dir and run with the same interpreter and dependencies (PYTHONPATH put in front), and the
summary gains `arbiter_baseline` and `vs_baseline` (this checkout over REF) entries. That is how a
change to the router's hot path (its HTTP parsing, say) is judged before and after on a shared
machine, where runs minutes apart measure different machines.

Usage: python bench/router/run.py [--rate 1000] [--rate-seconds 8] [--saturation-seconds 5]
                                  [--baseline REF]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODES = ("plain", "sticky", "shadow")
RATE_CONNECTIONS = 10
SATURATION_CONNECTIONS = 64
BODY = '{"features": [0.1, 0.2, 0.3, 0.4]}'
# v2 answers slightly differently so Arbiter's shadow comparison really parses and compares JSON.
V1_REPLY = '{"score": 0.5, "label": "ok"}'
V2_REPLY = '{"score": 0.51, "label": "ok"}'


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pinned(cpu: int | None, argv: list[str]) -> list[str]:
    if cpu is None or shutil.which("taskset") is None or (os.cpu_count() or 1) < 2:
        return argv
    return ["taskset", "-c", str(cpu), *argv]


def nginx_binary() -> str:
    for candidate in (shutil.which("nginx"), "/usr/sbin/nginx"):
        if candidate and Path(candidate).exists():
            return candidate
    raise SystemExit("nginx is not installed: run `make system-deps`")


NGINX_COMMON = """
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {prefix}/tmp;
  proxy_temp_path {prefix}/tmp;
  fastcgi_temp_path {prefix}/tmp;
  uwsgi_temp_path {prefix}/tmp;
  scgi_temp_path {prefix}/tmp;
  keepalive_requests 1000000;
  keepalive_timeout 120s;
{body}
}}
"""

UPSTREAM_BODY = """
  server {{ listen 127.0.0.1:{v1}; location / {{ default_type application/json; return 200 '{v1_reply}'; }} }}
  server {{ listen 127.0.0.1:{v2}; location / {{ default_type application/json; return 200 '{v2_reply}'; }} }}
"""

PROXY_UPSTREAMS = """
  upstream v1 {{ server 127.0.0.1:{v1}; keepalive 128; }}
  upstream v2 {{ server 127.0.0.1:{v2}; keepalive 128; }}
  upstream weighted {{ server 127.0.0.1:{v1} weight=90; server 127.0.0.1:{v2} weight=10; keepalive 128; }}
  proxy_http_version 1.1;
  proxy_set_header Connection "";
"""

PROXY_MODES = {
    "plain": """
  server {{ listen 127.0.0.1:{port};
    location / {{ proxy_pass http://weighted; add_header x-arbiter-variant $upstream_addr; }} }}
""",
    "sticky": """
  split_clients "${{http_x_user_id}}" $variant {{ 90% v1; * v2; }}
  server {{ listen 127.0.0.1:{port};
    location / {{ proxy_pass http://$variant; add_header x-arbiter-variant $variant; }} }}
""",
    "shadow": """
  server {{ listen 127.0.0.1:{port};
    location / {{ mirror /mirror; mirror_request_body on; proxy_pass http://v1;
                 add_header x-arbiter-variant v1; }}
    location = /mirror {{ internal; proxy_pass http://v2$request_uri; }} }}
""",
}

ARBITER_MODES = {
    "plain": "",
    "sticky": "stickiness: {header: x-user-id}\n",
    "shadow": "shadow: {variant: v2, percent: 100, timeoutSeconds: 1, compare: {numericTolerance: 0.001}}\n",
}

WRK_SCRIPT = """
local body = '{body}'
local sticky = {sticky}
local pause = {pause}
wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
math.randomseed(42)

request = function()
  if sticky then
    return wrk.format(nil, nil, {{["Content-Type"] = "application/json",
                                 ["x-user-id"] = "user-" .. math.random(1, 1000000)}}, body)
  end
  return wrk.format()
end

if pause > 0 then
  delay = function() return pause end
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{{"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "errors": %d, "non2xx": %d}}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status))
end
"""


@dataclass
class Run:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int = 0
    proxy_cpu_seconds: float | None = None

    @property
    def per_cpu_second(self) -> float | None:
        """Requests per second of CPU the proxy used: throughput on one whole core, whatever else ran."""
        if not self.proxy_cpu_seconds:
            return None
        return self.requests / self.proxy_cpu_seconds

    def describe(self) -> str:
        text = f"{self.rps:9.0f} req/s  p50 {self.p50_ms:7.3f} ms  p99 {self.p99_ms:7.3f} ms  errors {self.errors}"
        if self.per_cpu_second is not None:
            text += f"  ({self.per_cpu_second:,.0f} req per proxy CPU-second)"
        return text


def process_tree(pid: int) -> list[int]:
    """The pid and its children (nginx's master and worker)."""
    pids = [pid]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                pids.append(int(entry.name))
    return pids


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU time used so far by these processes."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


class Bench:
    def __init__(
        self,
        workdir: Path,
        rate: int,
        rate_seconds: int,
        saturation_seconds: int,
        baseline_code: Path | None = None,
    ) -> None:
        self.workdir = workdir
        self.baseline_code = baseline_code
        self.rate = rate
        self.rate_seconds = rate_seconds
        self.saturation_seconds = saturation_seconds
        self.nginx = nginx_binary()
        self.wrk = shutil.which("wrk") or "/usr/bin/wrk"
        self.arbiter = str(Path(sys.executable).with_name("arbiter"))
        self.v1, self.v2 = free_port(), free_port()

    # processes ------------------------------------------------------------------------------------

    @contextmanager
    def nginx_server(self, name: str, body: str, cpu: int | None) -> Iterator[int]:
        prefix = self.workdir / name
        (prefix / "tmp").mkdir(parents=True, exist_ok=True)
        conf = prefix / "nginx.conf"
        conf.write_text(NGINX_COMMON.format(prefix=prefix, body=body))
        argv = pinned(cpu, [self.nginx, "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", str(conf)])
        check = subprocess.run(
            [self.nginx, "-t", "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", str(conf)],
            capture_output=True,
            text=True,
            check=False,
        )
        if check.returncode != 0:
            raise SystemExit(f"nginx rejected {conf}:\n{check.stderr}")
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            yield process.pid
        finally:
            process.send_signal(signal.SIGQUIT)  # graceful: the master stops its worker
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)

    @contextmanager
    def arbiter_router(self, mode: str, port: int, baseline: bool = False) -> Iterator[tuple[int, str]]:
        """Run `arbiter router` from this checkout, or (`baseline`) from the --baseline code."""
        routes = self.workdir / f"routes-{mode}.yaml"
        routes.write_text(
            "experiment: bench\nvariants:\n"
            f"  - {{name: v1, url: 'http://127.0.0.1:{self.v1}', weight: 90}}\n"
            f"  - {{name: v2, url: 'http://127.0.0.1:{self.v2}', weight: 10}}\n" + ARBITER_MODES[mode]
        )
        metrics_port = free_port()
        argv = pinned(
            1,
            [
                self.arbiter,
                "router",
                "--config",
                str(routes),
                "--listen",
                f"127.0.0.1:{port}",
                "--metrics-listen",
                f"127.0.0.1:{metrics_port}",
                "--log-level",
                "WARNING",
            ],
        )
        env = dict(os.environ)
        if baseline:
            assert self.baseline_code is not None
            env["PYTHONPATH"] = os.pathsep.join(
                [str(self.baseline_code), *filter(None, [env.get("PYTHONPATH")])]
            )
        log_name = f"arbiter-{'baseline-' if baseline else ''}{mode}.log"
        errors = open(self.workdir / log_name, "w")  # noqa: SIM115 (closed below)
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=errors, env=env)
        try:
            yield process.pid, f"http://127.0.0.1:{metrics_port}/metrics"
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
            errors.close()

    # load -----------------------------------------------------------------------------------------

    def wait_ready(self, port: int) -> None:
        deadline = time.monotonic() + 30
        while True:
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/predict", data=BODY.encode(), headers={"x-user-id": "warm"}
            )
            try:
                with urllib.request.urlopen(request, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"nothing answers on port {port}")
            time.sleep(0.1)

    def wrk_run(self, port: int, seconds: int, connections: int, pause_ms: float, sticky: bool) -> Run:
        script = self.workdir / f"wrk-{'sticky' if sticky else 'plain'}-{pause_ms:g}.lua"
        script.write_text(WRK_SCRIPT.format(body=BODY, sticky="true" if sticky else "false", pause=pause_ms))
        argv = pinned(
            0,
            [
                self.wrk,
                "-t1",
                f"-c{connections}",
                f"-d{seconds}s",
                "--timeout",
                "5s",
                "-s",
                str(script),
                f"http://127.0.0.1:{port}/predict",
            ],
        )
        result = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
        lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
        if result.returncode != 0 or not lines:
            raise SystemExit(f"wrk failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        data = json.loads(lines[-1])
        return Run(
            rps=data["requests"] / (data["duration_us"] / 1e6),
            p50_ms=data["p50_us"] / 1000,
            p99_ms=data["p99_us"] / 1000,
            errors=data["errors"] + data["non2xx"],
            requests=data["requests"],
        )

    def at_rate(self, label: str, port: int, sticky: bool) -> Run:
        pause_ms = RATE_CONNECTIONS * 1000 / self.rate
        run = self.wrk_run(port, self.rate_seconds, RATE_CONNECTIONS, pause_ms, sticky)
        log(f"  {label:22s} at rate   {run.describe()}")
        return run

    def measure(self, label: str, port: int, sticky: bool, proxy_pid: int | None = None) -> tuple[Run, Run]:
        self.wait_ready(port)
        # Warm up connections and caches; not measured.
        self.wrk_run(port, 1, SATURATION_CONNECTIONS, 0, sticky)
        at_rate = self.at_rate(label, port, sticky)
        pids = process_tree(proxy_pid) if proxy_pid is not None else []
        cpu_before = cpu_seconds(pids)
        saturated = self.wrk_run(port, self.saturation_seconds, SATURATION_CONNECTIONS, 0, sticky)
        if pids:
            saturated.proxy_cpu_seconds = cpu_seconds(pids) - cpu_before
        log(f"  {label:22s} saturated {saturated.describe()}")
        return at_rate, saturated


def shadow_counts(metrics_url: str) -> dict[str, float]:
    try:
        with urllib.request.urlopen(metrics_url, timeout=5) as response:
            text = response.read().decode()
    except (urllib.error.URLError, OSError):
        return {}
    counts: dict[str, float] = {}
    for line in text.splitlines():
        for name in (
            "arbiter_router_shadow_comparisons_total",
            "arbiter_router_shadow_dropped_total",
            "arbiter_router_upstream_errors_total",
        ):
            if line.startswith(name + "{"):
                key = name.removeprefix("arbiter_router_").removesuffix("_total")
                counts[key] = counts.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return counts


def added(run: Run, direct: Run) -> tuple[float, float]:
    return run.p50_ms - direct.p50_ms, run.p99_ms - direct.p99_ms


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 2) if b > 0 else None


def unpack_baseline(ref: str, workdir: Path) -> Path:
    """Unpack `operator/` as of git revision `ref` into workdir; return the directory to import from."""
    target = workdir / "baseline"
    target.mkdir()
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--verify", f"{ref}^{{commit}}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if commit.returncode != 0:
        raise SystemExit(f"--baseline {ref}: not a git revision here ({commit.stderr.strip()})")
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", commit.stdout.strip(), "operator"],
        capture_output=True,
        check=True,
    )
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    log(f"  baseline: operator/ as of {ref} ({commit.stdout.strip()[:12]}) in {target}")
    return target / "operator"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=1000, help="fixed request rate, req/s (default 1000)")
    parser.add_argument("--rate-seconds", type=int, default=8)
    parser.add_argument("--saturation-seconds", type=int, default=5)
    parser.add_argument(
        "--baseline",
        metavar="REF",
        help="also measure the router as of this git revision (e.g. HEAD~1), in the same run",
    )
    args = parser.parse_args()

    (ROOT / ".bench").mkdir(exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="router-", dir=ROOT / ".bench"))
    baseline_code = unpack_baseline(args.baseline, workdir) if args.baseline else None
    bench = Bench(workdir, args.rate, args.rate_seconds, args.saturation_seconds, baseline_code)
    proxies = ("nginx", "arbiter", "arbiter_baseline") if baseline_code else ("nginx", "arbiter")
    load = os.getloadavg()[0]
    log(f"router benchmark: {os.cpu_count()} CPUs, load average {load:.2f} before start, work dir {workdir}")
    log(
        f"  fixed rate {args.rate} req/s ({RATE_CONNECTIONS} paced connections, {args.rate_seconds}s),"
        f" saturation {SATURATION_CONNECTIONS} connections ({args.saturation_seconds}s); proxy on CPU 1,"
        " wrk + upstream on CPU 0"
    )

    upstream = UPSTREAM_BODY.format(v1=bench.v1, v2=bench.v2, v1_reply=V1_REPLY, v2_reply=V2_REPLY)
    results: dict[str, dict[str, tuple[Run, Run]]] = {proxy: {} for proxy in proxies}
    # A direct baseline right before every proxy run at the same rate: the machine is shared, and
    # a baseline taken minutes earlier measures a different machine.
    baselines: dict[str, dict[str, Run]] = {proxy: {} for proxy in proxies}
    shadow_info: dict[str, float] = {}
    started = time.monotonic()
    with bench.nginx_server("upstream", upstream, cpu=0):
        direct_saturated = bench.measure("direct", bench.v1, sticky=False)[1]
        # Mode by mode, every proxy back to back: a neighbour's load that comes and goes then
        # touches the proxies of one mode alike instead of all the modes of one proxy.
        for mode in MODES:
            for proxy in proxies:
                port = free_port()
                sticky = mode == "sticky"
                baselines[proxy][mode] = bench.at_rate(f"direct ({proxy} {mode})", bench.v1, sticky)
                if proxy == "nginx":
                    body = PROXY_UPSTREAMS.format(v1=bench.v1, v2=bench.v2) + PROXY_MODES[mode].format(
                        port=port
                    )
                    with bench.nginx_server(f"proxy-{mode}", body, cpu=1) as pid:
                        results[proxy][mode] = bench.measure(f"nginx {mode}", port, sticky, pid)
                else:
                    baseline = proxy == "arbiter_baseline"
                    with bench.arbiter_router(mode, port, baseline) as (pid, metrics_url):
                        results[proxy][mode] = bench.measure(f"{proxy} {mode}", port, sticky, pid)
                        if mode == "shadow" and not baseline:
                            shadow_info = shadow_counts(metrics_url)
    elapsed = time.monotonic() - started

    summary: dict[str, dict[str, dict[str, float | None]]] = {proxy: {} for proxy in proxies}
    summary["ratios"] = {}
    for proxy in proxies:
        for mode in MODES:
            at_rate, saturated = results[proxy][mode]
            add50, add99 = added(at_rate, baselines[proxy][mode])
            summary[proxy][mode] = {
                "added_p50_ms": round(add50, 3),
                "added_p99_ms": round(add99, 3),
                "max_rps": round(saturated.rps),
            }
            per_cpu = saturated.per_cpu_second
            if proxy != "nginx" and per_cpu is not None:
                summary[proxy][mode]["per_cpu_second"] = round(per_cpu)
    for mode in MODES:
        a, n = summary["arbiter"][mode], summary["nginx"][mode]
        summary["ratios"][mode] = {
            "added_p99": ratio(float(a["added_p99_ms"] or 0), float(n["added_p99_ms"] or 0)),
            "max_rps": ratio(float(a["max_rps"] or 0), float(n["max_rps"] or 0)),
        }
    if baseline_code is not None:
        # This checkout over the --baseline code: > 1 means faster (rps) or more added latency.
        summary["vs_baseline"] = {}
        for mode in MODES:
            new, old = summary["arbiter"][mode], summary["arbiter_baseline"][mode]
            summary["vs_baseline"][mode] = {
                "max_rps": ratio(float(new["max_rps"] or 0), float(old["max_rps"] or 0)),
                "per_cpu_second": ratio(
                    float(new.get("per_cpu_second") or 0), float(old.get("per_cpu_second") or 0)
                ),
                "added_p50": ratio(float(new["added_p50_ms"] or 0), float(old["added_p50_ms"] or 0)),
            }
    log(f"  direct saturated {direct_saturated.describe()}")
    for proxy in proxies:
        per_cpu = {m: results[proxy][m][1].per_cpu_second for m in MODES}
        log(
            f"  {proxy}: requests per proxy CPU-second at saturation: "
            + ", ".join(f"{m} {v:,.0f}" if v else f"{m} n/a" for m, v in per_cpu.items())
        )
    log(f"  arbiter shadow run counters: {shadow_info}")
    for proxy in proxies:
        plain, shadow = summary[proxy]["plain"], summary[proxy]["shadow"]
        log(
            f"  {proxy}: shadow minus plain added latency at rate:"
            f" p50 {float(shadow['added_p50_ms'] or 0) - float(plain['added_p50_ms'] or 0):+.3f} ms,"
            f" p99 {float(shadow['added_p99_ms'] or 0) - float(plain['added_p99_ms'] or 0):+.3f} ms"
        )
    log(f"  finished in {elapsed:.0f}s; load average now {os.getloadavg()[0]:.2f}")
    shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
