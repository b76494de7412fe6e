"""Fixtures for Arbiter's own objects on the real API server: the CRD, examples, the operator process.

Loaded from tests/conftest.py through ``pytest_plugins``.

- ``operator_identity`` (session): the chart's ServiceAccount and RBAC, rendered by the real helm from the
  default values and applied in namespace ``arbiter-system``; returns an :class:`OperatorIdentity` whose
  kubeconfig authenticates with a TokenRequest token of that ServiceAccount.
- ``operator_api`` (session): a ``kubernetes.client.ApiClient`` with that identity.
- ``operator`` (function): ``arbiter run`` as a process **with that identity**, not as admin: a permission
  the chart lacks makes the operator's request fail, and the fixture fails the test when the operator's
  log shows a request RBAC refused.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from chart_support import apply, identity_docs, render, service_account_kubeconfig
from helpers import wait_for
from podman_image import (
    ArbiterImage,
    ImageBuildError,
    build_image,
    container_name,
    kill_container,
    readable_copy,
    remove_container,
)

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

ROOT = Path(__file__).resolve().parents[1]
CRD_FILE = ROOT / "crds" / "modelexperiment.yaml"
TEMPLATE_CRD_FILE = ROOT / "crds" / "metrictemplates.yaml"
OPERATOR_RELEASE = "arbiter"
OPERATOR_NAMESPACE = "arbiter-system"
# What the API server says when RBAC refuses a request (HTTP 403): '... is forbidden: User
# "system:serviceaccount:..." cannot patch resource "..."' (quotes may be escaped in a logged JSON body).
# Other 403s, e.g. "unable to create new content in namespace ... because it is being terminated", are
# not about permissions and do not count.
FORBIDDEN = re.compile(r"is forbidden: User .*? cannot [a-z]+ resource")


@pytest.fixture(scope="session")
def arbiter_crd(cluster: Any) -> str:
    """Install the ModelExperiment and MetricTemplate CRDs (server-side apply); wait until Established."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(TEMPLATE_CRD_FILE))
    cluster.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/modelexperiments.arbiter.dev",
        "crd/metrictemplates.arbiter.dev",
        "crd/clustermetrictemplates.arbiter.dev",
    )
    # Discovery caches in kubectl can lag behind Established; wait until the short name resolves.
    wait_for(
        lambda: cluster.kubectl("get", "mexp", "-A", check=False).returncode == 0,
        timeout=30,
        message="kubectl does not know the mexp short name yet",
    )
    return "modelexperiments.arbiter.dev"


