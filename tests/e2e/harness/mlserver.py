"""Real models behind a real model server: MLServer (scikit-learn runtime) as child processes.

``hack/models/setup.sh`` creates MLServer's own virtualenv and trains the fraud models once (cached in
``~/.cache/arbiter``); :func:`ensure_models` runs it and returns the :class:`Catalogue` it wrote.
:class:`MLServerProcess` serves one variant's folder on loopback ports of its own and is ready when
MLServer's ``/v2/health/ready`` and the model's ``/v2/models/fraud/ready`` answer 200.

Requests speak the Open Inference Protocol (V2 REST) and ask for both outputs of the scikit-learn
runtime, so an answer carries the class and the fraud score::

    POST /v2/models/fraud/infer
    {"inputs": [{"name": "transaction", "shape": [1, 20], "datatype": "FP64", "data": [...]}],
     "outputs": [{"name": "predict"}, {"name": "predict_proba"}]}
    -> {"model_name": "fraud", "model_version": "champion", "id": "<uuid>", "parameters": {},
        "outputs": [{"name": "predict", ..., "data": [0]}, {"name": "predict_proba", ..., "data": [0.93, 0.07]}]}

so :data:`CLASS_POINTER` and :data:`SCORE_POINTER` are where the router finds them.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.processes import ChildProcess, http_json
from helpers import wait_for

ROOT = Path(__file__).resolve().parents[3]
SETUP_SCRIPT = ROOT / "hack" / "models" / "setup.sh"
INFER_PATH = "/v2/models/fraud/infer"
CLASS_POINTER = "/outputs/0/data/0"
SCORE_POINTER = "/outputs/1/data/1"
# Fields of a V2 answer that differ between any two servers, whatever the models say.
V2_VOLATILE_FIELDS = ("/id", "/model_name", "/model_version", "/parameters")


@dataclass(frozen=True)
class Catalogue:
    """The trained models (hack/models/train.py's ``catalogue.json``) and the held-out rows."""

    root: Path
    data: dict[str, Any]

    @property
    def mlserver(self) -> Path:
        return Path(self.data["mlserver"])

    @property
    def variants(self) -> dict[str, dict[str, Any]]:
        """Per model: description, folder, accuracy, recall, agreementWithChampion, scoreDeltaP95, delayMs."""
        return dict(self.data["variants"])

    def folder(self, model: str) -> Path:
        if model not in self.data["variants"]:
            raise KeyError(f"no model {model!r}; the catalogue has {sorted(self.data['variants'])}")
        return self.root / self.data["variants"][model]["folder"]

    @functools.cached_property
    def rows(self) -> tuple[list[list[float]], list[int]]:
        """The held-out feature rows and their true labels (1 = fraud)."""
        data = json.loads((self.root / self.data["rows"]).read_text())
        return data["features"], data["labels"]


def ensure_models(timeout: float = 900) -> Catalogue:
    """Create MLServer's virtualenv and train the models if needed (progress on stderr); read the catalogue."""
    result = subprocess.run(
        ["bash", str(SETUP_SCRIPT)],
        stdout=subprocess.PIPE,
        stderr=None,
        text=True,
        timeout=timeout,
        check=True,
    )
    root = Path(result.stdout.strip().splitlines()[-1])
    return Catalogue(root, json.loads((root / "catalogue.json").read_text()))


def infer_body(features: list[float]) -> dict[str, Any]:
    """A V2 inference request for one transaction, asking for the class and the class probabilities."""
    return {
        "inputs": [
            {"name": "transaction", "shape": [1, len(features)], "datatype": "FP64", "data": features}
        ],
        "outputs": [{"name": "predict"}, {"name": "predict_proba"}],
    }


def read_answer(body: Any) -> tuple[int, float]:
    """(predicted class, fraud score) from a V2 answer to :func:`infer_body`."""
    outputs = {output["name"]: output["data"] for output in body["outputs"]}
    return int(outputs["predict"][0]), float(outputs["predict_proba"][1])


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass
class MLServerProcess(ChildProcess):
    """``mlserver start <folder>`` for one variant, on loopback ports it was given."""

    variant: str = ""
    model: str = ""
    port: int = 0
    grpc_port: int = 0
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def start(
        cls,
        catalogue: Catalogue,
        model: str,
        log_dir: Path,
        *,
        variant: str | None = None,
        delay_ms: float | None = None,
        timeout: float = 90,
    ) -> MLServerProcess:
        """Serve ``model`` (a catalogue name, e.g. ``better``) as ``variant`` and wait until it is ready.

        Args:
            catalogue: from :func:`ensure_models`.
            model: which trained model to serve.
            log_dir: where ``mlserver-<variant>.log`` goes.
            variant: the name in logs (default: the model's name).
            delay_ms: latency the ``slow`` model adds (overrides its settings; only that model has a delay).
            timeout: seconds to wait for readiness (MLServer imports its stack in a few seconds).
        """
        variant = variant or model
        folder = catalogue.folder(model)
        log_path = log_dir / f"mlserver-{variant}.log"
        last_error = ""
        # A port picked free can be taken before MLServer binds it; then start again on others.
        for _attempt in range(3):
            http_port, grpc_port = _free_ports(2)
            env = {
                **os.environ,
                "MLSERVER_HTTP_PORT": str(http_port),
                "MLSERVER_GRPC_PORT": str(grpc_port),
                # One thread per model: two cores are shared by every process of a test.
                "OMP_NUM_THREADS": "1",
                "PYTHONUNBUFFERED": "1",
            }
            env.pop("PYTHONPATH", None)  # Arbiter's paths must not leak into MLServer's interpreter
            if delay_ms is not None:
                env["ARBITER_MODEL_DELAY_MS"] = str(delay_ms)
            log = log_path.open("ab")
            popen = subprocess.Popen(
                [str(catalogue.mlserver), "start", str(folder)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=str(folder),
            )
            log.close()
            server = cls(
                f"mlserver {variant} ({model})",
                popen,
                log_path,
                variant=variant,
                model=model,
                port=http_port,
                grpc_port=grpc_port,
            )
            try:
                wait_for(server._ready_or_dead, timeout=timeout, interval=0.2, message=f"{server.name} ready")
            except AssertionError as err:
                server.stop()
                raise AssertionError(f"{err}\n{server.log()[-3000:]}") from None
            if server.alive():
                return server
            last_error = server.log()[-3000:]
            if "address already in use" not in last_error.lower():
                break
        raise AssertionError(f"MLServer for {variant} did not start:\n{last_error}")

    @classmethod
    def start_many(
        cls, catalogue: Catalogue, models: dict[str, str], log_dir: Path, **options: Any
    ) -> dict[str, MLServerProcess]:
        """Start one server per ``{variant: model}`` at once (each takes seconds to import its stack).

        On any failure the servers already started are stopped and the first error is raised.
        """
        with ThreadPoolExecutor(max_workers=max(1, len(models))) as pool:
            futures = {
                variant: pool.submit(cls.start, catalogue, model, log_dir, variant=variant, **options)
                for variant, model in models.items()
            }
        started = {v: f.result() for v, f in futures.items() if f.exception() is None}
        errors = [f.exception() for f in futures.values() if f.exception() is not None]
        if errors:
            for server in started.values():
                server.stop()
            raise errors[0]  # type: ignore[misc]
        return started

    def _ready_or_dead(self) -> bool:
        if not self.alive():
            return True  # start() looks at why
        return (
            http_json(self.url + "/v2/health/ready", timeout=2)[0] == 200
            and http_json(self.url + INFER_PATH.removesuffix("/infer") + "/ready", timeout=2)[0] == 200
        )

    def infer(self, features: list[float]) -> tuple[int, float]:
        """Ask this server directly (not through the router): (class, fraud score)."""
        status, body = http_json(self.url + INFER_PATH, infer_body(features), timeout=10)
        assert status == 200, body
        return read_answer(body)


def main() -> int:
    """``python -m harness.mlserver``: set up the models and print the catalogue (for humans)."""
    catalogue = ensure_models()
    print(json.dumps(catalogue.data, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
