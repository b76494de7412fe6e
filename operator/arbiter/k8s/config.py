"""Load the Kubernetes client configuration once (in-cluster first, then KUBECONFIG) and share one client.

Every API call of the process goes through one :class:`~kubernetes.client.ApiClient`: one urllib3
connection pool, so connections (and their TLS sessions) are reused across calls and threads instead of
a new handshake per call. urllib3's pool manager is thread-safe; the pool holds up to
:data:`POOL_SIZE` connections per host (``ARBITER_KUBE_POOL_SIZE``), enough for the threads that call
the API at once (the operator's worker threads, see ``arbiter.handlers.experiment``).
"""

from __future__ import annotations

import os
import threading

from kubernetes import client, config

#: Connections kept open to the API server; more concurrent callers wait for a free one.
POOL_SIZE = int(os.environ.get("ARBITER_KUBE_POOL_SIZE", "16"))

_lock = threading.Lock()
_loaded = False
_shared: client.ApiClient | None = None


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
    """The process's shared ApiClient (created on first use from the loaded configuration).

    Do not close it: every caller in the process uses the same connection pool.
    """
    global _shared
    load()
    with _lock:
        if _shared is None:
            configuration = client.Configuration.get_default_copy()
            configuration.connection_pool_maxsize = POOL_SIZE
            _shared = client.ApiClient(configuration)
        return _shared
