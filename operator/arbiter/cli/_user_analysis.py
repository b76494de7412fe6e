"""`arbiter analyze --user-col`: judge users, the randomised unit, not their requests.

Requests of one user are correlated (a user who converts once converts again), so a request-level test
understates the variance and finds differences that are not there. Here each user contributes a
numerator (successes, or a value's sum) and a denominator (requests); the metric is the ratio of the
sums and its variance is the delta method's (``arbiter.stats.RatioStats``), so every test runs on the
number of users. Users seen in more than one variant (assignment leakage) are counted, reported and
left out: their outcomes mix two treatments.
"""

from __future__ import annotations

import argparse
import math
from datetime import UTC, datetime
from typing import Any

import numpy as np

from arbiter.cli._users import UserAggregate, age_buckets, aggregate_users, user_buckets

COHORT_SECONDS = {"hour": 3600, "day": 86400, "week": 7 * 86400}


def iso(seconds: float) -> str:
    """Epoch seconds as an ISO 8601 UTC timestamp (``2026-01-01T00:00:00Z``)."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def cohort_unit(requested: str, span_seconds: float) -> str:
    """``hour``/``day``/``week``: the requested one, or chosen from the span for ``auto``."""
    if requested != "auto":
        return requested
    return "week" if span_seconds >= 21 * 86400 else "day" if span_seconds >= 3 * 86400 else "hour"


def weighted_trend(points: list[tuple[float, float, float]], alpha: float) -> dict[str, Any]:
    """Inverse-variance weighted slope of ``(x, estimate, std_error)`` points and its two-sided p-value.

    ``novelty_effect`` is True when the slope is significant and points towards zero from the first
    point's sign (the effect shrinks).
    """
    from scipy import stats as sps

    trend: dict[str, Any] = {"points": len(points), "slope_per_cohort": None, "p_value": None}
    if len(points) < 3:
        return trend
    x, y, se = (np.array(column) for column in zip(*points, strict=True))
    w = 1.0 / se**2
    x_bar = np.sum(w * x) / np.sum(w)
    sxx = float(np.sum(w * (x - x_bar) ** 2))
    if sxx <= 0:
        return trend
    slope = float(np.sum(w * (x - x_bar) * y) / sxx)
    slope_se = 1.0 / math.sqrt(sxx)
    p_value = float(2 * sps.norm.sf(abs(slope / slope_se)))
    first_sign = math.copysign(1.0, float(y[0])) if y[0] != 0 else 0.0
    shrinking = p_value <= alpha and first_sign != 0 and slope * first_sign < 0
    trend.update(
        slope_per_cohort=slope, slope_std_error=slope_se, p_value=p_value, novelty_effect=bool(shrinking)
    )
    return trend


def _ratio(numerators: Any, denominators: Any) -> Any:
    from arbiter.stats import RatioStats

    return RatioStats.from_units(numerators, denominators)


def analyse_users(args: argparse.Namespace, weights: dict[str, float] | None) -> tuple[dict[str, Any], Any]:
    """The user-level report, and each variant's user-level statistics (for the extension)."""
    from arbiter import stats
    from arbiter.cli.analyze import UsageError, _compare_all, _invalidate, choose_control

    segmented = aggregate_users(
        args.file, args.variant_col, args.outcome_col, args.user_col, args.time_col, args.segment_col
    )
    agg = segmented.without_segments()
    variants = agg.variants
    if len(variants) < 2:
        found = variants[0] if variants else "none"
        raise UsageError(f"need at least two variants in column '{args.variant_col}', found {found}")
    metric = args.metric
    if metric == "auto":
        metric = "proportion" if agg.binary else "mean"
    if metric == "proportion" and not agg.binary:
        raise UsageError(
            f"--metric proportion needs 0/1 outcomes, column '{args.outcome_col}' has other values"
        )
    leaked_user = agg.variants_per_user() > 1
    kept = ~leaked_user[agg.user]
    users_total = len(agg.users)
    leaked = int(leaked_user.sum())
    leakage = {
        "users": leaked,
        "share": leaked / users_total if users_total else 0.0,
        "requests": float(agg.n[~kept].sum()),
        "handling": "excluded: a user seen in several variants had a mix of treatments",
    }
    per_variant = {
        name: _ratio(agg.total[kept & (agg.variant == i)], agg.n[kept & (agg.variant == i)])
        for i, name in enumerate(variants)
    }
    control = choose_control(args.control, {name: r.units for name, r in per_variant.items()}, weights)
    if control not in per_variant:
        raise UsageError(f"control variant {control!r} not found; variants: {', '.join(variants)}")
    challengers = [name for name in variants if name != control]
    srm = stats.sample_ratio_mismatch(
        {name: per_variant[name].units for name in variants},
        weights or dict.fromkeys(variants, 1.0),
        args.srm_threshold,
    )
    if srm.error:
        raise UsageError(f"sample-ratio check (users): {srm.error}")
    direction = stats.Direction(args.direction)
    alternative = stats.alternative_for(direction, args.sides)
    as_means = {name: ratio.as_mean_stats() for name, ratio in per_variant.items()}
    tau2 = (args.mde * per_variant[control].ratio) ** 2
    comparisons = _compare_all(
        as_means[control], {name: as_means[name] for name in challengers}, args, alternative, direction, tau2
    )
    for row in comparisons:
        row["test"] = f"delta method ({row['test']} on linearised per-user values)"
        row["requests_control"] = per_variant[control].sum_n
        row["requests_treatment"] = per_variant[row["variant"]].sum_n
    report: dict[str, Any] = {
        "file": args.file,
        "rows": agg.rows,
        "dropped_rows": agg.dropped_rows,
        "metric": metric,
        "unit": "user",
        "user_column": args.user_col,
        "users": users_total,
        "method": args.method,
        "alpha": args.alpha,
        "sides": args.sides,
        "direction": args.direction,
        "control": control,
        "valid": True,
        "leakage": leakage,
        "srm": {
            "unit": "user",
            "p_value": srm.p_value,
            "mismatch": srm.mismatch,
            "threshold": srm.threshold,
            "observed": srm.observed,
            "expected": srm.expected,
            "weights": srm.weights,
            "assumed_equal_weights": weights is None,
        },
        "comparisons": comparisons,
    }
    if args.segment_col:
        report["segments"] = _user_segments(segmented, leaked_user, control, challengers, args, alternative)
    if args.method == "sequential" and args.time_col and agg.first.size:
        _replay_user_looks(comparisons, agg, leaked_user, control, challengers, args, alternative)
    if srm.mismatch:
        _invalidate(report, srm.p_value)
    if args.time_col and agg.first.size:
        start, end = int(agg.first.min()), int(agg.last.max()) + 1
        report["period"] = {"start": iso(start), "end": iso(end)}
        report["cohorts"] = _exposure_cohorts(agg, kept, leaked_user, control, challengers, args, start, end)
    return report, as_means


