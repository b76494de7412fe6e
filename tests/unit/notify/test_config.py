"""The operator's notifications file: validated at start, with the field named."""

from __future__ import annotations

from pathlib import Path

import pytest

from arbiter.notify.config import ConfigError, load_config, parse_config


def test_a_full_file_parses(tmp_path: Path) -> None:
    path = tmp_path / "notifications.yaml"
    path.write_text(
        """
clusterName: prod-eu
linkTemplate: https://grafana.example.com/d/arbiter?var-namespace={namespace}&var-experiment={name}
receivers:
  - {name: oncall, type: Alertmanager, url: "http://alertmanager:9093", minSeverity: Warning}
  - {name: team, type: Slack, urlFile: /etc/arbiter/notifications/secrets/slack/url, allExperiments: false}
  - {name: audit, type: Webhook, url: "https://audit.example.com/hook", events: [Promoted, RolledBack]}
delivery: {queueSize: 10, attempts: 3, initialBackoff: 500ms, maxBackoff: 10s, timeout: 2s}
"""
    )
    config = load_config(path)
    assert config.cluster_name == "prod-eu"
    assert [r.name for r in config.receivers] == ["oncall", "team", "audit"]
    assert config.receiver("team") is not None and not config.receiver("team").all_experiments  # type: ignore[union-attr]
    assert config.delivery.attempts == 3


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"receivers": [{"name": "a", "type": "Webhook"}]}, "set exactly one of url or urlFile"),
        (
            {"receivers": [{"name": "a", "type": "Webhook", "url": "x", "urlFile": "/f"}]},
            "set exactly one of url or urlFile",
        ),
        ({"receivers": [{"name": "a", "type": "Webhook", "url": "ftp://x"}]}, "must start with http"),
        ({"receivers": [{"name": "a", "type": "Pager", "url": "http://x"}]}, "receivers.0.type"),
        (
            {"receivers": [{"name": "a", "type": "Webhook", "url": "http://x", "minSeverity": "Loud"}]},
            "minSeverity",
        ),
        (
            {"receivers": [{"name": "a", "type": "Slack", "url": "http://x"}] * 2},
            "receiver names must be unique: a",
        ),
        ({"delivery": {"initialBackoff": "soon"}}, "invalid duration"),
        ({"recievers": []}, "recievers"),
    ],
)
def test_a_bad_file_names_the_problem(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(raw)


def test_unreadable_or_not_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="No such file"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("receivers: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(listed)
