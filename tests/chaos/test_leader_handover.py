"""Leader handover under load: two replicas (the chart's identity, Lease election), experiments mid-step.

The leader is SIGKILLed, or frozen with SIGSTOP (a partition as the old leader sees it: it cannot act
and cannot renew, and nobody can tell it). Each time the waiting replica must take the Lease within a
bounded time (``handover_seconds``: from the fault until the Lease names the new holder), the running
experiments must end as an undisturbed run does with no step entered twice (no double action, in status
or in the router), and a frozen leader woken up after losing its Lease must write nothing: not the
experiments' status, not their routes (Argo Rollouts #2117). Short lease timings (6 s lease, 4 s renew
deadline, 1 s retry) keep the suite quick; the protocol is the same as with the defaults.
"""

from __future__ import annotations

import itertools
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from harness.env import RolloutEnv
from kill_support import (
    INTERVAL_SECONDS,
    Outcome,
    Timeline,
    abort_when_in_step_1,
    create,
    delete_and_wait,
    divergence_ticks,
    finished,
    judge,
    outcome_of,
    progressing_past,
    router_loads,
    settled,
)
from kubernetes import client

from arbiter_fixtures import OperatorProcess, forbidden_requests, install_operator_identity
from chaos_ledger import ChaosRun, record_run
from chart_support import identity_docs, render
from helpers import wait_for

pytestmark = [pytest.mark.chaos, pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1800)]

EXPERIMENT = "handover"
LEASE = "arbiter-operator"
LEASE_DURATION, RENEW_DEADLINE, RETRY_PERIOD = 6.0, 4.0, 1.0
#: Process start and a loaded machine, on top of the protocol's own bound; not a timing claim.
SLACK = 10.0
HANDOVER_BOUND = LEASE_DURATION + 2 * RETRY_PERIOD + SLACK
KINDS = ["promote", "abort"]


class Replicas:
    """Operator replicas with leader election, as the chart's ServiceAccount of a ``replicas=2`` release."""

    def __init__(self, kubeconfig: str, namespace: str, kube_api: Any, logs: Path) -> None:
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.kube_api = kube_api
        self.logs = logs
        self.started: dict[str, OperatorProcess] = {}
        self._names = (f"replica-{index}" for index in itertools.count())

    def start(self) -> str:
        name = next(self._names)
        env = {
            "ARBITER_LEADER_ELECTION": "true",
            "ARBITER_LEADER_ELECTION_NAMESPACE": self.namespace,
            "ARBITER_LEADER_ELECTION_IDENTITY": name,
            "ARBITER_LEADER_ELECTION_LEASE_DURATION": str(LEASE_DURATION),
            "ARBITER_LEADER_ELECTION_RENEW_DEADLINE": str(RENEW_DEADLINE),
            "ARBITER_LEADER_ELECTION_RETRY_PERIOD": str(RETRY_PERIOD),
        }
        self.started[name] = OperatorProcess(self.kubeconfig, self.logs / f"{name}.log", env=env).start()
        return name

    def holder(self) -> str | None:
        try:
            lease = client.CoordinationV1Api(self.kube_api).read_namespaced_lease(LEASE, self.namespace)
        except client.exceptions.ApiException as err:
            if err.status == 404:
                return None
            raise
        return str(lease.spec.holder_identity or "") or None

    def wait_for_holder(self, name: str, timeout: float) -> float:
        wait_for(lambda: self.holder() == name, timeout=timeout, interval=0.05, message=f"{name} to lead")
        return time.monotonic()

    def stop_all(self) -> None:
        for process in self.started.values():
            if process.process is not None and process.process.poll() is None:
                process.process.send_signal(signal.SIGCONT)  # a frozen one must be able to exit
            process.stop()


def written_versions(env: RolloutEnv) -> tuple[str, str]:
    """The resourceVersions of the experiment and of its routes ConfigMap: any write changes one."""
    experiment = client.CustomObjectsApi(env.kube_api).get_namespaced_custom_object(
        "arbiter.dev", "v1alpha1", env.namespace, "modelexperiments", env.experiment_name
    )
    routes = client.CoreV1Api(env.kube_api).read_namespaced_config_map(env.config_map, env.namespace)
    return experiment["metadata"]["resourceVersion"], routes.metadata.resource_version


def tend_until(
    envs: list[RolloutEnv], timelines: list[Timeline], aborted: set[str], done: Any, timeout: float
) -> None:
    """Play the abort experiments' human until ``done()``."""

    def check() -> bool:
        for env, kind, timeline in zip(envs, KINDS, timelines, strict=True):
            abort_when_in_step_1(env, kind, timeline.last(), aborted)
        return bool(done())

    wait_for(check, timeout=timeout, message="the experiments to get there")


