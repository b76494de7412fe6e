"""Run etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok as local processes.

Layout of the cluster directory (``.cluster`` for ``make cluster-up``, a temp dir in pytest)::

    kubeconfig             admin kubeconfig (O=system:masters), written before anything starts
    state.json             server URL, ports, bin dir; written once the cluster is ready
    pids/<component>.pid   "<pid> <start time>" of every process we started
    logs/<component>.log   stdout+stderr of every process
    pki/                   throwaway CA, serving cert, client certs, service-account keypair
    kubeconfigs/           one kubeconfig per component identity
    etcd/                  etcd data (wiped by every fresh ``up``)
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localcluster import binaries, procs
from localcluster.kube import ApiError, RestClient, insecure_get, server_of, write_kubeconfig

COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
# Stopped in this order, each stage in parallel: clients first, so the API server and etcd are
# not shutting down under open watches.
_STOP_STAGES = (("kwok", "kube-scheduler", "kube-controller-manager"), ("kube-apiserver",), ("etcd",))
_PORT_NAMES = (
    "etcd-client",
    "etcd-peer",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
)
POD_CIDR = "10.244.0.0/16"
NODE_IP = "10.240.0.1"
FAKE_NODE_ANNOTATION = "kwok.x-k8s.io/node"
_ALWAYS_ALLOW = "--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics"

Log = Callable[[str], None]


class ClusterError(RuntimeError):
    """The control plane could not be started; the message carries the relevant log tail."""


class KubectlError(subprocess.CalledProcessError):
    """kubectl exited non-zero; ``str()`` includes its stderr."""

    def __str__(self) -> str:
        args = " ".join(str(a) for a in self.cmd[2:])
        return f"kubectl {args} failed with exit code {self.returncode}: {(self.stderr or '').strip()}"


def _stderr_log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Cluster:
    """A running control plane: what tests and scripts need to talk to it."""

    kubeconfig: str
    server: str
    bin_dir: str
    dir: str | None = None

    @classmethod
    def from_kubeconfig(cls, kubeconfig: str | Path, bin_dir: str | Path) -> Cluster:
        """Describe an already running cluster from its kubeconfig (nothing is started)."""
        path = Path(kubeconfig).resolve()
        return cls(kubeconfig=str(path), server=server_of(path), bin_dir=str(bin_dir))

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        """Run the venv's kubectl against this cluster and capture its output as text.

        Args:
            args: kubectl arguments, e.g. ``"get", "nodes", "-o", "json"``.
            input: text fed to stdin (e.g. a manifest for ``apply -f -``).
            check: raise :class:`KubectlError` (stderr in the message) on a non-zero exit.
            timeout: seconds before the call is killed.
        """
        cmd = [binaries.kubectl(), f"--kubeconfig={self.kubeconfig}", *args]
        result = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise KubectlError(result.returncode, cmd, result.stdout, result.stderr)
        return result


@dataclass(frozen=True)
class Layout:
    """Where everything of one cluster lives inside its directory."""

    root: Path

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def pids(self) -> Path:
        return self.root / "pids"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def kubeconfigs(self) -> Path:
        return self.root / "kubeconfigs"

    @property
    def etcd_data(self) -> Path:
        return self.root / "etcd"

    def log(self, component: str) -> Path:
        return self.logs / f"{component}.log"

    def pid_file(self, component: str) -> Path:
        return self.pids / f"{component}.pid"

    def component_kubeconfig(self, user: str) -> Path:
        return self.kubeconfigs / f"{user}.kubeconfig"

    def records(self) -> list[procs.PidRecord]:
        """Every pid file present, readable or not (a garbled one is skipped)."""
        if not self.pids.is_dir():
            return []
        found = (procs.read_pid_file(p) for p in sorted(self.pids.glob("*.pid")))
        return [r for r in found if r is not None]

    def reset(self) -> None:
        """Remove the state of a previous run; only paths we create, never the directory itself."""
        for path in (self.state, self.kubeconfig):
            path.unlink(missing_ok=True)
        for path in (self.pids, self.logs, self.pki, self.kubeconfigs, self.etcd_data):
            shutil.rmtree(path, ignore_errors=True)


def commands(
    bin_dir: Path,
    layout: Layout,
    ports: Mapping[str, int],
    extra_args: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, list[str]]:
    """Return the command line of every component, in start order.

    Args:
        bin_dir: directory with the binaries built by hack/build-control-plane.sh.
        layout: the cluster directory.
        ports: a free port for each name in ``_PORT_NAMES``.
        extra_args: extra flags per component, appended last (they win over ours).
    """
    pki = layout.pki
    etcd_url = f"http://127.0.0.1:{ports['etcd-client']}"
    peer_url = f"http://127.0.0.1:{ports['etcd-peer']}"
    apiserver = ports["kube-apiserver"]
    stages = binaries.stages_dir(bin_dir)
    cmds = {
        "etcd": [
            str(bin_dir / "etcd"),
            "--name=arbiter",
            f"--data-dir={layout.etcd_data}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=arbiter={peer_url}",
            "--initial-cluster-state=new",
            # Test data is disposable; skipping fsync makes etcd far faster on a shared disk.
            "--unsafe-no-fsync=true",
            "--log-level=warn",
        ],
        "kube-apiserver": [
            str(bin_dir / "kube-apiserver"),
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={apiserver}",
            f"--cert-dir={pki}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'client-ca.crt'}",
            f"--service-account-issuer=https://127.0.0.1:{apiserver}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--service-cluster-ip-range=10.96.0.0/16",
            "--authorization-mode=RBAC",
            "--allow-privileged=true",
            # Loopback cannot be the `kubernetes` Service endpoint; don't try to write it.
            "--endpoint-reconciler-type=none",
        ],
        "kube-controller-manager": [
            str(bin_dir / "kube-controller-manager"),
            *_component_kubeconfig_flags(layout, "controller-manager"),
            _ALWAYS_ALLOW,
            "--bind-address=127.0.0.1",
            f"--secure-port={ports['kube-controller-manager']}",
            f"--cert-dir={pki / 'controller-manager-serving'}",
            "--leader-elect=false",
            # All controllers share the controller-manager's identity (see certs.CLIENTS); the token
            # controller and the kube-root-ca.crt publisher need the signing key and the CA.
            "--use-service-account-credentials=false",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}",
        ],
        "kube-scheduler": [
            str(bin_dir / "kube-scheduler"),
            *_component_kubeconfig_flags(layout, "scheduler"),
            _ALWAYS_ALLOW,
            "--bind-address=127.0.0.1",
            f"--secure-port={ports['kube-scheduler']}",
            f"--cert-dir={pki / 'scheduler-serving'}",
            "--leader-elect=false",
        ],
        "kwok": [
            str(bin_dir / "kwok"),
            f"--kubeconfig={layout.component_kubeconfig('kwok')}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={FAKE_NODE_ANNOTATION}=fake",
            f"--cidr={POD_CIDR}",
            f"--node-ip={NODE_IP}",
            f"--server-address=127.0.0.1:{ports['kwok']}",
            f"--node-port={ports['kwok']}",
            f"--tls-cert-file={pki / 'kwok.crt'}",
            f"--tls-private-key-file={pki / 'kwok.key'}",
            # Renewing the node Lease keeps the node-lifecycle controller from marking it NotReady.
            "--node-lease-duration-seconds=40",
            *(f"--config={stages / s}" for s in binaries.KWOK_STAGES),
        ],
    }
    for component, args in (extra_args or {}).items():
        cmds[component].extend(args)
    return cmds


def _component_kubeconfig_flags(layout: Layout, user: str) -> list[str]:
    path = layout.component_kubeconfig(user)
    return [
        f"--kubeconfig={path}",
        f"--authentication-kubeconfig={path}",
        f"--authorization-kubeconfig={path}",
    ]


def fake_node(name: str) -> dict[str, Any]:
    """Return a Node manifest that kwok manages (no taints, so ordinary Pods schedule on it)."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {FAKE_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "node-role.kubernetes.io/agent": "",
                "type": "kwok",
            },
        },
    }


