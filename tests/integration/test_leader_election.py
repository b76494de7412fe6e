"""Two `arbiter run --leader-election` processes against the real API server: one leads, the other waits
and takes over when the leader is killed, stops, or has its Lease taken away.

Every test measures and prints its handover time; bounds are the protocol's (lease duration, retry
period) plus generous slack for a loaded 2-core machine, never tight timings. The Lease lives in the
test's namespace so tests never see each other's leaders.
"""

from __future__ import annotations

import copy
import datetime as dt
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from arbiter_fixtures import (
    ROOT,
    OperatorProcess,
    experiment_docs,
    forbidden_requests,
    install_operator_identity,
)
from chart_support import identity_docs, render
from helpers import wait_for

LEASE = "arbiter-operator"
# client-go's defaults, which are also `arbiter run`'s.
LEASE_DURATION, RENEW_DEADLINE, RETRY_PERIOD = 15.0, 10.0, 2.0
# Process start (imports, kubeconfig, Kopf's startup) and a loaded machine; not a timing claim.
SLACK = 10.0
CANARY = ROOT / "examples" / "canary.yaml"


def candidate(kubeconfig: str, namespace: str, identity: str, tmp_path: Path) -> OperatorProcess:
    env = {
        "ARBITER_LEADER_ELECTION": "true",
        "ARBITER_LEADER_ELECTION_NAMESPACE": namespace,
        "ARBITER_LEADER_ELECTION_IDENTITY": identity,
    }
    return OperatorProcess(kubeconfig, tmp_path / f"{identity}.log", env=env).start()


def lease(kube_api: Any, namespace: str) -> dict[str, Any] | None:
    try:
        found = client.CoordinationV1Api(kube_api).read_namespaced_lease(LEASE, namespace)
    except client.exceptions.ApiException as err:
        if err.status == 404:
            return None
        raise
    return dict(kube_api.sanitize_for_serialization(found))


def holder(kube_api: Any, namespace: str) -> str | None:
    found = lease(kube_api, namespace)
    return ((found or {}).get("spec") or {}).get("holderIdentity")


def wait_for_holder(kube_api: Any, namespace: str, identity: str, timeout: float) -> float:
    """Wait until ``identity`` holds the Lease; return the monotonic time it was first seen."""
    wait_for(
        lambda: holder(kube_api, namespace) == identity,
        timeout=timeout,
        interval=0.05,
        message=f"{identity} never held the lease",
    )
    return time.monotonic()


def create_experiment(kube_api: Any, namespace: str, name: str) -> None:
    """A canary without its workloads: whoever leads writes status Pending within a tick."""
    doc = copy.deepcopy(next(d for d in experiment_docs(CANARY) if d["kind"] == "ModelExperiment"))
    doc["metadata"] = {"name": name, "namespace": namespace}
    client.CustomObjectsApi(kube_api).create_namespaced_custom_object(
        "arbiter.dev", "v1alpha1", namespace, "modelexperiments", doc
    )


def experiment(kube_api: Any, namespace: str, name: str) -> dict[str, Any]:
    api = client.CustomObjectsApi(kube_api)
    return dict(
        api.get_namespaced_custom_object("arbiter.dev", "v1alpha1", namespace, "modelexperiments", name)
    )


def wait_for_pending(kube_api: Any, namespace: str, name: str, timeout: float = 30) -> float:
    wait_for(
        lambda: (experiment(kube_api, namespace, name).get("status") or {}).get("phase") == "Pending",
        timeout=timeout,
        message=f"nobody wrote the status of {name}",
    )
    return time.monotonic()


def is_leader_metric(process: OperatorProcess) -> float:
    line = next(x for x in process.metrics().splitlines() if x.startswith("arbiter_leader "))
    return float(line.split()[1])


def acted(process: OperatorProcess) -> bool:
    """Whether the process ever started Kopf's handlers (a waiting replica never does)."""
    return "experiment_loop" in process.log()


@pytest.fixture
def candidates(cluster: Any, arbiter_crd: str, namespace: str, tmp_path: Path) -> Any:
    """Replicas that run as the chart's operator ServiceAccount of a `replicas=2` release in ``namespace``
    (release name = the Lease's name), so the chart's Lease RBAC is what lets them elect a leader."""
    rendering = render(cluster.bin_dir, release=LEASE, namespace=namespace, settings=("replicas=2",))
    identity = install_operator_identity(
        cluster, tmp_path, namespace=namespace, docs=identity_docs(rendering)
    )
    started: list[OperatorProcess] = []

    def start(name: str) -> OperatorProcess:
        process = candidate(identity.kubeconfig, namespace, name, tmp_path)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()
    for process in started:
        print(f"\n--- {process.log_path.name} ---\n{process.log()[-3000:]}")
    refused = [line for process in started for line in forbidden_requests(process.log())]
    assert not refused, "the chart's RBAC refused a request of a replica:\n" + "\n".join(refused[:10])


