"""examples/gatewayapi.yaml and examples/istio.yaml: the API server accepts them (with the real third-party
CRDs and our CRD), and the provider their ModelExperiment names runs against the objects they ship, as the
chart's operator ServiceAccount (``operator_api``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from kubernetes.client import ApiClient
from routing_support import get

from arbiter.api.v1alpha1 import parse_spec
from arbiter.k8s.traffic import TrafficClient
from arbiter.routing import Mirror, TrafficState, provider_for

if TYPE_CHECKING:
    from localcluster import Cluster

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "crds" / "modelexperiment.yaml"


@pytest.fixture(scope="module")
def experiment_crd(cluster: Cluster) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", "crd/modelexperiments.arbiter.dev"
    )


def experiment_of(path: Path) -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    (experiment,) = [d for d in docs if d["kind"] == "ModelExperiment"]
    return experiment


@pytest.mark.parametrize(
    ("example", "kind", "weights", "mirror"),
    [
        ("gatewayapi.yaml", "httproute", {"v1": 70, "v2": 30}, Mirror("v2", 10)),
        ("istio.yaml", "virtualservice", {"v1": 50, "v2": 50}, Mirror("v2", 10)),
    ],
)
def test_example_applies_and_its_provider_runs(
    cluster: Cluster,
    namespace: str,
    operator_api: ApiClient,
    thirdparty_crds: list[str],
    experiment_crd: None,
    example: str,
    kind: str,
    weights: dict[str, int],
    mirror: Mirror,
) -> None:
    path = ROOT / "examples" / example
    cluster.kubectl("apply", "--server-side", "-n", namespace, "-f", str(path))
    experiment = experiment_of(path)
    name = experiment["metadata"]["name"]
    assert (
        get(cluster, namespace, "modelexperiment", name)["spec"]["routing"] == experiment["spec"]["routing"]
    )

    provider = provider_for(
        parse_spec(experiment["spec"]),
        namespace=namespace,
        experiment=name,
        client=TrafficClient(operator_api),
    )
    provider.reconcile()
    assert provider.get_weights() == TrafficState({"v1": 100, "v2": 0})
    provider.set_weights(weights)
    assert provider.get_weights() == TrafficState(weights)
    provider.set_weights({"v1": 100}, mirror)
    assert provider.get_weights() == TrafficState({"v1": 100, "v2": 0}, mirror)
    provider.finalize("v1")
    assert provider.get_weights() == TrafficState({"v1": 100, "v2": 0})
    # Finalize to the champion leaves the route as the example wrote it (defaults filled in).
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    (written,) = [d for d in docs if d["kind"].lower() == kind]
    live = get(cluster, namespace, kind, written["metadata"]["name"])
    routes = "rules" if kind == "httproute" else "http"
    assert strip_defaults(live["spec"][routes]) == written["spec"][routes]


def strip_defaults(value: Any) -> Any:
    """Drop the API server's defaults (backendRef group/kind) to compare with the manifest as written."""
    if isinstance(value, dict):
        return {
            k: strip_defaults(v)
            for k, v in value.items()
            if not (k == "group" and v == "") and not (k == "kind" and v == "Service")
        }
    if isinstance(value, list):
        return [strip_defaults(v) for v in value]
    return value
