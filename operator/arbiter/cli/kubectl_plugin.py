"""`kubectl arbiter`: read and steer ModelExperiments (installed as the `kubectl-arbiter` plugin).

    kubectl arbiter get [NAME] [-n NS | -A]     one line per experiment
    kubectl arbiter status NAME [-n NS]         phase, weights, decision, guardrails, statistics, history
    kubectl arbiter promote NAME [--variant V]  promote now (the variant is needed with several challengers)
    kubectl arbiter abort NAME                  roll back now
    kubectl arbiter retry NAME                  start over after a rollback or conclusion
    kubectl arbiter resume NAME                 resume after an automatic pause (SRM, loss, timeout)
    kubectl arbiter pause|unpause NAME          set spec.paused

Actions are the annotations documented in docs/rollout.md, with a fresh value each time, so they work
the same when applied from git.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Any

ACTIONS = ("promote", "abort", "retry", "resume")


def build_parser() -> argparse.ArgumentParser:
    """The plugin's parser."""
    parser = argparse.ArgumentParser(prog="kubectl arbiter", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    get = sub.add_parser("get", help="list experiments")
    get.add_argument("name", nargs="?")
    scope = get.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace")
    scope.add_argument("-A", "--all-namespaces", action="store_true")
    status = sub.add_parser("status", help="explain one experiment")
    status.add_argument("name")
    status.add_argument("-n", "--namespace")
    for action in ACTIONS:
        cmd = sub.add_parser(action, help=f"{action} an experiment (annotation arbiter.dev/{action})")
        cmd.add_argument("name")
        cmd.add_argument("-n", "--namespace")
        if action == "promote":
            cmd.add_argument("--variant", help="the challenger to promote (needed with several)")
    for flag in ("pause", "unpause"):
        cmd = sub.add_parser(flag, help=f"set spec.paused to {flag == 'pause'}")
        cmd.add_argument("name")
        cmd.add_argument("-n", "--namespace")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the plugin; errors are one line on stderr and exit code 1."""
    args = build_parser().parse_args(argv)
    from kubernetes.client.exceptions import ApiException

    from arbiter.k8s import experiments

    try:
        namespace = (
            None
            if getattr(args, "all_namespaces", False)
            else (args.namespace or experiments.current_namespace())
        )
        if args.command == "get":
            items = experiments.list_experiments(namespace)
            if args.name:
                items = [i for i in items if i["metadata"]["name"] == args.name]
            print(_table(items, show_namespace=namespace is None))
            return 0 if items or not args.name else 1
        assert namespace is not None
        if args.command == "status":
            body = experiments.get_experiment(namespace, args.name)
            if body is None:
                print(f"error: modelexperiment {namespace}/{args.name} not found", file=sys.stderr)
                return 1
            print(_explain(body))
            return 0
        if args.command in ("pause", "unpause"):
            experiments.patch_experiment(namespace, args.name, {"spec": {"paused": args.command == "pause"}})
            print(f"modelexperiment {namespace}/{args.name} {args.command}d")
            return 0
        value = getattr(args, "variant", None) or str(time.time_ns())
        experiments.patch_experiment(
            namespace, args.name, {"metadata": {"annotations": {f"arbiter.dev/{args.command}": value}}}
        )
        print(
            f"modelexperiment {namespace}/{args.name}: {args.command} requested (arbiter.dev/{args.command}={value})"
        )
        return 0
    except ApiException as exc:
        print(f"error: {exc.status} {exc.reason}: {_api_message(exc)}", file=sys.stderr)
        return 1


def _api_message(exc: Any) -> str:
    import json

    try:
        return str(json.loads(exc.body).get("message", ""))
    except Exception:  # not a Status object: show the raw body
        return str(exc.body or "")


def _table(items: list[dict[str, Any]], show_namespace: bool) -> str:
    header = (["NAMESPACE"] if show_namespace else []) + [
        "NAME",
        "MODE",
        "PHASE",
        "STEP",
        "WEIGHTS",
        "DECISION",
    ]
    rows = [header]
    for item in items:
        status = item.get("status") or {}
        weights = ",".join(f"{v}={w}" for v, w in (status.get("weights") or {}).items())
        row = [
            item["metadata"]["name"],
            item["spec"].get("mode", ""),
            status.get("phase", "-"),
            str(status.get("currentStep", "-")),
            weights or "-",
            (status.get("decision") or {}).get("outcome", "-"),
        ]
        rows.append(([item["metadata"]["namespace"]] if show_namespace else []) + row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def _explain(body: dict[str, Any]) -> str:
    status = body.get("status") or {}
    meta = body["metadata"]
    lines = [
        f"{meta['namespace']}/{meta['name']}  mode {body['spec'].get('mode')}  phase {status.get('phase', '-')}"
        + (f" ({status['pauseReason']})" if status.get("pauseReason") else ""),
        f"step {status.get('currentStep', '-')}  weights "
        + ", ".join(f"{v} {w}%" for v, w in (status.get("weights") or {}).items()),
    ]
    decision = status.get("decision") or {}
    if decision:
        lines.append(f"decision: {decision.get('outcome')}: {decision.get('reason', '')}")
    for guardrail in status.get("guardrails") or []:
        lines.append(
            f"guardrail {guardrail.get('name')}/{guardrail.get('variant')}: {guardrail.get('reason', '')}"
        )
    analysis = status.get("analysis") or {}
    primary = analysis.get("primary") or {}
    for result in primary.get("results", []):
        lines.append(
            f"primary {primary.get('metric')} ({primary.get('method')}) {result.get('variant')}: "
            f"{result.get('verdict')}  n={result.get('nControl')}/{result.get('nTreatment')}  "
            f"lift={_num(result.get('relativeLift'))}  p={_num(result.get('pValue'))}"
        )
    srm = analysis.get("srm")
    if srm:
        lines.append(
            f"sample ratio ({srm.get('method', 'ChiSquare')}): p={_num(srm.get('pValue'))} "
            f"observed={srm.get('observed')} expected={srm.get('expected')}"
        )
    for condition in status.get("conditions") or []:
        lines.append(f"condition {condition['type']}={condition['status']} ({condition.get('reason', '')})")
    for entry in status.get("history") or []:
        lines.append(f"{entry['time']}  {entry['from']} -> {entry['to']}: {entry.get('reason', '')}")
    return "\n".join(lines)


def _num(value: Any) -> str:
    return "n/a" if value is None else f"{float(value):.4g}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
