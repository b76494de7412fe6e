"""Support for the infrastructure faults of the chaos suite (tests/chaos/test_faults_*.py).

- :class:`FaultyPrometheus`: a small HTTP proxy in front of the real Prometheus that can be *down*
  (connections refused), *slow* (answers after the operator's timeout), answer *garbage* (not JSON, or
  JSON of the wrong shape) or *NaN* (every sample value replaced by ``NaN``), and heals on request.
- :class:`RouteWrites`: a watch on a router ConfigMap that counts who changed ``routes.yaml``.
- :class:`GitOpsReapplier`: plays Argo CD with self-heal: server-side applies its own ``routes.yaml``
  (field manager ``argocd-controller``) again and again.
- :func:`restart_component`: stop one control-plane process of a dedicated cluster (kube-apiserver,
  etcd) and start it again with the same command line, ports and data.
- Fixtures, imported explicitly by the test modules (tests/chaos has no conftest of its own):
  ``rollout_env`` (as in tests/e2e, on the session cluster) and ``dedicated_cluster`` (a control plane
  of the test module's own, so restarting its API server or etcd disturbs nobody else).

Every judged run is recorded with :func:`tests.chaos_ledger.record_run`.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parents[1]
for extra in (TESTS / "e2e", TESTS, TESTS.parent / "hack"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from harness.env import RolloutEnv  # noqa: E402
from localcluster import (  # noqa: E402
    Cluster,
    ClusterError,
    binaries,
    down,
    procs,
    up,
)
from localcluster.cluster import Layout, commands  # noqa: E402

from helpers import wait_for  # noqa: E402

#: Set to 1 (``make chaos`` does) for the fuller forms: more fault cycles per kind.
FULL_ENV = "ARBITER_CHAOS_FULL"


def full_chaos() -> bool:
    """True when the chaos target asked for the fuller (slower) forms of the fault tests."""
    return os.environ.get(FULL_ENV, "") not in ("", "0", "false")


def steps_entered(steps: list[int]) -> list[int]:
    """The steps in the order they were entered: ``[0, 0, 1, 1, 0]`` -> ``[0, 1, 0]`` (a step left and
    entered again shows twice)."""
    return [step for index, step in enumerate(steps) if index == 0 or steps[index - 1] != step]


def steps_entered_again(steps: list[int]) -> int:
    """How many times a step was entered after it had been left (the ledger's ``steps_doubled``)."""
    entered = steps_entered(steps)
    return len(entered) - len(set(entered))


# -- Prometheus faults ----------------------------------------------------------------------------

MODES = ("pass", "down", "slow", "garbage", "nan")
GARBAGE_BODIES = (
    b"<html><body>502 Bad Gateway</body></html>",  # a proxy's error page, served as 200
    b'{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"val',  # cut short
    b'{"status":"success","data":{"resultType":"vector","result":"oops"}}',  # wrong shape
    b'{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"abc"]}]}}',
)


def _nan_everywhere(payload: Any) -> Any:
    """The same answer with every sample value replaced by ``"NaN"`` (what ``0/0`` evaluates to)."""
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, dict):
        return payload
    result = data.get("result")
    if data.get("resultType") == "scalar" and isinstance(result, list) and len(result) == 2:
        data["result"] = [result[0], "NaN"]
    elif isinstance(result, list):
        for series in result:
            if isinstance(series, dict) and isinstance(series.get("value"), list):
                series["value"] = [series["value"][0], "NaN"]
    return payload


