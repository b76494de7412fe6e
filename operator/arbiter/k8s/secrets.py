"""Read one key of one named Secret: the only way Arbiter reads credentials from the API server.

The operator never lists or watches Secrets (the chart grants no cluster-wide access to them). A
``GET`` of one named Secret works with a namespaced Role that grants ``get`` on exactly that name
(``resourceNames``), which is what docs/operations.md asks a namespace owner to create. Errors name
the Secret and the key, never a value.
"""

from __future__ import annotations

import base64
import binascii

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from arbiter.k8s.config import api_client

__all__ = ["SecretError", "read_secret_key"]


class SecretError(Exception):
    """The Secret or its key could not be read; the message says which and why (never the value)."""


def read_secret_key(
    namespace: str, name: str, key: str, *, timeout: float = 10.0, api: client.ApiClient | None = None
) -> bytes:
    """The decoded value of ``data[key]`` of Secret ``namespace/name``.

    Args:
        api: the ApiClient to read with; the operator's own (default kubeconfig) when None.

    Raises:
        SecretError: missing Secret or key, access forbidden, or the API server unreachable.
    """
    core = client.CoreV1Api(api if api is not None else api_client())
    where = f"Secret {namespace}/{name}"
    try:
        secret = core.read_namespaced_secret(name, namespace, _request_timeout=timeout)
    except ApiException as exc:
        if exc.status == 404:
            raise SecretError(f"{where} not found") from None
        if exc.status == 403:
            raise SecretError(
                f"the operator may not read {where} (403 Forbidden): grant its ServiceAccount `get` on "
                "this Secret with a Role in that namespace (see docs/operations.md)"
            ) from None
        raise SecretError(f"reading {where} failed: HTTP {exc.status} {exc.reason}") from None
    except Exception as exc:  # connection and timeout errors: no detail that could carry data
        raise SecretError(f"reading {where} failed: {type(exc).__name__}") from None
    data = secret.data or {}
    if key not in data:
        raise SecretError(f"{where} has no key {key!r}")
    try:
        return base64.b64decode(data[key], validate=True)
    except (binascii.Error, ValueError):
        raise SecretError(f"{where} key {key!r} is not valid base64") from None
