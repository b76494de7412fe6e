"""The router process pieces: address parsing, the routes file watcher and the CLI's arguments."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from arbiter.cli import build_parser
from arbiter.router.proxy import Router
from arbiter.router.server import FileWatcher, parse_listen

ROUTES = "experiment: {exp}\nvariants: [{{name: v1, url: 'http://127.0.0.1:1', weight: 1}}]\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        (":0", ("127.0.0.1", 0)),
        ("[::1]:9", ("::1", 9)),
        ("0.0.0.0:9100", ("0.0.0.0", 9100)),
    ],
)
def test_parse_listen(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["8080", "host:", "host:http", "h:70000"])
def test_parse_listen_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_listen(text)


def test_file_watcher_applies_changes_only(tmp_path: Path) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(ROUTES.format(exp="one"))
    router = Router()
    watcher = FileWatcher(path, router)
    assert watcher.check()
    assert router.config is not None and router.config.experiment == "one"
    assert not watcher.check(), "an unchanged file is not reloaded"

    # Replace by rename, as editors and kubelet's ConfigMap volumes do.
    staged = tmp_path / "staged"
    staged.write_text(ROUTES.format(exp="two"))
    os.replace(staged, path)
    assert watcher.check()
    assert router.config.experiment == "two"

    path.write_text("experiment: [broken")
    assert not watcher.check()
    assert router.config.experiment == "two", "a broken file keeps the last good routes"

    path.unlink()
    assert not watcher.check()
    assert router.config.experiment == "two", "a vanished file keeps the last good routes"

    path.write_text(ROUTES.format(exp="three"))
    assert watcher.check()
    assert router.config.experiment == "three"
    assert watcher.check(force=True), "SIGHUP re-applies even an unchanged file"


def test_cli_arguments() -> None:
    parser = build_parser()
    args = parser.parse_args(["router", "--config", "r.yaml", "--listen", "127.0.0.1:0"])
    assert (args.config, args.listen, args.metrics_listen) == (
        "r.yaml",
        ("127.0.0.1", 0),
        ("127.0.0.1", 9100),
    )
    args = parser.parse_args(["router", "--configmap", "ns/routes", "--metrics-listen", ":7000"])
    assert args.configmap == ("ns", "routes")
    assert args.metrics_listen == ("127.0.0.1", 7000)
    for bad in (
        ["router"],
        ["router", "--config", "a", "--configmap", "n/m"],
        ["router", "--configmap", "nm"],
        ["router", "--config", "a", "--listen", "nope"],
    ):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)
