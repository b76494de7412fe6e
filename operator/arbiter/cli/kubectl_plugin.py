"""`kubectl arbiter`: watch, read and steer ModelExperiments (installed as the `kubectl-arbiter` plugin).

    kubectl arbiter get [NAME] [-n NS | -A] [-o wide|json|yaml] [-w]   experiments; -w redraws in place
    kubectl arbiter status NAME                 the decision with its numbers, CIs, guardrails, history
    kubectl arbiter promote NAME [--variant V]  promote now (the variant is needed with several challengers)
    kubectl arbiter abort NAME                  roll back now
    kubectl arbiter retry NAME                  start over after a rollback or conclusion
    kubectl arbiter resume NAME                 resume after an automatic pause (SRM, loss, timeout)
    kubectl arbiter pause|unpause NAME          set spec.paused
    kubectl arbiter report NAME [-o FILE]       one self-contained HTML report (= `arbiter report`)
    kubectl arbiter plan ...                    sample size and duration (= `arbiter plan`)
    kubectl arbiter version                     the plugin's version
    kubectl arbiter completion bash|zsh|fish    shell completion code

`get NAME --watch` exits when the experiment is decided, with an exit code that says how, so scripts
and CI can wait on it: 0 Promoted, 1 RolledBack, 2 Concluded, 4 Failed (spec rejected), 5 --timeout
passed; 3 is any error (bad kubeconfig, unreachable server, missing experiment, an action that does
not apply in the experiment's phase, bad usage), 130 interrupted. Errors are one line on stderr.

Actions are the annotations documented in docs/rollout.md, with a fresh value each time, so they work
the same when applied from git.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn

ACTIONS = ("promote", "abort", "retry", "resume")

EXIT_PROMOTED = 0
EXIT_ROLLED_BACK = 1
EXIT_CONCLUDED = 2
EXIT_ERROR = 3
EXIT_FAILED = 4
EXIT_TIMEOUT = 5
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141
#: How `get NAME --watch` exits for each final phase.
EXIT_CODES = {
    "Promoted": EXIT_PROMOTED,
    "RolledBack": EXIT_ROLLED_BACK,
    "Concluded": EXIT_CONCLUDED,
    "Failed": EXIT_FAILED,
}

#: The phases in which each action means something (the operator ignores it elsewhere, with an Event).
APPLIES = {
    "promote": {"Progressing", "Paused"},
    "abort": {"Progressing", "Paused"},
    "retry": {"RolledBack", "Concluded"},
    "resume": {"Paused"},
    "pause": {"Pending", "Progressing", "Paused"},
    "unpause": {"Pending", "Progressing", "Paused"},
}


class UsageError(Exception):
    """Bad command-line usage: one line, exit code 3."""


class CommandError(Exception):
    """A request that cannot be carried out (not found, not applicable): one line, exit code 3."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors and exit code 3 instead of a usage block and 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _connection_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """kubectl's --kubeconfig, --context and -n, accepted before or after the command."""
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument("--kubeconfig", default=default, help="path to the kubeconfig file")
    parser.add_argument("--context", default=default, help="the kubeconfig context to use")
    parser.add_argument("-n", "--namespace", default=default, help="the namespace (default: the context's)")


def _names(prefix: str, parsed_args: argparse.Namespace, **_: Any) -> list[str]:
    """Shell completion of experiment names in the namespace (nothing when the cluster is unreachable)."""
    try:
        from arbiter.k8s import config, experiments

        config.configure(getattr(parsed_args, "kubeconfig", None), getattr(parsed_args, "context", None))
        namespace = getattr(parsed_args, "namespace", None) or experiments.current_namespace()
        names = [i["metadata"]["name"] for i in experiments.list_experiments(namespace)]
    except Exception:  # completion must never print an error into the user's command line
        return []
    return [n for n in names if n.startswith(prefix)]


