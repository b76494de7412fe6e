"""The chart's Grafana dashboards: ConfigMaps the Grafana sidecar picks up, accepted by the real API server.

Whether every panel's query returns data is tested where it can rot, against the real Prometheus
during an e2e story: tests/e2e/test_operator_metrics.py.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

from arbiter_fixtures import ROOT

CHART = ROOT / "charts" / "arbiter"
DASHBOARDS = {p.name: p for p in (CHART / "dashboards").glob("*.json")}


def render(cluster: Any, *settings: str) -> list[dict[str, Any]]:
    """The dashboard ConfigMaps `helm template` renders with ``--set`` settings."""
    result = subprocess.run(
        [
            str(Path(cluster.bin_dir) / "helm"),
            "template",
            "obs",
            str(CHART),
            "--namespace",
            "ops",
            "--kube-version",
            "1.36.3",
            *[arg for setting in settings for arg in ("--set", setting)],
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HELM_CACHE_HOME": "/tmp/arbiter-helm-cache"},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    return [
        d for d in docs if d["kind"] == "ConfigMap" and any(k.endswith(".json") for k in d.get("data") or {})
    ]


def test_each_dashboard_is_a_configmap_with_the_sidecar_label(cluster: Any, namespace: str) -> None:
    assert set(DASHBOARDS) == {"arbiter-overview.json", "arbiter-experiment.json"}
    maps = render(cluster)
    assert sorted(m["metadata"]["name"] for m in maps) == ["obs-arbiter-experiment", "obs-arbiter-overview"]
    for config_map in maps:
        assert config_map["metadata"]["namespace"] == "ops"
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        ((key, text),) = config_map["data"].items()
        assert json.loads(text) == json.loads(DASHBOARDS[key].read_text()), "shipped unchanged"
    # The API server accepts them as they are (a server-side dry run in a real namespace).
    for config_map in maps:
        config_map["metadata"]["namespace"] = namespace
        cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(config_map))


def test_values_turn_the_dashboards_off_or_change_the_label(cluster: Any) -> None:
    assert render(cluster, "dashboards.enabled=false") == []
    maps = render(
        cluster,
        "dashboards.label=dashboards",
        "dashboards.labelValue=arbiter",
        "dashboards.namespace=monitoring",
        "dashboards.annotations.grafana_folder=Arbiter",
    )
    assert len(maps) == 2
    for config_map in maps:
        meta = config_map["metadata"]
        assert meta["labels"]["dashboards"] == "arbiter" and "grafana_dashboard" not in meta["labels"]
        assert meta["namespace"] == "monitoring" and meta["annotations"] == {"grafana_folder": "Arbiter"}


def test_every_panel_queries_prometheus_through_the_datasource_variable() -> None:
    """Panels use ${datasource}; the experiment dashboard selects by $namespace and $experiment."""
    for name, path in DASHBOARDS.items():
        board = json.loads(path.read_text())
        variables = {v["name"] for v in board["templating"]["list"]}
        assert "datasource" in variables, name
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), f"{name}: panel ids are unique"
        for panel in board["panels"]:
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]
            if name == "arbiter-experiment.json":
                assert {"namespace", "experiment"} <= variables
                for target in panel["targets"]:
                    assert '"$experiment"' in target["expr"], (panel["title"], target["expr"])
