"""Reading and patching ModelExperiment objects and the workloads they name."""

from __future__ import annotations

from typing import Any, cast

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from arbiter.api import GROUP, KIND, PLURAL, VERSION
from arbiter.k8s.config import api_client
from arbiter.k8s.fencing import fence


class StaleStatusError(Exception):
    """The experiment changed since it was read (409 Conflict): re-read it and decide again."""


def replace_status(
    namespace: str, name: str, status: dict[str, Any], *, resource_version: str | None = None
) -> dict[str, Any]:
    """Replace the whole status of one ModelExperiment and return the stored object.

    The status is written whole (it is the engine's complete state; a merge patch could not remove
    keys nested in maps the engine rewrites, e.g. counters after a retry).

    Args:
        namespace: the experiment's namespace.
        name: the experiment's name.
        status: the new status.
        resource_version: the ``metadata.resourceVersion`` the status was decided from. When given
            (the operator always gives it) the write is a PUT of the status subresource carrying
            it, which the API server accepts only if the object is still at that version: a status
            decided from a stale read is refused, never written over a newer one.

    Raises:
        StaleStatusError: ``resource_version`` is no longer current.
        NotLeaderError: leader election is on and this replica is not the leader.
    """
    fence(f"status of ModelExperiment {namespace}/{name}")
    api = client.CustomObjectsApi(api_client())
    if resource_version is None:
        patched = api.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            [{"op": "add", "path": "/status", "value": status}],
            _content_type="application/json-patch+json",
        )
        return cast(dict[str, Any], patched)
    # Only the status stanza of a /status PUT is stored; spec and metadata come from the stored object.
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace, "resourceVersion": resource_version},
        "status": status,
    }
    try:
        replaced = api.replace_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, name, body)
    except ApiException as exc:
        if exc.status == 409:
            raise StaleStatusError(
                f"ModelExperiment {namespace}/{name} changed since resourceVersion {resource_version}"
            ) from exc
        raise
    return cast(dict[str, Any], replaced)


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