class FaultyPrometheus:
    """An HTTP proxy to a real Prometheus whose behaviour a test switches at run time.

    Args:
        upstream: the real Prometheus' base URL.
        slow_seconds: how long a *slow* answer waits before it is sent (longer than the operator's timeout).

    Modes: ``pass`` (forward), ``down`` (the port is closed: connection refused), ``slow`` (forward after
    ``slow_seconds``), ``garbage`` (HTTP 200 with one of :data:`GARBAGE_BODIES`, in turn), ``nan``
    (forward, every sample value replaced by NaN).
    """

    def __init__(self, upstream: str, slow_seconds: float = 4.0) -> None:
        self.upstream = upstream.rstrip("/")
        self.slow_seconds = slow_seconds
        self.port = procs.free_ports(1)[0]
        self.mode = "pass"
        self.requests: dict[str, int] = dict.fromkeys(MODES, 0)
        self._lock = threading.Lock()
        self._healed = threading.Event()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._garbage = 0
        self._connections: set[socket.socket] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultyPrometheus:
        self._listen()
        return self

    def close(self) -> None:
        self._healed.set()
        self._close_listener()

    def set_mode(self, mode: str) -> None:
        """Switch the fault; ``down`` closes the port, leaving ``down`` opens it again (same port)."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; one of {MODES}")
        previous = self.mode
        self.mode = mode
        if mode == "slow":
            self._healed.clear()
        else:
            self._healed.set()  # a slow answer still waiting is sent now
        if mode == "down" and previous != "down":
            self._close_listener()
        elif previous == "down" and mode != "down":
            self._listen()

    def count(self, mode: str) -> int:
        with self._lock:
            return self.requests[mode]

    def _listen(self) -> None:
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep pytest's output clean
                pass

            def do_GET(self) -> None:
                proxy._handle(self, None)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                proxy._handle(self, self.rfile.read(length))

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True

            def process_request(self, request: Any, client_address: Any) -> None:
                with proxy._lock:
                    proxy._connections.add(request)
                super().process_request(request, client_address)

            def shutdown_request(self, request: Any) -> None:
                with proxy._lock:
                    proxy._connections.discard(request)
                super().shutdown_request(request)

        deadline = time.monotonic() + 10
        while True:
            try:
                server = Server(("127.0.0.1", self.port), Handler)
                break
            except OSError:  # the old socket is still in TIME_WAIT-like teardown: try again shortly
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="faulty-prometheus", daemon=True)
        self._thread.start()

    def _close_listener(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        # Kept-alive connections too: a Prometheus that is down answers nobody.
        with self._lock:
            connections, self._connections = list(self._connections), set()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(5)

    def _handle(self, handler: http.server.BaseHTTPRequestHandler, body: bytes | None) -> None:
        mode = self.mode
        with self._lock:
            self.requests[mode] += 1
        if mode == "garbage":
            with self._lock:
                payload = GARBAGE_BODIES[self._garbage % len(GARBAGE_BODIES)]
                self._garbage += 1
            self._reply(handler, 200, payload)
            return
        if mode == "slow":
            self._healed.wait(self.slow_seconds)
        status, payload = self._forward(handler, body)
        if mode == "nan" and status == 200:
            with contextlib.suppress(ValueError):
                payload = json.dumps(_nan_everywhere(json.loads(payload))).encode()
        self._reply(handler, status, payload)

    def _forward(self, handler: http.server.BaseHTTPRequestHandler, body: bytes | None) -> tuple[int, bytes]:
        headers = {"Content-Type": handler.headers.get("Content-Type", "application/x-www-form-urlencoded")}
        request = urllib.request.Request(
            self.upstream + handler.path, data=body, headers=headers, method=handler.command
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return int(response.status), response.read()
        except urllib.error.HTTPError as err:
            return int(err.code), err.read()
        except OSError as err:
            return 502, f"upstream Prometheus failed: {err}".encode()

    @staticmethod
    def _reply(handler: http.server.BaseHTTPRequestHandler, status: int, payload: bytes) -> None:
        with contextlib.suppress(OSError):  # the operator gave up waiting (its timeout): nothing to send to
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(payload)))
            handler.end_headers()
            handler.wfile.write(payload)


# -- route writes ---------------------------------------------------------------------------------

GITOPS_MANAGER = "argocd-controller"


class RouteWrites:
    """Watch one ConfigMap and remember every distinct ``routes.yaml`` it carried, with who wrote it.

    ``changes`` lists ``(monotonic time, routes.yaml, managers)``; ``managers`` are the field managers
    whose managedFields entry for ``data`` is the newest at that moment.
    """

    def __init__(self, kube_api: Any, namespace: str, name: str) -> None:
        self.kube_api = kube_api
        self.namespace = namespace
        self.name = name
        self.changes: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"route-writes-{name}", daemon=True)

    def start(self) -> RouteWrites:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def values(self, since: float = 0.0) -> list[str]:
        with self._lock:
            return [text for at, text in self.changes if at >= since]

    def _record(self, obj: Any) -> None:
        text = ((obj.data or {}) if obj is not None else {}).get("routes.yaml")
        if text is None:
            return
        with self._lock:
            if not self.changes or self.changes[-1][1] != text:
                self.changes.append((time.monotonic(), text))

    def _run(self) -> None:
        from kubernetes import client, watch

        core = client.CoreV1Api(self.kube_api)
        selector = f"metadata.name={self.name}"
        while not self._stop.is_set():
            try:
                listed = core.list_namespaced_config_map(self.namespace, field_selector=selector)
                for item in listed.items:
                    self._record(item)
                stream = watch.Watch()
                for event in stream.stream(
                    core.list_namespaced_config_map,
                    self.namespace,
                    field_selector=selector,
                    resource_version=listed.metadata.resource_version,
                    timeout_seconds=5,
                ):
                    self._record(event["object"])
                    if self._stop.is_set():
                        stream.stop()
                        break
            except Exception:  # an API hiccup or an expired watch: list again
                self._stop.wait(0.2)


class GitOpsReapplier:
    """Argo CD with self-heal, as far as one ConfigMap is concerned: re-apply the manifest every ``period``.

    Server-side apply with ``force`` and field manager :data:`GITOPS_MANAGER`, of ``data["routes.yaml"]``
    as committed in git (``routes``). ``applies`` counts the applies that changed the object.
    """

    def __init__(self, cluster: Any, namespace: str, name: str, routes: str, period: float = 0.5) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.name = name
        self.routes = routes
        self.period = period
        self.applies = 0
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gitops", daemon=True)

    def start(self) -> GitOpsReapplier:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)

    def manifest(self) -> str:
        doc = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "data": {"routes.yaml": self.routes},
        }
        return json.dumps(doc)

    def _run(self) -> None:
        while not self._stop.is_set():
            result = self.cluster.kubectl(
                "apply",
                "--server-side",
                "--force-conflicts",
                f"--field-manager={GITOPS_MANAGER}",
                "-f",
                "-",
                input=self.manifest(),
                check=False,
            )
            if result.returncode != 0:
                self.errors += 1
            elif "serverside-applied" in result.stdout and "unchanged" not in result.stdout:
                self.applies += 1
            self._stop.wait(self.period)


# -- control-plane restarts -----------------------------------------------------------------------


def restart_component(
    cluster: Cluster, component: str, *, down_seconds: float = 2.0, timeout: float = 60.0
) -> float:
    """Stop one process of a cluster started by ``localcluster.up`` and start it again, unchanged.

    Same command line (ports, data directory, certificates), so etcd comes back with its data and the
    API server with its identity; waits until ``/readyz`` says ok again.

    Args:
        cluster: a cluster with ``dir`` set (started here, not reused from a kubeconfig).
        component: ``kube-apiserver`` or ``etcd``.
        down_seconds: how long the component stays down.
        timeout: seconds for the API server to be ready again.

    Returns:
        Seconds from the stop until the API server was ready again.
    """
    assert cluster.dir is not None, "only a cluster this test started can be restarted"
    layout = Layout(Path(cluster.dir))
    state = json.loads(layout.state.read_text())
    argv = commands(Path(state["bin_dir"]), layout, state["ports"])[component]
    record = procs.read_pid_file(layout.pid_file(component))
    assert record is not None and record.alive(), f"{component} is not running"
    stopped = time.monotonic()
    procs.stop([record], timeout=15.0)
    time.sleep(down_seconds)  # the outage itself: what is measured is the behaviour meanwhile
    procs.spawn(
        component,
        argv,
        log_path=layout.log(component),
        pid_path=layout.pid_file(component),
        cwd=layout.root,
        die_with_parent=True,
    )
    wait_for(
        lambda: cluster.kubectl("get", "--raw=/readyz", check=False, timeout=5).stdout.strip() == "ok",
        timeout=timeout,
        interval=0.2,
        message=f"the API server to be ready after restarting {component}",
    )
    return time.monotonic() - stopped


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dedicated_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A control plane of the test module's own (other tests keep using the session's)."""
    directory = tmp_path_factory.mktemp("dedicated-cluster")
    try:
        handle = up(directory, die_with_parent=True, bin_dir=binaries.ensure_built())
    except (ClusterError, binaries.BuildError) as err:
        pytest.fail(f"the dedicated control plane did not start:\n{err}", pytrace=False)
    try:
        yield handle
    finally:
        down(directory)


