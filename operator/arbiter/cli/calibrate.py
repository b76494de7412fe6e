"""`arbiter calibrate`: the false-rollback rate of a test and its guardrails, estimated on A/A history."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Any

EXIT_USAGE = 2


class CalibrationError(Exception):
    """Bad input: one line on stderr, exit code 2."""


def register(subparsers: Any) -> None:
    """Add the `calibrate` command."""
    parser = subparsers.add_parser(
        "calibrate",
        help="estimate the false-rollback rate of a test and its guardrails on A/A history",
        description=(
            "Replay the experiment's test and guardrails, tick by tick as the operator decides, on many "
            "random re-assignments of the units of an A/A history (a prediction log of one model, or of "
            "an A/A experiment) into champion and challenger: every rollback is a false one. Prints the "
            "false-rollback rate with a 95%% interval, by cause. The test comes from --spec (a "
            "ModelExperiment YAML) or from the flags."
        ),
    )
    parser.add_argument("file", help="CSV, JSON lines or Parquet history (the log `arbiter analyze` reads)")
    parser.add_argument("--outcome-col", default="outcome", help="the primary metric's outcome column")
    parser.add_argument(
        "--user-col", help="assign users, as the sticky router does (default: every request on its own)"
    )
    parser.add_argument("--time-col", help="timestamp column: ticks over time (default: row order)")
    parser.add_argument("--variant-col", default="variant")
    parser.add_argument("--variant", help="use only this variant's rows (e.g. the champion's history)")
    parser.add_argument("--spec", help="ModelExperiment YAML: its primary metric, test, guardrails and step")
    parser.add_argument("--metric", choices=["proportion", "mean", "auto"], default="auto")
    parser.add_argument("--direction", choices=["increase", "decrease"], default="increase")
    parser.add_argument("--mde", type=float, default=0.05, help="relative MDE (default 0.05)")
    parser.add_argument("--method", choices=["sequential", "fixed", "group-sequential"], default="sequential")
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--power", type=float, default=0.8)
    parser.add_argument(
        "--guardrail",
        action="append",
        default=[],
        metavar="NAME:COLUMN:increase=M[,decrease=M][,limit=N][,critical]",
        help="a rate guardrail on a 0/1 or numeric column, judged by the harm test (repeatable)",
    )
    parser.add_argument(
        "--guardrail-col",
        action="append",
        default=[],
        metavar="NAME=COLUMN",
        help="with --spec: the column holding a guardrail's outcome (default: its name)",
    )
    parser.add_argument(
        "--share", type=float, help="the challenger's share of units (default 0.5, or the spec's first step)"
    )
    parser.add_argument("--ticks", type=int, default=20, help="analysis ticks over the history (default 20)")
    parser.add_argument("--replicates", type=int, default=200, help="pseudo-experiments (default 200)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)


def _guardrail_flag(text: str) -> tuple[Any, str]:
    from arbiter.stats import GuardrailRule, MetricType

    name, _, rest = text.partition(":")
    column, _, options = rest.partition(":")
    if not name or not column or not options:
        raise CalibrationError(f"--guardrail wants NAME:COLUMN:increase=M[,...], got {text!r}")
    values: dict[str, Any] = {"failure_limit": 1, "critical": False}
    for option in options.split(","):
        key, sep, value = option.partition("=")
        try:
            if key == "critical" and not sep:
                values["critical"] = True
            elif key in ("increase", "decrease"):
                values[f"max_{key}"] = float(value)
            elif key == "limit":
                values["failure_limit"] = int(value)
            else:
                raise ValueError
        except ValueError as error:
            raise CalibrationError(f"--guardrail {text!r}: cannot read {option!r}") from error
    if "max_increase" not in values and "max_decrease" not in values:
        raise CalibrationError(f"--guardrail {text!r} needs increase=M or decrease=M (the harm margin)")
    # The metric kind is settled once the column is read (0/1 values: a proportion).
    return GuardrailRule(name=name, metric=MetricType.PROPORTION, **values), column


def _from_spec(path: str, args: argparse.Namespace) -> tuple[Any, list[tuple[Any, str]], float]:
    """The primary metric's DecisionConfig as the engine builds it, the rate guardrails, the share."""
    import yaml
    from pydantic import ValidationError

    from arbiter.api.v1alpha1 import parse_spec
    from arbiter.rollout.primary import decision_config
    from arbiter.stats import GuardrailRule, MetricType

    try:
        with open(path, encoding="utf-8") as handle:
            documents = [d for d in yaml.safe_load_all(handle) if isinstance(d, dict)]
    except (OSError, yaml.YAMLError) as error:
        raise CalibrationError(f"cannot read --spec {path}: {error}") from error
    found = [d for d in documents if d.get("kind") == "ModelExperiment"]
    if not found:
        raise CalibrationError(f"--spec {path} has no ModelExperiment")
    try:
        spec = parse_spec(found[0].get("spec") or {})
    except ValidationError as error:
        raise CalibrationError(f"--spec {path}: {error.errors()[0]['msg']}") from error
    if spec.analysis.primary is None:
        raise CalibrationError(f"--spec {path} has no primary metric")
    config = decision_config(spec, spec.analysis.primary)
    columns = dict(item.partition("=")[::2] for item in args.guardrail_col)
    rules = []
    for guardrail in spec.analysis.guardrails:
        if guardrail.rate is None:
            # Absolute bounds read a Prometheus query each tick; they cannot be replayed from a log.
            continue
        if guardrail.max_increase_over_champion is None and guardrail.max_decrease_from_champion is None:
            continue
        rule = GuardrailRule(
            name=guardrail.name,
            metric=MetricType(guardrail.rate.type.value),
            max_increase=guardrail.max_increase_over_champion,
            max_decrease=guardrail.max_decrease_from_champion,
            failure_limit=guardrail.failure_limit,
            critical=guardrail.critical,
        )
        rules.append((rule, columns.get(guardrail.name, guardrail.name)))
    share = 0.5
    if spec.steps:
        share = spec.steps[0].weight / 100 / max(len(spec.challengers), 1)
    return config, rules, share


