"""`arbiter router`: run Arbiter's model router (see docs/router.md)."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from typing import Any


def _listen(value: str) -> tuple[str, int]:
    from arbiter.router.server import parse_listen

    try:
        return parse_listen(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _configmap(value: str) -> tuple[str, str]:
    namespace, sep, name = value.partition("/")
    if not sep or not namespace or not name or "/" in name:
        raise argparse.ArgumentTypeError(f"expected NAMESPACE/NAME, got {value!r}")
    return namespace, name


def register(subparsers: Any) -> None:
    """Add the `router` subcommand."""
    parser = subparsers.add_parser(
        "router",
        help="run the model router (sticky weighted routing, judged shadow traffic, feedback)",
        description=(
            "Proxy requests to model variants by weight, stickily per user, mirror a share to a shadow"
            " variant and compare its answers, and count outcomes posted to /feedback. Routes come from"
            " a routes.yaml file (re-read when it changes and on SIGHUP) or from a ConfigMap's"
            " `routes.yaml` key (watched)."
        ),
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", metavar="PATH", help="routes.yaml file to load and watch")
    source.add_argument(
        "--configmap",
        metavar="NAMESPACE/NAME",
        type=_configmap,
        help="ConfigMap whose data key routes.yaml holds the routes (watched; uses KUBECONFIG or in-cluster)",
    )
    parser.add_argument(
        "--listen", metavar="HOST:PORT", type=_listen, default=("127.0.0.1", 8080), help="proxy address"
    )
    parser.add_argument(
        "--metrics-listen",
        metavar="HOST:PORT",
        type=_listen,
        default=("127.0.0.1", 9100),
        help="address of /metrics, /healthz and /readyz",
    )
    parser.add_argument(
        "--poll-interval",
        metavar="SECONDS",
        type=float,
        default=1.0,
        help="how often --config is checked for changes (default 1)",
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the router until SIGTERM or SIGINT; return the exit code."""
    import asyncio

    from arbiter.router.server import ServeOptions, serve

    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    start_feed: Callable[[Callable[[str, str], None]], Callable[[], None]] | None = None
    if args.configmap is not None:
        namespace, name = args.configmap
        start_feed = _configmap_feed(namespace, name)
    options = ServeOptions(
        listen=args.listen,
        metrics_listen=args.metrics_listen,
        config_path=args.config,
        poll_interval=args.poll_interval,
        start_feed=start_feed,
    )
    try:
        import uvloop

        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency everywhere but Windows
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(serve(options))


def _configmap_feed(namespace: str, name: str) -> Callable[[Callable[[str, str], None]], Callable[[], None]]:
    def start(submit: Callable[[str, str], None]) -> Callable[[], None]:
        from arbiter.k8s.configmap_watch import ConfigMapWatcher

        watcher = ConfigMapWatcher(namespace, name, submit)
        watcher.start()
        stop: Callable[[], None] = watcher.stop
        return stop

    return start
