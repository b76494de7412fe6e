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
    _register_labels(parser)
    parser.set_defaults(func=run)


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return number


def _positive_seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {value!r}") from None
    if not 0 < number < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {value!r}")
    return number


def _log_field(value: str) -> tuple[str, tuple[str, ...]]:
    from arbiter.router.prediction_log import parse_log_field

    try:
        return parse_log_field(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _register_labels(parser: argparse.ArgumentParser) -> None:
    """Flags of delayed labels: attribution tokens and the prediction log (docs/router.md)."""
    group = parser.add_argument_group("delayed labels")
    group.add_argument(
        "--attribution-keys",
        metavar="PATH",
        help="file with one HMAC key per line, or a directory of such files (a Secret volume): the first"
        " signs the Arbiter-Attribution token of every answer, all verify tokens posted to /feedback",
    )
    group.add_argument(
        "--attribution-max-age",
        metavar="SECONDS",
        type=_positive_seconds,
        default=None,
        help="how long a token stays valid (default 604800, 7 days)",
    )
    group.add_argument(
        "--prediction-log",
        metavar="DIR",
        help="write predictions.jsonl and outcomes.jsonl (JSON lines, rotated) into DIR",
    )
    group.add_argument(
        "--prediction-log-max-bytes",
        metavar="BYTES",
        type=_positive_int,
        default=64 * 1024 * 1024,
        help="rotate a log file at this size (default 64 MiB)",
    )
    group.add_argument(
        "--prediction-log-files",
        metavar="N",
        type=_positive_int,
        default=5,
        help="files kept per kind, the current one included (default 5)",
    )
    group.add_argument(
        "--prediction-log-field",
        metavar="NAME=POINTER",
        type=_log_field,
        action="append",
        default=[],
        help="log this JSON pointer of the response body as column NAME (repeatable), e.g."
        " class=/outputs/0/data/0",
    )
    group.add_argument(
        "--prediction-log-keys",
        choices=["hash", "plain", "none"],
        default="hash",
        help="how the sticky key is logged in `user` (default hash: salted SHA-256, 16 hex digits)",
    )
    group.add_argument(
        "--prediction-log-bodies",
        action="store_true",
        help="also log whole response bodies (off by default: bodies may hold personal data)",
    )


def _label_parts(args: argparse.Namespace) -> tuple[Any, Any]:
    """The attribution signer and prediction log the flags ask for (None when not asked).

    The prediction log's key salt comes from the environment variable ARBITER_PREDICTION_LOG_SALT.
    """
    import os
    from pathlib import Path

    from arbiter.router.attribution import DEFAULT_MAX_AGE_SECONDS, AttributionSigner, load_keys
    from arbiter.router.prediction_log import PredictionLogOptions

    signer = None
    if args.attribution_keys is not None:
        signer = AttributionSigner(
            load_keys(args.attribution_keys),
            max_age=args.attribution_max_age or DEFAULT_MAX_AGE_SECONDS,
        )
    elif args.attribution_max_age is not None:
        raise ValueError("--attribution-max-age needs --attribution-keys")
    options = None
    if args.prediction_log is not None:
        options = PredictionLogOptions(
            directory=Path(args.prediction_log),
            max_bytes=max(args.prediction_log_max_bytes, 1024),
            files=args.prediction_log_files,
            fields=dict(args.prediction_log_field),
            keys=args.prediction_log_keys,
            key_salt=os.environ.get("ARBITER_PREDICTION_LOG_SALT", ""),
            bodies=args.prediction_log_bodies,
        )
    return signer, options


def run(args: argparse.Namespace) -> int:
    """Run the router until SIGTERM or SIGINT; return the exit code."""
    import asyncio

    from arbiter.router.server import ServeOptions

    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        signer, log_options = _label_parts(args)
    except (OSError, ValueError) as exc:  # the message names files, never a key
        logging.getLogger("arbiter.router").error("cannot start: %s", exc)
        return 2
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
        return runner.run(_serve(options, signer, log_options))


async def _serve(options: Any, signer: Any, log_options: Any) -> int:
    from arbiter.router.metrics import RouterMetrics
    from arbiter.router.prediction_log import PredictionLog
    from arbiter.router.proxy import Router
    from arbiter.router.server import serve

    metrics = RouterMetrics()
    prediction_log = PredictionLog(log_options, metrics.registry) if log_options is not None else None
    router = Router(metrics=metrics, attribution=signer, prediction_log=prediction_log)
    if signer is not None:
        logging.getLogger("arbiter.router").info("attribution tokens on (max age %g s)", signer.max_age)
    if prediction_log is not None:
        logging.getLogger("arbiter.router").info("prediction log in %s", log_options.directory)
    return await serve(options, router)


def _configmap_feed(namespace: str, name: str) -> Callable[[Callable[[str, str], None]], Callable[[], None]]:
    def start(submit: Callable[[str, str], None]) -> Callable[[], None]:
        from arbiter.k8s.configmap_watch import ConfigMapWatcher

        watcher = ConfigMapWatcher(namespace, name, submit)
        watcher.start()
        stop: Callable[[], None] = watcher.stop
        return stop

    return start
