"""The GatewayAPI provider's pure document logic: which rules it manages and the patch it builds."""

from __future__ import annotations

from typing import Any

import pytest

from arbiter.routing import InvalidTargetError, Mirror, TrafficState, Verification
from arbiter.routing.gatewayapi import mirror_percent, parent_verdict, patch_operations, rule_state

SERVICES = {"fraud-v1": "v1", "fraud-v2": "v2"}
VARIANTS = ["v1", "v2"]


def route(
    *rules: dict[str, Any], generation: int = 1, status: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "metadata": {"name": "r", "resourceVersion": "7", "generation": generation},
        "spec": {"rules": list(rules)},
        **({"status": status} if status else {}),
    }


def test_only_rules_referencing_variant_services_in_the_namespace_are_managed() -> None:
    doc = route(
        {"backendRefs": [{"name": "fraud-v1", "namespace": "other", "port": 80}]},
        {"backendRefs": [{"name": "fraud-v1", "kind": "ServiceImport", "group": "multicluster.x-k8s.io"}]},
        {"backendRefs": [{"name": "fraud-v1", "port": 80}]},
    )
    ops = patch_operations(doc, SERVICES, "ns", {"v1": 90, "v2": 10}, None)
    assert ops == [
        {
            "op": "replace",
            "path": "/spec/rules/2/backendRefs",
            "value": [
                {"name": "fraud-v1", "port": 80, "weight": 90},
                {"name": "fraud-v2", "weight": 10, "port": 80},
            ],
        }
    ]


def test_no_change_no_operations_and_no_rule_is_an_error() -> None:
    doc = route({"backendRefs": [{"name": "fraud-v1", "weight": 100}, {"name": "fraud-v2", "weight": 0}]})
    assert patch_operations(doc, SERVICES, "ns", {"v1": 100, "v2": 0}, None) == []
    with pytest.raises(InvalidTargetError, match="no rule"):
        patch_operations(route({"backendRefs": [{"name": "web"}]}), SERVICES, "ns", {"v1": 100}, None)


def test_foreign_refs_and_filters_are_kept_and_our_mirror_replaced() -> None:
    header = {
        "type": "RequestHeaderModifier",
        "requestHeaderModifier": {"add": [{"name": "a", "value": "b"}]},
    }
    foreign_mirror = {"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "audit", "port": 9}}}
    old_mirror = {"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "fraud-v2", "port": 80}}}
    doc = route(
        {
            "filters": [header, foreign_mirror, old_mirror],
            "backendRefs": [{"name": "web", "port": 80, "weight": 5}, {"name": "fraud-v1", "port": 80}],
        }
    )
    ops = patch_operations(doc, SERVICES, "ns", {"v1": 100, "v2": 0}, Mirror("v2", 20))
    by_path = {op["path"]: op for op in ops}
    assert by_path["/spec/rules/0/backendRefs"]["value"][0] == {"name": "web", "port": 80, "weight": 5}
    assert by_path["/spec/rules/0/filters"]["value"] == [
        header,
        foreign_mirror,
        {
            "type": "RequestMirror",
            "requestMirror": {"backendRef": {"name": "fraud-v2", "port": 80}, "percent": 20},
        },
    ]
    assert doc["spec"]["rules"][0]["filters"][2] is old_mirror  # the input is never mutated


def test_removing_the_last_filter_removes_the_list() -> None:
    mirror = {"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "fraud-v2"}, "percent": 5}}
    doc = route({"filters": [mirror], "backendRefs": [{"name": "fraud-v1", "weight": 1}]})
    ops = patch_operations(doc, SERVICES, "ns", {"v1": 100}, None)
    assert {"op": "remove", "path": "/spec/rules/0/filters"} in ops


def test_duplicate_refs_to_one_variant_keep_one_weight() -> None:
    doc = route({"backendRefs": [{"name": "fraud-v1", "port": 80}, {"name": "fraud-v1", "port": 81}]})
    ops = patch_operations(doc, SERVICES, "ns", {"v1": 70, "v2": 30}, None)
    assert [r["weight"] for r in ops[0]["value"]] == [70, 0, 30]


def test_rule_state_defaults_and_mirror_forms() -> None:
    rule = {
        "backendRefs": [
            {"name": "fraud-v1"},
            {"name": "fraud-v2", "weight": 3},
            {"name": "web", "weight": 50},
        ],
        "filters": [
            {
                "type": "RequestMirror",
                "requestMirror": {
                    "backendRef": {"name": "fraud-v2"},
                    "fraction": {"numerator": 1, "denominator": 4},
                },
            }
        ],
    }
    assert rule_state(rule, SERVICES, "ns", VARIANTS) == TrafficState({"v1": 25, "v2": 75}, Mirror("v2", 25))
    assert mirror_percent({}) == 100
    assert mirror_percent({"percent": 7}) == 7


def condition(kind: str, status: str = "True", generation: int = 2) -> dict[str, Any]:
    return {"type": kind, "status": status, "observedGeneration": generation, "reason": "R", "message": "m"}


@pytest.mark.parametrize(
    ("parents", "outcome", "reason"),
    [
        ([], Verification.CANNOT_TELL, "no Gateway controller"),
        (
            [{"parentRef": {"name": "g"}, "conditions": [condition("Accepted"), condition("ResolvedRefs")]}],
            Verification.YES,
            "accepted",
        ),
        (
            [
                {
                    "parentRef": {"name": "g"},
                    "conditions": [condition("Accepted", generation=1), condition("ResolvedRefs")],
                }
            ],
            Verification.NO,
            "not yet processed",
        ),
        (
            [
                {
                    "parentRef": {"name": "g"},
                    "conditions": [condition("Accepted", "False"), condition("ResolvedRefs")],
                }
            ],
            Verification.NO,
            "Accepted is False",
        ),
        (
            [{"parentRef": {"name": "g"}, "conditions": [condition("Accepted")]}],
            Verification.NO,
            "ResolvedRefs",
        ),
        (
            [
                {
                    "parentRef": {"name": "a"},
                    "conditions": [condition("Accepted"), condition("ResolvedRefs")],
                },
                {
                    "parentRef": {"name": "b"},
                    "conditions": [condition("Accepted"), condition("ResolvedRefs", "False")],
                },
            ],
            Verification.NO,
            "Gateway b",
        ),
    ],
)
def test_parent_verdict(parents: list[dict[str, Any]], outcome: Verification, reason: str) -> None:
    verdict = parent_verdict(route(generation=2, status={"parents": parents}), None)
    assert verdict.outcome is outcome
    assert reason in verdict.reason
