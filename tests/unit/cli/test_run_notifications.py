"""`arbiter run --notifications-config/--cluster-name`: read at start, a bad file stops the command."""

from __future__ import annotations

from pathlib import Path

import pytest

from arbiter.cli import build_parser, main
from arbiter.cli.run import _configure_notifications
from arbiter.handlers import notifications


def test_the_file_and_cluster_name_come_from_flags_or_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "n.yaml"
    path.write_text("clusterName: from-file\nreceivers: [{name: a, type: Webhook, url: 'http://a'}]\n")
    monkeypatch.setenv("ARBITER_NOTIFICATIONS_CONFIG", str(path))
    monkeypatch.delenv("ARBITER_CLUSTER_NAME", raising=False)
    args = build_parser().parse_args(["run"])
    assert args.notifications_config == str(path)
    before = notifications.notifier()
    try:
        _configure_notifications(args)
        assert notifications.notifier().cluster == "from-file"
        assert [r.name for r in notifications.notifier().config.receivers] == ["a"]
        _configure_notifications(build_parser().parse_args(["run", "--cluster-name", "prod-eu"]))
        assert notifications.notifier().cluster == "prod-eu", "the flag wins over the file"
    finally:
        notifications._notifier = before


def test_a_bad_file_stops_the_command_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "n.yaml"
    path.write_text("receivers: [{name: a, type: Pager, url: 'http://a'}]\n")
    before = notifications.notifier()
    try:
        assert main(["run", "--notifications-config", str(path)]) == 2
    finally:
        notifications._notifier = before
    err = capsys.readouterr().err
    assert "--notifications-config" in err and "receivers.0.type" in err
