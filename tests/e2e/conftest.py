"""Fixtures of the e2e stories: ``rollout_env`` builds a test's model servers, workloads and router.

``rollout_env(**options)`` (a factory; one environment per test) returns a started
:class:`harness.env.RolloutEnv` in the test's namespace; options are those of ``RolloutEnv``
(``experiment``, ``variants``, ``provider``, ``replicas``, ``latency_ms``, ``jitter_ms``). At teardown it
stops the traffic, the router and the model servers and unregisters the router from Prometheus; on a
failure it prints their logs.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

E2E = Path(__file__).resolve().parent
if str(E2E) not in sys.path:
    sys.path.insert(0, str(E2E))

from harness.env import RolloutEnv  # noqa: E402
from harness.mlserver import Catalogue, ensure_models  # noqa: E402


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Remember whether the test body failed, so teardown can show the children's logs."""
    report = yield
    if report.when == "call":
        item.stash[_FAILED] = report.failed
    return report


_FAILED = pytest.StashKey[bool]()


@pytest.fixture(scope="session")
def model_catalogue() -> Catalogue:
    """The trained fraud models and MLServer's virtualenv (created once, cached in ~/.cache/arbiter)."""
    return ensure_models()


@pytest.fixture
def rollout_env(
    request: pytest.FixtureRequest,
    cluster: Any,
    kube_api: Any,
    namespace: str,
    prometheus: Any,
    tmp_path: Path,
) -> Iterator[Callable[..., RolloutEnv]]:
    """A factory that builds the test's :class:`RolloutEnv` (once) and tears it down afterwards."""
    built: list[RolloutEnv] = []

    def build(**options: Any) -> RolloutEnv:
        assert not built, "one rollout environment per test"
        env = RolloutEnv(
            cluster=cluster,
            kube_api=kube_api,
            namespace=namespace,
            prometheus=prometheus,
            workdir=tmp_path,
            **options,
        )
        built.append(env)
        return env.start()

    yield build
    for env in built:
        if request.node.stash.get(_FAILED, False):
            sys.stderr.write(f"\n{env.logs()}\n")
        env.close()