def experiment_docs(path: Path) -> list[dict[str, Any]]:
    """Every YAML document of a manifest file."""
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _free_ports(count: int) -> list[int]:
    """Distinct free ports: all are held at once while picking, so two calls cannot return the same one."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class OperatorProcess:
    """`arbiter run` as a real subprocess, the way a user runs it: the installed command, or the image.

    With ``image``, the operator runs from Arbiter's container image under podman (read-only root
    filesystem, non-root user, host network), with a read-only copy of ``kubeconfig`` mounted.

    Args:
        kubeconfig: the cluster (and the identity the operator uses).
        log_path: where its output goes.
        env: extra environment variables.
        scope: the scope arguments (default ``--all-namespaces``), e.g. ``["-n", "team-a"]`` or
            ``["--selector", "arbiter.dev/shard=a"]``.
        image: run the container image instead of the installed command.
    """

    def __init__(
        self,
        kubeconfig: str,
        log_path: Path,
        env: dict[str, str] | None = None,
        scope: list[str] | None = None,
        image: ArbiterImage | None = None,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.extra_env = env or {}
        self.scope = scope if scope is not None else ["--all-namespaces"]
        self.image = image
        self.container: str | None = None
        metrics_port, liveness_port = _free_ports(2)
        self.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        self.process: subprocess.Popen[bytes] | None = None
        self.liveness_url = f"http://127.0.0.1:{liveness_port}/healthz"

    def _arguments(self) -> list[str]:
        return [
            "run",
            *self.scope,
            "--verbose",
            "--liveness",
            self.liveness_url,
            "--metrics-address",
            "127.0.0.1",
            "--metrics-port",
            self.metrics_url.rsplit(":", 1)[1].split("/")[0],
        ]

    def start(self) -> OperatorProcess:
        """Start the operator (appending to the same log)."""
        settings = {"ARBITER_RESYNC_SECONDS": "1", **self.extra_env}
        if self.image is None:
            argv = [str(Path(sys.executable).with_name("arbiter")), *self._arguments()]
            env = {**os.environ, "KUBECONFIG": self.kubeconfig, **settings}
        else:
            self.container = container_name("operator")
            kubeconfig = readable_copy(self.kubeconfig, self.log_path.parent, self.container)
            argv = self.image.command(
                self._arguments(), name=self.container, env=settings, kubeconfig=kubeconfig
            )
            env = dict(os.environ)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        log.close()
        return self

    def wait_ready(self, timeout: float = 60) -> None:
        """Wait until the liveness endpoint answers (Kopf serves it once its startup handlers ran)."""

        def alive() -> bool:
            self.assert_alive()
            with urllib.request.urlopen(self.liveness_url, timeout=2) as response:
                return bool(response.status == 200)

        wait_for(alive, timeout=timeout, message=f"operator liveness {self.liveness_url}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int | None:
        """Send ``sig`` and wait for the process to exit; SIGKILL if it does not."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        if self.container is None:
            self.process.send_signal(sig)
        else:
            # `podman run` forwards SIGTERM to the container but cannot forward SIGKILL: signal the container.
            kill_container(self.container, signal.Signals(sig).name)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            if self.container is not None:
                kill_container(self.container)
            self.process.kill()
            return self.process.wait(timeout=10)
        finally:
            if self.container is not None:
                remove_container(self.container)

    @property
    def returncode(self) -> int | None:
        """The exit code, negative for a signal as for a local process (`podman run` says 128 + signal)."""
        if self.process is None or self.process.returncode is None:
            return None
        code = self.process.returncode
        return -(code - 128) if self.container is not None and code > 128 else code

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill would."""
        self.stop(signal.SIGKILL)

    def metrics(self) -> str:
        """The operator's own Prometheus metrics, as served on --metrics-port."""
        with urllib.request.urlopen(self.metrics_url, timeout=5) as response:
            return str(response.read().decode())

    def log(self) -> str:
        """The operator's log so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def assert_alive(self) -> None:
        """Fail with the log tail if the operator died."""
        assert self.process is not None and self.process.poll() is None, (
            f"operator exited with {self.process and self.process.returncode}:\n{self.log()[-4000:]}"
        )


@dataclass(frozen=True)
class OperatorIdentity:
    """The chart's operator ServiceAccount on the cluster, and a kubeconfig that authenticates as it."""

    namespace: str
    service_account: str
    kubeconfig: str
    bin_dir: str

    @property
    def user(self) -> str:
        """The user name the API server sees."""
        return f"system:serviceaccount:{self.namespace}:{self.service_account}"

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run kubectl as this identity."""
        from localcluster import Cluster

        return Cluster.from_kubeconfig(self.kubeconfig, self.bin_dir).kubectl(*args, check=check)

    def can_i(self, verb: str, resource: str, *scope: str) -> bool:
        """``kubectl auth can-i`` as this identity (its own token, not impersonation)."""
        return self.kubectl("auth", "can-i", verb, resource, *scope, check=False).stdout.strip() == "yes"


def install_operator_identity(
    cluster: Any,
    workdir: Path,
    *,
    namespace: str = OPERATOR_NAMESPACE,
    docs: list[dict[str, Any]] | None = None,
) -> OperatorIdentity:
    """Apply the operator's ServiceAccount and RBAC (``docs``, default: the chart's default rendering).

    Returns the identity with a kubeconfig holding a TokenRequest token of the ServiceAccount.
    """
    if docs is None:
        docs = identity_docs(render(cluster.bin_dir, release=OPERATOR_RELEASE, namespace=namespace))
    if cluster.kubectl("get", "namespace", namespace, check=False).returncode != 0:
        cluster.kubectl("create", "namespace", namespace)
    apply(cluster, docs)
    (account,) = [d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount"]
    kubeconfig = service_account_kubeconfig(cluster, namespace, account, workdir / f"{account}.kubeconfig")
    identity = OperatorIdentity(namespace, account, str(kubeconfig), str(cluster.bin_dir))
    # The API server authorizes from its informer caches: wait until the new binding is in force.
    wait_for(
        lambda: identity.can_i("watch", "modelexperiments.arbiter.dev", "--all-namespaces"),
        timeout=30,
        message=f"{identity.user} to be allowed to watch modelexperiments",
    )
    return identity


@pytest.fixture(scope="session")
def operator_identity(cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> OperatorIdentity:
    """The chart's operator ServiceAccount and RBAC (default values) with a token kubeconfig."""
    return install_operator_identity(cluster, tmp_path_factory.mktemp("operator-identity"))


