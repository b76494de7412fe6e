"""`arbiter router --configmap NS/NAME` follows a real ConfigMap on the real API server."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import test_router_process
import yaml
from router_process_support import call, metric, start_router

from arbiter.router.config import RouterConfig, Variant
from helpers import wait_for

if TYPE_CHECKING:
    from localcluster import Cluster

# The same model-server processes as the --config test.
model_servers = test_router_process.model_servers


def config_map(namespace: str, routes_text: str | None) -> str:
    data = {"routes.yaml": routes_text} if routes_text is not None else {"other": "x"}
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "routes", "namespace": namespace},
            "data": data,
        }
    )


def routes_to(urls: dict[str, str], name: str) -> str:
    """Routes that send everything to one variant, written the way the routing provider writes them."""
    return RouterConfig(
        experiment="cm",
        variants=tuple(Variant(name=n, url=urls[n], weight=100 if n == name else 0) for n in ("v1", "v2")),
    ).to_yaml()


def served_by(proxy: str) -> str:
    return call(proxy + "/predict", json.dumps({"f": 1}).encode())[1].get("x-arbiter-variant", "")


def test_router_follows_a_configmap(
    cluster: Cluster,
    namespace: str,
    model_servers: dict[str, str],
) -> None:
    process, proxy, metrics_url = start_router(
        "--configmap", f"{namespace}/routes", env={"KUBECONFIG": cluster.kubeconfig}
    )
    try:
        # Before the ConfigMap exists the router runs but has no routes.
        wait_for(
            lambda: process.find(r"does not exist \(yet\)"), timeout=30, message="the 'waiting' log line"
        )
        assert call(proxy + "/predict", b"{}")[0] == 503
        assert call(metrics_url + "/readyz")[0] == 503

        cluster.kubectl("apply", "-f", "-", input=config_map(namespace, routes_to(model_servers, "v1")))
        wait_for(lambda: served_by(proxy) == "v1", timeout=30, message="routes from the new ConfigMap")

        cluster.kubectl("apply", "-f", "-", input=config_map(namespace, routes_to(model_servers, "v2")))
        wait_for(lambda: served_by(proxy) == "v2", timeout=30, message="routes from the updated ConfigMap")

        # A bad document is logged and ignored; so is a ConfigMap without the key.
        cluster.kubectl("apply", "-f", "-", input=config_map(namespace, "experiment: cm\nvariants: []\n"))
        wait_for(lambda: process.find(r"routes rejected from configmap"), timeout=30, message="the rejection")
        cluster.kubectl("apply", "-f", "-", input=config_map(namespace, None))
        wait_for(lambda: process.find(r"has no 'routes.yaml' key"), timeout=30, message="the missing-key log")
        assert served_by(proxy) == "v2"

        # Deleting the ConfigMap keeps the last good routes; re-creating it is picked up.
        cluster.kubectl("delete", "configmap", "routes", "-n", namespace)
        wait_for(
            lambda: process.find(r"was deleted; keeping the last routes"), timeout=30, message="the deletion"
        )
        assert served_by(proxy) == "v2"
        cluster.kubectl("apply", "-f", "-", input=config_map(namespace, routes_to(model_servers, "v1")))
        wait_for(lambda: served_by(proxy) == "v1", timeout=30, message="routes from the re-created ConfigMap")
        assert metric(metrics_url, "arbiter_router_config_reloads_total", result="failure") == 1
        assert metric(metrics_url, "arbiter_router_config_reloads_total", result="success") == 3
    finally:
        code = process.stop()
    assert code == 0, process.log()
