"""Every manifest of the invalid corpus is refused by the real API server, and the refusal names the field.

The generated cases (schema-driven mutations of the examples, tests/invalid_corpus.py) are sent as a
server-side dry run with ``fieldValidation=Strict``, the way ``kubectl apply`` (``--validate=strict``,
kubectl's default) sends them: without Strict, a structural schema silently drops unknown fields
instead of refusing them. The hand-written cases (tests/data/invalid/) go through ``kubectl apply
--validate=strict`` itself, as a user would type it.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from invalid_corpus import UNKNOWN_FIELD, InvalidCase, generated_cases, hand_written_cases

GENERATED = generated_cases()
HAND_WRITTEN = hand_written_cases()


def test_the_corpus_has_at_least_100_cases_and_covers_every_rule() -> None:
    cases = GENERATED + HAND_WRITTEN
    assert len(cases) >= 100
    rules = {case.rule for case in cases}
    assert {
        "type",
        "enum",
        "pattern",
        "empty",
        "too-long",
        "unknown",
        "duration-zero",
        "duration-tiny",
    } <= rules
    assert {"below-minimum", "above-maximum", "too-many", "too-few", "hand-written"} <= rules


def _create_dry_run(kube_api: Any, namespace: str, manifest: dict[str, Any], strict: bool) -> tuple[int, str]:
    """POST the object as a dry run; (HTTP status, response body)."""
    query = [("dryRun", "All")] + ([("fieldValidation", "Strict")] if strict else [])
    _, url, headers, body, _ = kube_api.param_serialize(
        "POST",
        f"/apis/arbiter.dev/v1alpha1/namespaces/{namespace}/modelexperiments",
        query_params=query,
        header_params={"Content-Type": "application/json", "Accept": "application/json"},
        body=manifest,
        auth_settings=["BearerToken"],
    )
    response = kube_api.call_api("POST", url, headers, body)
    return int(response.status), response.read().decode()


@pytest.fixture(scope="module")
def corpus_namespace(cluster: Any, arbiter_crd: str) -> str:
    """One namespace for the dry runs (nothing is stored in it)."""
    name = "invalid-corpus"
    cluster.kubectl("create", "namespace", name, check=False)
    return name


@pytest.mark.parametrize("case", GENERATED, ids=lambda c: c.id)
def test_generated_case_is_refused_with_the_field_named(
    case: InvalidCase, kube_api: Any, corpus_namespace: str
) -> None:
    status, body = _create_dry_run(kube_api, corpus_namespace, case.manifest, strict=True)
    assert status in (400, 422), f"{case.id}: the API server accepted it (HTTP {status})"
    message = json.loads(body).get("message", body)
    assert case.field in message, f"{case.id}: {case.field!r} not named in: {message}"


def test_unknown_fields_are_pruned_without_strict_validation(kube_api: Any, corpus_namespace: str) -> None:
    """Why the corpus asks for Strict: a client that does not gets its typo silently dropped."""
    case = next(c for c in GENERATED if c.rule == "unknown" and c.field == f"spec.{UNKNOWN_FIELD}")
    status, _ = _create_dry_run(kube_api, corpus_namespace, case.manifest, strict=False)
    assert status == 201


@pytest.mark.parametrize("case", HAND_WRITTEN, ids=lambda c: c.id)
def test_hand_written_case_is_refused_by_kubectl_apply(
    case: InvalidCase, cluster: Any, corpus_namespace: str
) -> None:
    result = cluster.kubectl(
        "apply",
        "--validate=strict",
        "--dry-run=server",
        "-n",
        corpus_namespace,
        "-f",
        "-",
        input=yaml.safe_dump(case.manifest),
        check=False,
    )
    assert result.returncode != 0, f"{case.id}: kubectl apply accepted it"
    assert case.field in result.stderr, f"{case.id}: {case.field!r} not named in: {result.stderr}"
