"""`arbiter run`: start the operator."""

from __future__ import annotations

import argparse
import sys
from typing import Any


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
        "-l",
        "--selector",
        default=None,
        metavar="SELECTOR",
        help="handle only ModelExperiments whose labels match this selector (kubectl -l syntax, e.g. "
        "arbiter.dev/shard=a): shard experiments over replicas with disjoint selectors",
    )
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
    parser.add_argument("--verbose", action="store_true", help="log at debug level")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the operator until interrupted."""
    import kopf

    import arbiter.main  # noqa: F401  (registers the handlers)
    from arbiter.handlers import shard

    try:
        shard.configure(args.selector)
    except shard.SelectorError as err:
        print(f"arbiter run: --selector: {err}", file=sys.stderr)
        return 2

    if args.metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(args.metrics_port, addr=args.metrics_address)
    kopf.configure(verbose=args.verbose)
    kopf.run(
        clusterwide=not args.namespace,
        namespaces=args.namespace or (),
        liveness_endpoint=args.liveness,
        standalone=True,
    )
    return 0