def _from_flags(args: argparse.Namespace) -> tuple[Any, list[tuple[Any, str]], float]:
    from arbiter.stats import DecisionConfig, Direction, Method, MetricType

    method = {"sequential": "Sequential", "fixed": "FixedHorizon", "group-sequential": "GroupSequential"}
    config = DecisionConfig(
        metric=MetricType.PROPORTION,  # settled from the data below unless --metric says
        direction=Direction(args.direction),
        mde=args.mde,
        alpha=args.alpha,
        power=args.power,
        method=Method(method[args.method]),
    )
    error = config.validation_error()
    if error and "planned_sample_size" not in error:
        raise CalibrationError(error)
    return config, [_guardrail_flag(text) for text in args.guardrail], 0.5


def run(args: argparse.Namespace) -> int:
    """Replay, then print the estimate; bad input is one line and exit code 2."""
    try:
        from arbiter.cli._calibration_history import read_history
        from arbiter.cli._datasets import DatasetError
    except ModuleNotFoundError as error:
        if (error.name or "").partition(".")[0] != "pyarrow":
            raise
        print(
            "arbiter calibrate: error: reading files needs pyarrow: pip install 'arbiter[analyze]'",
            file=sys.stderr,
        )
        return 1
    from dataclasses import replace

    from arbiter import stats

    try:
        if args.ticks < 1 or args.replicates < 1:
            raise CalibrationError("--ticks and --replicates must be at least 1")
        config, rules, share = _from_spec(args.spec, args) if args.spec else _from_flags(args)
        if args.share is not None:
            share = args.share
        history, kinds, meta = read_history(
            args.file,
            args.outcome_col,
            [(rule.name, column) for rule, column in rules],
            user_col=args.user_col,
            time_col=args.time_col,
            variant_col=args.variant_col if args.variant else None,
            variant=args.variant,
            ticks=args.ticks,
        )
        binary = kinds[args.outcome_col]
        if not args.spec:
            metric = args.metric if args.metric != "auto" else ("proportion" if binary else "mean")
            config = replace(config, metric=stats.MetricType(metric.capitalize()))
        if config.metric is stats.MetricType.PROPORTION and not binary:
            raise CalibrationError(f"a proportion metric needs 0/1 outcomes in '{args.outcome_col}'")
        guardrails = [
            rule
            if args.spec
            else replace(rule, metric=stats.MetricType.PROPORTION if kinds[column] else stats.MetricType.MEAN)
            for rule, column in rules
        ]
        result = stats.calibrate(history, config, guardrails, share, args.replicates, args.seed)
        if result.error:
            raise CalibrationError(result.error)
    except (CalibrationError, DatasetError) as error:
        print(f"arbiter calibrate: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    report = {
        "file": args.file,
        **meta,
        "unit": "user" if args.user_col else "request",
        "share": share,
        "test": {
            "metric": config.metric.value,
            "method": config.method.value,
            "direction": config.direction.value,
            "mde": config.mde,
            "alpha": config.alpha,
            "power": config.power,
        },
        "guardrails": [
            {
                "name": rule.name,
                "column": column,
                "metric": rule.metric.value,
                "max_increase": rule.max_increase,
                "max_decrease": rule.max_decrease,
                "failure_limit": rule.failure_limit,
                "critical": rule.critical,
            }
            for rule, (_, column) in zip(guardrails, rules, strict=True)
        ],
        **{key: value for key, value in result.to_dict().items() if key not in ("outcomes", "error")},
    }
    try:
        if args.json:
            print(json.dumps(stats.json_value(report), allow_nan=False))
        else:
            _print_human(report)
        sys.stdout.flush()
    except BrokenPipeError:
        # `arbiter calibrate ... | head`: the reader has gone; end quietly, as analyze does.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    return 0


def _print_human(report: dict[str, Any]) -> None:
    test = report["test"]
    print(
        f"{report['file']}: {report['rows']:,} rows, {report['units']:,} {report['unit']}s, "
        f"{report['ticks']} ticks; challenger share {report['share']:g}"
    )
    print(
        f"test: {test['metric']} {test['method']}, MDE {test['mde']:g} (relative), alpha {test['alpha']:g}; "
        f"guardrails: {', '.join(g['name'] for g in report['guardrails']) or 'none'}"
    )
    n = report["replicates"]
    rate = report["false_rollback_rate"]
    low, high = report["false_rollback_ci_low"], report["false_rollback_ci_high"]
    print(
        f"false-rollback rate: {rate:.1%} (95% CI {low:.1%}-{high:.1%}) over {n:,} A/A pseudo-experiments: "
        f"{report['rolled_back_by_guardrail']} by a guardrail, {report['rolled_back_by_loss']} by a Loss"
    )
    print(
        f"harm shown (guardrail or Loss) in {report['harm_only_rate']:.1%}; false promotions "
        f"{report['false_promotion_rate']:.1%}; concluded {report['concluded']}, undecided {report['undecided']}"
    )
    median = report["median_rollback_tick"]
    if median is not None and math.isfinite(median):
        print(f"median tick of a false rollback: {median:g} of {report['ticks']}")
