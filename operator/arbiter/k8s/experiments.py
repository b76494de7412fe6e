"""Reading and patching ModelExperiment objects and the workloads they name."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, cast

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from arbiter.api import GROUP, KIND, PLURAL, VERSION
from arbiter.k8s.config import api_client, selected
from arbiter.k8s.fencing import fence


class StaleStatusError(Exception):
    """The experiment changed since it was read (409 Conflict): re-read it and decide again."""


def replace_status(
    namespace: str, name: str, status: dict[str, Any], *, resource_version: str | None = None
) -> dict[str, Any]:
    """Replace the whole status of one ModelExperiment and return the stored object (as plain JSON).

    The status is written whole (it is the engine's complete state; a merge patch could not remove
    keys nested in maps the engine rewrites, e.g. counters after a retry). The answer is decoded with
    ``json`` rather than the client's model deserialisation, which was a sixth of the operator's CPU
    per tick.

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
        return cast(dict[str, Any], json.loads(response.read()))
    # Only the status stanza of a /status PUT is stored; spec and metadata come from the stored object.
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace, "resourceVersion": resource_version},
        "status": status,
    }
    try:
        response = api.replace_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, name, body, _preload_content=False
        )
    except ApiException as exc:
        if exc.status == 409:
            raise StaleStatusError(
                f"ModelExperiment {namespace}/{name} changed since resourceVersion {resource_version}"
            ) from exc
        raise
    return cast(dict[str, Any], json.loads(response.read()))


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


SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def current_namespace() -> str:
    """The namespace of the kubeconfig's context in use (``default`` when unset or in-cluster)."""
    from kubernetes import config as kube_config

    path, context = selected()
    try:
        contexts, active = kube_config.list_kube_config_contexts(path)  # type: ignore[no-untyped-call]
    except Exception:  # no kubeconfig: in a pod, its own namespace, as kubectl does
        try:
            with open(SERVICE_ACCOUNT_NAMESPACE) as handle:
                return handle.read().strip() or "default"
        except OSError:
            return "default"
    if context is not None:
        active = next((c for c in contexts if c.get("name") == context), active)
    return str((active or {}).get("context", {}).get("namespace") or "default")


def watch_experiments(
    namespace: str | None, name: str | None = None, *, timeout_seconds: int = 60
) -> Iterator[list[dict[str, Any]]]:
    """The experiments (one, or all in ``namespace``, or everywhere when None) now and after each change.

    Lists first, then watches from the list's resourceVersion; a watch that ends (server timeout) is
    resumed, and one whose version expired (410 Gone) starts over from a fresh list. Each change
    yields the whole current set, sorted by namespace and name; so does the end of every watch request
    (at most ``timeout_seconds`` apart), so the caller gets a chance to check its own deadline. Runs until
    the caller stops iterating.
    """
    from kubernetes import watch

    api = client.CustomObjectsApi(api_client())
    selector: dict[str, Any] = {"field_selector": f"metadata.name={name}"} if name else {}
    while True:
        if namespace is None:
            listed: Any = api.list_cluster_custom_object(GROUP, VERSION, PLURAL, **selector)
        else:
            listed = api.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, **selector)
        items = {_key(i): i for i in listed.get("items", [])}
        version = listed.get("metadata", {}).get("resourceVersion")
        yield _sorted(items)
        expired = False
        while not expired:
            stream = watch.Watch()  # type: ignore[no-untyped-call]
            args: tuple[Any, ...] = (
                (api.list_cluster_custom_object, GROUP, VERSION, PLURAL)
                if namespace is None
                else (api.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL)
            )
            try:
                events = stream.stream(  # type: ignore[no-untyped-call]
                    *args, resource_version=version, timeout_seconds=timeout_seconds, **selector
                )
                for event in events:
                    kind, obj = event["type"], event["object"]
                    if kind == "BOOKMARK":
                        version = obj.get("metadata", {}).get("resourceVersion", version)
                        continue
                    version = obj.get("metadata", {}).get("resourceVersion", version)
                    if kind == "DELETED":
                        items.pop(_key(obj), None)
                    else:
                        items[_key(obj)] = obj
                    yield _sorted(items)
            except ApiException as exc:
                if exc.status != 410:
                    raise
                expired = True
            finally:
                stream.stop()  # type: ignore[no-untyped-call]
            if not expired:
                yield _sorted(items)


def _key(obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata", {})
    return (str(meta.get("namespace", "")), str(meta.get("name", "")))


def _sorted(items: dict[tuple[str, str], dict[str, Any]]) -> list[dict[str, Any]]:
    return [items[key] for key in sorted(items)]
