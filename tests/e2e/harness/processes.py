"""Child processes of the e2e harness: model-server stand-ins and `arbiter router`.

Every process binds 127.0.0.1 on a port the OS picks (``:0``) and reports it (stdout for a model
server, the log for the router), so nothing races for a port. Logs go to files so a failing test can
show them; every process is stopped with SIGTERM (SIGKILL after a timeout) by its own handle.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpers import wait_for
from podman_image import ArbiterImage, container_name, kill_container, readable_copy, remove_container

MODEL_SERVER_SCRIPT = Path(__file__).with_name("model_server.py")
ARBITER = Path(sys.executable).with_name("arbiter")


def http_json(
    url: str, payload: Any = None, *, timeout: float = 5.0, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    """GET (or POST ``payload`` as JSON) and return (status, decoded JSON body or text)."""
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(
        url,
        data=data,
        headers={"Content-Type": "application/json", **(headers or {})},
        method="GET" if data is None else "POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as err:
        status, body = err.code, err.read()
    text = body.decode(errors="replace")
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


@dataclass
class ChildProcess:
    """A subprocess with its log file; stopped by pid, never by name.

    ``container``: the podman container the process runs (`podman run`), if any; it is signalled by
    its name, because `podman run` cannot forward SIGKILL.
    """

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    container: str | None = None

    def log(self) -> str:
        """The log so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.popen.poll() is None

    def assert_alive(self) -> None:
        """Fail with the log tail if the process has exited."""
        assert self.alive(), f"{self.name} exited with {self.popen.returncode}:\n{self.log()[-3000:]}"

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, wait, SIGKILL if needed; return the exit code (safe to call twice)."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)  # `podman run` forwards it to the container
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                if self.container is not None:
                    kill_container(self.container)
                self.popen.kill()
                self.popen.wait(5)
        if self.container is not None:
            remove_container(self.container)
        return self.popen.returncode


@dataclass
class ModelServerProcess(ChildProcess):
    """One model-variant stand-in (tests/e2e/harness/model_server.py) as a process."""

    variant: str = ""
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def start(
        cls,
        variant: str,
        log_dir: Path,
        *,
        latency_ms: float = 2.0,
        jitter_ms: float = 1.0,
        error_rate: float = 0.0,
        seed: int = 0,
        answer_as: str | None = None,
    ) -> ModelServerProcess:
        """Start the server and wait until it answers /healthz.

        ``answer_as``: answer exactly like the server of that variant started with the same ``seed``
        (see model_server.py); its ``disagreeRate`` is then set with :meth:`configure`.
        """
        log_path = log_dir / f"model-{variant}.log"
        log = log_path.open("ab")
        popen = subprocess.Popen(
            [
                sys.executable,
                str(MODEL_SERVER_SCRIPT),
                "--port=0",
                f"--variant={variant}",
                f"--latency-ms={latency_ms}",
                f"--jitter-ms={jitter_ms}",
                f"--error-rate={error_rate}",
                f"--seed={seed}",
                *([f"--answer-as={answer_as}"] if answer_as else []),
            ],
            stdout=subprocess.PIPE,
            stderr=log,
        )
        log.close()
        assert popen.stdout is not None
        line = popen.stdout.readline().decode().strip()  # the bound port, or EOF if it died
        if not line.isdigit():
            popen.wait(5)
            raise AssertionError(
                f"model server {variant} did not start: {log_path.read_text(errors='replace')}"
            )
        server = cls(f"model server {variant}", popen, log_path, variant=variant, port=int(line))
        wait_for(
            lambda: http_json(server.url + "/healthz")[0] == 200,
            timeout=15,
            message=f"model server {variant} /healthz",
        )
        return server

    def settings(self) -> dict[str, float]:
        """The latency/error settings in force."""
        status, body = http_json(self.url + "/admin")
        assert status == 200, body
        return dict(body)

    def configure(
        self,
        *,
        latency_ms: float | None = None,
        jitter_ms: float | None = None,
        error_rate: float | None = None,
        disagree_rate: float | None = None,
    ) -> dict[str, float]:
        """Change latency / jitter / error rate / disagree rate at runtime; return the settings now in force."""
        changes = {
            key: value
            for key, value in (
                ("latencyMs", latency_ms),
                ("jitterMs", jitter_ms),
                ("errorRate", error_rate),
                ("disagreeRate", disagree_rate),
            )
            if value is not None
        }
        status, body = http_json(self.url + "/admin", changes)
        assert status == 200, body
        return dict(body)

    def requests_served(self) -> dict[str, float]:
        """The server's own count of answered predictions, by status code."""
        with urllib.request.urlopen(self.url + "/metrics", timeout=5) as response:
            text = response.read().decode()
        counts: dict[str, float] = {}
        for match in re.finditer(r"^model_requests_total\{([^}]*)\} (\S+)$", text, re.MULTILINE):
            code = re.search(r'code="(\d+)"', match[1])
            if code:
                counts[code[1]] = float(match[2])
        return counts


