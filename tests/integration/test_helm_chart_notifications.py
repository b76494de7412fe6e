"""The chart's notifications values with the real helm: the operator's receivers file, its Secrets, the flag.

The file the chart renders is parsed by the operator's own loader, and the flag by `arbiter run`'s parser,
so a template that drifts from either fails here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from localcluster import binaries

from arbiter.cli import build_parser
from arbiter.notify import parse_config
from chart_support import HelmError, find, render

VALUES: dict[str, Any] = {
    "notifications": {
        "clusterName": "prod-eu",
        "linkTemplate": "https://grafana.example.com/d/arbiter?var-namespace={namespace}&var-experiment={name}",
        "receivers": [
            {"name": "team-slack", "type": "Slack", "urlSecretRef": {"name": "hooks", "key": "slack"}},
            {"name": "audit", "type": "Webhook", "urlSecretRef": {"name": "hooks", "key": "audit"}},
            {
                "name": "pager",
                "type": "Alertmanager",
                "url": "http://alertmanager.monitoring:9093",
                "minSeverity": "Warning",
                "events": ["RolledBack", "SampleRatioMismatch"],
                "allExperiments": False,
            },
        ],
        "delivery": {"attempts": 4, "initialBackoff": "2s"},
    }
}


@pytest.fixture(scope="module")
def bin_dir() -> Path:
    return binaries.ensure_built()


def rendered(bin_dir: Path, tmp_path: Path, values: dict[str, Any]) -> list[dict[str, Any]]:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return render(bin_dir, values_files=(path,))


def operator_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    deployment = find(docs, "Deployment", "arbiter")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(container)


def test_receivers_become_the_file_the_operator_reads_with_secrets_mounted_where_it_looks(
    bin_dir: Path, tmp_path: Path
) -> None:
    docs = rendered(bin_dir, tmp_path, VALUES)
    config_map = find(docs, "ConfigMap", "arbiter-notifications")
    config = parse_config(yaml.safe_load(config_map["data"]["notifications.yaml"]))
    assert config.cluster_name == "prod-eu" and config.link_template.startswith("https://grafana")
    slack, audit, pager = config.receivers
    assert slack.url_file == "/etc/arbiter/notifications/secrets/hooks/slack" and slack.url is None
    assert audit.url_file == "/etc/arbiter/notifications/secrets/hooks/audit"
    assert pager.url == "http://alertmanager.monitoring:9093" and not pager.all_experiments
    assert config.delivery.attempts == 4 and config.delivery.initial_backoff == "2s"
    assert config.delivery.queue_size == 1000, "the chart's defaults reach the file"

    container = operator_container(docs)
    args = build_parser().parse_args(
        [a.replace("$(POD_NAMESPACE)", "arbiter-system") for a in container["args"]]
    )
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert args.notifications_config == mounts["notifications"] + "/notifications.yaml"
    volumes = {
        v["name"]: v for v in find(docs, "Deployment", "arbiter")["spec"]["template"]["spec"]["volumes"]
    }
    assert volumes["notifications"]["configMap"]["name"] == "arbiter-notifications"
    # One volume per Secret, mounted where the file's urlFile paths point.
    secret_volumes = [
        name for name, v in volumes.items() if "secret" in v and name.startswith("notification")
    ]
    assert [volumes[n]["secret"]["secretName"] for n in secret_volumes] == ["hooks"]
    assert mounts[secret_volumes[0]] == "/etc/arbiter/notifications/secrets/hooks"
    assert all(m.get("readOnly") for m in container["volumeMounts"] if m["name"].startswith("notification"))


def test_no_receivers_no_file_and_no_flag(bin_dir: Path, tmp_path: Path) -> None:
    docs = rendered(bin_dir, tmp_path, {})
    assert not [
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "arbiter-notifications"
    ]
    assert not any("notifications" in a for a in operator_container(docs)["args"])


def test_changed_receivers_roll_the_operator(bin_dir: Path, tmp_path: Path) -> None:
    def checksum(values: dict[str, Any]) -> str:
        deployment = find(rendered(bin_dir, tmp_path, values), "Deployment", "arbiter")
        return str(
            deployment["spec"]["template"]["metadata"]["annotations"]["arbiter.dev/notifications-checksum"]
        )

    other = {"notifications": {**VALUES["notifications"], "clusterName": "prod-us"}}
    assert checksum(VALUES) != checksum(other)


BAD = [
    ({"name": "x", "type": "Slack"}, "missing property 'url'"),
    ({"name": "x", "type": "Pager", "url": "http://x"}, "at '/notifications/receivers/0/type'"),
    ({"name": "x", "type": "Slack", "url": "http://x", "minSeverity": "Loud"}, "minSeverity"),
    ({"name": "x", "type": "Slack", "url": "http://x", "urlSecretRef": {"name": "s", "key": "k"}}, "oneOf"),
    ({"name": "x", "type": "Webhook", "url": "http://x", "events": ["Exploded"]}, "events/0"),
]


@pytest.mark.parametrize(("receiver", "message"), BAD, ids=[m for _, m in BAD])
def test_bad_receivers_fail_with_the_value_named(
    bin_dir: Path, tmp_path: Path, receiver: dict[str, Any], message: str
) -> None:
    with pytest.raises(HelmError) as failure:
        rendered(bin_dir, tmp_path, {"notifications": {"receivers": [receiver]}})
    assert message in str(failure.value)
