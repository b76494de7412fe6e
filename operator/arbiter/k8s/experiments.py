"""Reading and patching ModelExperiment objects and the workloads they name."""

from __future__ import annotations

from typing import Any, cast

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from arbiter.api import GROUP, PLURAL, VERSION
from arbiter.k8s.config import api_client


def replace_status(namespace: str, name: str, status: dict[str, Any]) -> None:
    """Replace the whole status of one ModelExperiment (a JSON patch).

    A merge patch cannot remove keys nested in maps the engine rewrites (e.g. counters after a
    retry), so the status is written whole: it is the engine's complete state. The stored object the
    API server answers with is not decoded (the watch delivers it anyway; decoding it was a sixth of
    the operator's CPU per tick).

    Raises:
        ApiException: the API server refused the patch.
    """
    api = client.CustomObjectsApi(api_client())
    response: Any = api.patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        name,
        [{"op": "add", "path": "/status", "value": status}],
        _content_type="application/json-patch+json",
        _preload_content=False,
    )
    response.read()


def get_experiment(namespace: str, name: str) -> dict[str, Any] | None:
    """The ModelExperiment object, or None when it does not exist."""
    api = client.CustomObjectsApi(api_client())
    try:
        result = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return cast(dict[str, Any], result)


def list_experiments(namespace: str | None) -> list[dict[str, Any]]:
    """Every ModelExperiment in ``namespace``, or in all namespaces when None."""
    api = client.CustomObjectsApi(api_client())
    if namespace is None:
        result = api.list_cluster_custom_object(GROUP, VERSION, PLURAL)
    else:
        result = api.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
    return cast(list[dict[str, Any]], cast(dict[str, Any], result).get("items", []))


def patch_experiment(namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
    """Merge-patch a ModelExperiment (metadata or spec) and return the stored object."""
    api = client.CustomObjectsApi(api_client())
    result = api.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name, patch, _content_type="application/merge-patch+json"
    )
    return cast(dict[str, Any], result)


def current_namespace() -> str:
    """The namespace of the kubeconfig's current context (``default`` when unset or in-cluster)."""
    from kubernetes import config as kube_config

    try:
        _, active = kube_config.list_kube_config_contexts()  # type: ignore[no-untyped-call]
    except Exception:  # no kubeconfig (in-cluster): the caller's namespace is not known
        return "default"
    return str((active or {}).get("context", {}).get("namespace") or "default")
