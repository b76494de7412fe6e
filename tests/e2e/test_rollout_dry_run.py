"""A dry run on real parts: the team's own tooling holds a 70/30 split in the router's ConfigMap, the
router serves real users by it, Prometheus scrapes the router, and the operator in dry run judges that
split and reaches the promotion it would have made, while the ConfigMap is never written.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from harness.env import RolloutEnv
from harness.experiment import condition, conversion_metric, wait_for_events, wait_for_status
from kubernetes import client

from arbiter.router.config import RouterConfig, Stickiness
from arbiter.router.config import Variant as RouteVariant
from arbiter.routing.router import DATA_KEY
from arbiter_fixtures import OperatorProcess

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(240)]

LIVE = {"v1": 70, "v2": 30}


def test_a_dry_run_judges_the_live_split_and_would_promote_without_writing_it(
    rollout_env: Any, operator: OperatorProcess, kube_api: Any
) -> None:
    env: RolloutEnv = rollout_env(experiment="watch")
    routes = RouterConfig(
        experiment="watch",
        variants=tuple(RouteVariant(name=v.name, url=v.url, weight=LIVE[v.name]) for v in env.variants),
        champion="v1",
        stickiness=Stickiness(header="x-user-id"),
    )
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": env.config_map, "labels": {"managed-by": "team-tooling"}},
        "data": {DATA_KEY: routes.to_yaml()},
    }
    env.apply([config_map])
    core = client.CoreV1Api(kube_api)
    before = core.read_namespaced_config_map(env.config_map, env.namespace)

    # Its own steps would give v2 10%, then 50%: a sample-ratio check against those, not the live 70/30,
    # would pause at once.
    manifest = env.experiment(
        steps=[{"weight": 10, "minDuration": "3s"}, {"weight": 50, "minDuration": "3s"}],
        primary=conversion_metric(mde=0.2),
        srm_threshold=0.001,
    )
    manifest["spec"]["dryRun"] = True
    manifest["spec"]["analysis"]["sampleCount"] = conversion_metric()["trials"]
    env.apply([manifest])
    recorder = env.record_status("watch")
    traffic = env.traffic({"v1": 0.10, "v2": 0.15}, rate=150, max_seconds=200, seed=13)

    decided = wait_for_status(
        kube_api,
        env.namespace,
        "watch",
        lambda s: s.get("phase") == "Promoted",
        forbid=lambda s: s.get("phase") in ("RolledBack", "Concluded", "Failed", "Paused"),
        timeout=200,
        message="the dry run to reach the promotion it would have made",
    )
    seen = recorder.stop()
    served = traffic.snapshot()
    traffic.stop()

    assert decided["decision"]["dryRun"] is True and decided["decision"]["winner"] == "v2"
    assert decided["dryRun"]["wouldHave"] == "promoted v2"
    assert decided["dryRun"]["wouldRoute"] == {"v1": 0, "v2": 100}
    assert decided["dryRun"]["observedWeights"] == LIVE and decided["weights"] == LIVE
    # The split was judged as the live one all along: never a sample-ratio alarm.
    assert all(condition(o.raw, "SampleRatioMismatch").get("status") != "True" for o in seen)
    assert all(o.raw.get("weights") in (None, {"v1": 100, "v2": 0}, LIVE) for o in seen)
    # Users kept getting the team's split: v2 served about 30% of them.
    assert 0.2 < served.share("v2") < 0.4, served.share("v2")
    after = core.read_namespaced_config_map(env.config_map, env.namespace)
    assert after.metadata.resource_version == before.metadata.resource_version, "the route was never written"
    assert yaml.safe_load(after.data[DATA_KEY]) == yaml.safe_load(before.data[DATA_KEY])
    reasons = wait_for_events(kube_api, env.namespace, "watch", "DryRunPromoted", "DryRunAdvanced")
    assert "Promoted" not in reasons and "Advanced" not in reasons
