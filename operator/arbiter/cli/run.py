"""`arbiter run`: start the operator (optionally as one of several replicas, behind a leader Lease)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger("arbiter.cli.run")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _env_bool(name: str, default: bool) -> bool:
    """A boolean from the environment (true/false, 1/0, yes/no, on/off); ``default`` when unset."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise SystemExit(f"arbiter run: ${name} must be true or false, not {raw!r}")


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        return float(raw)
    except ValueError:
        raise SystemExit(f"arbiter run: ${name} must be a number of seconds, not {raw!r}") from None


LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("plain", "full", "json")
# Loggers whose every line is one probe or scrape hit: kept at WARNING whatever the level, so a liveness
# probe every few seconds never floods the log.
QUIET_LOGGERS = ("aiohttp.access",)


def register(subparsers: Any) -> None:
    """Add the `run` command."""
    parser = subparsers.add_parser(
        "run",
        help="run the operator against the current kubeconfig or in-cluster",
        description="Run the operator. Every option can also be set by the environment variable named in "
        "its help; a flag wins over the variable.",
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
        help="serve a liveness probe, e.g. http://0.0.0.0:8080/healthz (also while waiting for the lease)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        metavar="PORT",
        help="serve the operator's Prometheus metrics (experiments by phase, decisions, tick duration, "
        "query errors, leadership) on this port",
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

    election = parser.add_argument_group(
        "leader election",
        "Run several replicas: one leads through a coordination.k8s.io/v1 Lease, the others wait and "
        "take over when it is released or expires. See docs/operations.md.",
    )
    election.add_argument(
        "--leader-election",
        action=argparse.BooleanOptionalAction,
        default=_env_bool("ARBITER_LEADER_ELECTION", False),
        help="hold a Lease before acting; exit (code 1) as soon as it is lost [$ARBITER_LEADER_ELECTION; "
        "default off]",
    )
    election.add_argument(
        "--leader-election-namespace",
        default=os.environ.get("ARBITER_LEADER_ELECTION_NAMESPACE") or None,
        metavar="NAMESPACE",
        help="namespace of the Lease [$ARBITER_LEADER_ELECTION_NAMESPACE; default: the pod's own namespace, "
        "else $POD_NAMESPACE, else default]",
    )
    election.add_argument(
        "--leader-election-name",
        default=os.environ.get("ARBITER_LEADER_ELECTION_NAME") or "arbiter-operator",
        metavar="NAME",
        help="name of the Lease [$ARBITER_LEADER_ELECTION_NAME; default arbiter-operator]",
    )
    election.add_argument(
        "--leader-election-identity",
        default=os.environ.get("ARBITER_LEADER_ELECTION_IDENTITY") or None,
        metavar="ID",
        help="holder identity [$ARBITER_LEADER_ELECTION_IDENTITY; default <$POD_NAME or hostname>_<uuid>]",
    )
    election.add_argument(
        "--leader-election-lease-duration",
        type=float,
        default=_env_float("ARBITER_LEADER_ELECTION_LEASE_DURATION", 15.0),
        metavar="SECONDS",
        help="how long a waiting replica waits for an unrenewed lease before taking over "
        "[$ARBITER_LEADER_ELECTION_LEASE_DURATION; default 15]",
    )
    election.add_argument(
        "--leader-election-renew-deadline",
        type=float,
        default=_env_float("ARBITER_LEADER_ELECTION_RENEW_DEADLINE", 10.0),
        metavar="SECONDS",
        help="how long the leader tries to renew before it gives up and exits "
        "[$ARBITER_LEADER_ELECTION_RENEW_DEADLINE; default 10]",
    )
    election.add_argument(
        "--leader-election-retry-period",
        type=float,
        default=_env_float("ARBITER_LEADER_ELECTION_RETRY_PERIOD", 2.0),
        metavar="SECONDS",
        help="time between attempts to acquire or renew [$ARBITER_LEADER_ELECTION_RETRY_PERIOD; default 2]",
    )

    prom = parser.add_argument_group(
        "default Prometheus connection",
        "Used by experiments that leave spec.analysis.prometheus.url out (or name this same URL). "
        "Credentials come from files (mount a Secret into the pod), never from flag values.",
    )
    prom.add_argument(
        "--prometheus-url",
        default=os.environ.get("ARBITER_PROMETHEUS_URL") or None,
        metavar="URL",
        help="default Prometheus base URL [$ARBITER_PROMETHEUS_URL]",
    )
    prom.add_argument(
        "--prometheus-bearer-token-file",
        default=os.environ.get("ARBITER_PROMETHEUS_BEARER_TOKEN_FILE") or None,
        metavar="FILE",
        help="send the token in FILE (re-read every tick) [$ARBITER_PROMETHEUS_BEARER_TOKEN_FILE]",
    )
    prom.add_argument(
        "--prometheus-basic-auth-username",
        default=os.environ.get("ARBITER_PROMETHEUS_BASIC_AUTH_USERNAME") or None,
        metavar="USER",
        help="basic auth user [$ARBITER_PROMETHEUS_BASIC_AUTH_USERNAME]",
    )
    prom.add_argument(
        "--prometheus-basic-auth-password-file",
        default=os.environ.get("ARBITER_PROMETHEUS_BASIC_AUTH_PASSWORD_FILE") or None,
        metavar="FILE",
        help="basic auth password, read from FILE [$ARBITER_PROMETHEUS_BASIC_AUTH_PASSWORD_FILE]",
    )
    prom.add_argument(
        "--prometheus-ca-file",
        default=os.environ.get("ARBITER_PROMETHEUS_CA_FILE") or None,
        metavar="FILE",
        help="PEM CA bundle that signed Prometheus' certificate [$ARBITER_PROMETHEUS_CA_FILE]",
    )
    prom.add_argument(
        "--prometheus-insecure-skip-verify",
        action=argparse.BooleanOptionalAction,
        default=_env_bool("ARBITER_PROMETHEUS_INSECURE_SKIP_VERIFY", False),
        help="do not verify Prometheus' certificate [$ARBITER_PROMETHEUS_INSECURE_SKIP_VERIFY]",
    )
    prom.add_argument(
        "--prometheus-header",
        action="append",
        default=None,
        metavar="NAME=VALUE",
        help="extra header, e.g. X-Scope-OrgID=tenant-a (repeatable) [$ARBITER_PROMETHEUS_HEADERS, "
        "comma-separated NAME=VALUE pairs]",
    )
    prom.add_argument(
        "--prometheus-credentials-dir",
        action="append",
        default=None,
        metavar="DIR",
        help="a directory below which files named in experiment specs (bearerToken.file, tls.caFile) "
        "may be read (repeatable) [$ARBITER_PROMETHEUS_CREDENTIALS_DIRS, colon-separated; default "
        "/etc/arbiter/prometheus]",
    )
    notify = parser.add_argument_group(
        "notifications",
        "Receivers told about every experiment's transitions (docs/notifications.md); experiments add their "
        "own in spec.notifications.",
    )
    notify.add_argument(
        "--notifications-config",
        default=os.environ.get("ARBITER_NOTIFICATIONS_CONFIG") or None,
        metavar="FILE",
        help="YAML file with the receivers (the chart's ConfigMap), read at start [$ARBITER_NOTIFICATIONS_CONFIG]",
    )
    notify.add_argument(
        "--cluster-name",
        default=os.environ.get("ARBITER_CLUSTER_NAME") or "",
        metavar="NAME",
        help="the cluster's name in every notification (wins over the file's clusterName) [$ARBITER_CLUSTER_NAME]",
    )
    parser.set_defaults(func=run)


def default_prometheus_connection(args: argparse.Namespace) -> Any:
    """The :class:`~arbiter.metrics.DefaultConnection` the flags (and their variables) describe.

    Raises:
        ValueError: inconsistent options (the message says which).
    """
    from arbiter.metrics import DefaultConnection
    from arbiter.metrics.connection import DEFAULT_CREDENTIALS_DIR

    pairs = args.prometheus_header
    if pairs is None:
        raw = os.environ.get("ARBITER_PROMETHEUS_HEADERS", "")
        pairs = [p for p in raw.split(",") if p.strip()]
    headers: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--prometheus-header wants NAME=VALUE, got {pair.split('=')[0]!r}...")
        headers[name.strip()] = value.strip()
    dirs = args.prometheus_credentials_dir
    if dirs is None:
        raw = os.environ.get("ARBITER_PROMETHEUS_CREDENTIALS_DIRS", DEFAULT_CREDENTIALS_DIR)
        dirs = [d for d in raw.split(":") if d]
    return DefaultConnection(
        url=args.prometheus_url,
        bearer_token_file=args.prometheus_bearer_token_file,
        basic_auth_username=args.prometheus_basic_auth_username,
        basic_auth_password_file=args.prometheus_basic_auth_password_file,
        ca_file=args.prometheus_ca_file,
        insecure_skip_verify=args.prometheus_insecure_skip_verify,
        headers=headers,
        credentials_dirs=tuple(dirs),
    )


def run(args: argparse.Namespace) -> int:
    """Run the operator until interrupted (or, with leader election, until the lease is lost)."""
    import kopf

    import arbiter.main  # noqa: F401  (registers the handlers)
    from arbiter.handlers import shard, telemetry
    from arbiter.metrics import set_default_connection

    try:
        shard.configure(args.selector)
    except shard.SelectorError as err:
        print(f"arbiter run: --selector: {err}", file=sys.stderr)
        return 2
    try:
        set_default_connection(default_prometheus_connection(args))
    except ValueError as err:
        print(f"arbiter run: {err}", file=sys.stderr)
        return 2
    try:
        _configure_notifications(args)
    except ValueError as err:
        print(f"arbiter run: --notifications-config: {err}", file=sys.stderr)
        return 2
    configure_logging("debug" if args.verbose else args.log_level, args.log_format)
    if args.metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(args.metrics_port, addr=args.metrics_address)
    options: dict[str, Any] = {
        "clusterwide": not args.namespace,
        "namespaces": args.namespace or (),
        "liveness_endpoint": args.liveness,
        "standalone": True,
    }
    if not args.leader_election:
        telemetry.LEADER.set(1)
        kopf.run(**options)
        return 0
    return _run_with_leader_election(args, options)


def _configure_notifications(args: argparse.Namespace) -> None:
    """Read the receivers file (if any) and hand it to the notification handler.

    Raises:
        ValueError: the file is unreadable or invalid (the message names the field).
    """
    from arbiter.handlers import notifications
    from arbiter.notify import ConfigError, load_config

    config = None
    if args.notifications_config:
        try:
            config = load_config(args.notifications_config)
        except ConfigError as err:
            raise ValueError(str(err)) from None
    notifications.configure(config, cluster_name=args.cluster_name)


def _run_with_leader_election(args: argparse.Namespace, options: dict[str, Any]) -> int:
    """Wait for the Lease, run Kopf while holding it, release it after Kopf stopped."""
    import kopf

    from arbiter.handlers import telemetry
    from arbiter.k8s import leader

    try:
        config = leader.LeaseConfig(
            namespace=args.leader_election_namespace or leader.pod_namespace(),
            identity=args.leader_election_identity or leader.unique_identity(),
            name=args.leader_election_name,
            lease_duration=args.leader_election_lease_duration,
            renew_deadline=args.leader_election_renew_deadline,
            retry_period=args.leader_election_retry_period,
        )
    except ValueError as err:
        print(f"arbiter run: {err}", file=sys.stderr)
        return 2
    elector = leader.LeaderElector(config)
    stop = threading.Event()

    def request_stop(signum: int, _frame: Any) -> None:
        log.info("signal %s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    telemetry.LEADER.set(0)
    log.info("leader election on: lease %s/%s, identity %s", config.namespace, config.name, config.identity)
    health = _WaitingHealth(options["liveness_endpoint"]) if options["liveness_endpoint"] else None
    try:
        acquired = elector.acquire(stop)
    finally:
        if health is not None:
            health.close()
    if not acquired:
        log.info("stopped while waiting for the lease")
        return 0
    leader.install(elector)
    telemetry.LEADER.set(1)
    elector.start_renewing(_exit_now)

    @kopf.on.cleanup()
    def _unblock_stop_flag(**_: Any) -> None:
        # Kopf waits for a threading.Event stop flag in an executor thread; when a signal (not the
        # flag) stops it, that thread would block the event loop's shutdown forever.
        stop.set()

    try:
        # The stop flag covers a SIGTERM that arrives before Kopf installs its own signal handlers.
        kopf.run(**options, stop_flag=stop)
    finally:
        # Kopf has stopped (its daemons too): nothing writes after the release.
        leader.install(None)
        elector.release()
        telemetry.LEADER.set(0)
    return 0


def _exit_now(reason: str) -> None:
    """Leadership is lost: end the process at once, so not one more write goes out.

    A graceful stop would let running ticks finish their writes (Argo Rollouts #2117: an old leader
    that keeps writing after losing its lease). Kubernetes restarts the container, which then waits
    as a follower.
    """
    log.critical("leadership lost (%s); exiting now", reason)
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stderr.flush()
    os._exit(1)


class _WaitingHealth:
    """Answers the liveness URL with 200 while this replica waits for the lease (Kopf serves it after)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        path = parts.path or "/"

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                found = urlsplit(self.path).path == path
                body = b'{"leader": false, "state": "waiting for the lease"}\n' if found else b""
                self.send_response(200 if found else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # probes every few seconds: quiet
                pass

        self._server = ThreadingHTTPServer((parts.hostname or "0.0.0.0", parts.port or 80), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="waiting-health", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop serving and free the port for Kopf's own liveness server."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


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
