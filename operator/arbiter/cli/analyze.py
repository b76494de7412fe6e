"""`arbiter analyze`: offline analysis of logged predictions and outcomes."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from typing import Any


def register(subparsers: Any) -> None:
    """Add the `analyze` command."""
    parser = subparsers.add_parser(
        "analyze",
        help="analyse a log of predictions/outcomes (CSV, JSON lines or Parquet)",
        description=(
            "Compare every challenger with the control: sample-ratio check, fixed-horizon or sequential test, "
            "Holm-adjusted p-values, and optionally per-segment and per-time-cohort breakdowns. One row per "
            "request with a variant column and an outcome column."
        ),
    )
    parser.add_argument("file", help="CSV, JSON lines (.jsonl) or Parquet file")
    parser.add_argument("--variant-col", default="variant")
    parser.add_argument("--outcome-col", default="outcome")
    parser.add_argument(
        "--control", help="the control variant (default: 'control', else the largest variant)"
    )
    parser.add_argument(
        "--metric",
        choices=["proportion", "mean", "auto"],
        default="auto",
        help="auto: proportion when every outcome is 0 or 1",
    )
    parser.add_argument("--method", choices=["fixed", "sequential"], default="fixed")
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--sides", type=int, choices=[1, 2], default=2)
    parser.add_argument(
        "--direction", choices=["increase", "decrease"], default="increase", help="which way is better"
    )
    parser.add_argument(
        "--mde",
        type=float,
        default=0.05,
        help="relative MDE that sets the sequential mixing variance (default 0.05)",
    )
    parser.add_argument(
        "--power", type=float, default=0.8, help="power the extension of an inconclusive test plans for"
    )
    parser.add_argument("--expected-weights", help="configured split, e.g. v1=0.9,v2=0.1 (default: equal)")
    parser.add_argument("--srm-threshold", type=float, default=0.001)
    parser.add_argument("--segment-col", help="also compare within each segment (exploratory)")
    parser.add_argument(
        "--max-segments",
        type=int,
        default=50,
        help="show at most this many segments, the largest first (default 50); the rest are counted",
    )
    parser.add_argument("--time-col", help="timestamp column: per-cohort lift and, for sequential, looks")
    parser.add_argument("--looks", type=int, default=20, help="looks replayed over time for sequential")
    parser.add_argument("--cohort", choices=["auto", "hour", "day", "week"], default="auto")
    parser.add_argument(
        "--user-col",
        help="user (randomisation unit) column: judge users, not requests (delta method), report leakage",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)


MISSING_PYARROW = (
    "arbiter analyze: error: reading files needs pyarrow, which is not installed: "
    "pip install 'arbiter[analyze]'"
)
EXIT_INVALID = 3
"""Exit code when the sample-ratio check failed: the verdicts are void (2 is bad input)."""


class UsageError(Exception):
    """Bad input: reported as one line, exit code 2."""


def _parse_weights(text: str) -> dict[str, float]:
    weights: dict[str, float] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"--expected-weights wants name=weight pairs, got {part!r}")
        try:
            weights[name.strip()] = float(value)
        except ValueError as error:
            raise UsageError(f"--expected-weights: {value!r} is not a number") from error
    return weights


def run(args: argparse.Namespace) -> int:
    """Analyse the file and print the result; bad input gives one line on stderr and exit code 2."""
    try:
        from arbiter.cli._datasets import DatasetError, aggregate_file
    except ModuleNotFoundError as error:
        if (error.name or "").partition(".")[0] != "pyarrow":
            raise
        print(MISSING_PYARROW, file=sys.stderr)
        return 1

    started = time.perf_counter()
    try:
        if not (0.0 < args.alpha < 1.0):
            raise UsageError("--alpha must be between 0 and 1")
        if args.looks < 1:
            raise UsageError("--looks must be at least 1")
        if args.mde <= 0:
            raise UsageError("--mde must be positive")
        if not (0.0 < args.power < 1.0):
            raise UsageError("--power must be between 0 and 1")
        if args.max_segments < 1:
            raise UsageError("--max-segments must be at least 1")
        weights = _parse_weights(args.expected_weights) if args.expected_weights else None
        if args.user_col:
            from arbiter.cli._user_analysis import analyse_users

            report, by_variant = analyse_users(args, weights)
            period = report.get("period")
            span_days = None
            if period:
                # Users in the two arms over the log's period: the rate at which more units arrive.
                span_days = (_epoch(period["end"]) - _epoch(period["start"])) / 86400
            add_extensions(report, by_variant, args, span_days)
        else:
            aggregate = aggregate_file(
                args.file, args.variant_col, args.outcome_col, args.segment_col, args.time_col
            )
            report = _analyse(aggregate, args, weights)
    except (UsageError, DatasetError) as error:
        print(f"arbiter analyze: error: {error}", file=sys.stderr)
        return 2
    report["elapsed_seconds"] = round(time.perf_counter() - started, 3)
    leakage = report.get("leakage")
    if leakage and leakage["users"]:
        print(
            f"arbiter analyze: warning: {leakage['users']:,} users ({leakage['share']:.2%}) were seen in more "
            "than one variant (assignment leakage); they are left out of the analysis",
            file=sys.stderr,
        )
    segments = report.get("segments")
    if segments and segments["truncated"]:
        print(
            f"arbiter analyze: warning: column '{args.segment_col}' has {segments['total']:,} segments; "
            f"showing the {segments['shown']:,} largest (--max-segments)",
            file=sys.stderr,
        )
    try:
        if args.json:
            from arbiter.stats import json_value

            print(json.dumps(json_value(report), allow_nan=False))
        else:
            _print_human(report)
        sys.stdout.flush()
    except BrokenPipeError:
        # `arbiter analyze ... | head`: the reader has gone; say nothing more, and keep Python from
        # complaining about the unflushed stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    # A mismatched split makes every verdict suspect: no exit code may read as "valid result".
    return EXIT_INVALID if report["srm"]["mismatch"] else 0


def _stats_for(metric: str, n: float, total: float, squares: float) -> Any:
    from arbiter.stats import MeanStats, ProportionStats

    return ProportionStats(total, n) if metric == "proportion" else MeanStats(n, total, squares)


def choose_control(requested: str | None, sizes: dict[str, float], weights: dict[str, float] | None) -> str:
    """``--control``, else a variant named control, else the first weight's, else the largest variant."""
    if requested is not None:
        return requested
    if "control" in sizes:
        return "control"
    if weights and next(iter(weights)) in sizes:
        return next(iter(weights))
    return max(sizes, key=lambda name: sizes[name])


