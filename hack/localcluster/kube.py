"""Kubeconfig files and a tiny HTTPS client for the API server (stdlib only)."""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

CONTEXT = "arbiter-local"


def write_kubeconfig(path: Path, *, server: str, ca_cert: Path, client_cert: Path, client_key: Path) -> None:
    """Write a self-contained kubeconfig (certificates embedded) for one client identity.

    JSON is valid YAML, so kubectl, client-go and the Python client all read it.
    """

    def b64(p: Path) -> str:
        return base64.b64encode(p.read_bytes()).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": CONTEXT, "cluster": {"server": server, "certificate-authority-data": b64(ca_cert)}}
        ],
        "users": [
            {
                "name": CONTEXT,
                "user": {"client-certificate-data": b64(client_cert), "client-key-data": b64(client_key)},
            }
        ],
        "contexts": [{"name": CONTEXT, "context": {"cluster": CONTEXT, "user": CONTEXT}}],
        "current-context": CONTEXT,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2) + "\n")
    path.chmod(0o600)


def server_of(kubeconfig: Path) -> str:
    """Return the server URL of the current context of a kubeconfig (JSON or YAML)."""
    text = kubeconfig.read_text()
    try:
        config = json.loads(text)
    except json.JSONDecodeError:
        import yaml  # only for kubeconfigs not written by us

        config = yaml.safe_load(text)
    current = config.get("current-context")
    contexts = {c["name"]: c["context"] for c in config.get("contexts", [])}
    clusters = {c["name"]: c["cluster"] for c in config.get("clusters", [])}
    cluster_name = contexts[current]["cluster"] if current in contexts else next(iter(clusters))
    return str(clusters[cluster_name]["server"])


class ApiError(RuntimeError):
    """An HTTP error from the API server, with its status code and body."""

    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        super().__init__(f"{method} {path}: HTTP {status}: {body[:500]}")
        self.status = status


class RestClient:
    """Just enough of a Kubernetes REST client to bootstrap and probe the cluster."""

    def __init__(self, server: str, *, ca_cert: Path, client_cert: Path, client_key: Path) -> None:
        self.server = server.rstrip("/")
        self._ctx = ssl.create_default_context(cafile=str(ca_cert))
        self._ctx.load_cert_chain(str(client_cert), str(client_key))

    def request(self, method: str, path: str, body: Any = None, timeout: float = 5.0) -> Any:
        """Send a request and return the decoded JSON (or text) response; raise ApiError on >= 400."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.server + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, context=self._ctx, timeout=timeout) as resp:
                raw = resp.read().decode()
        except urllib.error.HTTPError as err:
            raise ApiError(method, path, err.code, err.read().decode(errors="replace")) from None
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            return raw

    def get(self, path: str, timeout: float = 5.0) -> Any:
        """GET ``path``."""
        return self.request("GET", path, timeout=timeout)

    def post(self, path: str, body: Any) -> Any:
        """POST ``body`` as JSON to ``path``."""
        return self.request("POST", path, body)


def insecure_get(url: str, timeout: float = 2.0) -> str:
    """GET a URL without verifying TLS (the controller-manager and scheduler self-sign)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with urllib.request.urlopen(url, context=ctx, timeout=timeout) as resp:
        return str(resp.read().decode())
