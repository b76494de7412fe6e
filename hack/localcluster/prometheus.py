"""Run Debian's ``prometheus`` binary on a free port with a generated config and a private TSDB.

Scrape targets live in a regenerated config file: one job per :meth:`Prometheus.add_target`, each
with its own ``scrape_interval``. Every change rewrites the file and POSTs ``/-/reload``
(``--web.enable-lifecycle``), so the change is live when the call returns. This was chosen over
file_sd because file_sd cannot set a per-job interval or metrics path and is applied by a file
watcher at an unknown later moment, while a reload is synchronous and reports config errors.

With a :class:`WebConfig` the server is started with ``--web.config.file`` and serves only HTTPS
with basic auth, like a Prometheus behind the security settings real clusters use; this module's
own requests (readiness, reload, queries) then verify the certificate and log in.
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localcluster import procs
from localcluster.certs import ServingPki, generate_serving


class PrometheusError(RuntimeError):
    """Prometheus failed to start, rejected a config, or answered a query with an error."""


@dataclass(frozen=True)
class ScrapeJob:
    """One scrape job: static targets scraped every ``scrape_interval`` at ``metrics_path``."""

    job: str
    targets: tuple[str, ...]
    scrape_interval: str = "1s"
    metrics_path: str = "/metrics"

    def to_config(self) -> dict[str, Any]:
        """Return this job as a ``scrape_configs`` entry."""
        return {
            "job_name": self.job,
            "scrape_interval": self.scrape_interval,
            # Prometheus rejects a timeout longer than the interval (the global default is 10s).
            "scrape_timeout": self.scrape_interval,
            "metrics_path": self.metrics_path,
            "static_configs": [{"targets": list(self.targets)}],
        }


@dataclass(frozen=True)
class WebConfig:
    """TLS and basic auth for Prometheus' own HTTP server (its ``--web.config.file``).

    Attributes:
        pki: the CA, serving certificate and key (for localhost and 127.0.0.1).
        username: the one basic-auth user.
        password: its password in clear (stored bcrypt-hashed in the web config).
    """

    pki: ServingPki
    username: str
    password: str

    @classmethod
    def generate(cls, directory: Path, username: str = "arbiter", password: str | None = None) -> WebConfig:
        """Fresh certificates in ``directory`` and a random password unless one is given."""
        return cls(generate_serving(directory), username, password or secrets.token_urlsafe(18))

    def render(self) -> str:
        """The web config file's text (JSON is valid YAML)."""
        import bcrypt  # a dev dependency; Prometheus accepts bcrypt hashes only

        hashed = bcrypt.hashpw(self.password.encode(), bcrypt.gensalt(rounds=10)).decode()
        config = {
            "tls_server_config": {"cert_file": str(self.pki.cert), "key_file": str(self.pki.key)},
            "basic_auth_users": {self.username: hashed},
        }
        return json.dumps(config, indent=2) + "\n"

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts exactly this server's CA."""
        return ssl.create_default_context(cafile=str(self.pki.ca_cert))

    def authorization(self) -> str:
        """The ``Authorization`` header value for the user."""
        pair = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(pair).decode()


def render_config(jobs: list[ScrapeJob], query_log_file: str | None = None) -> str:
    """Return a prometheus.yml (JSON is valid YAML) scraping exactly ``jobs``.

    Args:
        jobs: the scrape jobs.
        query_log_file: when set, Prometheus writes every query it evaluates to this file (JSON lines).
    """
    global_config: dict[str, Any] = {"scrape_interval": "15s", "evaluation_interval": "15s"}
    if query_log_file is not None:
        global_config["query_log_file"] = query_log_file
    config = {"global": global_config, "scrape_configs": [job.to_config() for job in jobs]}
    return json.dumps(config, indent=2) + "\n"


def _binary() -> str:
    found = shutil.which("prometheus") or (
        "/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None
    )
    if found is None:
        raise PrometheusError("the `prometheus` binary is missing: run `make system-deps`")
    return found


