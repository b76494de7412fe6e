"""`spec.analysis.prometheus` connection settings: what excludes what, refused by the API server (CEL and
OpenAPI, with the field named) and by the operator's own types (pydantic) with the same message."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from arbiter.api import parse_spec
from arbiter_fixtures import ROOT, experiment_docs

SECRET = {"name": "prom", "key": "token"}
URL = "https://prometheus.monitoring:9090"

# (case, spec.analysis.prometheus, field the API server names, message part (also pydantic's unless None))
INVALID: list[tuple[str, dict[str, Any], str, str, str | None]] = [
    (
        "token from a Secret and a file",
        {"url": URL, "bearerToken": {"secretKeyRef": SECRET, "file": "/etc/arbiter/prometheus/token"}},
        "spec.analysis.prometheus.bearerToken",
        "set exactly one of secretKeyRef or file",
        "set exactly one of secretKeyRef or file",
    ),
    (
        "token from nowhere",
        {"url": URL, "bearerToken": {}},
        "spec.analysis.prometheus.bearerToken",
        "set exactly one of secretKeyRef or file",
        "set exactly one of secretKeyRef or file",
    ),
    (
        "bearer token and basic auth",
        {
            "url": URL,
            "bearerToken": {"secretKeyRef": SECRET},
            "basicAuth": {"username": SECRET, "password": SECRET},
        },
        "spec.analysis.prometheus.basicAuth",
        "set either bearerToken or basicAuth, not both",
        "set either bearerToken or basicAuth, not both",
    ),
    (
        "basic auth without a password",
        {"url": URL, "basicAuth": {"username": SECRET}},
        "spec.analysis.prometheus.basicAuth.password",
        "Required value",
        "password",
    ),
    (
        "two CAs",
        {"url": URL, "tls": {"caSecretRef": SECRET, "caFile": "/etc/arbiter/prometheus/ca.crt"}},
        "spec.analysis.prometheus.tls.caFile",
        "set either caSecretRef or caFile, not both",
        "set either caSecretRef or caFile, not both",
    ),
    (
        "a CA with verification off",
        {"url": URL, "tls": {"insecureSkipVerify": True, "caSecretRef": SECRET}},
        "spec.analysis.prometheus.tls.insecureSkipVerify",
        "cannot be combined with a CA",
        "cannot be combined with a CA",
    ),
    (
        "tls for an http url",
        {"url": "http://prometheus:9090", "tls": {"insecureSkipVerify": True}},
        "spec.analysis.prometheus.tls",
        "tls needs an https:// url",
        "tls needs an https:// url",
    ),
    (
        "an Authorization header",
        {"url": URL, "headers": {"authorization": "Bearer abc"}},
        "spec.analysis.prometheus.headers",
        "headers must not set Authorization",
        "headers must not set Authorization",
    ),
    (
        "a header name with a space",
        {"url": URL, "headers": {"X Scope": "a"}},
        "spec.analysis.prometheus.headers",
        "header names must be HTTP tokens",
        "header names must be HTTP tokens",
    ),
    (
        "credentials in the url",
        {"url": "https://user:secret@prometheus:9090"},
        "spec.analysis.prometheus.url",
        "should match",
        "url",
    ),
    (
        "a relative token file",
        {"url": URL, "bearerToken": {"file": "token"}},
        "spec.analysis.prometheus.bearerToken.file",
        "should match",
        "file",
    ),
    (
        "a Secret key with a slash",
        {"url": URL, "bearerToken": {"secretKeyRef": {"name": "prom", "key": "a/b"}}},
        "spec.analysis.prometheus.bearerToken.secretKeyRef.key",
        "should match",
        "key",
    ),
]

VALID: list[tuple[str, dict[str, Any]]] = [
    ("the operator's default connection", {}),
    (
        "Mimir with a tenant, a token Secret and a CA Secret",
        {
            "url": URL,
            "headers": {"X-Scope-OrgID": "tenant-a"},
            "bearerToken": {"secretKeyRef": SECRET},
            "tls": {"caSecretRef": {"name": "prom", "key": "ca.crt"}},
        },
    ),
    (
        "basic auth and a mounted CA",
        {
            "url": URL,
            "basicAuth": {"username": SECRET, "password": SECRET},
            "tls": {"caFile": "/etc/arbiter/prometheus/ca.crt"},
        },
    ),
    ("a token file", {"url": URL, "bearerToken": {"file": "/etc/arbiter/prometheus/token"}}),
]


def experiment(namespace: str, prometheus: dict[str, Any]) -> dict[str, Any]:
    docs = experiment_docs(ROOT / "examples" / "canary.yaml")
    doc = copy.deepcopy(next(d for d in docs if d["kind"] == "ModelExperiment"))
    doc["metadata"] = {"name": "prometheus-probe", "namespace": namespace}
    doc["spec"]["analysis"]["prometheus"] = prometheus
    return doc


@pytest.mark.parametrize(
    ("case", "prometheus", "field", "message", "ours"), INVALID, ids=[c[0] for c in INVALID]
)
def test_the_operator_refuses_it_too(
    case: str, prometheus: dict[str, Any], field: str, message: str, ours: str | None
) -> None:
    with pytest.raises(ValidationError) as excinfo:
        parse_spec(experiment("ns", prometheus)["spec"])
    assert ours in str(excinfo.value), f"{case}: {excinfo.value}"


@pytest.mark.parametrize(
    ("case", "prometheus", "field", "message", "ours"), INVALID, ids=[c[0] for c in INVALID]
)
def test_the_api_server_refuses_it_naming_the_field(
    case: str,
    prometheus: dict[str, Any],
    field: str,
    message: str,
    ours: str | None,
    cluster: Any,
    arbiter_crd: str,
    namespace: str,
) -> None:
    result = cluster.kubectl(
        "create", "-f", "-", input=yaml.safe_dump(experiment(namespace, prometheus)), check=False
    )
    assert result.returncode != 0, f"{case}: the API server accepted it"
    assert field in result.stderr, f"{case}: field {field!r} not named in: {result.stderr}"
    assert message in result.stderr, f"{case}: {message!r} not in: {result.stderr}"


@pytest.mark.parametrize(("case", "prometheus"), VALID, ids=[c[0] for c in VALID])
def test_valid_connections_are_accepted_by_both(
    case: str, prometheus: dict[str, Any], cluster: Any, arbiter_crd: str, namespace: str
) -> None:
    doc = experiment(namespace, prometheus)
    parse_spec(doc["spec"])
    cluster.kubectl("create", "--dry-run=server", "-f", "-", input=yaml.safe_dump(doc))
