"""Reading MetricTemplate (namespaced) and ClusterMetricTemplate objects."""

from __future__ import annotations

import json
from typing import Any, cast

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from arbiter.api import GROUP, VERSION
from arbiter.api.metrictemplate import CLUSTER_TEMPLATE_PLURAL, TEMPLATE_PLURAL, TemplateKind
from arbiter.k8s.config import api_client


class TemplateReadFailure(Exception):
    """The API server did not answer the read (other than: the template does not exist)."""


def get_template_spec(namespace: str, kind: TemplateKind, name: str) -> dict[str, Any] | None:
    """The raw ``spec`` of a template, or None when it does not exist (or its CRD is not installed).

    Args:
        namespace: the experiment's namespace (where a MetricTemplate is looked up).
        kind: MetricTemplate or ClusterMetricTemplate.
        name: the template's name.

    Raises:
        TemplateReadFailure: any other API error (forbidden, unavailable), with its status and reason.
    """
    api = client.CustomObjectsApi(api_client())
    try:
        if kind is TemplateKind.CLUSTER_METRIC_TEMPLATE:
            response: Any = api.get_cluster_custom_object(
                GROUP, VERSION, CLUSTER_TEMPLATE_PLURAL, name, _preload_content=False
            )
        else:
            response = api.get_namespaced_custom_object(
                GROUP, VERSION, namespace, TEMPLATE_PLURAL, name, _preload_content=False
            )
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise TemplateReadFailure(f"HTTP {exc.status} {exc.reason}") from exc
    except Exception as exc:  # urllib3 connection and timeout errors: the server was not reached
        raise TemplateReadFailure(f"{type(exc).__name__}: {exc}") from exc
    body = cast(dict[str, Any], json.loads(response.read()))
    spec = body.get("spec")
    return spec if isinstance(spec, dict) else {}