def build_parser() -> argparse.ArgumentParser:
    """The plugin's parser."""
    from arbiter.cli import plan, report

    parser = _Parser(prog="kubectl arbiter", description=__doc__.splitlines()[0])
    _connection_options(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)

    get = sub.add_parser("get", help="list experiments, or show one; --watch redraws until it is decided")
    get.add_argument("name", nargs="?").completer = _names  # type: ignore[attr-defined]
    _connection_options(get, suppress=True)
    get.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")
    get.add_argument("-o", "--output", choices=["wide", "json", "yaml"], help="output format")
    get.add_argument(
        "-w",
        "--watch",
        action="store_true",
        help="redraw on every change; with NAME, exit when it is decided "
        "(0 Promoted, 1 RolledBack, 2 Concluded, 4 Failed)",
    )
    get.add_argument(
        "--timeout",
        type=_duration,
        help="with --watch NAME: give up after this long (e.g. 30m), exit code 5",
    )

    status = sub.add_parser("status", help="explain one experiment: numbers, CIs, guardrails, history")
    status.add_argument("name").completer = _names  # type: ignore[attr-defined]
    _connection_options(status, suppress=True)
    status.add_argument("-o", "--output", choices=["json", "yaml"], help="print the object instead")

    for action in ACTIONS:
        cmd = sub.add_parser(action, help=f"{action} an experiment (annotation arbiter.dev/{action})")
        cmd.add_argument("name").completer = _names  # type: ignore[attr-defined]
        _connection_options(cmd, suppress=True)
        if action == "promote":
            cmd.add_argument("--variant", help="the challenger to promote (needed with several)")
    for flag in ("pause", "unpause"):
        cmd = sub.add_parser(flag, help=f"set spec.paused to {flag == 'pause'}")
        cmd.add_argument("name").completer = _names  # type: ignore[attr-defined]
        _connection_options(cmd, suppress=True)

    report_parser = sub.add_parser("report", help="write a self-contained HTML report of one experiment")
    report.add_arguments(report_parser)
    _connection_options(report_parser, suppress=True)
    plan.register(sub)
    version = sub.add_parser("version", help="print the plugin's version")
    version.add_argument("-o", "--output", choices=["json"], help="print one JSON object")
    completion = sub.add_parser("completion", help="print the shell completion code")
    completion.add_argument("shell", choices=["bash", "zsh", "fish"])
    return parser


