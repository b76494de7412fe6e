"""Status writes are conditional on the resourceVersion they were decided from (issue 12, "stale
writers"): against the real API server, a second writer with a stale read gets 409 and never overwrites;
the operator's tick then decides again from a fresh read.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from typing import Any

import kopf
import pytest
from kubernetes import client

from arbiter.api import GROUP, PLURAL, VERSION
from arbiter.handlers import experiment as handler
from arbiter.k8s import experiments as k8s_experiments
from arbiter_fixtures import ROOT, experiment_docs

CANARY = ROOT / "examples" / "canary.yaml"


def create(kube_api: Any, namespace: str, name: str) -> dict[str, Any]:
    """The canary example without its workloads (so the operator keeps it Pending)."""
    doc = copy.deepcopy(next(d for d in experiment_docs(CANARY) if d["kind"] == "ModelExperiment"))
    doc["metadata"] = {"name": name, "namespace": namespace}
    api = client.CustomObjectsApi(kube_api)
    return dict(api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, doc))


def stored_status(namespace: str, name: str) -> dict[str, Any]:
    found = k8s_experiments.get_experiment(namespace, name)
    assert found is not None
    return dict(found.get("status") or {})


def test_of_two_writers_with_the_same_read_the_second_gets_a_conflict_and_writes_nothing(
    kube_api: Any, arbiter_crd: str, namespace: str
) -> None:
    read = create(kube_api, namespace, "two-writers")
    version = read["metadata"]["resourceVersion"]

    first = k8s_experiments.replace_status(
        namespace, "two-writers", {"phase": "Pending", "message": "first"}, resource_version=version
    )
    assert first["metadata"]["resourceVersion"] != version
    with pytest.raises(k8s_experiments.StaleStatusError, match=f"resourceVersion {version}"):
        k8s_experiments.replace_status(
            namespace, "two-writers", {"phase": "Paused", "message": "second"}, resource_version=version
        )
    assert stored_status(namespace, "two-writers") == {"phase": "Pending", "message": "first"}
    # The spec of a status write is never taken from the writer: only status is stored.
    assert k8s_experiments.get_experiment(namespace, "two-writers")["spec"] == read["spec"]  # type: ignore[index]


def test_a_tick_decided_on_a_stale_read_is_refused_and_decided_again_from_the_fresh_one(
    kube_api: Any, arbiter_crd: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tick decides on the body the watch delivered; another writer changed the object since. The
    write is refused (409), nothing is posted, and the next tick reads the object afresh and decides
    on the other writer's status."""
    create(kube_api, namespace, "raced")
    live = k8s_experiments.get_experiment(namespace, "raced")  # what the watch delivered
    assert live is not None
    other_writer = {
        "phase": "Pending",
        "message": "written by another writer",
        "handledActions": {"abort": "from-the-other-writer"},
    }
    k8s_experiments.replace_status(
        namespace, "raced", other_writer, resource_version=live["metadata"]["resourceVersion"]
    )
    posted: list[str] = []
    # Events go through Kopf's posting queue, which only a running operator has; record them instead.
    monkeypatch.setattr(kopf, "event", lambda _ref, *, type, reason, message: posted.append(reason))
    logger = logging.getLogger("test")
    no_workloads = handler.Workloads({}, {})  # type: ignore[arg-type]
    memo: dict[str, Any] = {}

    with pytest.raises(k8s_experiments.StaleStatusError):
        asyncio.run(handler.tick(namespace, "raced", live, logger, no_workloads, memo))  # type: ignore[arg-type]
    assert stored_status(namespace, "raced") == other_writer, "the stale decision overwrote a newer status"
    assert posted == [], "events of a refused decision were posted"

    # The watch has not delivered the other write yet: the loop's memo sends the next tick to the API server.
    delay = asyncio.run(handler.tick(namespace, "raced", live, logger, no_workloads, memo))  # type: ignore[arg-type]
    assert delay is not None
    decided = stored_status(namespace, "raced")
    # Decided from the other writer's status: its fields are kept, and the experiment was already
    # Pending there, so this decision posts no "entered Pending" event (the stale one would have).
    assert decided["handledActions"] == {"abort": "from-the-other-writer"}
    assert decided["phase"] == "Pending"
    assert decided["message"].startswith("waiting for workloads: Deployment fraud-v1 not found")
    assert posted == []
