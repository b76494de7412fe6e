"""`make bench-scale`: N ModelExperiments on one operator process, against the local control plane.

For each N (default 50, 200, 500; ``BENCH_SCALE_NS=50,200`` overrides), in fresh namespaces of one
local control plane (kube-apiserver, etcd, controller-manager, scheduler, kwok) with a real Prometheus:

1. every experiment gets its own champion and challenger Deployments (kwok makes them Ready) and
   Services; every fifth has two challengers (three variants); the Router provider writes each one's
   routes ConfigMap. Prometheus has no series for the queries (no traffic needed: the operator still
   asks every query every tick).
2. ``arbiter run -n <this run's namespaces>`` starts; all experiments are applied at once; the time
   until none is Pending any more is measured.
3. after a warm-up of one interval, a measurement window (six intervals, at least 60 s) records:
   - the actual interval between each experiment's ticks, from Prometheus's query log (every tick
     evaluates its queries at one instant, ``time``, and the queries name the experiment), against
     the configured ``spec.analysis.interval``: median, p95, max, and the share within 1.1x;
   - operator CPU seconds per tick (``/proc/<pid>/stat``) and peak RSS (``VmHWM``);
   - API requests per tick: the delta of kube-apiserver's ``apiserver_request_total`` for the
     resources the operator uses (modelexperiments, deployments, services, configmaps, events),
     which nothing else in the bench touches during the window;
   - Prometheus queries per tick (query-log lines), for experiments with 2 and with 3 variants.

The peer measured in the same run is the configured interval (ratios of the tick intervals to it) and,
with ``BENCH_SCALE_PEER=<git ref>``, the operator at that ref (its ``operator/`` tree is exported from
git and run with the same virtualenv) on the same N in its own namespaces; ``*_vs_peer`` ratios are
current / peer.

Progress goes to stderr; the last line of stdout is one JSON object. ``--quick`` runs one N=20 slice
with a 5 s interval and a 30 s window (the bounded form).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import itertools
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
for extra in (ROOT / "hack", ROOT / "tests", ROOT / "tests" / "e2e"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from harness.env import deployment, service  # noqa: E402
from harness.experiment import (  # noqa: E402
    UNDECIDED_MDE,
    UNDECIDED_TEST,
    VariantRef,
    conversion_metric,
    error_rate_guardrail,
    experiment_manifest,
    latency_guardrail,
)
from localcluster import Cluster, Prometheus, down, up  # noqa: E402

CRD_FILE = ROOT / "crds" / "modelexperiment.yaml"
OPERATOR_RESOURCES = ("modelexperiments", "deployments", "services", "configmaps", "events")
ON_TIME = 1.1  # an interval within 10% of the configured one is on time
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def say(message: str) -> None:
    print(f"[bench-scale {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- the objects ----------------------------------------------------------------------------------------


def experiment_objects(index: int, prometheus_url: str, interval: str) -> list[dict[str, Any]]:
    """Deployments, Services and the ModelExperiment of experiment ``index`` (names unique across runs)."""
    name = f"e{index}"
    variant_names = ["v1", "v2", "v3"] if index % 5 == 4 else ["v1", "v2"]
    refs = [VariantRef(v, f"{name}-{v}", f"{name}-{v}", "http://unused") for v in variant_names]
    manifest = experiment_manifest(
        name,
        champion=refs[0],
        challengers=refs[1:],
        prometheus_url=prometheus_url,
        config_map=f"{name}-routes",
        steps=[{"weight": 10, "minDuration": "1h"}, {"weight": 50}],
        interval=interval,
        guardrails=[latency_guardrail(), error_rate_guardrail()],
        primary=conversion_metric(mde=UNDECIDED_MDE),
        test=UNDECIDED_TEST,
        decision={"maxDuration": "24h"},
    )
    for variant in [manifest["spec"]["champion"], *manifest["spec"]["challengers"]]:
        variant.pop("url")  # the Router provider reads each Service, as in a cluster
    workloads: list[dict[str, Any]] = []
    for ref in refs:
        workloads.append(deployment(ref.deployment, ref.deployment, 1))
        workloads.append(service(ref.service, ref.deployment))
    return [*workloads, manifest]


class Api:
    """Plain REST calls on the cluster with the kubernetes client (one pooled client, many threads)."""

    def __init__(self, kubeconfig: str) -> None:
        from kubernetes import client, config

        configuration = client.Configuration()
        config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)  # type: ignore[no-untyped-call]
        configuration.connection_pool_maxsize = 16
        self._api = client.ApiClient(configuration)

    def request(self, method: str, path: str, body: Any = None) -> Any:
        _, url, headers, payload, _ = self._api.param_serialize(
            method,
            path,
            header_params={"Content-Type": "application/json", "Accept": "application/json"},
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self._api.call_api(method, url, headers, payload)
        data = response.read()
        if response.status >= 400:
            raise RuntimeError(f"{method} {path}: {response.status} {data[:300]!r}")
        return json.loads(data) if data else None

    def create(self, namespace: str, obj: dict[str, Any]) -> None:
        kind = obj["kind"]
        base = {
            "Deployment": f"/apis/apps/v1/namespaces/{namespace}/deployments",
            "Service": f"/api/v1/namespaces/{namespace}/services",
            "ModelExperiment": f"/apis/arbiter.dev/v1alpha1/namespaces/{namespace}/modelexperiments",
        }[kind]
        self.request("POST", base, {**obj, "metadata": {**obj["metadata"], "namespace": namespace}})


def create_all(api: Api, objects: list[tuple[str, dict[str, Any]]]) -> None:
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        for future in [pool.submit(api.create, ns, obj) for ns, obj in objects]:
            future.result()


# -- measurements -----------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def rss_mb(pid: int, field: str = "VmHWM") -> float:
    """The peak (VmHWM) or current (VmRSS) resident set of a process, in MiB."""
    match = re.search(rf"{field}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(match.group(1)) / 1024 if match else float("nan")


_REQUEST_LINE = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$")


def api_requests(cluster: Cluster) -> dict[str, float]:
    """apiserver_request_total by "verb resource" for the operator's resources."""
    text = cluster.kubectl("get", "--raw", "/metrics", timeout=60).stdout
    totals: dict[str, float] = {}
    for line in text.splitlines():
        match = _REQUEST_LINE.match(line)
        if not match:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"]))
        if labels.get("resource") not in OPERATOR_RESOURCES:
            continue
        key = f"{labels.get('verb')} {labels['resource']}" + (
            f"/{labels['subresource']}" if labels.get("subresource") else ""
        )
        totals[key] = totals.get(key, 0.0) + float(match["value"])
    return totals