class Prometheus:
    """A Prometheus server on 127.0.0.1 that keeps its port and TSDB across stop() and start().

    Args:
        workdir: holds prometheus.yml, data/ (the TSDB), prometheus.log and prometheus.pid;
            a new temp dir when None.
        port: fixed port; a free one is picked when None (and kept for restarts).
        die_with_parent: stop Prometheus if the process that started it dies (for pytest).
        query_log: log every evaluated query to :attr:`query_log_path` (benchmarks count them).
        web: serve HTTPS with basic auth only (``--web.config.file``); plain HTTP when None.
    """

    def __init__(
        self,
        workdir: str | Path | None = None,
        *,
        port: int | None = None,
        die_with_parent: bool = False,
        query_log: bool = False,
        web: WebConfig | None = None,
    ) -> None:
        # Absolute: Prometheus runs with this as its working directory.
        self.workdir = (
            Path(workdir).resolve() if workdir is not None else Path(tempfile.mkdtemp(prefix="arbiter-prom-"))
        )
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port if port is not None else procs.free_ports(1)[0]
        self.die_with_parent = die_with_parent
        self.query_log = query_log
        self.web = web
        self._jobs: dict[str, ScrapeJob] = {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._record: procs.PidRecord | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:41234`` (``https://`` with a web config)."""
        scheme = "https" if self.web is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.workdir / "prometheus.yml"

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def query_log_path(self) -> Path:
        """Where the queries are logged when ``query_log`` is on (one JSON object per line)."""
        return self.workdir / "queries.jsonl"

    @property
    def log_path(self) -> Path:
        return self.workdir / "prometheus.log"

    @property
    def running(self) -> bool:
        """True while the server process we started is alive."""
        return self._record is not None and self._record.alive()

    def _write_config(self) -> None:
        tmp = self.config_path.with_suffix(".tmp")
        query_log = str(self.query_log_path) if self.query_log else None
        tmp.write_text(render_config(list(self._jobs.values()), query_log))
        tmp.replace(self.config_path)

    def start(self, timeout: float = 30.0) -> None:
        """Start the server (same port and TSDB as before) and wait until ``/-/ready`` answers."""
        if self.running:
            return
        if not procs.port_is_free(self.port):
            raise PrometheusError(f"cannot start Prometheus: 127.0.0.1:{self.port} is already in use")
        self._write_config()
        argv = [
            _binary(),
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.data_dir}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-lifecycle",
            "--storage.tsdb.retention.time=1d",
        ]
        if self.web is not None:
            web_config = self.workdir / "web.yml"
            web_config.write_text(self.web.render())
            argv.append(f"--web.config.file={web_config}")
        self._proc, self._record = procs.spawn(
            "prometheus",
            argv,
            log_path=self.log_path,
            pid_path=self.workdir / "prometheus.pid",
            cwd=self.workdir,
            die_with_parent=self.die_with_parent,
        )
        deadline = time.monotonic() + timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                raise self._failure(f"prometheus exited with code {code} during startup")
            with contextlib.suppress(OSError):
                if self._http("GET", "/-/ready", timeout=1.0)[0] == 200:
                    return
            if time.monotonic() >= deadline:
                raise self._failure(f"prometheus not ready on {self.url} after {timeout}s")
            time.sleep(0.1)

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and wait for it to exit; safe to call twice."""
        if self._record is not None:
            procs.stop([self._record], timeout=timeout)
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=5)
        self._proc = None
        self._record = None

    def __enter__(self) -> Prometheus:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _failure(self, headline: str) -> PrometheusError:
        return PrometheusError(
            f"{headline}\n--- last lines of {self.log_path} ---\n{procs.tail(self.log_path)}"
        )

    def _http(self, method: str, path: str, timeout: float = 5.0) -> tuple[int, str]:
        req = urllib.request.Request(self.url + path, method=method)
        context = None
        if self.web is not None:
            req.add_header("Authorization", self.web.authorization())
            context = self.web.ssl_context()
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode(errors="replace")

    def _reload(self) -> None:
        self._write_config()
        if not self.running:
            return  # applied by the next start()
        status, body = self._http("POST", "/-/reload", timeout=10.0)
        if status != 200:
            raise self._failure(f"reload rejected (HTTP {status}): {body.strip()}")

    def add_target(
        self, job: str, targets: list[str], scrape_interval: str = "1s", metrics_path: str = "/metrics"
    ) -> None:
        """Scrape ``targets`` (``host:port``) as job ``job``; replaces a job of the same name.

        The config is reloaded before this returns; use :meth:`wait_for_target_up` to wait for
        the first successful scrape.
        """
        previous = self._jobs.get(job)
        self._jobs[job] = ScrapeJob(job, tuple(targets), scrape_interval, metrics_path)
        try:
            self._reload()
        except PrometheusError:
            # Put the last good config back, so a bad job never poisons later reloads or restarts.
            if previous is None:
                del self._jobs[job]
            else:
                self._jobs[job] = previous
            self._write_config()
            raise

    def remove_target(self, job: str) -> None:
        """Stop scraping job ``job`` (no error if it is unknown)."""
        if self._jobs.pop(job, None) is not None:
            self._reload()

    def targets(self, job: str | None = None) -> list[dict[str, Any]]:
        """Return the active targets from ``/api/v1/targets``, optionally only those of ``job``."""
        data = self._api("/api/v1/targets?state=active")
        active: list[dict[str, Any]] = data["activeTargets"]
        return [t for t in active if job is None or t.get("scrapePool") == job]

    def wait_for_target_up(self, job: str, timeout: float = 30.0) -> None:
        """Wait until every configured target of ``job`` has been scraped successfully.

        Raises:
            TimeoutError: with each target's health and last error.
        """
        wanted = set(self._jobs[job].targets)
        deadline = time.monotonic() + timeout
        seen: list[dict[str, Any]] = []
        while True:
            with contextlib.suppress(OSError, PrometheusError):
                seen = self.targets(job)
                up = {t["labels"].get("instance") for t in seen if t.get("health") == "up"}
                if wanted <= up:
                    return
            if time.monotonic() >= deadline:
                detail = [(t["labels"].get("instance"), t.get("health"), t.get("lastError")) for t in seen]
                raise TimeoutError(
                    f"job {job!r}: targets {sorted(wanted)} not all up after {timeout}s: {detail}"
                )
            time.sleep(0.1)

    def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        """Evaluate an instant PromQL query and return ``data.result``.

        Args:
            promql: the expression.
            at: evaluation timestamp (Unix seconds); now when None.

        Returns:
            The result list; for a vector, items look like ``{"metric": {...}, "value": [ts, "1.5"]}``.
        """
        params = {"query": promql}
        if at is not None:
            params["time"] = repr(at)
        data = self._api("/api/v1/query?" + urllib.parse.urlencode(params))
        result = data["result"]
        if data.get("resultType") in ("scalar", "string"):
            return [{"metric": {}, "value": result}]
        return list(result)

    def _api(self, path: str) -> Any:
        status, body = self._http("GET", path)
        try:
            payload = json.loads(body)
        except json.JSONDecodeError:
            raise PrometheusError(f"GET {path}: HTTP {status}: {body[:300]}") from None
        if payload.get("status") != "success":
            raise PrometheusError(f"GET {path}: {payload.get('errorType')}: {payload.get('error')}")
        return payload["data"]