@pytest.fixture
def rollout_env(
    cluster: Any, kube_api: Any, namespace: str, prometheus: Any, tmp_path: Path
) -> Iterator[Callable[..., RolloutEnv]]:
    """A factory for one :class:`RolloutEnv` in the test's namespace (as tests/e2e/conftest.py builds it)."""
    built: list[RolloutEnv] = []

    def build(**options: Any) -> RolloutEnv:
        assert not built, "one rollout environment per test"
        env = RolloutEnv(
            cluster=cluster,
            kube_api=kube_api,
            namespace=namespace,
            prometheus=prometheus,
            workdir=tmp_path,
            **options,
        )
        built.append(env)
        return env.start()

    yield build
    for env in built:
        env.close()


@pytest.fixture
def faulty_prometheus(prometheus: Any) -> Iterator[FaultyPrometheus]:
    """A :class:`FaultyPrometheus` in front of the session Prometheus, passing through at first."""
    proxy = FaultyPrometheus(prometheus.url).start()
    try:
        yield proxy
    finally:
        proxy.close()


def port_open(port: int) -> bool:
    """True when something accepts connections on 127.0.0.1:port."""
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


__all__ = [
    "GITOPS_MANAGER",
    "FaultyPrometheus",
    "GitOpsReapplier",
    "RouteWrites",
    "dedicated_cluster",
    "faulty_prometheus",
    "full_chaos",
    "port_open",
    "restart_component",
    "rollout_env",
    "steps_entered",
    "steps_entered_again",
]