_EXPERIMENT = re.compile(r'experiment="(e\d+)"')


def ticks_from_query_log(path: Path, offset: int, start: float, end: float) -> dict[str, dict[float, int]]:
    """experiment -> {evaluation time of a tick: queries in it}, for ticks evaluated in [start, end)."""
    ticks: dict[str, dict[float, int]] = {}
    with path.open() as log:
        log.seek(offset)
        for line in log:
            try:
                params = json.loads(line)["params"]
            except (ValueError, KeyError):
                continue
            match = _EXPERIMENT.search(params.get("query", ""))
            if match is None:
                continue
            at = _rfc3339(params.get("start") or params.get("end"))
            if at is None or not start <= at < end:
                continue
            per = ticks.setdefault(match.group(1), {})
            per[at] = per.get(at, 0) + 1
    return ticks


def _rfc3339(text: str | None) -> float | None:
    if not text:
        return None
    import datetime as dt

    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


# -- one run ---------------------------------------------------------------------------------------------


class Operator:
    """`arbiter run` as a subprocess, from this checkout or from an exported peer tree."""

    def __init__(self, workdir: Path, kubeconfig: str, namespaces: str, source: Path | None) -> None:
        self.log_path = workdir / "operator.log"
        self.liveness = f"http://127.0.0.1:{_free_port()}/healthz"
        env = {**os.environ, "KUBECONFIG": kubeconfig}
        if source is not None:
            env["PYTHONPATH"] = f"{source / 'operator'}:{env.get('PYTHONPATH', '')}"
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "arbiter", "run", "-n", namespaces, "--liveness", self.liveness],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=workdir,
            start_new_session=True,
        )
        log.close()

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"operator exited:\n{self.log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.liveness, timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"operator not live after {timeout}s:\n{self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def phases(api: Api, namespaces: list[str]) -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for namespace in namespaces:
        listing = api.request("GET", f"/apis/arbiter.dev/v1alpha1/namespaces/{namespace}/modelexperiments")
        for item in listing["items"]:
            found[item["metadata"]["name"]] = (item.get("status") or {}).get("phase")
    return found


def deployments_ready(api: Api, namespaces: list[str]) -> tuple[int, int]:
    ready = total = 0
    for namespace in namespaces:
        listing = api.request("GET", f"/apis/apps/v1/namespaces/{namespace}/deployments")
        for item in listing["items"]:
            total += 1
            wanted = item["spec"].get("replicas", 1)
            ready += int((item.get("status") or {}).get("readyReplicas", 0) >= wanted)
    return ready, total


def run_one(
    label: str,
    n: int,
    interval: float,
    window: float,
    first_index: int,
    cluster: Cluster,
    api: Api,
    prometheus: Prometheus,
    workdir: Path,
    source: Path | None,
) -> dict[str, Any]:
    """Measure one operator (``source``: a peer tree, or None for this checkout) on ``n`` experiments."""
    run_id = f"{label}-{n}-{int(time.time()) % 100000}"
    namespace_count = min(10, max(2, n // 50))
    namespaces = [f"scale-{run_id}-{i}" for i in range(namespace_count)]
    run_dir = workdir / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    say(f"{label} N={n}: {namespace_count} namespaces, {n} experiments, interval {interval:g}s")
    for namespace in namespaces:
        api.request("POST", "/api/v1/namespaces", {"metadata": {"name": namespace}})
    workloads: list[tuple[str, dict[str, Any]]] = []
    experiments: list[tuple[str, dict[str, Any]]] = []
    variants: dict[str, int] = {}
    for i in range(n):
        namespace = namespaces[i % namespace_count]
        *objects, experiment = experiment_objects(first_index + i, prometheus.url, f"{interval:g}s")
        workloads += [(namespace, o) for o in objects]
        experiments.append((namespace, experiment))
        variants[experiment["metadata"]["name"]] = 1 + len(experiment["spec"]["challengers"])
    started = time.monotonic()
    create_all(api, workloads)
    while True:
        ready, total = deployments_ready(api, namespaces)
        if ready == total:
            break
        say(f"  {ready}/{total} Deployments ready")
        time.sleep(3)
    say(f"  {len(workloads)} workload objects created and ready in {time.monotonic() - started:.0f}s")

    operator = Operator(run_dir, cluster.kubeconfig, f"scale-{run_id}-*", source)
    try:
        operator.wait_ready()
        pid = operator.process.pid
        applied = time.monotonic()
        create_all(api, experiments)
        while True:
            current = phases(api, namespaces)
            pending = sum(1 for p in current.values() if p in (None, "Pending"))
            if pending == 0:
                break
            if time.monotonic() - applied > 900:
                raise RuntimeError(f"{pending} experiments still Pending after 900 s")
            time.sleep(1)
        leave_pending = time.monotonic() - applied
        say(f"  all {n} experiments left Pending {leave_pending:.1f}s after they were applied")
        time.sleep(interval)  # warm-up: one full interval of ticks before measuring

        log_offset = prometheus.query_log_path.stat().st_size if prometheus.query_log_path.exists() else 0
        requests_before = api_requests(cluster)
        cpu_before = cpu_seconds(pid)
        window_start = time.time()
        say(f"  measuring for {window:.0f}s")
        time.sleep(window)  # the measurement window itself (a benchmark's fixed duration, not a wait)
        cpu_after = cpu_seconds(pid)
        window_end = time.time()
        requests_after = api_requests(cluster)
        rss = rss_mb(pid)
        rss_now = rss_mb(pid, "VmRSS")
        final_phases = phases(api, namespaces)
    finally:
        operator.stop()

    ticks = ticks_from_query_log(prometheus.query_log_path, log_offset, window_start, window_end)
    tick_count = sum(len(t) for t in ticks.values())
    intervals = []
    for times in ticks.values():
        ordered = sorted(times)
        intervals += [b - a for a, b in itertools.pairwise(ordered)]
    ratios = [i / interval for i in intervals]
    by_variants: dict[int, list[int]] = {}
    for name, per_tick in ticks.items():
        by_variants.setdefault(variants.get(name, 0), []).extend(per_tick.values())
    deltas = {k: requests_after.get(k, 0.0) - requests_before.get(k, 0.0) for k in requests_after}
    deltas = {k: v for k, v in sorted(deltas.items()) if v > 0}
    requests = sum(deltas.values())
    expected_ticks = n * window / interval
    result: dict[str, Any] = {
        "operator": label,
        "n": n,
        "namespaces": namespace_count,
        "interval_s": interval,
        "window_s": round(window_end - window_start, 1),
        "ticks": tick_count,
        "ticks_expected": round(expected_ticks),
        "experiments_ticking": len(ticks),
        "interval_median_s": round(statistics.median(intervals), 3) if intervals else None,
        "interval_p95_s": round(percentile(intervals, 0.95), 3) if intervals else None,
        "interval_max_s": round(max(intervals), 3) if intervals else None,
        "interval_p95_vs_configured": round(percentile(ratios, 0.95), 3) if ratios else None,
        "interval_median_vs_configured": round(statistics.median(ratios), 3) if ratios else None,
        "on_time_share": round(sum(r <= ON_TIME for r in ratios) / len(ratios), 4) if ratios else None,
        "cpu_s_per_tick": round((cpu_after - cpu_before) / tick_count, 5) if tick_count else None,
        "cpu_share_of_one_core": round((cpu_after - cpu_before) / (window_end - window_start), 3),
        "peak_rss_mb": round(rss, 1),
        "rss_mb_at_end": round(rss_now, 1),
        "api_requests_per_tick": round(requests / tick_count, 3) if tick_count else None,
        "api_requests_by_kind": {k: int(v) for k, v in deltas.items()},
        "prometheus_queries_per_tick": round(sum(sum(v) for v in by_variants.values()) / tick_count, 3)
        if tick_count
        else None,
        "prometheus_queries_per_tick_by_variants": {
            str(k): round(sum(v) / len(v), 3) for k, v in sorted(by_variants.items()) if v
        },
        "seconds_until_none_pending": round(leave_pending, 1),
        "phases_at_end": {
            p or "None": list(final_phases.values()).count(p) for p in set(final_phases.values())
        },
    }
    say(f"  {json.dumps(result)}")
    return result


def export_peer(ref: str, workdir: Path) -> Path:
    """The ``operator/`` tree at git ``ref``, exported (run with this checkout's virtualenv)."""
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", ref], check=True, capture_output=True, text=True
    ).stdout.strip()
    target = workdir / f"peer-{commit}"
    if not (target / "operator").exists():
        target.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", commit, "operator"], check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--ns", default=os.environ.get("BENCH_SCALE_NS", "50,200,500"), help="experiment counts"
    )
    parser.add_argument(
        "--peer", default=os.environ.get("BENCH_SCALE_PEER"), help="git ref of a peer operator"
    )
    parser.add_argument(
        "--current",
        default=os.environ.get("BENCH_SCALE_CURRENT"),
        help="git ref to measure as 'current' (default: this checkout's operator/ as it is on disk)",
    )
    parser.add_argument("--interval", type=float, default=None, help="analysis interval in seconds")
    parser.add_argument("--window", type=float, default=None, help="measurement window in seconds")
    parser.add_argument("--quick", action="store_true", help="one N=20 slice, 5 s interval, 30 s window")
    parser.add_argument("--workdir", default=str(ROOT / ".bench" / "scale"))
    args = parser.parse_args(argv)
    counts = [20] if args.quick else [int(x) for x in args.ns.split(",") if x.strip()]
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    cluster_dir = Path(tempfile.mkdtemp(prefix="cluster-", dir=workdir))
    peer_source = export_peer(args.peer, workdir) if args.peer else None
    current_source = export_peer(args.current, workdir) if args.current else None

    say(f"starting the control plane in {cluster_dir}")
    cluster = up(
        cluster_dir,
        die_with_parent=True,
        # Creating hundreds of Deployments: let the controllers create their Pods without throttling.
        extra_args={"kube-controller-manager": ["--kube-api-qps=200", "--kube-api-burst=400"]},
    )
    prometheus = Prometheus(cluster_dir / "prometheus", die_with_parent=True, query_log=True)
    results: list[dict[str, Any]] = []
    try:
        prometheus.start()
        cluster.kubectl("apply", "--server-side", "-f", str(CRD_FILE))
        cluster.kubectl(
            "wait", "--for=condition=Established", "--timeout=60s", "crd/modelexperiments.arbiter.dev"
        )
        api = Api(cluster.kubeconfig)
        first_index = 0
        for n in counts:
            interval = args.interval or (5.0 if args.quick else (10.0 if n <= 200 else 30.0))
            window = args.window or (30.0 if args.quick else max(60.0, 6 * interval))
            runs = [("peer", peer_source)] if peer_source is not None else []
            runs.append(("current", current_source))
            by_label: dict[str, dict[str, Any]] = {}
            for label, source in runs:
                by_label[label] = run_one(
                    label, n, interval, window, first_index, cluster, api, prometheus, workdir, source
                )
                first_index += n
            current = by_label["current"]
            if "peer" in by_label:
                peer = by_label["peer"]
                current["peer"] = peer
                for key in (
                    "cpu_s_per_tick",
                    "api_requests_per_tick",
                    "prometheus_queries_per_tick",
                    "interval_p95_s",
                    "peak_rss_mb",
                    "seconds_until_none_pending",
                ):
                    if current.get(key) and peer.get(key):
                        current[f"{key}_vs_peer"] = round(current[key] / peer[key], 3)
            results.append(current)
    finally:
        prometheus.stop()
        down(cluster_dir)
    goals = {
        "cpu_s_per_tick_max": 0.010,
        "on_time_share_min": 0.98,
        "interval_p95_vs_configured_max": 1.2,
        "peak_rss_mb_max": 300,
    }
    print(
        json.dumps(
            {
                "bench": "scale",
                "machine": f"{os.cpu_count()} cores, {_memory_gb():.0f} GiB",
                "on_time": f"interval <= {ON_TIME}x configured",
                "goals": goals,
                "runs": results,
            }
        )
    )
    return 0


def _memory_gb() -> float:
    match = re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text())
    return int(match.group(1)) / 1024 / 1024 if match else float("nan")


if __name__ == "__main__":
    sys.exit(main())