def node_is_schedulable(node: Mapping[str, Any]) -> bool:
    """Return True once a node is Ready and the not-ready taint has been lifted."""
    conditions = node.get("status", {}).get("conditions", [])
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    taints = node.get("spec", {}).get("taints", [])
    return ready and not any(t.get("key", "").startswith("node.kubernetes.io/not-ready") for t in taints)


@dataclass
class _Starter:
    """Starts components, watches them while waiting, and stops them all if anything fails."""

    layout: Layout
    die_with_parent: bool
    log: Log
    t0: float = field(default_factory=time.monotonic)
    started: dict[str, tuple[subprocess.Popen[bytes], procs.PidRecord]] = field(default_factory=dict)

    def say(self, message: str) -> None:
        self.log(f"[localcluster {time.monotonic() - self.t0:5.1f}s] {message}")

    def start(self, component: str, argv: list[str]) -> None:
        self.started[component] = procs.spawn(
            component,
            argv,
            log_path=self.layout.log(component),
            pid_path=self.layout.pid_file(component),
            cwd=self.layout.root,
            die_with_parent=self.die_with_parent,
        )
        self.say(f"started {component} (pid {self.started[component][1].pid})")

    def failure(self, component: str, headline: str) -> ClusterError:
        log = self.layout.log(component)
        return ClusterError(f"{headline}\n--- last lines of {log} ---\n{procs.tail(log)}")

    def wait(self, what: str, component: str, check: Callable[[], Any], deadline: float) -> Any:
        """Poll ``check`` until it returns a truthy value; fail fast if any component exits."""
        last: object = None
        while True:
            for name, (proc, _) in self.started.items():
                code = proc.poll()
                if code is not None:
                    raise self.failure(name, f"{name} exited with code {code} while waiting for {what}")
            try:
                value = check()
                if value:
                    self.say(f"{what}: ready")
                    return value
                last = value
            except (OSError, ApiError, ValueError) as err:
                last = err
            if time.monotonic() >= deadline:
                raise self.failure(component, f"timed out waiting for {what} (last result: {last!r})")
            time.sleep(0.1)

    def stop_all(self) -> None:
        records = [record for _, record in self.started.values()]
        procs.stop(records, timeout=10.0)
        for proc, _ in self.started.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=1)


