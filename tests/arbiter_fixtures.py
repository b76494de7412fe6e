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
from podman_image import (
    ArbiterImage,
    ImageBuildError,
    build_image,
    container_name,
    kill_container,
    readable_copy,
    remove_container,
)

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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OperatorProcess:
    """`arbiter run` as a real subprocess, the way a user runs it: the installed command, or the image.

    With ``image``, the operator runs from Arbiter's container image under podman (read-only root
    filesystem, non-root user, host network), with a read-only copy of ``kubeconfig`` mounted.
    """

    def __init__(
        self,
        kubeconfig: str,
        log_path: Path,
        env: dict[str, str] | None = None,
        image: ArbiterImage | None = None,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.extra_env = env or {}
        self.image = image
        self.container: str | None = None
        self.metrics_url = f"http://127.0.0.1:{_free_port()}/metrics"
        self.process: subprocess.Popen[bytes] | None = None
        self.liveness_url = f"http://127.0.0.1:{_free_port()}/healthz"

    def _arguments(self) -> list[str]:
        return [
            "run",
            "--all-namespaces",
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
    request: pytest.FixtureRequest, cluster: Any, arbiter_crd: str, tmp_path: Path
) -> Iterator[OperatorProcess]:
    """A running operator for one test; stopped (and its log shown) afterwards.

    It is the installed `arbiter` command, or the container image when ``$ARBITER_TEST_OPERATOR`` is
    ``image`` (e.g. ``ARBITER_TEST_OPERATOR=image pytest tests/e2e`` runs every story on the image).
    """
    source = os.environ.get(OPERATOR_FROM_ENV, "process")
    if source not in ("process", "image"):
        pytest.fail(f"${OPERATOR_FROM_ENV} must be 'process' or 'image', not {source!r}", pytrace=False)
    image = request.getfixturevalue("arbiter_image") if source == "image" else None
    yield from _running_operator(OperatorProcess(cluster.kubeconfig, tmp_path / "operator.log", image=image))


@pytest.fixture
def image_operator(
    cluster: Any, arbiter_crd: str, arbiter_image: ArbiterImage, tmp_path: Path
) -> Iterator[OperatorProcess]:
    """A running operator from the container image for one test; stopped (and its log shown) afterwards."""
    process = OperatorProcess(cluster.kubeconfig, tmp_path / "operator.log", image=arbiter_image)
    yield from _running_operator(process)
