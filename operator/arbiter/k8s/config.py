"""Load the Kubernetes client configuration once (in-cluster first, then KUBECONFIG) and share one client.

Every API call of the process goes through one :class:`~kubernetes.client.ApiClient`: one urllib3
connection pool, so connections (and their TLS sessions) are reused across calls and threads instead of
a new handshake per call. urllib3's pool manager is thread-safe; the pool holds up to
:data:`POOL_SIZE` connections per host (``ARBITER_KUBE_POOL_SIZE``), enough for the threads that call
the API at once (the operator's worker threads, see ``arbiter.handlers.experiment``).

Command-line tools call :func:`configure` first with kubectl's ``--kubeconfig`` and ``--context``;
:func:`describe_error` turns what the client raises into one line a person can act on.
"""

from __future__ import annotations

import os
import re
import threading
from typing import Any

from kubernetes import client, config

#: Connections kept open to the API server; more concurrent callers wait for a free one.
POOL_SIZE = int(os.environ.get("ARBITER_KUBE_POOL_SIZE", "16"))

_lock = threading.Lock()
_loaded = False
_shared: client.ApiClient | None = None
#: The kubeconfig file and context chosen by :func:`configure` (None: the defaults).
_selected: tuple[str | None, str | None] = (None, None)


class ConfigError(Exception):
    """The client configuration could not be loaded (missing or broken kubeconfig, unknown context)."""


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


def configure(kubeconfig: str | None = None, context: str | None = None, *, fail_fast: bool = True) -> None:
    """Load the configuration the way kubectl does for a command-line tool.

    Args:
        kubeconfig: the kubeconfig file (``--kubeconfig``); default $KUBECONFIG, then ~/.kube/config,
            then the pod's service account.
        context: the context to use (``--context``); default the file's current context.
        fail_fast: do not retry failed connections (a person is waiting for the answer).

    Raises:
        ConfigError: with a one-line message.
    """
    global _loaded, _selected, _shared
    path = kubeconfig or _default_kubeconfig()
    with _lock:
        _shared = None  # a new configuration: the next api_client() is built from it
        try:
            if (
                kubeconfig is None
                and context is None
                and os.environ.get("KUBERNETES_SERVICE_HOST")
                and not path
            ):
                config.load_incluster_config()  # type: ignore[no-untyped-call]
            else:
                if path and not os.path.exists(path):
                    raise ConfigError(f"kubeconfig {path} does not exist")
                if path:
                    _check_kubeconfig(path)
                config.load_kube_config(config_file=path, context=context)  # type: ignore[no-untyped-call]
        except ConfigError:
            raise
        except Exception as exc:  # the loader raises ConfigException, YAML and key errors alike
            where = f"kubeconfig {path}" if path else "kubeconfig"
            if context is not None and "Expected object with name" in str(exc):
                raise ConfigError(f"context {context!r} not found in {where}") from exc
            raise ConfigError(f"{where}: {_first_line(exc) or type(exc).__name__}") from exc
        if fail_fast:
            settings = client.Configuration.get_default_copy()
            settings.retries = 0
            client.Configuration.set_default(settings)
        _selected = (path, context)
        _loaded = True


def _check_kubeconfig(path: str) -> None:
    """Refuse a file that is not a kubeconfig at all, with a message better than the loader's."""
    import yaml

    try:
        with open(path) as handle:
            loaded = yaml.safe_load(handle)
    except OSError as exc:
        raise ConfigError(f"kubeconfig {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"kubeconfig {path} is not valid YAML: {_first_line(exc)}") from exc
    if not isinstance(loaded, dict):
        raise ConfigError(f"kubeconfig {path} is not a kubeconfig (no clusters, contexts or users in it)")


def _default_kubeconfig() -> str | None:
    """$KUBECONFIG (its first file), else ~/.kube/config when it exists."""
    env = os.environ.get("KUBECONFIG")
    if env:
        return env.split(os.pathsep)[0]
    home = os.path.expanduser("~/.kube/config")
    return home if os.path.exists(home) else None


def selected() -> tuple[str | None, str | None]:
    """The kubeconfig file and context in use, as chosen by :func:`configure`."""
    return _selected


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


def server() -> str:
    """The API server's address in the loaded configuration."""
    load()
    return str(client.Configuration.get_default_copy().host)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def describe_error(exc: BaseException) -> str | None:
    """One line for an error of the Kubernetes client, or None when it is not one.

    Covers the API server's answers (status, reason and its message), an unreachable or refusing
    server, TLS problems and timeouts, and configuration errors.
    """
    import json

    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError as Urllib3Error
    from urllib3.exceptions import MaxRetryError

    if isinstance(exc, ConfigError):
        return str(exc)
    if isinstance(exc, ApiException):
        message = ""
        try:
            message = str(json.loads(exc.body or "{}").get("message", ""))
        except (ValueError, AttributeError):
            message = str(exc.body or "")
        return f"{exc.status} {exc.reason}" + (f": {message}" if message else "")
    if isinstance(exc, Urllib3Error):
        reason: Any = exc.reason if isinstance(exc, MaxRetryError) and exc.reason is not None else exc
        detail = _first_line(reason)
        # urllib3 prefixes the connection ("HTTPSConnection(host=..., port=...): Failed to ..."): keep the cause.
        detail = re.sub(r"^(<[^>]*>|\w+\([^)]*\)): ", "", detail)
        return f"cannot reach the API server at {server()}: {detail or type(reason).__name__}"
    return None


def is_transient(exc: BaseException) -> bool:
    """Whether an error of the client may pass by itself: a lost connection, a timeout, a 5xx or a 429."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError as Urllib3Error

    if isinstance(exc, ApiException):
        return exc.status is not None and (exc.status >= 500 or exc.status == 429)
    return isinstance(exc, Urllib3Error | ConnectionError | TimeoutError)