def test_one_leads_the_other_waits_and_takes_over_when_the_leader_is_killed(
    cluster: Any, kube_api: Any, namespace: str, candidates: Any
) -> None:
    first = candidates("replica-a")
    wait_for_holder(kube_api, namespace, "replica-a", timeout=30)
    first.wait_ready()
    second = candidates("replica-b")
    second.wait_ready()  # a waiting replica answers its liveness probe, so Kubernetes keeps it
    wait_for(lambda: "held by replica-a" in second.log(), timeout=30, message="replica-b is not waiting")

    create_experiment(kube_api, namespace, "before")
    wait_for_pending(kube_api, namespace, "before")
    assert acted(first)
    assert not acted(second), "the waiting replica ran handlers"
    assert is_leader_metric(first) == 1.0 and is_leader_metric(second) == 0.0
    spec = (lease(kube_api, namespace) or {})["spec"]
    assert spec["leaseDurationSeconds"] == LEASE_DURATION

    killed = time.monotonic()
    first.kill()
    taken = wait_for_holder(
        kube_api, namespace, "replica-b", timeout=LEASE_DURATION + 2 * RETRY_PERIOD + SLACK
    )
    create_experiment(kube_api, namespace, "after")
    acting = wait_for_pending(kube_api, namespace, "after", timeout=30)
    handover, first_write = taken - killed, acting - killed
    print(
        f"\nhandover after SIGKILL: lease taken {handover:.1f}s, a new experiment handled {first_write:.1f}s"
    )
    # It cannot be faster than the lease duration (the old record must stand still that long)...
    assert handover >= LEASE_DURATION - 2 * RETRY_PERIOD
    # ...and must not be much slower: one lease duration, a poll, and startup slack.
    assert handover <= LEASE_DURATION + 2 * RETRY_PERIOD + SLACK
    assert acted(second)
    assert (lease(kube_api, namespace) or {})["spec"]["leaseTransitions"] == 1


def test_a_stopped_leader_releases_the_lease_so_the_other_takes_over_at_its_next_poll(
    cluster: Any, kube_api: Any, namespace: str, candidates: Any
) -> None:
    first = candidates("replica-a")
    wait_for_holder(kube_api, namespace, "replica-a", timeout=30)
    first.wait_ready()
    second = candidates("replica-b")
    second.wait_ready()
    wait_for(lambda: "held by replica-a" in second.log(), timeout=30, message="replica-b is not waiting")

    stopped = time.monotonic()
    assert first.stop(signal.SIGTERM) == 0
    assert "released the leader lease" in first.log()
    taken = wait_for_holder(kube_api, namespace, "replica-b", timeout=LEASE_DURATION)
    create_experiment(kube_api, namespace, "after")
    acting = wait_for_pending(kube_api, namespace, "after")
    handover = taken - stopped
    print(
        f"\nhandover after SIGTERM: lease taken {handover:.1f}s, a new experiment handled {acting - stopped:.1f}s"
    )
    # Without the release it would take at least the lease duration.
    assert handover < LEASE_DURATION - RETRY_PERIOD


def test_a_leader_whose_lease_is_taken_stops_before_its_next_write(
    cluster: Any, kube_api: Any, namespace: str, candidates: Any
) -> None:
    """Argo Rollouts #2117: an old leader that keeps writing after it lost its lease fights the new one."""
    first = candidates("replica-a")
    wait_for_holder(kube_api, namespace, "replica-a", timeout=30)
    first.wait_ready()
    create_experiment(kube_api, namespace, "before")
    wait_for_pending(kube_api, namespace, "before")

    # Another holder, written the way a new leader writes it (a resourceVersion-guarded replace).
    coordination = client.CoordinationV1Api(kube_api)
    current = coordination.read_namespaced_lease(LEASE, namespace)
    current.spec.holder_identity = "someone-else"
    current.spec.renew_time = dt.datetime.now(dt.UTC)
    process = first.process
    assert process is not None
    exit_times: list[float] = []
    waiter = threading.Thread(target=lambda: (process.wait(), exit_times.append(time.monotonic())))
    waiter.start()
    stolen = time.monotonic()
    coordination.replace_namespaced_lease(LEASE, namespace, current)
    # The next thing for the old leader to act on, created at once.
    create_experiment(kube_api, namespace, "after")

    waiter.join(timeout=RENEW_DEADLINE + SLACK)
    assert exit_times, "the old leader kept running"
    exited = exit_times[0] - stolen
    print(f"\nthe old leader exited {exited:.2f}s after its lease was taken")
    assert process.returncode == 1
    # It watches the Lease: it does not wait for its next renewal to notice.
    assert exited < RETRY_PERIOD
    assert "leadership lost (lease" in first.log() and "someone-else" in first.log()
    # It never acted on the new experiment: no status, no finalizer.
    after = experiment(kube_api, namespace, "after")
    assert not after.get("status"), after.get("status")
    assert not after["metadata"].get("finalizers")
    assert holder(kube_api, namespace) == "someone-else"


def test_a_paused_leader_that_wakes_after_losing_its_lease_writes_nothing(
    kube_api: Any, namespace: str, candidates: Any
) -> None:
    """A GC pause, a frozen VM or a partition: the leader sleeps past its lease, another takes over, then
    the old one wakes up with work queued. It must notice before it writes (Argo Rollouts #2117)."""
    first = candidates("replica-a")
    wait_for_holder(kube_api, namespace, "replica-a", timeout=30)
    first.wait_ready()
    second = candidates("replica-b")
    second.wait_ready()
    wait_for(lambda: "held by replica-a" in second.log(), timeout=30, message="replica-b is not waiting")
    create_experiment(kube_api, namespace, "before")
    wait_for_pending(kube_api, namespace, "before")

    assert first.process is not None
    first.process.send_signal(signal.SIGSTOP)
    try:
        wait_for_holder(kube_api, namespace, "replica-b", timeout=LEASE_DURATION + 2 * RETRY_PERIOD + SLACK)
        # The new leader goes away too, so whatever is written from now on can only come from replica-a.
        second.kill()
        create_experiment(kube_api, namespace, "queued")
    finally:
        first.process.send_signal(signal.SIGCONT)
    code = first.process.wait(timeout=RENEW_DEADLINE + SLACK)
    print(f"\nthe paused leader exited with {code} after waking up")
    assert code == 1
    assert "leadership lost" in first.log()
    queued = experiment(kube_api, namespace, "queued")
    assert not queued.get("status"), f"the old leader wrote {queued.get('status')}"
    assert holder(kube_api, namespace) == "replica-b"