@dataclass
class RouterProcess(ChildProcess):
    """`arbiter router` as a process, on ports it picked itself."""

    proxy_port: int = 0
    metrics_port: int = 0
    args: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        """Base URL of the proxy."""
        return f"http://127.0.0.1:{self.proxy_port}"

    @property
    def metrics_address(self) -> str:
        """host:port of /metrics, as a Prometheus target."""
        return f"127.0.0.1:{self.metrics_port}"

    @classmethod
    def start(
        cls,
        source_args: list[str],
        log_dir: Path,
        env: dict[str, str] | None = None,
        name: str = "router",
        image: ArbiterImage | None = None,
    ) -> RouterProcess:
        """Run ``arbiter router SOURCE_ARGS`` (e.g. ``--configmap NS/NAME``) and wait until it listens.

        The router starts without routes when its ConfigMap does not exist yet: it answers 503 and its
        /readyz says 503 until the operator writes the routes; see :meth:`ready`.

        With ``image``, the router runs from Arbiter's container image (read-only root filesystem,
        non-root user, host network): ``KUBECONFIG`` in ``env`` is mounted read-only as a copy the
        container's user can read, and the directory of a ``--config`` file is mounted read-only at
        the same path, so the router sees every rewrite of the file.
        """
        log_path = log_dir / f"{name}.log"
        args = ["router", *source_args, "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"]
        container = None
        if image is None:
            argv = [str(ARBITER), *args]
            environment = {**os.environ, **(env or {})}
        else:
            container = container_name(name)
            settings = dict(env or {})
            kubeconfig = settings.pop("KUBECONFIG", None)
            config = source_args[source_args.index("--config") + 1] if "--config" in source_args else None
            argv = image.command(
                args,
                name=container,
                env=settings,
                kubeconfig=readable_copy(kubeconfig, log_dir, container) if kubeconfig else None,
                read_only_dirs=(Path(config).resolve().parent,) if config else (),
            )
            environment = dict(os.environ)
        log_file = log_path.open("ab")
        popen = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log_file, env=environment)
        log_file.close()
        router = cls(name, popen, log_path, container=container, args=argv)

        def listening() -> bool:
            router.assert_alive()
            return re.search(r"metrics on http://", router.log()) is not None

        try:
            wait_for(listening, timeout=30, message="arbiter router to listen")
        except AssertionError:
            router.stop()
            raise
        log = router.log()
        proxy = re.search(r"routing on \S+:(\d+)", log)
        metrics = re.search(r"metrics on http://\S+:(\d+)/metrics", log)
        assert proxy and metrics, log
        router.proxy_port, router.metrics_port = int(proxy[1]), int(metrics[1])
        return router

    def ready(self) -> bool:
        """True once the router has routes in force (/readyz answers 200)."""
        return http_json(f"http://{self.metrics_address}/readyz")[0] == 200

    def readyz(self) -> str:
        """The /readyz text: which routes are in force, e.g. ``ok: experiment=x weights=v1:80,v2:20 ...``."""
        return str(http_json(f"http://{self.metrics_address}/readyz")[1])

    def loaded_weights(self) -> list[dict[str, float]]:
        """The weights of every routes version the router loaded, in order, from its log.

        Every load is logged, so this misses nothing, unlike polling /readyz.
        """
        return [_weights(m[1]) for m in re.finditer(r"routes loaded .*? weights=(\S+)", self.log())]

    def weights(self) -> dict[str, float]:
        """The weights in force, as the router itself reports them on /readyz (empty before routes)."""
        match = re.search(r"weights=(\S+)", self.readyz())
        return _weights(match[1]) if match else {}


def _weights(text: str) -> dict[str, float]:
    """``v1:80,v2:20`` -> {"v1": 80.0, "v2": 20.0}."""
    return {name: float(weight) for name, weight in (part.split(":") for part in text.split(","))}
