"""Load the Kubernetes client configuration once: in-cluster first, then KUBECONFIG."""

from __future__ import annotations

import os
import threading

from kubernetes import client, config

_lock = threading.Lock()
_loaded = False


def load() -> None:
    """Configure the kubernetes client from the pod's service account or from KUBECONFIG.

    Safe to call many times and from many threads; only the first call loads.
    """
    global _loaded
    with _lock:
        if _loaded:
            return
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config()  # type: ignore[no-untyped-call]
        else:
            config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))  # type: ignore[no-untyped-call]
        _loaded = True


def api_client() -> client.ApiClient:
    """Return a new ApiClient using the loaded configuration."""
    load()
    return client.ApiClient()
