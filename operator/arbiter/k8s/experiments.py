"""Reading and patching ModelExperiment objects and the workloads they name."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from arbiter.api import GROUP, PLURAL, VERSION, Variant
from arbiter.k8s.config import api_client, selected


def replace_status(namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
    """Replace the whole status of one ModelExperiment (a JSON patch) and return the stored object.

    A merge patch cannot remove keys nested in maps the engine rewrites (e.g. counters after a
    retry), so the status is written whole: it is the engine's complete state.
    """
    api = client.CustomObjectsApi(api_client())
    result = api.patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        name,
        [{"op": "add", "path": "/status", "value": status}],
        _content_type="application/json-patch+json",
    )
    return cast(dict[str, Any], result)


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


@dataclass(frozen=True)
class WorkloadState:
    """Whether one variant's Deployment and Service exist and are ready."""

    variant: str
    problems: tuple[str, ...]

    @property
    def ready(self) -> bool:
        """True when nothing is missing or unready."""
        return not self.problems


def workload_states(namespace: str, variants: list[Variant]) -> list[WorkloadState]:
    """Check every variant's Deployment (exists, all replicas ready) and Service (exists)."""
    apps = client.AppsV1Api(api_client())
    core = client.CoreV1Api(api_client())
    states = []
    for variant in variants:
        problems: list[str] = []
        try:
            deployment = apps.read_namespaced_deployment(variant.deployment, namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            problems.append(f"Deployment {variant.deployment} not found")
        else:
            wanted = deployment.spec.replicas if deployment.spec.replicas is not None else 1
            ready = (deployment.status.ready_replicas or 0) if deployment.status else 0
            if wanted > 0 and ready < wanted:
                problems.append(f"Deployment {variant.deployment} has {ready}/{wanted} ready replicas")
        if variant.service is not None:
            try:
                core.read_namespaced_service(variant.service, namespace)
            except ApiException as exc:
                if exc.status != 404:
                    raise
                problems.append(f"Service {variant.service} not found")
        states.append(WorkloadState(variant.name, tuple(problems)))
    return states


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
