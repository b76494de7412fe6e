"""`arbiter run`: start the operator."""

from __future__ import annotations

import argparse
import logging
from typing import Any

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("plain", "full", "json")
# Loggers whose every line is one probe or scrape hit: kept at WARNING whatever the level, so a liveness
# probe every few seconds never floods the log.
QUIET_LOGGERS = ("aiohttp.access",)


def register(subparsers: Any) -> None:
    """Add the `run` command."""
    parser = subparsers.add_parser(
        "run", help="run the operator against the current kubeconfig or in-cluster"
    )
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        help="watch only this namespace (repeatable; glob patterns allowed)",
    )
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace (default)")
    parser.add_argument(
        "--liveness",
        default=None,
        metavar="URL",
        help="serve a liveness probe, e.g. http://0.0.0.0:8080/healthz",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        metavar="PORT",
        help="serve the operator's Prometheus metrics (experiments by phase, decisions, tick duration, "
        "query errors) on this port",
    )
    parser.add_argument(
        "--metrics-address",
        default="0.0.0.0",
        metavar="ADDR",
        help="address for --metrics-port (default 0.0.0.0)",
    )
    parser.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default="info",
        help="debug, info (default), warning or error",
    )
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="full",
        help="full (default: time, logger, level, message), plain (the message only) or json (one object per line)",
    )
    parser.add_argument(
        "--verbose", action="store_true", help="log at debug level (same as --log-level=debug)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the operator until interrupted."""
    import kopf

    import arbiter.main  # noqa: F401  (registers the handlers)

    if args.metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(args.metrics_port, addr=args.metrics_address)
    configure_logging("debug" if args.verbose else args.log_level, args.log_format)
    kopf.run(
        clusterwide=not args.namespace,
        namespaces=args.namespace or (),
        liveness_endpoint=args.liveness,
        standalone=True,
    )
    return 0


def configure_logging(level: str, log_format: str) -> None:
    """Set Kopf's log handler to ``log_format`` and the root level to ``level``; silence probe hits."""
    import kopf

    kopf.configure(
        verbose=level == "debug",
        quiet=level in ("warning", "error"),
        log_format=kopf.LogFormat[log_format.upper()],
    )
    logging.getLogger().setLevel(level.upper())
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
