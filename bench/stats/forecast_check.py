"""Check the decision forecast (arbiter.stats.forecast) against simulated experiments.

Proportion, baseline 15%, MDE +10% relative (fixed n = 9,254 per arm), alpha 0.05 two-sided, 10 units per
second per arm. For each design the forecast is made once per run at 20% of n (the runs already
decided by then are counted and left out), then the run is simulated to its verdict with the design's
own vectorised boundaries, looking every 1% of n (mSPRT: continuous monitoring up to 4 n; group
sequential: a look every 5% of n, OBF spending; fixed: one look at n). Reported:

- ``time_at_mde``: runs whose true effect is the MDE: the median relative error of the forecast time,
  ``(actual - forecast) / forecast`` per run, and the ratio of the median actual time to the median
  forecast (the forecast is a median, so that ratio is what it promises to be ~1);
- ``calibration``: runs whose true relative effect is uniform in [-0.5, 2] x MDE: the forecast P(win)
  (at the observed effect, what the status shows) in five bins against the share that won, with the
  Brier score, and the same for P(win) at the true effect (which should be calibrated).

Usable alone (``python bench/stats/forecast_check.py --runs 300``) or from bench_stats.py.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from typing import Any

import numpy as np

from arbiter.stats import (
    ChallengerState,
    DecisionConfig,
    Method,
    MetricType,
    ProportionStats,
    SequentialState,
    group_sequential_boundaries,
    msprt_z_boundary,
    sample_size_proportion,
)
from arbiter.stats.forecast import forecast_decision

BASELINE, MDE, ALPHA, RATE = 0.15, 0.10, 0.05, 10.0
START_FRACTION, STEP_FRACTION, SEQUENTIAL_CAP = 0.20, 0.01, 4.0
GS_LOOK = 0.05


def _simulate_paths(
    rng: np.random.Generator, p_treatment: np.ndarray, sizes: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative successes per arm at each size, shape (runs, looks)."""
    steps = np.diff(np.concatenate([[0], sizes]))
    control = np.cumsum(rng.binomial(steps[None, :], BASELINE, (len(p_treatment), len(steps))), axis=1)
    treatment = np.cumsum(
        rng.binomial(steps[None, :], p_treatment[:, None], (len(p_treatment), len(steps))), axis=1
    )
    return control, treatment


