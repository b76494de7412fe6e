"""`arbiter plan`: how many units an experiment needs, and for how long."""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any


def register(subparsers: Any) -> None:
    """Add the `plan` command."""
    parser = subparsers.add_parser(
        "plan",
        help="sample size per variant and expected duration for an experiment",
        description=(
            "Sample size per variant (normal approximation, unpooled variances) for a proportion or a mean, "
            "the expected duration at a daily traffic, and how much more a sequential design needs."
        ),
    )
    parser.add_argument("--metric", choices=["proportion", "mean"], default="proportion")
    parser.add_argument("--baseline", type=float, help="baseline rate of a proportion metric, e.g. 0.15")
    parser.add_argument("--baseline-mean", type=float, help="baseline mean of a mean metric")
    parser.add_argument("--baseline-std", type=float, help="baseline standard deviation of a mean metric")
    parser.add_argument(
        "--mde",
        type=float,
        required=True,
        help="minimum detectable effect: relative (0.10 = +10%%) unless --absolute",
    )
    parser.add_argument(
        "--absolute",
        action="store_true",
        default=None,
        help="the MDE is absolute (default for --metric mean)",
    )
    parser.add_argument("--relative", dest="absolute", action="store_false", help="the MDE is relative")
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--power", type=float, default=0.8)
    parser.add_argument("--sides", type=int, choices=[1, 2], default=2)
    parser.add_argument(
        "--allocation",
        type=float,
        default=None,
        help=(
            "each challenger's share of the experiment's traffic (default: an even split, 0.5 for one "
            "challenger; 0.05 for a 5%% canary)"
        ),
    )
    parser.add_argument(
        "--challengers",
        type=int,
        default=1,
        help=(
            "challengers compared with the champion (default 1): the operator judges them as one Holm "
            "family, so each comparison is planned at alpha / K"
        ),
    )
    parser.add_argument("--direction", choices=["increase", "decrease"], default="increase")
    parser.add_argument("--daily-traffic", type=float, help="units a day entering the experiment")
    parser.add_argument(
        "--looks", type=int, default=20, help="looks for the sequential inflation (default 20)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)


def _fail(message: str) -> int:
    print(f"arbiter plan: error: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    """Compute and print the plan."""
    from arbiter import stats

    k = args.challengers
    if k < 1:
        return _fail("--challengers must be at least 1")
    share = args.allocation if args.allocation is not None else 1.0 / (k + 1)
    champion_share = 1.0 - k * share
    if k > 1 and not (share > 0.0 and champion_share > 0.0):
        return _fail(
            f"--allocation {share:g} for each of {k} challengers leaves the champion {champion_share:g} "
            "of the traffic; it needs a positive share"
        )
    # Each challenger is compared with the champion alone: what matters is its share of the two arms.
    pair_allocation = share / (share + champion_share) if k > 1 else share
    plan_alpha = stats.family_alpha(args.alpha, k) if 0.0 < args.alpha < 1.0 else args.alpha
    if args.metric == "proportion":
        if args.baseline is None:
            return _fail("--metric proportion needs --baseline (the control's rate, e.g. 0.15)")
        relative = not args.absolute if args.absolute is not None else True
        plan = stats.sample_size_proportion(
            args.baseline,
            args.mde,
            relative=relative,
            alpha=plan_alpha,
            power=args.power,
            sides=args.sides,
            allocation=pair_allocation,
            direction=args.direction,
            daily_traffic=args.daily_traffic,
        )
    else:
        if args.baseline_std is None:
            return _fail("--metric mean needs --baseline-std (and --baseline-mean for a relative MDE)")
        relative = args.absolute is False
        if relative and args.baseline_mean is None:
            return _fail("a relative MDE needs --baseline-mean")
        plan = stats.sample_size_mean(
            args.baseline_mean if args.baseline_mean is not None else 0.0,
            args.baseline_std,
            args.mde,
            relative=relative,
            alpha=plan_alpha,
            power=args.power,
            sides=args.sides,
            allocation=pair_allocation,
            direction=args.direction,
            daily_traffic=args.daily_traffic,
        )
    if plan.error:
        return _fail(plan.error)
    if args.looks < 1:
        return _fail("--looks must be at least 1")

    sequential: dict[str, Any] = {}
    for method in (stats.Method.SEQUENTIAL, stats.Method.GROUP_SEQUENTIAL):
        factor = stats.sequential_inflation_factor(
            method, looks=args.looks, alpha=plan_alpha, power=args.power, sides=args.sides
        )
        sequential[method.value] = {
            "looks": args.looks,
            "inflation_factor": round(factor, 4),
            "max_sample_size_per_variant": math.ceil(plan.exact_per_variant * factor),
        }
    output: dict[str, Any] = {
        "metric": plan.metric.value.lower(),
        "control_value": _tidy(plan.control_value),
        "treatment_value": _tidy(plan.treatment_value),
        "absolute_mde": _tidy(plan.absolute_mde),
        "relative_mde": _tidy(plan.relative_mde),
        "alpha": args.alpha,
        "power": plan.power,
        "sides": plan.sides,
        "allocation": share,
        "sample_size_per_variant": plan.sample_size_per_variant,
        "sample_size_by_variant": plan.sample_size_by_variant,
        "total_sample_size": plan.total_sample_size,
        "formula": "normal approximation, unpooled variances",
        "sequential": sequential,
    }
    if k > 1:
        by_variant = plan.sample_size_by_variant
        output["challengers"] = k
        output["family_correction"] = {
            "method": "Holm",
            "planned_at": "Holm's first step, alpha / K (Bonferroni): every challenger keeps its power",
            "alpha_per_comparison": plan_alpha,
        }
        output["sample_size_by_variant"] = {
            "control": by_variant["control"],
            **{f"challenger-{i}": by_variant["treatment"] for i in range(1, k + 1)},
        }
        output["sample_size_per_variant"] = min(by_variant.values())
        output["total_sample_size"] = by_variant["control"] + k * by_variant["treatment"]
        output["alpha_per_comparison"] = plan_alpha
    if plan.daily_traffic is not None and plan.daily_traffic > 0:
        output["daily_traffic"] = plan.daily_traffic
        output["days"] = round(output["total_sample_size"] / plan.daily_traffic, 3)
    if args.json:
        print(json.dumps(stats.json_value(output)))
        return 0
    _print_human(output)
    return 0


def _tidy(value: float) -> float:
    """Drop binary noise such as 0.16499999999999998 (12 significant digits are plenty)."""
    return float(f"{value:.12g}")


def _print_human(plan: dict[str, Any]) -> None:
    metric = plan["metric"]
    relative = plan["relative_mde"]
    relative_text = f"{relative:.2%}" if math.isfinite(relative) else "n/a"
    print(
        f"{metric} metric: control {plan['control_value']:.6g} -> challenger {plan['treatment_value']:.6g} "
        f"(absolute change {plan['absolute_mde']:.4g}, relative {relative_text})"
    )
    print(
        f"alpha {plan['alpha']:g} ({plan['sides']}-sided), power {plan['power']:g}, "
        f"challenger share {plan['allocation']:g}"
    )
    k = plan.get("challengers", 1)
    if k > 1:
        by_variant = plan["sample_size_by_variant"]
        print(
            f"{k} challengers, one Holm family: each compared with the champion at alpha "
            f"{plan['alpha_per_comparison']:.4g} (alpha / {k}), so each keeps its power"
        )
        control, challenger = by_variant["control"], by_variant["challenger-1"]
        arms = (
            f"{challenger:,} per variant"
            if control == challenger
            else f"control {control:,}, each challenger {challenger:,}"
        )
        print(f"fixed horizon: {arms}, {plan['total_sample_size']:,} in total")
        if "days" in plan:
            print(f"expected duration: {plan['days']:.1f} days at {plan['daily_traffic']:,.0f} units a day")
        for method, design in plan["sequential"].items():
            print(
                f"{method} ({design['looks']} looks): plan for up to {design['inflation_factor']:.2f}x, "
                f"{design['max_sample_size_per_variant']:,} in the smaller arm"
            )
        return
    by_variant = plan["sample_size_by_variant"]
    if by_variant["control"] == by_variant["treatment"]:
        arms = f"{plan['sample_size_per_variant']:,} per variant"
    else:
        # An uneven split: "per variant" would be wrong for one of the two arms.
        smaller = "challenger" if by_variant["treatment"] < by_variant["control"] else "control"
        arms = (
            f"{plan['sample_size_per_variant']:,} in the smaller arm ({smaller}); "
            f"control {by_variant['control']:,}, challenger {by_variant['treatment']:,}"
        )
    print(f"fixed horizon: {arms}, {plan['total_sample_size']:,} in total")
    if "days" in plan:
        print(f"expected duration: {plan['days']:.1f} days at {plan['daily_traffic']:,.0f} units a day")
    for method, design in plan["sequential"].items():
        print(
            f"{method} ({design['looks']} looks): plan for up to {design['inflation_factor']:.2f}x, "
            f"{design['max_sample_size_per_variant']:,} in the smaller arm"
        )