def _user_segments(
    segmented: UserAggregate,
    leaked_user: Any,
    control: str,
    challengers: list[str],
    args: argparse.Namespace,
    alternative: Any,
) -> dict[str, Any]:
    """Per segment, users of that segment (with their requests in it); sized by users."""
    from arbiter import stats
    from arbiter.cli.analyze import _compare_all, segment_section

    direction = stats.Direction(args.direction)
    kept = ~leaked_user[segmented.user]
    pairs: list[tuple[str, dict[str, Any]]] = []
    sizes: dict[str, float] = {}
    for s_index, segment in enumerate(segmented.segments):
        here = kept & (segmented.segment == s_index)
        sizes[segment] = float(np.unique(segmented.user[here]).size)

        def cell(name: str, here: Any = here) -> Any:
            chosen = here & (segmented.variant == segmented.variants.index(name))
            return _ratio(segmented.total[chosen], segmented.n[chosen])

        seg_control = cell(control)
        rows = _compare_all(
            seg_control.as_mean_stats(),
            {name: cell(name).as_mean_stats() for name in challengers},
            args,
            alternative,
            direction,
            (args.mde * seg_control.ratio) ** 2 if seg_control.units else 0.0,
            adjust=False,
        )
        pairs.extend((segment, row) for row in rows)
    section = segment_section(pairs, sizes, args, direction)
    section["unit"] = "user"
    return section