def _verdicts(
    method: Method, control: np.ndarray, treatment: np.ndarray, sizes: np.ndarray, n_fixed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Index of the deciding look (-1: never) and whether it was a Win, per run."""
    n = sizes[None, :].astype(float)
    pc, pt = control / n, treatment / n
    variance = np.maximum(pc * (1 - pc) / n + pt * (1 - pt) / n, 1e-12)
    d = pt - pc
    z = d / np.sqrt(variance)
    m = BASELINE * MDE
    if method is Method.SEQUENTIAL:
        radius = np.sqrt(variance) * msprt_z_boundary(variance, m**2, ALPHA)
        win = d - radius > 0
        stop = win | (d + radius < m)
    elif method is Method.GROUP_SEQUENTIAL:
        fractions = sizes / n_fixed
        bounds = np.asarray(group_sequential_boundaries(list(fractions), ALPHA, 2).z)
        win = z >= bounds[None, :]
        stop = win | (z <= -bounds[None, :])
        stop[:, -1] = True
    else:
        win = np.zeros_like(z, dtype=bool)
        win[:, -1] = z[:, -1] >= 1.959963984540054
        stop = np.zeros_like(win)
        stop[:, -1] = True
    first = np.where(stop.any(axis=1), stop.argmax(axis=1), -1)
    won = np.where(first >= 0, win[np.arange(len(first)), np.maximum(first, 0)], False)
    return first, won


def _schedule(method: Method, n_fixed: int) -> np.ndarray:
    if method is Method.SEQUENTIAL:
        return np.round(
            n_fixed * STEP_FRACTION * np.arange(1, int(SEQUENTIAL_CAP / STEP_FRACTION) + 1)
        ).astype(np.int64)
    if method is Method.GROUP_SEQUENTIAL:
        return np.round(n_fixed * GS_LOOK * np.arange(1, int(1 / GS_LOOK) + 1)).astype(np.int64)
    return np.array([int(START_FRACTION * n_fixed), n_fixed], dtype=np.int64)


def check_method(
    method: Method, rng: np.random.Generator, runs: int, relative_effects: np.ndarray
) -> dict[str, Any]:
    """Forecast at 20% of n, then simulate; per-run forecast and actual decision times and outcomes."""
    n_fixed = int(sample_size_proportion(BASELINE, MDE, alpha=ALPHA).sample_size_per_variant)
    sizes = _schedule(method, n_fixed)
    start = int(np.argmin(np.abs(sizes - START_FRACTION * n_fixed)))
    p_treatment = BASELINE * (1 + relative_effects)
    control, treatment = _simulate_paths(rng, p_treatment, sizes)
    first, won = _verdicts(method, control, treatment, sizes, n_fixed)
    config = DecisionConfig(
        metric=MetricType.PROPORTION,
        mde=MDE,
        baseline=BASELINE,
        method=method,
        planned_sample_size=None if method is Method.SEQUENTIAL else n_fixed,
        max_duration_seconds=None,
    )
    state = ChallengerState(
        sequential=SequentialState(mixing_variance=(BASELINE * MDE) ** 2),
        information_fractions=tuple(float(s / n_fixed) for s in sizes[: start + 1])
        if method is Method.GROUP_SEQUENTIAL
        else (),
    )
    n_start = int(sizes[start])
    rows = []
    for run in range(runs):
        if first[run] != -1 and first[run] <= start:
            continue  # decided before the forecast
        c, t = ProportionStats(control[run, start], n_start), ProportionStats(treatment[run, start], n_start)
        # The simulated mSPRT looks every 1% of n, i.e. every STEP_FRACTION * n / RATE seconds.
        interval = STEP_FRACTION * n_fixed / RATE if method is Method.SEQUENTIAL else None
        common = {"rate_control": RATE, "rate_treatment": RATE, "look_interval_seconds": interval}
        forecast = forecast_decision(c, t, config, state, **common)
        oracle = forecast_decision(
            c, t, config, state, assumed_effect=float(p_treatment[run] - BASELINE), **common
        )
        if forecast.error is not None:
            continue
        actual = None if first[run] < 0 else float(sizes[first[run]] - n_start) / RATE
        rows.append(
            (
                forecast.seconds_to_decision,
                actual,
                forecast.conditional_power,
                oracle.conditional_power,
                bool(won[run]),
            )
        )
    return {"rows": rows, "decided_before_forecast": int(np.sum((first != -1) & (first <= start)))}


def _calibration(predicted: np.ndarray, outcome: np.ndarray) -> dict[str, Any]:
    edges = np.linspace(0, 1, 6)
    bins = []
    for low, high in itertools.pairwise(edges):
        inside = (predicted >= low) & ((predicted < high) | (high == 1.0))
        if inside.any():
            bins.append(
                {
                    "bin": f"{low:.1f}-{high:.1f}",
                    "runs": int(inside.sum()),
                    "mean_predicted": round(float(predicted[inside].mean()), 3),
                    "share_won": round(float(outcome[inside].mean()), 3),
                }
            )
    return {"brier": round(float(np.mean((predicted - outcome) ** 2)), 4), "bins": bins}


def forecast_check(runs: int, seed: int) -> dict[str, Any]:
    """The forecast's accuracy per design (see the module docstring); one JSON-ready dict."""
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {"runs": runs, "rate_per_arm": RATE, "forecast_at_fraction_of_n": START_FRACTION}
    for method in (Method.SEQUENTIAL, Method.GROUP_SEQUENTIAL, Method.FIXED_HORIZON):
        at_mde = check_method(method, rng, runs, np.full(runs, MDE))
        pairs = np.array([(f, a) for f, a, *_ in at_mde["rows"] if a is not None and f and f > 0])
        relative = (pairs[:, 1] - pairs[:, 0]) / pairs[:, 0]
        spread = check_method(method, rng, runs, rng.uniform(-0.5, 2.0, runs) * MDE)
        rows = spread["rows"]
        predicted = np.array([r[2] for r in rows])
        oracle = np.array([r[3] for r in rows])
        outcome = np.array([1.0 if r[4] else 0.0 for r in rows])
        out[method.value] = {
            "time_at_mde": {
                "runs": len(pairs),
                "decided_before_forecast": at_mde["decided_before_forecast"],
                "median_relative_error": round(float(np.median(relative)), 4),
                "median_absolute_relative_error": round(float(np.median(np.abs(relative))), 4),
                "median_actual_over_median_forecast": round(
                    float(np.median(pairs[:, 1]) / np.median(pairs[:, 0])), 4
                ),
                "median_forecast_seconds": round(float(np.median(pairs[:, 0])), 1),
            },
            "calibration": {
                "runs": len(rows),
                "p_win_at_observed_effect": _calibration(predicted, outcome),
                "p_win_at_true_effect": _calibration(oracle, outcome),
            },
        }
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--seed", type=int, default=20240602)
    args = parser.parse_args()
    print(json.dumps(forecast_check(args.runs, args.seed)))


if __name__ == "__main__":
    main()
