"""`arbiter run` logging flags: level and format as the chart sets them, probe hits never logged."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from arbiter.cli import build_parser
from arbiter.cli.run import configure_logging


@pytest.fixture
def root_logging() -> Iterator[io.StringIO]:
    """Restore the root logger after the test; the stream Kopf's handler writes to."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    access_level = logging.getLogger("aiohttp.access").level
    yield io.StringIO()
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(access_level)


def kopf_stream(stream: io.StringIO) -> None:
    for handler in logging.getLogger().handlers:
        if type(handler).__name__ == "_KopfStreamHandler":
            handler.setStream(stream)  # type: ignore[attr-defined]


def test_the_flags_parse_as_the_chart_renders_them() -> None:
    args = build_parser().parse_args(["run", "--all-namespaces", "--log-level=warning", "--log-format=json"])
    assert (args.log_level, args.log_format) == ("warning", "json")
    defaults = build_parser().parse_args(["run"])
    assert (defaults.log_level, defaults.log_format, defaults.verbose) == ("info", "full", False)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--log-format=xml"])


def test_json_format_writes_one_object_per_line(root_logging: io.StringIO) -> None:
    configure_logging("info", "json")
    kopf_stream(root_logging)
    logging.getLogger("arbiter.test").info("decided %s", "Promoted")
    logging.getLogger("arbiter.test").debug("not at info")
    (line,) = root_logging.getvalue().splitlines()
    record = json.loads(line)
    assert record["message"] == "decided Promoted" and record["severity"] == "info"


@pytest.mark.parametrize(
    ("level", "shown"),
    [
        ("debug", {"DEBUG", "INFO", "WARNING", "ERROR"}),
        ("info", {"INFO", "WARNING", "ERROR"}),
        ("warning", {"WARNING", "ERROR"}),
        ("error", {"ERROR"}),
    ],
)
def test_the_level_filters(root_logging: io.StringIO, level: str, shown: set[str]) -> None:
    configure_logging(level, "plain")
    kopf_stream(root_logging)
    log = logging.getLogger("arbiter.test")
    for name in ("DEBUG", "INFO", "WARNING", "ERROR"):
        log.log(getattr(logging, name), name)
    assert set(root_logging.getvalue().split()) == shown


def test_probe_hits_are_not_logged_even_at_debug(root_logging: io.StringIO) -> None:
    configure_logging("debug", "plain")
    kopf_stream(root_logging)
    logging.getLogger("aiohttp.access").info('127.0.0.1 "GET /healthz HTTP/1.1" 200')
    logging.getLogger("aiohttp.access").warning("a real problem")
    assert root_logging.getvalue().splitlines() == ["a real problem"]