def _epoch(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def add_extensions(
    report: dict[str, Any], by_variant: dict[str, Any], args: argparse.Namespace, span_days: float | None
) -> None:
    """For each inconclusive comparison: how many more units (and days) until the test has its power.

    The required size is the fixed-horizon normal formula with the observed variances and split, at the
    MDE (``--mde``, relative to the control's value), ``--power``, and Holm's first step over the
    challengers (``alpha / k``); a sequential test plans for its inflation factor at ``--looks`` looks.
    Days assume the two arms keep arriving at their observed rate over the log's period.
    """
    from arbiter import stats

    control = report["control"]
    family = len(report["comparisons"])
    inflation = 1.0
    if args.method == "sequential":
        inflation = stats.sequential_inflation_factor(
            stats.Method.SEQUENTIAL, looks=args.looks, alpha=args.alpha, power=args.power, sides=args.sides
        )
    for row in report["comparisons"]:
        if row["decision"] != "Inconclusive":
            continue
        control_stats, treatment_stats = by_variant[control], by_variant[row["variant"]]
        daily = None
        if span_days:
            daily = (control_stats.n + treatment_stats.n) / span_days
        extension = stats.extension_needed(
            control_stats,
            treatment_stats,
            args.mde * abs(control_stats.mean),
            alpha=args.alpha,
            power=args.power,
            sides=args.sides,
            family_size=family,
            inflation_factor=inflation,
            daily_traffic=daily,
        )
        row["extend"] = {
            "unit": report.get("unit", "request"),
            "relative_mde": args.mde,
            **extension.to_dict(),
        }


def _analyse(aggregate: Any, args: argparse.Namespace, weights: dict[str, float] | None) -> dict[str, Any]:
    import numpy as np

    from arbiter import stats

    variants = aggregate.variants
    if len(variants) < 2:
        found = variants[0] if variants else "none"
        raise UsageError(f"need at least two variants in column '{args.variant_col}', found {found}")
    metric = args.metric
    if metric == "auto":
        metric = "proportion" if aggregate.binary else "mean"
    if metric == "proportion" and not aggregate.binary:
        raise UsageError(
            f"--metric proportion needs 0/1 outcomes, column '{args.outcome_col}' has other values"
        )
    variant_ids, segment_ids, buckets = aggregate.split_keys()
    per_variant = {
        name: (
            float(aggregate.n[variant_ids == i].sum()),
            float(aggregate.total[variant_ids == i].sum()),
            float(aggregate.squares[variant_ids == i].sum()),
        )
        for i, name in enumerate(variants)
    }
    control = choose_control(args.control, {name: v[0] for name, v in per_variant.items()}, weights)
    if control not in per_variant:
        raise UsageError(f"control variant {control!r} not found; variants: {', '.join(variants)}")
    challengers = [name for name in variants if name != control]

    assumed_equal = weights is None
    srm = stats.sample_ratio_mismatch(
        {name: per_variant[name][0] for name in variants},
        weights or dict.fromkeys(variants, 1.0),
        args.srm_threshold,
    )
    if srm.error:
        raise UsageError(f"sample-ratio check: {srm.error}")
    direction = stats.Direction(args.direction)
    alternative = stats.alternative_for(direction, args.sides)
    control_stats = _stats_for(metric, *per_variant[control])
    report: dict[str, Any] = {
        "file": args.file,
        "rows": aggregate.rows,
        "dropped_rows": aggregate.dropped_rows,
        "metric": metric,
        "method": args.method,
        "alpha": args.alpha,
        "sides": args.sides,
        "direction": args.direction,
        "control": control,
        "valid": True,
        "srm": {
            "p_value": srm.p_value,
            "mismatch": srm.mismatch,
            "threshold": srm.threshold,
            "observed": srm.observed,
            "expected": srm.expected,
            "weights": srm.weights,
            "assumed_equal_weights": assumed_equal,
        },
    }
    tau2 = (args.mde * control_stats.mean) ** 2
    treatment_stats = {name: _stats_for(metric, *per_variant[name]) for name in challengers}
    comparisons = _compare_all(control_stats, treatment_stats, args, alternative, direction, tau2)
    if args.method == "sequential" and args.time_col:
        _replay_looks(
            comparisons,
            aggregate,
            variant_ids,
            buckets,
            control,
            challengers,
            metric,
            args,
            alternative,
            tau2,
        )
    report["comparisons"] = comparisons

    if args.segment_col:
        pairs: list[tuple[str, dict[str, Any]]] = []
        for s_index, segment in enumerate(aggregate.segments):
            mask = segment_ids == s_index

            def cell(name: str, mask: Any = mask) -> Any:
                selected = mask & (variant_ids == variants.index(name))
                return _stats_for(
                    metric,
                    float(aggregate.n[selected].sum()),
                    float(aggregate.total[selected].sum()),
                    float(aggregate.squares[selected].sum()),
                )

            seg_control = cell(control)
            seg_rows = _compare_all(
                seg_control,
                {name: cell(name) for name in challengers},
                args,
                alternative,
                direction,
                (args.mde * seg_control.mean) ** 2 if seg_control.n else tau2,
                adjust=False,
            )
            pairs.extend((segment, row) for row in seg_rows)
        sizes: dict[str, float] = {}
        for s_index, segment in enumerate(aggregate.segments):
            sizes[segment] = float(aggregate.n[segment_ids == s_index].sum())
        report["segments"] = segment_section(pairs, sizes, args, direction)

    if srm.mismatch:
        _invalidate(report, srm.p_value)

    if args.time_col and aggregate.keys.size:
        report["cohorts"] = _cohorts(
            aggregate, variant_ids, buckets, control, challengers, metric, args, alternative
        )
    span_days = None
    if args.time_col and aggregate.keys.size:
        seconds = buckets * aggregate.resolution
        span_days = float(seconds.max() - seconds.min() + aggregate.resolution) / 86400
    add_extensions(report, {control: control_stats, **treatment_stats}, args, span_days)
    del np
    return report


def segment_section(
    pairs: list[tuple[str, dict[str, Any]]], sizes: dict[str, float], args: argparse.Namespace, direction: Any
) -> dict[str, Any]:
    """Holm across every segment x challenger, then the ``--max-segments`` largest segments (by size)."""
    from arbiter import stats

    rows = []
    adjusted = stats.holm([row["p_value"] for _, row in pairs])
    for (segment, row), p_adj in zip(pairs, adjusted, strict=True):
        row["p_value_adjusted"] = p_adj
        row["significant"] = math.isfinite(p_adj) and p_adj <= args.alpha
        row["decision"] = _decision_text(row, direction)
        rows.append({"segment": segment, **row})
    total_segments = len(sizes)
    kept = set(sorted(sizes, key=lambda name: -sizes[name])[: args.max_segments])
    return {
        "column": args.segment_col,
        "exploratory": True,
        "note": "exploratory: Holm-adjusted across every segment x challenger comparison",
        "total": total_segments,
        "shown": len(kept),
        "truncated": total_segments > len(kept),
        "comparisons": sorted(
            (row for row in rows if row["segment"] in kept), key=lambda row: -sizes[row["segment"]]
        ),
    }


def _invalidate(report: dict[str, Any], p_value: float) -> None:
    """A sample-ratio mismatch voids every verdict: the groups compared are not the ones assigned."""
    reason = (
        f"sample ratio mismatch (p={p_value:.3g}): the observed split does not match the weights, so the "
        "groups differ by more than the variant; fix the assignment or logging and rerun"
    )
    report["valid"] = False
    report["invalid_reason"] = reason
    rows = list(report["comparisons"]) + list((report.get("segments") or {}).get("comparisons", []))
    for row in rows:
        row["decision_if_valid"] = row["decision"]
        row["decision"] = "Invalid"


def _decision_text(row: dict[str, Any], direction: Any) -> str:
    from arbiter.stats import Direction

    if row.get("error"):
        return "Inconclusive"
    if not row["significant"]:
        return "Inconclusive"
    better = (
        row["absolute_difference"] > 0 if direction is Direction.INCREASE else row["absolute_difference"] < 0
    )
    return "Win" if better else "Loss"


def _compare_all(
    control: Any,
    treatments: dict[str, Any],
    args: argparse.Namespace,
    alternative: Any,
    direction: Any,
    tau2: float,
    adjust: bool = True,
) -> list[dict[str, Any]]:
    from arbiter import stats

    rows = []
    for name, treatment in treatments.items():
        if args.method == "sequential":
            result: Any = stats.msprt_test(
                control, treatment, tau2 if tau2 > 0 else None, args.alpha, alternative
            )
            test = "msprt"
        else:
            result = stats.compare_fixed(control, treatment, args.alpha, alternative)
            test = result.test
        rows.append(
            {
                "variant": name,
                "test": test,
                "n_control": result.n_control,
                "n_treatment": result.n_treatment,
                "control_value": result.control_value,
                "treatment_value": result.treatment_value,
                "absolute_difference": result.absolute_difference,
                "relative_lift": result.relative_lift,
                "ci_low": result.ci_low,
                "ci_high": result.ci_high,
                "relative_ci_low": result.relative_ci_low,
                "relative_ci_high": result.relative_ci_high,
                "p_value": result.p_value,
                "error": result.error,
            }
        )
    if adjust:
        for row, p_adj in zip(rows, stats.holm([row["p_value"] for row in rows]), strict=True):
            row["p_value_adjusted"] = p_adj
            row["significant"] = math.isfinite(p_adj) and p_adj <= args.alpha
            row["decision"] = _decision_text(row, direction)
    return rows


def _cumulative(aggregate: Any, selected: Any, metric: str) -> Any:
    return _stats_for(
        metric,
        float(aggregate.n[selected].sum()),
        float(aggregate.total[selected].sum()),
        float(aggregate.squares[selected].sum()),
    )


def _replay_looks(
    comparisons: list[dict[str, Any]],
    aggregate: Any,
    variant_ids: Any,
    buckets: Any,
    control: str,
    challengers: list[str],
    metric: str,
    args: argparse.Namespace,
    alternative: Any,
    tau2: float,
) -> None:
    """Replay the sequential test at ``--looks`` equally spaced times: where would it have stopped?"""
    import numpy as np

    from arbiter import stats

    seconds = buckets * aggregate.resolution
    start, end = int(seconds.min()), int(seconds.max()) + aggregate.resolution
    cuts = np.linspace(start, end, args.looks + 1)[1:]
    control_id = aggregate.variants.index(control)
    states: dict[str, Any] = dict.fromkeys(challengers)
    stopped: dict[str, dict[str, Any] | None] = dict.fromkeys(challengers)
    history: dict[str, list[dict[str, Any]]] = {name: [] for name in challengers}
    first_control = None
    for look, cut in enumerate(cuts, start=1):
        before = seconds < cut
        control_stats = _cumulative(aggregate, before & (variant_ids == control_id), metric)
        if first_control is None and control_stats.n > 0 and control_stats.mean != 0:
            first_control = control_stats.mean
        mixing = (args.mde * first_control) ** 2 if first_control else tau2
        p_values = []
        for name in challengers:
            treatment = _cumulative(
                aggregate, before & (variant_ids == aggregate.variants.index(name)), metric
            )
            result = stats.msprt_test(control_stats, treatment, mixing, args.alpha, alternative, states[name])
            states[name] = result.state
            p_values.append(result.p_value)
            history[name].append(
                {
                    "look": look,
                    "time": iso(float(cut)),
                    "n_control": result.n_control,
                    "n_treatment": result.n_treatment,
                    "p_value": result.p_value,
                    "ci_low": result.ci_low,
                    "ci_high": result.ci_high,
                }
            )
        for name, p_adj in zip(challengers, stats.holm(p_values), strict=True):
            history[name][-1]["p_value_adjusted"] = p_adj
            if stopped[name] is None and math.isfinite(p_adj) and p_adj <= args.alpha:
                stopped[name] = history[name][-1]
    direction = stats.Direction(args.direction)
    for row in comparisons:
        name = row["variant"]
        stop = stopped[name]
        # The always-valid p-value and confidence sequence are those of the replayed looks, not of one look.
        last = history[name][-1]
        row.update(p_value=last["p_value"], p_value_adjusted=last["p_value_adjusted"])
        row.update(ci_low=last["ci_low"], ci_high=last["ci_high"])
        row["significant"] = (
            math.isfinite(last["p_value_adjusted"]) and last["p_value_adjusted"] <= args.alpha
        )
        row["decision"] = _decision_text(row, direction)
        row["looks"] = history[name]
        row["stopped_at_look"] = None if stop is None else stop["look"]
        row["stopped_at_time"] = None if stop is None else stop["time"]
        row["stopped_n_treatment"] = None if stop is None else stop["n_treatment"]


def _cohorts(
    aggregate: Any,
    variant_ids: Any,
    buckets: Any,
    control: str,
    challengers: list[str],
    metric: str,
    args: argparse.Namespace,
    alternative: Any,
) -> dict[str, Any]:
    """Lift per time cohort and a weighted trend test: does the lift shrink over time (novelty)?"""
    import numpy as np
    from scipy import stats as sps

    from arbiter import stats

    seconds = buckets * aggregate.resolution
    span = int(seconds.max() - seconds.min()) + aggregate.resolution
    unit = args.cohort
    if unit == "auto":
        unit = "week" if span >= 21 * 86400 else "day" if span >= 3 * 86400 else "hour"
    length = {"hour": 3600, "day": 86400, "week": 7 * 86400}[unit]
    cohort_index = (seconds - int(seconds.min())) // length
    control_id = aggregate.variants.index(control)
    rows = []
    trends = []
    for name in challengers:
        variant_id = aggregate.variants.index(name)
        points = []
        for cohort in np.unique(cohort_index):
            in_cohort = cohort_index == cohort
            result = stats.compare_fixed(
                _cumulative(aggregate, in_cohort & (variant_ids == control_id), metric),
                _cumulative(aggregate, in_cohort & (variant_ids == variant_id), metric),
                args.alpha,
                alternative,
            )
            rows.append(
                {
                    "variant": name,
                    "cohort": int(cohort),
                    "cohort_start": iso(float(int(seconds.min()) + cohort * length)),
                    "n_control": result.n_control,
                    "n_treatment": result.n_treatment,
                    "absolute_difference": result.absolute_difference,
                    "relative_lift": result.relative_lift,
                    "ci_low": result.ci_low,
                    "ci_high": result.ci_high,
                    "p_value": result.p_value,
                    "error": result.error,
                }
            )
            if result.ok and result.std_error > 0:
                points.append((float(cohort), result.absolute_difference, result.std_error))
        trend: dict[str, Any] = {
            "variant": name,
            "cohorts": len(points),
            "slope_per_cohort": None,
            "p_value": None,
        }
        if len(points) >= 3:
            x, y, se = (np.array(column) for column in zip(*points, strict=True))
            w = 1.0 / se**2
            x_bar = np.sum(w * x) / np.sum(w)
            sxx = np.sum(w * (x - x_bar) ** 2)
            slope = float(np.sum(w * (x - x_bar) * y) / sxx)
            slope_se = float(1.0 / math.sqrt(sxx))
            p_value = float(2 * sps.norm.sf(abs(slope / slope_se)))
            first_sign = math.copysign(1.0, float(y[0])) if y[0] != 0 else 0.0
            shrinking = p_value <= args.alpha and first_sign != 0 and slope * first_sign < 0
            trend.update(
                slope_per_cohort=slope,
                slope_std_error=slope_se,
                p_value=p_value,
                novelty_effect=bool(shrinking),
            )
        trends.append(trend)
    return {
        "kind": "calendar",
        "column": args.time_col,
        "unit": unit,
        "note": "requests by calendar time (each request is its own unit); --user-col gives exposure cohorts",
        "comparisons": rows,
        "trend": trends,
    }


def iso(seconds: float) -> str:
    """Epoch seconds as ISO 8601 UTC (JSON output carries timestamps this way)."""
    from arbiter.cli._user_analysis import iso as to_iso

    return to_iso(seconds)


def _fmt(value: Any, spec: str = ".4g") -> str:
    from arbiter.stats import format_number  # the statistics load lazily: `arbiter --help` stays fast

    return format_number(value, spec, missing="-")


def _print_human(report: dict[str, Any]) -> None:
    srm = report["srm"]
    print(
        f"{report['file']}: {report['rows']:,} rows ({report['dropped_rows']:,} dropped), "
        f"{report['metric']} metric, {report['method']} test, alpha {report['alpha']:g}"
    )
    observed = ", ".join(f"{name} {count:,.0f}" for name, count in srm["observed"].items())
    weights_note = " (assumed equal weights)" if srm["assumed_equal_weights"] else ""
    verdict = (
        "MISMATCH: the split does not match the weights, results are suspect" if srm["mismatch"] else "ok"
    )
    unit_note = " (users)" if report.get("unit") == "user" else ""
    print(f"sample ratio{unit_note}{weights_note}: {observed}; p={_fmt(srm['p_value'])} -> {verdict}")
    if report.get("unit") == "user":
        leakage = report["leakage"]
        print(
            f"unit: user ({report['user_column']}), {report['users']:,} users; the ratio's variance by the "
            f"delta method; {leakage['users']:,} users ({leakage['share']:.2%}) seen in more than one "
            "variant, left out"
        )
    print(f"control: {report['control']}")
    header = f"{'variant':<16}{'n':>10}{'value':>11}{'diff':>11}{'lift':>9}{'CI (diff)':>24}{'p':>10}{'p adj':>10}  decision"
    print(header)
    for row in report["comparisons"]:
        ci = f"[{_fmt(row['ci_low'])}, {_fmt(row['ci_high'])}]"
        lift = _fmt(row["relative_lift"] * 100 if row["relative_lift"] is not None else None, ".2f") + "%"
        decision = {
            "Win": "WIN: significantly better than control",
            "Loss": "LOSS: significantly worse than control",
            "Inconclusive": "inconclusive: no significant difference",
            "Invalid": f"INVALID (sample ratio mismatch; would read {row.get('decision_if_valid')})",
        }[row["decision"]]
        if row.get("error") and row["decision"] != "Invalid":
            decision = f"inconclusive: {row['error']}"
        print(
            f"{row['variant']:<16}{row['n_treatment']:>10,.0f}{_fmt(row['treatment_value']):>11}"
            f"{_fmt(row['absolute_difference']):>11}{lift:>9}{ci:>24}{_fmt(row['p_value']):>10}"
            f"{_fmt(row['p_value_adjusted']):>10}  {decision}"
        )
        if "stopped_at_look" in row:
            where = (
                f"would have stopped at look {row['stopped_at_look']} of {len(row['looks'])}"
                if row["stopped_at_look"]
                else f"would not have stopped in {len(row['looks'])} looks"
            )
            print(f"{'':<16}sequential replay: {where}")
        extend = row.get("extend")
        if extend and not extend.get("error"):
            if extend["reached"]:
                print(
                    f"{'':<16}already has {_fmt(extend['power'], 'g')} power at the MDE: no difference that "
                    "large is there"
                )
            else:
                days = (
                    f", about {extend['days']:.1f} more days at the observed traffic"
                    if extend["days"] is not None
                    else " (pass --time-col for days)"
                )
                print(
                    f"{'':<16}extend: {extend['additional_total']:,} more {extend['unit']}s "
                    f"({extend['additional_control']:,} control, {extend['additional_treatment']:,} {row['variant']})"
                    f" for {_fmt(extend['power'], 'g')} power at a {_fmt(extend['relative_mde'] * 100, 'g')}% lift{days}"
                )
    print(
        f"control value {_fmt(report['comparisons'][0]['control_value'])}, "
        f"n {report['comparisons'][0]['n_control']:,.0f}"
    )
    if not report["valid"]:
        print(f"NO VALID VERDICT: {report['invalid_reason']}")
    if "segments" in report:
        segments = report["segments"]
        shown = (
            f"; the {segments['shown']:,} largest of {segments['total']:,}" if segments["truncated"] else ""
        )
        print(f"\nby {segments['column']} ({segments['note']}{shown}):")
        for row in report["segments"]["comparisons"]:
            print(
                f"  {row['segment']:<14}{row['variant']:<14}lift {_fmt(row['relative_lift'])}"
                f"  p adj {_fmt(row['p_value_adjusted'])}  {row['decision']}"
            )
    if "cohorts" in report:
        cohorts = report["cohorts"]
        kind = "exposure cohort: users by the " if cohorts.get("kind") == "exposure" else ""
        label = "first exposure" if kind else cohorts["column"]
        print(f"\nlift per {kind}{cohorts['unit']} ({label}):")
        for row in cohorts["comparisons"]:
            print(
                f"  {row['variant']:<14}{cohorts['unit']} {row['cohort']:<4} diff {_fmt(row['absolute_difference'])}"
                f"  CI [{_fmt(row['ci_low'])}, {_fmt(row['ci_high'])}]"
            )
        for trend in cohorts["trend"]:
            if trend["p_value"] is None:
                continue
            note = (
                "lift shrinks over time (novelty effect?)"
                if trend["novelty_effect"]
                else "no significant shrinking"
            )
            over = " since first exposure" if trend.get("over") == "exposure_age" else ""
            print(
                f"  trend {trend['variant']}: slope {_fmt(trend['slope_per_cohort'])} per {cohorts['unit']}{over},"
                f" p={_fmt(trend['p_value'])}: {note}"
            )