def test_leader_killed_or_frozen_hands_over_in_bounded_time_without_double_action(
    cluster: Any,
    kube_api: Any,
    arbiter_crd: str,
    namespace: str,
    chaos_envs: Any,
    tmp_path: Path,
    chaos_handover_runs: int,
) -> None:
    rendering = render(cluster.bin_dir, release=LEASE, namespace=namespace, settings=("replicas=2",))
    identity = install_operator_identity(
        cluster, tmp_path, namespace=namespace, docs=identity_docs(rendering)
    )
    envs: list[RolloutEnv] = chaos_envs(len(KINDS), EXPERIMENT)
    replicas = Replicas(identity.kubeconfig, namespace, kube_api, tmp_path)
    judged: list[ChaosRun] = []
    try:
        leader = replicas.start()
        replicas.wait_for_holder(leader, timeout=60)
        replicas.started[leader].wait_ready()
        follower = replicas.start()
        replicas.started[follower].wait_ready()

        def run(fault: str | None) -> tuple[list[Outcome], list[int], float | None]:
            """One run of both experiments with ``fault`` ("sigkill", "sigstop" or None) struck mid-step."""
            nonlocal leader, follower
            plane_from = [router_loads(env) for env in envs]
            for env, kind in zip(envs, KINDS, strict=True):
                create(env, kind)
            timelines = [Timeline(env, EXPERIMENT).start() for env in envs]
            aborted: set[str] = set()
            down: list[tuple[float, float]] = []
            handover = None

            def everything_finished() -> bool:
                return all(finished(t.last()) for t in timelines)

            if fault is not None:
                # Mid-run: the promote experiment is in step 1 (or 2, when a busy machine's polling missed 1).
                tend_until(envs, timelines, aborted, lambda: progressing_past(timelines[0].last(), 1), 120)
                old = replicas.started[leader]
                assert old.process is not None
                struck = time.monotonic()
                if fault == "sigkill":
                    old.kill()
                else:
                    old.process.send_signal(signal.SIGSTOP)
                taken = replicas.wait_for_holder(follower, timeout=HANDOVER_BOUND)
                handover = taken - struck
                down.append((struck, taken))
                print(f"\n{fault}: {follower} took over from {leader} after {handover:.2f}s", flush=True)
                tend_until(envs, timelines, aborted, everything_finished, 180)
                if fault == "sigstop":
                    # Everything is finished: from here nobody has anything to write. Wake the old leader
                    # with its queued mid-run work; it must see it lost the Lease and exit before any write.
                    before = [written_versions(env) for env in envs]
                    loads = [router_loads(env) for env in envs]
                    old.process.send_signal(signal.SIGCONT)
                    code = old.process.wait(timeout=RENEW_DEADLINE + SLACK)
                    assert code == 1, f"the woken leader exited with {code}:\n{old.log()[-3000:]}"
                    assert "leadership lost" in old.log()
                    assert [written_versions(env) for env in envs] == before, "the old leader wrote"
                    assert [router_loads(env) for env in envs] == loads, "the old leader changed routes"
                leader, follower = follower, replicas.start()
                replicas.started[follower].wait_ready()
            tend_until(envs, timelines, aborted, everything_finished, 180)
            for timeline in timelines:
                timeline.stop()
            outcomes = [
                outcome_of(env, EXPERIMENT, start) for env, start in zip(envs, plane_from, strict=True)
            ]
            divergences = [divergence_ticks(t.samples, down, INTERVAL_SECONDS) for t in timelines]
            assert all(settled(t.samples) for t in timelines), "router and status never agreed again"
            for env in envs:
                delete_and_wait(env)
            return outcomes, divergences, handover

        references, reference_divergences, _ = run(None)
        assert [(o.phase, o.steps) for o in references] == [("Promoted", [0, 1, 2]), ("RolledBack", [0, 1])]
        print(f"undisturbed: status and router disagreed for at most {max(reference_divergences)} ticks")
        for number in range(chaos_handover_runs):
            for fault in ("sigkill", "sigstop"):
                outcomes, divergences, handover = run(fault)
                assert handover is not None and handover <= HANDOVER_BOUND
                for env, kind, reference, outcome, divergence in zip(
                    envs, KINDS, references, outcomes, divergences, strict=True
                ):
                    result = judge(
                        f"leader_{fault}",
                        reference,
                        outcome,
                        divergence,
                        f"handover {number + 1} ({fault}) {kind} in {env.namespace}",
                        handover_seconds=round(handover, 3),
                    )
                    record_run(result)
                    judged.append(result)
    finally:
        replicas.stop_all()
        for name, process in replicas.started.items():
            print(f"\n--- {name} (tail) ---\n{process.log()[-2000:]}")
    refused = [line for p in replicas.started.values() for line in forbidden_requests(p.log())]
    assert not refused, "the chart's RBAC refused a request of a replica:\n" + "\n".join(refused[:10])
    # Divergence is measured and reported (max_divergence_ticks), not asserted: it is wall-clock time.
    bad = [r for r in judged if r.outcome_differed or r.steps_lost or r.steps_doubled]
    assert not bad, "handovers that changed an outcome or a step:\n" + "\n".join(map(str, bad))
