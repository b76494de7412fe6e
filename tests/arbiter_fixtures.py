"""Fixtures for Arbiter's own objects on the real API server: the CRD, examples, the operator process.

Loaded from tests/conftest.py through ``pytest_plugins``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers import wait_for

ROOT = Path(__file__).resolve().parents[1]
CRD_FILE = ROOT / "crds" / "modelexperiment.yaml"


@pytest.fixture(scope="session")
def arbiter_crd(cluster: Any) -> str:
    """Install the ModelExperiment CRD (server-side apply) and wait until it is Established."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", "crd/modelexperiments.arbiter.dev"
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
    """`arbiter run` as a real subprocess, the way a user runs it.

    Args:
        kubeconfig: the cluster.
        log_path: where its output goes.
        env: extra environment variables.
        scope: the scope arguments (default ``--all-namespaces``), e.g. ``["-n", "team-a"]`` or
            ``["--selector", "arbiter.dev/shard=a"]``.
    """

    def __init__(
        self,
        kubeconfig: str,
        log_path: Path,
        env: dict[str, str] | None = None,
        scope: list[str] | None = None,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.extra_env = env or {}
        self.scope = scope if scope is not None else ["--all-namespaces"]
        metrics_port, liveness_port = _free_ports(2)
        self.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        self.process: subprocess.Popen[bytes] | None = None
        self.liveness_url = f"http://127.0.0.1:{liveness_port}/healthz"

    def start(self) -> OperatorProcess:
        """Start the operator (appending to the same log)."""
        env = {**os.environ, "KUBECONFIG": self.kubeconfig, "ARBITER_RESYNC_SECONDS": "1", **self.extra_env}
        arbiter = Path(sys.executable).with_name("arbiter")
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                str(arbiter),
                "run",
                *self.scope,
                "--verbose",
                "--liveness",
                self.liveness_url,
                "--metrics-address",
                "127.0.0.1",
                "--metrics-port",
                self.metrics_url.rsplit(":", 1)[1].split("/")[0],
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
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
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout=10)

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


@pytest.fixture
def operator(cluster: Any, arbiter_crd: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    """A running operator for one test; stopped (and its log shown on failure) afterwards."""
    process = OperatorProcess(cluster.kubeconfig, tmp_path / "operator.log").start()
    started = time.monotonic()
    process.wait_ready()
    yield process
    process.stop()
    sys.stderr.write(f"\n--- operator log ({time.monotonic() - started:.0f}s) ---\n{process.log()[-6000:]}\n")