def _read_state(layout: Layout) -> dict[str, Any] | None:
    try:
        state: dict[str, Any] = json.loads(layout.state.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return state


def running(directory: str | Path) -> Cluster | None:
    """Return the cluster of ``directory`` if all its processes run and /readyz answers ok."""
    layout = Layout(Path(directory).resolve())
    state = _read_state(layout)
    if state is None:
        return None
    records = {r.name: r for r in layout.records()}
    if any(c not in records or not records[c].alive() for c in COMPONENTS):
        return None
    rest = _admin_client(layout, state["server"])
    try:
        if rest.get("/readyz", timeout=3.0) != "ok":
            return None
    except (OSError, ApiError):
        return None
    return Cluster(
        kubeconfig=str(layout.kubeconfig),
        server=state["server"],
        bin_dir=state["bin_dir"],
        dir=str(layout.root),
    )


def _admin_client(layout: Layout, server: str) -> RestClient:
    return RestClient(
        server,
        ca_cert=layout.pki / "ca.crt",
        client_cert=layout.pki / "admin.crt",
        client_key=layout.pki / "admin.key",
    )


def _etcd_healthy(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
        return bool(json.loads(resp.read()).get("health") == "true")


def up(
    directory: str | Path,
    *,
    nodes: int = 1,
    die_with_parent: bool = False,
    timeout: float = 120.0,
    bin_dir: str | Path | None = None,
    extra_args: Mapping[str, Sequence[str]] | None = None,
    log: Log = _stderr_log,
) -> Cluster:
    """Start the control plane in ``directory``, or return it if it already runs there.

    Waits until the API server is ready, the controller-manager and scheduler are healthy, every
    fake node is Ready and schedulable, and the ``default`` ServiceAccount exists. On failure,
    stops whatever it started and raises :class:`ClusterError` with the failing log's tail.

    Args:
        directory: cluster directory (created if needed).
        nodes: number of fake kwok nodes (``kwok-node-0`` ...).
        die_with_parent: stop the processes when the calling process dies (for pytest).
        timeout: seconds for the whole startup.
        bin_dir: use these binaries instead of running hack/build-control-plane.sh.
        extra_args: extra flags per component name.
        log: receives progress lines.
    """
    layout = Layout(Path(directory).resolve())
    layout.root.mkdir(parents=True, exist_ok=True)
    existing = running(layout.root)
    if existing is not None:
        log(f"[localcluster] already running in {layout.root}; kubeconfig: {existing.kubeconfig}")
        return existing
    if any(r.alive() for r in layout.records()):
        log(f"[localcluster] stopping the leftovers of an unhealthy cluster in {layout.root}")
        down(layout.root, log=log)
    layout.reset()

    starter = _Starter(layout, die_with_parent, log)
    bins = Path(bin_dir) if bin_dir is not None else binaries.ensure_built()
    from localcluster import certs  # imported late: `down` must work without `cryptography`

    certs.generate(layout.pki)
    ports = dict(zip(_PORT_NAMES, procs.free_ports(len(_PORT_NAMES)), strict=True))
    server = f"https://127.0.0.1:{ports['kube-apiserver']}"
    ca = layout.pki / "ca.crt"
    write_kubeconfig(
        layout.kubeconfig,
        server=server,
        ca_cert=ca,
        client_cert=layout.pki / "admin.crt",
        client_key=layout.pki / "admin.key",
    )
    for user in ("controller-manager", "scheduler", "kwok"):
        write_kubeconfig(
            layout.component_kubeconfig(user),
            server=server,
            ca_cert=ca,
            client_cert=layout.pki / f"{user}.crt",
            client_key=layout.pki / f"{user}.key",
        )
    cmds = commands(bins, layout, ports, extra_args)
    rest = _admin_client(layout, server)
    deadline = time.monotonic() + timeout
    node_names = [f"kwok-node-{i}" for i in range(nodes)]
    starter.say(f"certificates and kubeconfigs written to {layout.root}")

    def nodes_schedulable() -> bool:
        return all(node_is_schedulable(rest.get(f"/api/v1/nodes/{name}")) for name in node_names)

    def https_healthz(port: int) -> bool:
        return insecure_get(f"https://127.0.0.1:{port}/healthz") == "ok"

    try:
        starter.start("etcd", cmds["etcd"])
        starter.wait("etcd /health", "etcd", lambda: _etcd_healthy(ports["etcd-client"]), deadline)
        starter.start("kube-apiserver", cmds["kube-apiserver"])
        starter.wait(
            "kube-apiserver /readyz", "kube-apiserver", lambda: rest.get("/readyz") == "ok", deadline
        )
        for component in ("kube-controller-manager", "kube-scheduler", "kwok"):
            starter.start(component, cmds[component])
        for name in node_names:
            rest.post("/api/v1/nodes", fake_node(name))
        starter.wait(
            "kube-controller-manager /healthz",
            "kube-controller-manager",
            lambda: https_healthz(ports["kube-controller-manager"]),
            deadline,
        )
        starter.wait(
            "kube-scheduler /healthz",
            "kube-scheduler",
            lambda: https_healthz(ports["kube-scheduler"]),
            deadline,
        )
        starter.wait(f"{nodes} fake node(s) Ready and schedulable", "kwok", nodes_schedulable, deadline)
        starter.wait(
            "ServiceAccount default/default",
            "kube-controller-manager",
            lambda: rest.get("/api/v1/namespaces/default/serviceaccounts/default"),
            deadline,
        )
    except BaseException:
        starter.say("startup failed; stopping what was started (logs are kept)")
        starter.stop_all()
        raise

    state = {"server": server, "bin_dir": str(bins), "ports": ports, "nodes": node_names}
    layout.state.write_text(json.dumps(state, indent=2) + "\n")
    starter.say(f"cluster ready; kubeconfig: {layout.kubeconfig}")
    return Cluster(kubeconfig=str(layout.kubeconfig), server=server, bin_dir=str(bins), dir=str(layout.root))


def down(directory: str | Path, *, timeout: float = 15.0, log: Log = _stderr_log) -> list[str]:
    """Stop every process ``up`` started in ``directory`` (SIGTERM, then SIGKILL after ``timeout``).

    Safe to call twice, on a half-started cluster, or on a directory that does not exist.

    Returns:
        The names of the components that were running and have been stopped.
    """
    layout = Layout(Path(directory).resolve())
    records = layout.records()
    known = {name for stage in _STOP_STAGES for name in stage}
    stages = [[r for r in records if r.name in stage] for stage in _STOP_STAGES]
    stages[-1].extend(r for r in records if r.name not in known)
    stopped: list[str] = []
    for stage in stages:
        for record in procs.stop(stage, timeout=timeout):
            log(f"[localcluster] stopped {record.name} (pid {record.pid})")
            stopped.append(record.name)
    for record in records:
        layout.pid_file(record.name).unlink(missing_ok=True)
    layout.state.unlink(missing_ok=True)
    if not stopped:
        log(f"[localcluster] nothing running in {layout.root}")
    return stopped
