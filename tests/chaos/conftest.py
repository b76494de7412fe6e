"""Fixtures and options of the fault-injection suite (``make chaos``; a bounded slice runs in ``make test``).

- ``$CHAOS_KILL_RUNS``: how many experiment runs with at least one operator SIGKILL the kill test
  judges (default 4: the slice ``make test`` runs; ``make chaos`` asks for 50).
- ``$CHAOS_HANDOVER_RUNS``: leader handovers per kind (SIGKILL, SIGSTOP) the handover test provokes
  (default 1).
- ``$CHAOS_SEED``: the seed of the kill schedule (default: random, printed, so a failing schedule can
  be replayed).
- ``chaos_envs(count)``: ``count`` :class:`harness.env.RolloutEnv` worlds (stand-in model servers, their
  Deployments and Services, a router scraped by the real Prometheus), each in a namespace of its own,
  torn down (and the namespaces deleted) after the test.

Every test here carries the ``chaos`` marker; every faulted run it judges goes to the ledger
(tests/chaos_ledger.py).
"""

from __future__ import annotations

import os
import random
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

E2E = Path(__file__).resolve().parents[1] / "e2e"
if str(E2E) not in sys.path:
    sys.path.insert(0, str(E2E))

from harness.env import RolloutEnv  # noqa: E402

from helpers import wait_for  # noqa: E402


def _setting(env: str, default: int) -> int:
    value = int(os.environ.get(env) or default)
    if value < 1:
        raise pytest.UsageError(f"${env} must be at least 1, not {value}")
    return value


@pytest.fixture(scope="session")
def chaos_kill_runs() -> int:
    """Judged runs with an operator SIGKILL (4 in the ``make test`` slice)."""
    return _setting("CHAOS_KILL_RUNS", 4)


@pytest.fixture(scope="session")
def chaos_handover_runs() -> int:
    """Leader handovers per kind of fault (1 in the ``make test`` slice)."""
    return _setting("CHAOS_HANDOVER_RUNS", 1)


@pytest.fixture
def chaos_rng() -> random.Random:
    """The kill schedule's random source; its seed is printed so a run can be replayed."""
    seed = int(os.environ.get("CHAOS_SEED") or random.SystemRandom().randrange(2**32))
    print(f"\nchaos seed: {seed} (replay with CHAOS_SEED={seed})")
    return random.Random(seed)


@pytest.fixture
def chaos_envs(
    request: pytest.FixtureRequest,
    cluster: Any,
    kube_api: Any,
    prometheus: Any,
    tmp_path: Path,
) -> Iterator[Callable[[int, str], list[RolloutEnv]]]:
    """A factory: ``chaos_envs(count, experiment)`` builds ``count`` worlds, one namespace each."""
    from kubernetes import client

    core = client.CoreV1Api(kube_api)
    built: list[RolloutEnv] = []
    namespaces: list[str] = []

    def build(count: int, experiment: str) -> list[RolloutEnv]:
        out = []
        for index in range(count):
            name = f"chaos-{uuid.uuid4().hex[:8]}"
            core.create_namespace(
                client.V1Namespace(
                    metadata=client.V1ObjectMeta(name=name, labels={"arbiter.dev/test": "true"})
                )
            )
            namespaces.append(name)
            wait_for(
                lambda name=name: core.read_namespaced_service_account("default", name),
                timeout=30,
                message=f"ServiceAccount {name}/default was not created",
            )
            workdir = tmp_path / name
            workdir.mkdir()
            env = RolloutEnv(
                cluster=cluster,
                kube_api=kube_api,
                namespace=name,
                prometheus=prometheus,
                workdir=workdir,
                experiment=experiment,
            )
            built.append(env)
            out.append(env.start())
            print(f"chaos world {index + 1}/{count} ready in {name}", flush=True)
        return out

    yield build
    failed = getattr(request.node, "rep_call_failed", False)
    for env in built:
        if failed:
            sys.stderr.write(f"\n{env.logs()}\n")
        env.close()
    for name in namespaces:
        try:
            core.delete_namespace(name, propagation_policy="Background")
        except client.exceptions.ApiException as err:
            if err.status != 404:
                raise


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Remember whether the test body failed, so teardown shows the worlds' logs."""
    report = yield
    if report.when == "call":
        item.rep_call_failed = report.failed  # type: ignore[attr-defined]
    return report
