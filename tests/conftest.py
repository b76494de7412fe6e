"""Shared fixtures: a real local control plane, a real Prometheus, and a namespace per test.

Fixtures (the contract other tests code against):

- ``cluster`` (session): a running control plane; ``.kubeconfig``, ``.server``, ``.bin_dir``,
  ``.kubectl(*args, input=None, check=True)``. Also sets ``KUBECONFIG`` for the session.
  Set ``ARBITER_TEST_KUBECONFIG=/path/to/kubeconfig`` (e.g. ``.cluster/kubeconfig`` after
  ``make cluster-up``) to reuse a running cluster instead of starting one.
- ``kube_api`` (session): a ``kubernetes.client.ApiClient`` for that cluster.
- ``namespace`` (function): a fresh namespace name, deleted (without waiting) afterwards.
- ``prometheus`` (session): a running :class:`localcluster.Prometheus`.

Tests using ``cluster`` (directly or through another fixture) get the ``cluster`` marker, tests
using ``prometheus`` the ``prometheus`` marker and tests using ``arbiter_image`` (the container image,
tests/arbiter_fixtures.py) the ``image`` marker. A startup failure errors those tests with the
log tail; it never skips them.
"""

from __future__ import annotations

import os
import re
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

ROOT = Path(__file__).resolve().parent.parent
for extra in (ROOT / "hack", ROOT / "tests"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from localcluster import Cluster, ClusterError, Prometheus, PrometheusError, binaries, down, up  # noqa: E402

from helpers import wait_for  # noqa: E402

REUSE_ENV = "ARBITER_TEST_KUBECONFIG"

# Fixtures for Arbiter's own objects (the CRD, the operator process) live in tests/arbiter_fixtures.py.
pytest_plugins = ["arbiter_fixtures"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests by the real services they use, so `-m "not cluster"` and friends work."""
    for item in items:
        names = getattr(item, "fixturenames", ())
        if "cluster" in names:
            item.add_marker(pytest.mark.cluster)
        if "prometheus" in names:
            item.add_marker(pytest.mark.prometheus)
        if "arbiter_image" in names:
            item.add_marker(pytest.mark.image)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A running control plane for the whole session (or the one named by $ARBITER_TEST_KUBECONFIG)."""
    reuse = os.environ.get(REUSE_ENV)
    started_dir: Path | None = None
    try:
        if reuse:
            handle = Cluster.from_kubeconfig(reuse, binaries.ensure_built())
            handle.kubectl("get", "--raw=/readyz", timeout=10)
        else:
            started_dir = tmp_path_factory.mktemp("cluster")
            handle = up(started_dir, die_with_parent=True)
    except (ClusterError, binaries.BuildError) as err:
        pytest.fail(f"the local control plane did not start:\n{err}", pytrace=False)
    except Exception as err:  # e.g. a reused cluster that is not reachable
        pytest.fail(f"the local control plane is not usable ({type(err).__name__}): {err}", pytrace=False)

    previous = os.environ.get("KUBECONFIG")
    os.environ["KUBECONFIG"] = handle.kubeconfig
    try:
        yield handle
    finally:
        if previous is None:
            os.environ.pop("KUBECONFIG", None)
        else:
            os.environ["KUBECONFIG"] = previous
        if started_dir is not None:
            down(started_dir)


@pytest.fixture(scope="session")
def kube_api(cluster: Cluster) -> Iterator[ApiClient]:
    """A ``kubernetes.client.ApiClient`` configured for the session cluster."""
    from kubernetes import config

    api = config.new_client_from_config(config_file=cluster.kubeconfig)
    try:
        yield api
    finally:
        api.close()


def _namespace_name(node_name: str) -> str:
    slug = re.sub(r"[^a-z0-9-]+", "-", node_name.lower()).strip("-")[:40].rstrip("-")
    return f"t-{slug}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def namespace(request: pytest.FixtureRequest, cluster: Cluster, kube_api: ApiClient) -> Iterator[str]:
    """A fresh namespace for one test; its default ServiceAccount exists before the test runs."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    core = client.CoreV1Api(kube_api)
    name = _namespace_name(request.node.name)
    core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels={"arbiter.dev/test": "true"}))
    )
    # The ServiceAccount admission plugin rejects Pods until the controller-manager has created
    # the namespace's `default` ServiceAccount; waiting here keeps ReplicaSets off their backoff.
    wait_for(
        lambda: core.read_namespaced_service_account("default", name),
        timeout=30,
        message=f"ServiceAccount {name}/default was not created",
    )
    try:
        yield name
    finally:
        try:
            core.delete_namespace(name, propagation_policy="Background")
        except ApiException as err:
            if err.status != 404:
                raise


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """A Prometheus server for the session; tests may stop() and start() it (same port, same TSDB)."""
    server = Prometheus(tmp_path_factory.mktemp("prometheus"), die_with_parent=True)
    try:
        server.start()
    except PrometheusError as err:
        pytest.fail(f"Prometheus did not start:\n{err}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()