def _duration(text: str) -> float:
    from arbiter.api import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def main(argv: Sequence[str] | None = None) -> int:
    """Run the plugin. Errors are one line on stderr; never a traceback."""
    try:
        return _main(argv)
    except (UsageError, CommandError) as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        _write_stderr("\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, and keep the interpreter's final flush quiet too.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except Exception as exc:
        from arbiter.k8s.config import describe_error

        try:
            message = describe_error(exc)
        except Exception:  # describing must not fail either
            message = None
        return _fail(message or f"{type(exc).__name__}: {exc}".splitlines()[0])


def _fail(message: str) -> int:
    _write_stderr(f"error: {message}\n")
    return EXIT_ERROR


def _write_stderr(text: str) -> None:
    try:
        sys.stderr.write(text)
        sys.stderr.flush()
    except OSError:
        pass


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    import argcomplete

    argcomplete.autocomplete(parser)
    args = parser.parse_args(argv)
    if args.command == "plan":
        return int(args.func(args) or 0)
    if args.command == "version":
        return _version(args)
    if args.command == "completion":
        from argcomplete.shell_integration import shellcode

        print(shellcode(["kubectl-arbiter"], shell=args.shell))
        return 0

    from arbiter.k8s import config, experiments

    config.configure(args.kubeconfig, args.context)
    all_namespaces = getattr(args, "all_namespaces", False)
    namespace = None if all_namespaces else (args.namespace or experiments.current_namespace())
    if args.command == "get":
        if args.name and namespace is None:
            raise UsageError("a NAME needs a namespace: use -n, not -A")
        if args.watch:
            return _watch(args, namespace)
        return _get(args, namespace)
    assert namespace is not None
    body = experiments.get_experiment(namespace, args.name)
    if body is None:
        raise CommandError(f"modelexperiment {namespace}/{args.name} not found")
    if args.command == "report":
        return _report(args, body)
    if args.command == "status":
        return _status(args, body)
    return _act(args, namespace, body)


def _version(args: argparse.Namespace) -> int:
    import platform

    from arbiter import version as installed_version

    version = installed_version()
    if args.output == "json":
        print(
            json.dumps({"plugin": "kubectl-arbiter", "version": version, "python": platform.python_version()})
        )
    else:
        print(f"kubectl-arbiter {version} (python {platform.python_version()})")
    return 0


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _dump(obj: Any, output: str) -> str:
    if output == "json":
        return json.dumps(obj, indent=2)
    import yaml

    return str(yaml.safe_dump(obj, sort_keys=False)).rstrip("\n")


def _get(args: argparse.Namespace, namespace: str | None) -> int:
    from arbiter.cli import _plugin_view as view
    from arbiter.k8s import experiments

    if args.name:
        assert namespace is not None
        body = experiments.get_experiment(namespace, args.name)
        if body is None:
            raise CommandError(f"modelexperiment {namespace}/{args.name} not found")
        items = [body]
    else:
        items = experiments.list_experiments(namespace)
    if args.output in ("json", "yaml"):
        obj: Any = items[0] if args.name else {"apiVersion": "v1", "kind": "List", "items": items}
        print(_dump(obj, args.output))
        return 0
    if not items:
        where = "any namespace" if namespace is None else f"namespace {namespace}"
        _write_stderr(f"No modelexperiments found in {where}.\n")
        return 0
    print(view.list_table(items, show_namespace=namespace is None, wide=args.output == "wide", now=_now()))
    return 0


def _report(args: argparse.Namespace, body: dict[str, Any]) -> int:
    from pathlib import Path

    from arbiter.cli import report

    output = Path(args.output or f"{args.name}-report.html")
    report.write_report(body, output, args.prometheus_url)
    print(f"wrote {output}")
    return 0


def _status(args: argparse.Namespace, body: dict[str, Any]) -> int:
    from arbiter.cli import _plugin_view as view

    if args.output:
        print(_dump(body, args.output))
        return 0
    print(view.experiment_view(body, _now()) + view.history_and_conditions(body.get("status") or {}))
    return 0


class _Screen:
    """Draws frames that changed: in place on a terminal (the previous frame is erased), else appended
    one after the other, each under a line with the time (for CI logs)."""

    def __init__(self) -> None:
        self.tty = sys.stdout.isatty()
        self.lines = 0
        self.last: str | None = None

    def draw(self, frame: str, footer: str) -> None:
        if frame == self.last:
            return
        if self.tty:
            text = f"{frame}\n\n{footer}"
            if self.lines:
                sys.stdout.write(f"\x1b[{self.lines}F\x1b[J")  # up to the frame's first line, clear below
            columns = max(1, shutil.get_terminal_size().columns)
            self.lines = sum(max(1, -(-len(line) // columns)) for line in text.split("\n"))
        else:
            text = f"--- {_now().strftime('%Y-%m-%dT%H:%M:%SZ')} ---\n{frame}"
            if self.last is not None:
                text = "\n" + text
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
        self.last = frame


def _watch(args: argparse.Namespace, namespace: str | None) -> int:
    from arbiter.cli import _plugin_view as view
    from arbiter.k8s import experiments

    if args.output in ("json", "yaml"):
        raise UsageError("--watch draws tables; use -o wide or no -o")
    screen = _Screen()
    deadline = time.monotonic() + args.timeout if args.timeout else None
    updates = _reconnecting(
        lambda: experiments.watch_experiments(namespace, args.name, timeout_seconds=_watch_window(deadline)),
        deadline,
    )
    seen = False
    for items in updates:
        if args.name:
            if not items:
                if seen:
                    raise CommandError(f"modelexperiment {namespace}/{args.name} was deleted")
                raise CommandError(f"modelexperiment {namespace}/{args.name} not found")
            seen = True
            body = items[0]
            phase = (body.get("status") or {}).get("phase")
            final = phase in EXIT_CODES
            footer = f"decided: {phase}" if final else "watching; exits when decided (Ctrl-C to stop)"
            screen.draw(view.experiment_view(body, _now()), footer)
            if final:
                return EXIT_CODES[str(phase)]
        else:
            table = (
                view.list_table(
                    items, show_namespace=namespace is None, wide=args.output == "wide", now=_now()
                )
                if items
                else "No modelexperiments found."
            )
            screen.draw(table, "watching (Ctrl-C to stop)")
        if deadline is not None and time.monotonic() >= deadline:
            break
    _write_stderr(f"error: not decided within {args.timeout:g}s\n")
    return EXIT_TIMEOUT


#: How long `--watch` keeps trying to get its connection back before giving up with an error.
RECONNECT_SECONDS = 300.0


def _reconnecting(
    open_updates: Callable[[], Iterator[list[dict[str, Any]]]],
    deadline: float | None,
    *,
    give_up_after: float = RECONNECT_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[list[dict[str, Any]]]:
    """The updates of a watch that survives a lost connection (an API server restart, a network blip).

    Until the first update arrives an error ends the watch at once (a wrong server should fail fast);
    after that, a transient error is retried with a growing pause (1 s up to 10 s) for up to
    ``give_up_after`` seconds; the updates end when ``deadline`` passes while reconnecting. The whole set
    is yielded again after each reconnection.
    """
    from arbiter.k8s.config import is_transient

    connected = False
    failing_since: float | None = None
    pause = 1.0
    while True:
        try:
            for items in open_updates():
                connected, failing_since, pause = True, None, 1.0
                yield items
            return  # pragma: no cover - watch_experiments never ends by itself
        except Exception as exc:
            if not connected or not is_transient(exc):
                raise
            now = time.monotonic()
            failing_since = now if failing_since is None else failing_since
            if deadline is not None and now >= deadline:
                return  # the caller reports its timeout
            if now - failing_since >= give_up_after:
                raise
            _write_stderr(f"lost the watch ({type(exc).__name__}); reconnecting\n")
            sleep(pause)
            pause = min(10.0, pause * 2)


def _watch_window(deadline: float | None) -> int:
    """Seconds each watch request stays open: short enough to notice --timeout passing."""
    if deadline is None:
        return 60
    return max(1, min(10, int(deadline - time.monotonic()) + 1))


def _act(args: argparse.Namespace, namespace: str, body: dict[str, Any]) -> int:
    """An action, after checking that it applies in the experiment's phase."""
    from arbiter.k8s import experiments

    name = args.name
    status = body.get("status") or {}
    spec = body.get("spec") or {}
    phase = status.get("phase") or "Pending"
    command = args.command
    if phase not in APPLIES[command]:
        hints = {
            "retry": "retry applies after a rollback or conclusion",
            "resume": "resume applies to a Paused experiment",
        }
        hint = hints.get(command, f"{command} applies while it is {' or '.join(sorted(APPLIES[command]))}")
        raise CommandError(f"cannot {command} modelexperiment {namespace}/{name}: it is {phase} ({hint})")
    if command == "resume" and status.get("pauseReason") == "Spec":
        raise CommandError(
            f"cannot resume modelexperiment {namespace}/{name}: it is paused by spec.paused (use unpause)"
        )
    if command in ("pause", "unpause"):
        paused = command == "pause"
        if bool(spec.get("paused")) == paused:
            raise CommandError(
                f"modelexperiment {namespace}/{name} is already {'paused' if paused else 'unpaused'}"
            )
        experiments.patch_experiment(namespace, name, {"spec": {"paused": paused}})
        print(f"modelexperiment {namespace}/{name} {command}d")
        return 0
    value = str(time.time_ns())
    if command == "promote":
        challengers = [c.get("name") for c in spec.get("challengers") or []]
        if args.variant is not None and args.variant not in challengers:
            raise CommandError(
                f"--variant {args.variant} is not a challenger of {name} ({', '.join(challengers)})"
            )
        if args.variant is None and len(challengers) > 1:
            raise CommandError(
                f"{name} has several challengers: name one with --variant ({', '.join(challengers)})"
            )
        value = args.variant or value
    experiments.patch_experiment(
        namespace, name, {"metadata": {"annotations": {f"arbiter.dev/{command}": value}}}
    )
    print(f"modelexperiment {namespace}/{name}: {command} requested (arbiter.dev/{command}={value})")
    return 0


def complete_main(argv: Sequence[str] | None = None) -> int:
    """`kubectl_complete-arbiter`: the completions kubectl asks a plugin for (kubectl 1.26+).

    kubectl runs it with the words after ``kubectl arbiter``, the last one being the word under the
    cursor, and expects one completion per line followed by a Cobra directive line (``:4``: no file
    completion).
    """
    from argcomplete.finders import CompletionFinder

    words = list(sys.argv[1:] if argv is None else argv)
    prefix = words.pop() if words else ""
    finder = CompletionFinder(build_parser(), always_complete_options="long")
    try:
        found = finder._get_completions(["kubectl-arbiter", *words], prefix, "", None)  # type: ignore[no-untyped-call]
    except Exception:  # completion must never print an error into the user's command line
        found = []
    for completion in found:
        print(completion.rstrip())
    print(":4")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