@pytest.fixture(scope="session")
def operator_api(operator_identity: OperatorIdentity) -> Iterator[ApiClient]:
    """A ``kubernetes.client.ApiClient`` that authenticates as the chart's operator ServiceAccount."""
    from kubernetes import config

    api = config.new_client_from_config(config_file=operator_identity.kubeconfig)
    try:
        yield api
    finally:
        api.close()


def forbidden_requests(log: str) -> list[str]:
    """The log lines that report a request the API server refused for lack of permission."""
    return [line for line in log.splitlines() if FORBIDDEN.search(line)]


OPERATOR_FROM_ENV = "ARBITER_TEST_OPERATOR"


@pytest.fixture(scope="session")
def arbiter_image() -> ArbiterImage:
    """Arbiter's container image, built by hack/image.sh (the script of `make image`) once per session.

    A no-op when an image with the sources' content hash exists; a build failure fails the tests that
    use it, with the script's output.
    """
    try:
        return ArbiterImage(build_image())
    except (ImageBuildError, OSError, subprocess.TimeoutExpired) as err:
        pytest.fail(f"the image did not build: {err}", pytrace=False)


def _running_operator(process: OperatorProcess) -> Iterator[OperatorProcess]:
    process.start()
    started = time.monotonic()
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()
        source = "the installed command" if process.image is None else process.image.reference
        sys.stderr.write(
            f"\n--- operator log ({source}, {time.monotonic() - started:.0f}s) ---\n{process.log()[-6000:]}\n"
        )


@pytest.fixture
def operator(
    request: pytest.FixtureRequest,
    cluster: Any,
    arbiter_crd: str,
    operator_identity: OperatorIdentity,
    tmp_path: Path,
) -> Iterator[OperatorProcess]:
    """A running operator with the chart's ServiceAccount identity for one test; stopped afterwards.

    It is the installed `arbiter` command, or the container image when ``$ARBITER_TEST_OPERATOR`` is
    ``image`` (e.g. ``ARBITER_TEST_OPERATOR=image pytest tests/e2e`` runs every story on the image). The
    test fails (at teardown) when the operator's log shows a request RBAC refused: a verb the chart's RBAC
    lacks must fail a test even when the story's own assertions happened to pass.
    """
    source = os.environ.get(OPERATOR_FROM_ENV, "process")
    if source not in ("process", "image"):
        pytest.fail(f"${OPERATOR_FROM_ENV} must be 'process' or 'image', not {source!r}", pytrace=False)
    image = request.getfixturevalue("arbiter_image") if source == "image" else None
    process = OperatorProcess(operator_identity.kubeconfig, tmp_path / "operator.log", image=image)
    yield from _running_operator(process)
    refused = forbidden_requests(process.log())
    assert not refused, (
        f"the operator ({operator_identity.user}) was refused requests the chart's RBAC does not allow:\n"
        + "\n".join(refused[:10])
    )


@pytest.fixture
def image_operator(
    cluster: Any, arbiter_crd: str, arbiter_image: ArbiterImage, tmp_path: Path
) -> Iterator[OperatorProcess]:
    """A running operator from the container image for one test; stopped (and its log shown) afterwards."""
    process = OperatorProcess(cluster.kubeconfig, tmp_path / "operator.log", image=arbiter_image)
    yield from _running_operator(process)
