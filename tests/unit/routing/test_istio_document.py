"""The Istio provider's pure document logic: the managed route, host matching, weights, mirror and pins."""

from __future__ import annotations

from typing import Any

import pytest

from arbiter.api.v1alpha1 import Stickiness
from arbiter.routing import InvalidTargetError, Mirror, TrafficState, Verification
from arbiter.routing.istio import VirtualServiceDocument, status_verdict

SERVICES = {"fraud-v1": "v1", "fraud-v2": "v2"}


def document(route_name: str | None = None, stickiness: Stickiness | None = None) -> VirtualServiceDocument:
    return VirtualServiceDocument("ns", "exp", SERVICES, ["v1", "v2"], route_name, stickiness)


def vs(*http: dict[str, Any], generation: int = 1, status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": "vs", "generation": generation},
        "spec": {"http": list(http)},
        **({"status": status} if status is not None else {}),
    }


@pytest.mark.parametrize(
    ("host", "variant"),
    [
        ("fraud-v1", "v1"),
        ("fraud-v1.ns", "v1"),
        ("fraud-v1.ns.svc", "v1"),
        ("fraud-v1.ns.svc.cluster.local", "v1"),
        ("fraud-v1.other.svc.cluster.local", None),
        ("fraud-v9", None),
        ("fraud-v1.example.com", None),
    ],
)
def test_variant_of_host(host: str, variant: str | None) -> None:
    assert document().variant_of_host(host) == variant


def test_managed_route_by_name_or_first_non_pin() -> None:
    pin = {"name": "arbiter-exp-v1", "route": []}
    doc = vs(pin, {"name": "a", "route": []}, {"name": "b", "route": []})
    assert document().managed_index(doc) == 1
    assert document("b").managed_index(doc) == 2
    with pytest.raises(InvalidTargetError, match="'c'"):
        document("c").managed_index(doc)
    with pytest.raises(InvalidTargetError):
        document().managed_index(vs())


def test_single_destination_without_weight_carries_everything() -> None:
    doc = vs({"route": [{"destination": {"host": "fraud-v1"}}]})
    assert document().state(doc) == TrafficState({"v1": 100, "v2": 0})


def test_mirror_without_percentage_mirrors_everything() -> None:
    doc = vs({"route": [{"destination": {"host": "fraud-v1"}}], "mirror": {"host": "fraud-v2"}})
    assert document().state(doc).mirror == Mirror("v2", 100)


def test_weights_and_mirror_written_without_touching_other_routes_or_foreign_mirrors() -> None:
    other = {"name": "other", "route": [{"destination": {"host": "web"}}]}
    managed = {
        "name": "m",
        "retries": {"attempts": 2},
        "route": [{"destination": {"host": "fraud-v1.ns", "port": {"number": 80}}}],
    }
    doc = vs(other, managed)
    http = document("m").http(doc, {"v1": 80, "v2": 20}, Mirror("v2", 10), finalizing=False)
    assert http[0] == other
    assert http[1] == {
        "name": "m",
        "retries": {"attempts": 2},
        "route": [
            {"destination": {"host": "fraud-v1.ns", "port": {"number": 80}}, "weight": 80},
            {"destination": {"host": "fraud-v2.ns", "port": {"number": 80}}, "weight": 20},
        ],
        "mirror": {"host": "fraud-v2.ns", "port": {"number": 80}},
        "mirrorPercentage": {"value": 10},
    }
    assert "weight" not in doc["spec"]["http"][1]["route"][0]  # the input is never mutated

    foreign = vs({"route": [{"destination": {"host": "fraud-v1"}}], "mirror": {"host": "audit"}})
    assert document().http(foreign, {"v1": 100}, None, finalizing=False)[0]["mirror"] == {"host": "audit"}


def test_pins_sit_before_the_managed_route_and_keep_its_position() -> None:
    first = {"name": "first", "route": [{"destination": {"host": "web"}}]}
    managed = {
        "name": "m",
        "match": [{"uri": {"prefix": "/a"}}, {"uri": {"prefix": "/b"}}],
        "route": [{"destination": {"host": "fraud-v1"}}],
    }
    last = {"name": "last", "route": [{"destination": {"host": "web"}}]}
    doc = document("m", Stickiness(header="X-Group"))
    http = doc.http(vs(first, managed, last), {"v1": 50, "v2": 50}, None, finalizing=False)
    assert [r["name"] for r in http] == ["first", "arbiter-exp-v1", "arbiter-exp-v2", "m", "last"]
    assert http[2]["match"] == [
        {"uri": {"prefix": "/a"}, "headers": {"x-group": {"exact": "v2"}}},
        {"uri": {"prefix": "/b"}, "headers": {"x-group": {"exact": "v2"}}},
    ]
    # Re-applying to the result is stable (idempotent), and finalize removes pins and headers.
    again = doc.http(vs(*http), {"v1": 50, "v2": 50}, None, finalizing=False)
    assert again == http
    final = doc.http(vs(*http), {"v1": 100, "v2": 0}, None, finalizing=True)
    assert [r["name"] for r in final] == ["first", "m", "last"]
    assert final[1]["route"] == [
        {"destination": {"host": "fraud-v1"}, "weight": 100},
        {"destination": {"host": "fraud-v2"}, "weight": 0},
    ]


def test_cookie_pin_regex_only_matches_that_cookie() -> None:
    import re

    doc = document(stickiness=Stickiness(cookie="uid"))
    http = doc.http(
        vs({"route": [{"destination": {"host": "fraud-v1"}}]}), {"v1": 100}, None, finalizing=False
    )
    pattern = re.compile(http[0]["match"][0]["headers"]["cookie"]["regex"])
    assert pattern.fullmatch("uid=v1")
    assert pattern.fullmatch("a=b; uid=v1; c=d")
    assert not pattern.fullmatch("xuid=v1")
    assert not pattern.fullmatch("uid=v10")


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (None, Verification.CANNOT_TELL),
        ({"observedGeneration": "3"}, Verification.YES),
        ({"observedGeneration": 2}, Verification.NO),
        (
            {
                "observedGeneration": 3,
                "conditions": [{"type": "Reconciled", "status": "False", "message": "x"}],
            },
            Verification.NO,
        ),
        (
            {
                "observedGeneration": 3,
                "validationMessages": [{"level": "ERROR", "type": {"code": "IST0101"}}],
            },
            Verification.NO,
        ),
        ({"observedGeneration": 3, "validationMessages": [{"level": "WARNING"}]}, Verification.YES),
    ],
)
def test_status_verdict(status: dict[str, Any] | None, outcome: Verification) -> None:
    verdict = status_verdict(vs(generation=3, status=status), TrafficState({"v1": 100}))
    assert verdict.outcome is outcome, verdict.reason
