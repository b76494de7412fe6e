"""Kubernetes I/O for the routing providers: read, patch and server-side-apply the objects that carry traffic.

The providers in ``arbiter.routing`` never import ``kubernetes``; they talk to a :class:`TrafficClient`
with plain JSON dicts (camelCase, exactly what the API server stores) and catch the errors defined
here. Every write names the field manager ``arbiter``, so ``metadata.managedFields`` shows which
fields Arbiter set and which belong to someone else (kubectl, a GitOps tool).

Two write styles, chosen per object:

- :meth:`TrafficClient.apply`: server-side apply of a partial object. Arbiter owns exactly the
  fields it sends (used for the router's ConfigMap data and annotations).
- :meth:`TrafficClient.json_patch`: a targeted RFC 6902 patch, for lists that are ``atomic``
  (HTTPRoute rules, VirtualService http routes) where an apply would claim the whole list. It is
  guarded by a ``test`` of ``metadata.resourceVersion`` so a concurrent writer is never
  overwritten; the failed test surfaces as :class:`ConflictError`.

Every write first passes :func:`arbiter.k8s.fencing.fence`: with leader election on, a replica that does
not hold the leader Lease (or could not renew it within the renew deadline) writes nothing.

The client is synchronous (the kubernetes client is); handlers call it from a thread.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from kubernetes.client import ApiClient

from arbiter.k8s import config
from arbiter.k8s.fencing import fence

__all__ = [
    "CONFIG_MAPS",
    "DEPLOYMENTS",
    "FIELD_MANAGER",
    "HTTP_ROUTES",
    "SERVICES",
    "VIRTUAL_SERVICES",
    "ConflictError",
    "InvalidError",
    "KubeError",
    "NotFoundError",
    "Resource",
    "TrafficClient",
]

FIELD_MANAGER = "arbiter"

JsonObject = dict[str, Any]


class KubeError(Exception):
    """The API server refused a request, or could not be reached.

    Attributes:
        status: the HTTP status, or 0 when no response arrived.
        reason: the Status ``reason`` (e.g. ``NotFound``, ``Conflict``, ``Invalid``), if any.
    """

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason

    @property
    def retryable(self) -> bool:
        """Whether the same request may succeed later (conflicts, throttling, server errors)."""
        return self.status in (0, 409, 429) or self.status >= 500


class NotFoundError(KubeError):
    """The object (or its kind: a CRD that is not installed) does not exist.

    Attributes:
        kind_missing: True when the resource type itself is not served, e.g. its CRD is not installed.
    """

    def __init__(self, status: int, reason: str, message: str, kind_missing: bool = False) -> None:
        super().__init__(status, reason, message)
        self.kind_missing = kind_missing


class ConflictError(KubeError):
    """Someone else changed the object first (409, or a JSON patch's resourceVersion test failed)."""


class InvalidError(KubeError):
    """The API server rejected the object as invalid (422), e.g. by a CRD's schema or CEL rules."""


@dataclass(frozen=True)
class Resource:
    """A namespaced resource type: enough to build its REST path and an apply body."""

    api_version: str
    kind: str
    plural: str

    def path(self, namespace: str, name: str, subresource: str | None = None) -> str:
        """The REST path of one object (or of its subresource)."""
        prefix = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        path = f"{prefix}/namespaces/{namespace}/{self.plural}/{name}"
        return f"{path}/{subresource}" if subresource else path


CONFIG_MAPS = Resource("v1", "ConfigMap", "configmaps")
SERVICES = Resource("v1", "Service", "services")
DEPLOYMENTS = Resource("apps/v1", "Deployment", "deployments")
HTTP_ROUTES = Resource("gateway.networking.k8s.io/v1", "HTTPRoute", "httproutes")
VIRTUAL_SERVICES = Resource("networking.istio.io/v1", "VirtualService", "virtualservices")

_JSON_PATCH = "application/json-patch+json"
_MERGE_PATCH = "application/merge-patch+json"
_APPLY_PATCH = "application/apply-patch+yaml"


class TrafficClient:
    """Raw-JSON access to the objects the routing providers manage.

    Args:
        api: the ApiClient to use; a new one from :func:`arbiter.k8s.config.api_client` when None.
        field_manager: recorded in ``managedFields`` for every write.
        timeout: seconds per request.
    """

    def __init__(
        self, api: ApiClient | None = None, field_manager: str = FIELD_MANAGER, timeout: float = 30.0
    ) -> None:
        self._api = api if api is not None else config.api_client()
        self.field_manager = field_manager
        self._timeout = timeout

    def get(self, resource: Resource, namespace: str, name: str) -> JsonObject | None:
        """Read an object; None when it does not exist.

        Raises:
            NotFoundError: the resource type itself is unknown to the API server (CRD missing).
            KubeError: any other refusal.
        """
        try:
            return self._request("GET", resource.path(namespace, name))
        except NotFoundError as err:
            if err.kind_missing:
                raise
            return None

    def apply(
        self, resource: Resource, namespace: str, name: str, fields: JsonObject, *, force: bool = True
    ) -> JsonObject:
        """Server-side apply ``fields`` (a partial object) as the field manager; creates when missing.

        ``apiVersion``, ``kind``, ``metadata.name`` and ``metadata.namespace`` are filled in. With
        ``force`` (what controllers should use) Arbiter takes over fields it sends that another
        manager owns; fields it does not send are left to their owners.
        """
        body: JsonObject = {**fields, "apiVersion": resource.api_version, "kind": resource.kind}
        body["metadata"] = {**fields.get("metadata", {}), "name": name, "namespace": namespace}
        query = {"fieldManager": self.field_manager, "force": "true" if force else "false"}
        fence(f"{resource.kind} {namespace}/{name}")
        return self._request("PATCH", resource.path(namespace, name), body, _APPLY_PATCH, query)

    def json_patch(
        self,
        resource: Resource,
        namespace: str,
        name: str,
        operations: list[JsonObject],
        *,
        resource_version: str | None = None,
        subresource: str | None = None,
    ) -> JsonObject:
        """Apply an RFC 6902 JSON patch as the field manager.

        Args:
            operations: the patch.
            resource_version: when given, the patch first tests that ``metadata.resourceVersion``
                still has this value, so a change made since that read is never overwritten.

        Raises:
            ConflictError: the object changed since ``resource_version`` (re-read and retry).
        """
        path = resource.path(namespace, name, subresource)
        fence(path)
        if resource_version is not None:
            test = {"op": "test", "path": "/metadata/resourceVersion", "value": resource_version}
            operations = [test, *operations]
        try:
            return self._request("PATCH", path, operations, _JSON_PATCH, {"fieldManager": self.field_manager})
        except InvalidError as err:
            # A failed `test` comes back as a bare 422 "Invalid" without details, like a schema
            # error would; the resourceVersion tells them apart.
            if resource_version is not None:
                current = self.get(resource, namespace, name)
                if current is None or current["metadata"]["resourceVersion"] != resource_version:
                    raise ConflictError(409, "Conflict", f"{path} changed since it was read") from err
            raise

    def merge_patch(
        self,
        resource: Resource,
        namespace: str,
        name: str,
        patch: JsonObject,
        subresource: str | None = None,
    ) -> JsonObject:
        """Apply an RFC 7386 merge patch as the field manager."""
        path = resource.path(namespace, name, subresource)
        fence(path)
        return self._request("PATCH", path, patch, _MERGE_PATCH, {"fieldManager": self.field_manager})

    def scale(self, resource: Resource, namespace: str, name: str, replicas: int) -> JsonObject:
        """Set ``spec.replicas`` through the scale subresource (what HPA and ``kubectl scale`` do)."""
        return self.merge_patch(resource, namespace, name, {"spec": {"replicas": replicas}}, "scale")

    def _request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str | None = None,
        query: dict[str, str] | None = None,
    ) -> JsonObject:
        headers = {"Accept": "application/json"}
        if content_type is not None:
            headers["Content-Type"] = content_type
        _, url, headers, body, _ = self._api.param_serialize(
            method,
            path,
            query_params=list((query or {}).items()),
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            response = self._api.call_api(method, url, headers, body, _request_timeout=self._timeout)
            raw = response.read()  # type: ignore[no-untyped-call]
        except Exception as err:  # urllib3 connection and timeout errors: the server was not reached
            if isinstance(err, KubeError):
                raise
            status = getattr(err, "status", 0) or 0
            raise KubeError(int(status), type(err).__name__, f"{method} {path}: {err}") from err
        if response.status >= 400:
            raise _error(method, path, response.status, raw)
        data = json.loads(raw) if raw else {}
        if not isinstance(data, dict):
            raise KubeError(response.status, "BadResponse", f"{method} {path}: expected an object")
        return data


def _error(method: str, path: str, status: int, raw: bytes) -> KubeError:
    """Turn an error response (a metav1.Status, usually) into the matching exception."""
    try:
        payload = json.loads(raw)
    except ValueError:
        payload = {}
    if not isinstance(payload, dict):
        payload = {}
    reason = str(payload.get("reason") or "")
    message = f"{method} {path}: {status} {payload.get('message') or raw[:500].decode(errors='replace')}"
    if status == 404:
        # A 404 that names no object means the path's resource type is not served at all.
        details = payload.get("details")
        named = isinstance(details, dict) and bool(details.get("name"))
        return NotFoundError(status, reason, message, kind_missing=not named)
    if status == 409:
        return ConflictError(status, reason or "Conflict", message)
    if status == 422:
        return InvalidError(status, reason, message)
    return KubeError(status, reason, message)
