"""Simulation benchmark of Arbiter's sequential methods; prints one JSON object as its last line.

Every design monitors a two-arm proportion experiment (baseline 15%, MDE +10% relative, alpha 0.05
two-sided, power 0.8) whose fixed-horizon size n comes from ``sample_size_proportion``:

- ``naive``: a z-test at each of ``looks`` equally spaced looks up to n, stopping at the first p < alpha;
- ``group_sequential``: the same looks with Lan-DeMets O'Brien-Fleming boundaries (spending to n);
- ``sequential``: the mSPRT (mixing variance = MDE^2) at ``looks`` equally spaced looks up to the
  maximum sample ``sequential_inflation_factor`` says keeps 80% power; it stops at the first
  always-valid p <= alpha;
- ``fixed``: one look at n.

Then the sample-ratio check: correct 50/50 and 95/5 splits watched over 500 cumulative looks (100 units
each), the share ever flagged at threshold 0.001 by a chi-square at every look and by the anytime-valid
sequential test (``srm_false_alarm_rate``).

Data are simulated as binomial counts per look (vectorised), and the library's own vectorised mSPRT
and boundary functions make the decisions. A run that never stops uses its design's maximum sample.
``samples_ratio_*`` is the mean sample at the decision divided by n. Then a 10-million-row Parquet
file is generated under .bench/ (kept between runs) and ``arbiter analyze`` is timed on it.

``forecast`` checks the decision forecast against simulated experiments (forecast_check.py): the median
relative error of its time to a decision at the MDE and the calibration of its P(win).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from forecast_check import forecast_check  # bench/stats/forecast_check.py (this script's directory)
from scipy import stats as sps

from arbiter.stats import (
    group_sequential_boundaries,
    msprt_p_value,
    multinomial_log_likelihood_ratio,
    sample_size_proportion,
    sequential_inflation_factor,
)

BASELINE = 0.15
MDE = 0.10
ALPHA = 0.05
POWER = 0.8


def simulate(rng, runs, sizes, p_control, p_treatment):
    """Cumulative successes per arm at each look, shape (runs, looks)."""
    increments = np.diff(np.concatenate([[0], sizes]))
    control = rng.binomial(increments, p_control, size=(runs, len(sizes))).cumsum(axis=1)
    treatment = rng.binomial(increments, p_treatment, size=(runs, len(sizes))).cumsum(axis=1)
    return control, treatment


def first_stop(reject, sizes):
    """Index of the first rejecting look (or -1) and the sample used (the maximum when never stopped)."""
    stopped = reject.any(axis=1)
    index = np.where(stopped, reject.argmax(axis=1), -1)
    used = np.where(stopped, sizes[np.maximum(index, 0)], sizes[-1])
    return index, used


def pooled_z(control, treatment, n):
    pc, pt = control / n, treatment / n
    pooled = (control + treatment) / (2 * n)
    se = np.sqrt(pooled * (1 - pooled) * 2 / n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(se > 0, (pt - pc) / se, 0.0)


def run_design(design, rng, runs, looks, n_fixed, p_treatment, bounds, seq_sizes, tau2):
    if design == "fixed":
        sizes = np.array([n_fixed])
    elif design == "sequential":
        sizes = seq_sizes
    else:
        sizes = np.round(n_fixed * np.arange(1, looks + 1) / looks).astype(np.int64)
    control, treatment = simulate(rng, runs, sizes, BASELINE, p_treatment)
    n = sizes[None, :].astype(float)
    z = pooled_z(control, treatment, n)
    if design in ("fixed", "naive"):
        reject = np.abs(z) >= 1.959963984540054
    elif design == "group_sequential":
        reject = np.abs(z) >= bounds[None, :]
    else:
        pc, pt = control / n, treatment / n
        variance = (pc * (1 - pc) + pt * (1 - pt)) / n
        valid = variance > 0
        p = np.where(valid, msprt_p_value(pt - pc, np.where(valid, variance, 1.0), tau2), 1.0)
        reject = np.minimum.accumulate(p, axis=1) <= ALPHA
    index, used = first_stop(reject, sizes)
    rows = np.arange(runs)
    sign = np.sign(z[rows, np.maximum(index, 0)])
    detected = (index >= 0) & (sign > 0)
    return {
        "rejected": float((index >= 0).mean()),
        "detected": float(detected.mean()),
        "samples_ratio": float(used.mean() / n_fixed),
    }


def srm_false_alarms(
    rng: np.random.Generator, runs: int, looks: int, per_look: int, shares: list[float], threshold: float
) -> dict[str, float]:
    """Share of correct splits ever flagged over ``looks`` cumulative looks, per SRM method (chunked)."""
    p = np.array(shares)
    flagged = {"chi_square": 0, "sequential": 0}
    for start in range(0, runs, 2000):
        size = min(2000, runs - start)
        counts = rng.multinomial(per_look, p, size=(size, looks)).cumsum(axis=1).astype(float)
        expected = counts.sum(axis=-1, keepdims=True) * p
        chi2 = ((counts - expected) ** 2 / expected).sum(axis=-1)
        flagged["chi_square"] += int((sps.chi2.sf(chi2, len(shares) - 1) < threshold).any(axis=1).sum())
        log_ratio = multinomial_log_likelihood_ratio(counts, p)
        flagged["sequential"] += int((log_ratio > math.log(1 / threshold)).any(axis=1).sum())
    return {method: count / runs for method, count in flagged.items()}


def time_analyze(rows: int, directory: Path) -> dict[str, float]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"analyze_{rows}.parquet"
    if not path.exists():
        rng = np.random.default_rng(1)
        tmp = path.with_suffix(".tmp")
        with pq.ParquetWriter(
            tmp, pa.schema([("variant", pa.string()), ("outcome", pa.int8()), ("timestamp", pa.int64())])
        ) as writer:
            chunk = 1_000_000
            for start in range(0, rows, chunk):
                size = min(chunk, rows - start)
                treated = rng.random(size) < 0.1
                outcome = (rng.random(size) < np.where(treated, 0.165, 0.15)).astype(np.int8)
                variant = pa.DictionaryArray.from_arrays(treated.astype(np.int8), ["v1", "v2"]).cast(
                    pa.string()
                )
                stamps = 1_700_000_000 + (np.arange(start, start + size) * 30 * 86400) // rows
                writer.write_table(pa.table({"variant": variant, "outcome": outcome, "timestamp": stamps}))
        tmp.rename(path)
    command = [
        sys.executable,
        "-m",
        "arbiter",
        "analyze",
        str(path),
        "--expected-weights",
        "v1=0.9,v2=0.1",
        "--time-col",
        "timestamp",
        "--method",
        "sequential",
        "--json",
    ]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"arbiter analyze failed: {done.stderr.strip()}")
    report = json.loads(done.stdout)
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    assert report["rows"] == rows
    return {"seconds": elapsed, "peak_rss_mb": peak_kb / 1024, "file_mb": path.stat().st_size / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20_000)
    parser.add_argument("--looks", type=int, default=20)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--bench-dir", default=os.environ.get("BENCH_DIR", ".bench/stats"))
    parser.add_argument("--seed", type=int, default=20240601)
    parser.add_argument("--forecast-runs", type=int, default=300, help="runs per cell of the forecast check")
    args = parser.parse_args()
    started = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    plan = sample_size_proportion(BASELINE, MDE, alpha=ALPHA, power=POWER)
    n_fixed = plan.sample_size_per_variant
    looks = args.looks
    bounds = np.array(group_sequential_boundaries(np.arange(1, looks + 1) / looks, ALPHA, 2).z)
    inflation = sequential_inflation_factor("Sequential", looks=looks, alpha=ALPHA, power=POWER, sides=2)
    seq_sizes = np.round(inflation * n_fixed * np.arange(1, looks + 1) / looks).astype(np.int64)
    tau2 = (BASELINE * MDE) ** 2
    designs = {
        "naive": "naive",
        "sequential": "sequential",
        "group_sequential": "group_sequential",
        "fixed": "fixed",
    }
    scenarios = {"aa": BASELINE, "mde": BASELINE * (1 + MDE), "2x_mde": BASELINE * (1 + 2 * MDE)}
    results = {
        scenario: {
            key: run_design(design, rng, args.runs, looks, n_fixed, p_t, bounds, seq_sizes, tau2)
            for key, design in designs.items()
        }
        for scenario, p_t in scenarios.items()
    }
    srm_looks, srm_threshold = 500, 0.001
    srm = {
        "50_50": srm_false_alarms(rng, args.runs, srm_looks, 100, [0.5, 0.5], srm_threshold),
        "95_5": srm_false_alarms(rng, args.runs, srm_looks, 100, [0.95, 0.05], srm_threshold),
    }
    simulation_seconds = time.perf_counter() - started
    print(
        f"forecast check: {args.forecast_runs} runs per design and scenario ...", file=sys.stderr, flush=True
    )
    forecast = forecast_check(args.forecast_runs, args.seed + 1)
    analyze = time_analyze(args.rows, Path(args.bench_dir))
    output = {
        "runs": args.runs,
        "looks": looks,
        "alpha": ALPHA,
        "baseline": BASELINE,
        "relative_mde": MDE,
        "fixed_n_per_variant": n_fixed,
        "sequential_max_n_per_variant": int(seq_sizes[-1]),
        "sequential_inflation_factor": round(inflation, 4),
        "monte_carlo_se_max": round(0.5 / math.sqrt(args.runs), 4),
        "aa_false_positive_rate": {k: v["rejected"] for k, v in results["aa"].items()},
        "power_at_mde": {k: v["detected"] for k, v in results["mde"].items()},
        "power_at_2x_mde": {k: v["detected"] for k, v in results["2x_mde"].items()},
        "samples_ratio_at_mde": {k: round(v["samples_ratio"], 4) for k, v in results["mde"].items()},
        "samples_ratio_at_2x_mde": {k: round(v["samples_ratio"], 4) for k, v in results["2x_mde"].items()},
        "samples_ratio_aa": {k: round(v["samples_ratio"], 4) for k, v in results["aa"].items()},
        "srm_looks": srm_looks,
        "srm_threshold": srm_threshold,
        "srm_false_alarm_rate": srm,
        "simulation_seconds": round(simulation_seconds, 2),
        "forecast": forecast,
        "analyze_rows": args.rows,
        "analyze_10m_rows_seconds": round(analyze["seconds"], 2),
        "analyze_peak_rss_mb": round(analyze["peak_rss_mb"], 1),
        "analyze_file_mb": round(analyze["file_mb"], 1),
    }
    print(json.dumps(output))


if __name__ == "__main__":
    main()