def _replay_user_looks(
    comparisons: list[dict[str, Any]],
    agg: UserAggregate,
    leaked_user: Any,
    control: str,
    challengers: list[str],
    args: argparse.Namespace,
    alternative: Any,
) -> None:
    """The sequential test at ``--looks`` equally spaced times, on the users seen so far at each look.

    As ``analyze``'s request-level replay: the always-valid p-value and confidence sequence carried over
    the looks, Holm across the challengers at every look, ``stopped_at_look`` the first look at which the
    adjusted p-value reached alpha. The mixing variance is frozen from the control at the first look.
    """
    from arbiter import stats
    from arbiter.cli.analyze import _decision_text

    start, end = int(agg.first.min()), int(agg.last.max()) + 1
    cuts = np.linspace(start, end, args.looks + 1)[1:]

    def look_of(seconds: Any, _first: Any) -> Any:
        return np.searchsorted(cuts, seconds, side="right")

    users, variant, look, n, total = user_buckets(
        args.file, agg, args.variant_col, args.outcome_col, args.user_col, args.time_col, look_of
    )
    kept = ~leaked_user[users]
    pair = users * (1 << 10) + variant
    ids = {name: agg.variants.index(name) for name in [control, *challengers]}
    states: dict[str, Any] = dict.fromkeys(challengers)
    history: dict[str, list[dict[str, Any]]] = {name: [] for name in challengers}
    stopped: dict[str, dict[str, Any] | None] = dict.fromkeys(challengers)
    mixing = None
    for index, cut in enumerate(cuts):
        upto = kept & (look <= index)
        unique, inverse = np.unique(pair[upto], return_inverse=True)
        y = np.bincount(inverse, weights=total[upto], minlength=unique.size)
        count = np.bincount(inverse, weights=n[upto], minlength=unique.size)
        of_variant = unique % (1 << 10)

        def cell(name: str, y: Any = y, count: Any = count, of_variant: Any = of_variant) -> Any:
            chosen = of_variant == ids[name]
            return _ratio(y[chosen], count[chosen])

        control_ratio = cell(control)
        if mixing is None and control_ratio.units > 0 and control_ratio.ratio:
            mixing = (args.mde * control_ratio.ratio) ** 2
        p_values = []
        for name in challengers:
            result = stats.msprt_test(
                control_ratio.as_mean_stats(),
                cell(name).as_mean_stats(),
                mixing,
                args.alpha,
                alternative,
                states[name],
            )
            states[name] = result.state
            p_values.append(result.p_value)
            history[name].append(
                {
                    "look": index + 1,
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
        last, stop = history[name][-1], stopped[name]
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


def _compare_cells(
    cells: dict[int, tuple[Any, Any]], alpha: float, alternative: Any
) -> list[tuple[int, Any]]:
    from arbiter import stats

    return [
        (key, stats.compare_fixed(c.as_mean_stats(), t.as_mean_stats(), alpha, alternative))
        for key, (c, t) in sorted(cells.items())
    ]


def _exposure_cohorts(
    agg: UserAggregate,
    kept: Any,
    leaked_user: Any,
    control: str,
    challengers: list[str],
    args: argparse.Namespace,
    start: int,
    end: int,
) -> dict[str, Any]:
    """Lift per exposure cohort, and the trend of the lift over time since first exposure (novelty)."""
    from arbiter import stats

    unit = cohort_unit(args.cohort, end - start)
    length = COHORT_SECONDS[unit]
    alternative = stats.alternative_for(stats.Direction(args.direction), args.sides)
    first_seen = agg.first_exposure()
    cohort_of_pair = (first_seen[agg.user] - start) // length
    control_id = agg.variants.index(control)
    users, variant, age, n, total = age_buckets(
        args.file, agg, args.variant_col, args.outcome_col, args.user_col, args.time_col, length
    )
    age_kept = ~leaked_user[users]
    rows: list[dict[str, Any]] = []
    trends: list[dict[str, Any]] = []
    for name in challengers:
        variant_id = agg.variants.index(name)
        cells: dict[int, tuple[Any, Any]] = {}
        for cohort in np.unique(cohort_of_pair[kept]):
            here = kept & (cohort_of_pair == cohort)
            c, t = here & (agg.variant == control_id), here & (agg.variant == variant_id)
            cells[int(cohort)] = (_ratio(agg.total[c], agg.n[c]), _ratio(agg.total[t], agg.n[t]))
        for cohort, result in _compare_cells(cells, args.alpha, alternative):
            rows.append(
                {
                    "variant": name,
                    "cohort": cohort,
                    "cohort_start": iso(start + cohort * length),
                    "users_control": result.n_control,
                    "users_treatment": result.n_treatment,
                    "absolute_difference": result.absolute_difference,
                    "relative_lift": result.relative_lift,
                    "ci_low": result.ci_low,
                    "ci_high": result.ci_high,
                    "p_value": result.p_value,
                    "error": result.error,
                }
            )
        by_age: dict[int, tuple[Any, Any]] = {}
        for bucket in np.unique(age[age_kept]):
            here = age_kept & (age == bucket)
            c, t = here & (variant == control_id), here & (variant == variant_id)
            by_age[int(bucket)] = (_ratio(total[c], n[c]), _ratio(total[t], n[t]))
        points = []
        ages = []
        for bucket, result in _compare_cells(by_age, args.alpha, alternative):
            ages.append(
                {
                    "variant": name,
                    "exposure_age": bucket,
                    "users_control": result.n_control,
                    "users_treatment": result.n_treatment,
                    "absolute_difference": result.absolute_difference,
                    "ci_low": result.ci_low,
                    "ci_high": result.ci_high,
                }
            )
            if result.ok and result.std_error > 0:
                points.append((float(bucket), result.absolute_difference, result.std_error))
        trend = weighted_trend(points, args.alpha)
        trends.append({"variant": name, "over": "exposure_age", "by_exposure_age": ages, **trend})
    return {
        "kind": "exposure",
        "column": args.time_col,
        "unit": unit,
        "note": (
            f"users grouped by the {unit} of their first exposure; the novelty trend is the lift over "
            f"{unit}s since each user's first exposure"
        ),
        "comparisons": rows,
        "trend": trends,
    }
