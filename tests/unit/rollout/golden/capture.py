"""Record engine ticks (inputs and outputs) as a golden file: ``python tests/unit/rollout/golden/capture.py``.

The file ``ticks.json.gz`` beside this script was recorded from the engine as it was before the redesign into
judges (commit 3d25e9a): every ``engine.step`` call made by ``tests/unit/rollout/test_engine.py`` plus seeded
random runs of several modes. ``test_golden.py`` replays every recorded call on the current engine and requires
the same status, events, routing and outcome, so a status written by the old engine resumes exactly (an
upgrade mid-experiment). Re-record only for a deliberate behaviour change, and say so in the commit.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import gzip
import json
import random
import sys
from pathlib import Path
from typing import Any

import pytest

import arbiter.rollout.engine as engine
from arbiter.api import parse_spec
from arbiter.rollout.lifecycle import admit
from arbiter.rollout.observations import MetricData, Observations, Reading
from arbiter.stats import MeanStats, ProportionStats

HERE = Path(__file__).parent
ROOT = HERE.parents[3]
TICKS: list[dict[str, Any]] = []
SPECS: dict[str, dict[str, Any]] = {}


def _stats(s: Any) -> dict[str, Any]:
    if isinstance(s, ProportionStats):
        return {"kind": "proportion", "successes": s.successes, "trials": s.trials}
    return {"kind": "mean", "n": s.n, "sum": s.sum, "sum_squares": s.sum_squares}


def _metric(m: MetricData | None) -> dict[str, Any] | None:
    if m is None:
        return None
    return {
        "stats": {v: _stats(s) for v, s in m.stats.items()},
        "missing": dict(m.missing),
        "errors": dict(m.errors),
    }


def _reading(r: Reading) -> dict[str, Any]:
    return {"value": r.value, "error": r.error}


def encode_observations(o: Observations) -> dict[str, Any]:
    """Observations as plain JSON (``test_golden.decode_observations`` reverses it)."""
    return {
        "guardrails": {g: {v: _reading(r) for v, r in rs.items()} for g, rs in o.guardrails.items()},
        "guardrail_rates": {g: _metric(m) for g, m in o.guardrail_rates.items()},
        "primary": _metric(o.primary),
        "secondary": {g: _metric(m) for g, m in o.secondary.items()},
        "samples": {v: _reading(r) for v, r in o.samples.items()},
    }


_original_step = engine.step


def recording_step(
    spec: Any, status: Any, observations: Any, now: Any, controls: Any = None, generation: Any = None
) -> Any:
    status_in = json.loads(json.dumps(dict(status)))
    plan = _original_step(spec, status, observations, now, controls, generation)
    spec_json = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    key = json.dumps(spec_json, sort_keys=True)
    spec_id = SPECS.setdefault(key, {"id": len(SPECS), "spec": spec_json})["id"]
    TICKS.append(
        {
            "spec": spec_id,
            "status": status_in,
            "observations": encode_observations(observations),
            "now": now.isoformat(),
            "controls": dict(controls.values) if controls else None,
            "generation": generation,
            "expected": {
                "status": json.loads(json.dumps(plan.status)),
                "events": [dataclasses.asdict(e) for e in plan.events],
                "routing": None
                if plan.routing is None
                else {
                    "weights": plan.routing.weights,
                    "mirror": list(plan.routing.mirror) if plan.routing.mirror else None,
                    "final": plan.routing.final,
                    "winner": plan.routing.winner,
                },
                "outcome": plan.outcome,
            },
        }
    )
    return plan


BASE: dict[str, Any] = {
    "champion": {"name": "v1", "deployment": "d1", "service": "s1"},
    "routing": {"provider": "Router", "router": {"configMap": "routes"}},
    "analysis": {
        "interval": "10s",
        "prometheus": {"url": "http://prometheus:9090"},
        "guardrails": [
            {"name": "latency", "query": "q", "max": 0.2, "failureLimit": 3},
            {
                "name": "errors",
                "rate": {"type": "Proportion", "successes": "e", "trials": "t"},
                "maxIncreaseOverChampion": 0.02,
            },
        ],
        "primary": {
            "name": "conversion",
            "type": "Proportion",
            "successes": "s",
            "trials": "t",
            "minimumDetectableEffect": 0.1,
        },
        "secondary": [
            {
                "name": "revenue",
                "type": "Mean",
                "count": "n",
                "sum": "s",
                "sumSquares": "q",
                "minimumDetectableEffect": 0.05,
            },
        ],
        "consecutiveErrorLimit": 3,
    },
}


def random_run(
    seed: int, mode: str, challengers: int, method: str, rates: list[float], ticks: int = 32
) -> None:
    """Drive one experiment with seeded random traffic, carrying status forward like the handler."""
    rng = random.Random(seed)
    raw = copy.deepcopy(BASE)
    raw["mode"] = mode
    raw["challengers"] = [
        {"name": f"v{i + 2}", "deployment": f"d{i + 2}", "service": f"s{i + 2}"} for i in range(challengers)
    ]
    raw["analysis"]["test"] = {"method": method, "alpha": 0.05}
    if mode == "Canary":
        raw["steps"] = [
            {"weight": 10, "minDuration": "30s"},
            {"weight": 30, "minSamples": 300},
            {"weight": 50},
        ]
    elif mode == "ABTest":
        raw["steps"] = [{"weight": 60}]
    else:
        raw["steps"] = [{"weight": 20}, {"weight": 50}]
        raw["analysis"]["shadow"] = {"minDuration": "30s", "continueAsCanary": True}
        raw["routing"]["shadow"] = {"percent": 50}
    spec = parse_spec(raw)
    variants = [v.name for v in spec.variants]
    now = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    status = admit(status={}, generation=1, spec=spec, spec_error=None, workload_problems=[], now="t0").status
    status["startedAt"] = status["stepStartedAt"] = now.isoformat().replace("+00:00", "Z")
    totals = {v: [0.0, 0.0, 0.0, 0.0, 0.0, 0.0] for v in variants}  # succ, trials, err, n, sum, sumsq
    totals["v1"] = [500.0, 5000.0, 50.0, 5000.0, 50000.0, 600000.0]  # counters from before the start
    for k in range(ticks):
        now += dt.timedelta(seconds=10)
        weights = status.get("weights") or {}
        users = 400
        for i, v in enumerate(variants):
            share = weights.get(v, 0) / 100
            if status.get("engine", {}).get("shadowPassed") is None and mode == "Shadow" and v != "v1":
                share = 0.5
            n = sum(1 for _ in range(int(users * share)) if rng.random() < 0.97)
            conv = sum(1 for _ in range(n) if rng.random() < rates[i])
            errs = sum(1 for _ in range(n) if rng.random() < (0.01 if i < 2 else 0.04))
            vals = [rng.gauss(10 + i, 3) for _ in range(n)]
            t = totals[v]
            t[0] += conv
            t[1] += n
            t[2] += errs
            t[3] += n
            t[4] += sum(vals)
            t[5] += sum(x * x for x in vals)
        if k == 14 and seed % 2:
            totals["v1"] = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]  # the champion's exporter restarted
        latency = {
            v: Reading(value=round(rng.uniform(0.05, 0.25 if v == "v3" else 0.19), 3)) for v in variants
        }
        failing = rng.random() < 0.08
        if failing:
            latency["v2"] = Reading(error="query failed: timeout")
        observations = Observations(
            guardrails={"latency": latency},
            guardrail_rates={
                "errors": MetricData(
                    stats={v: ProportionStats(successes=totals[v][2], trials=totals[v][1]) for v in variants}
                )
            },
            primary=MetricData(
                stats={v: ProportionStats(successes=totals[v][0], trials=totals[v][1]) for v in variants}
            ),
            secondary={
                "revenue": MetricData(
                    stats={
                        v: MeanStats(n=totals[v][3], sum=totals[v][4], sum_squares=totals[v][5])
                        for v in variants
                    }
                )
            },
        )
        controls: dict[str, str] = {}
        if k == 22 and status.get("phase") == "Paused":
            controls = {"resume": f"r{seed}"}
        if k == 28 and status.get("phase") in ("RolledBack", "Concluded"):
            controls = {"retry": f"t{seed}"}
        plan = engine.step(spec, status, observations, now, engine.Controls(controls), 1)
        status = plan.status
        if plan.routing is not None and not plan.routing.final:
            status["traffic"] = {"verified": "Yes", "weights": plan.routing.weights}


def run_all() -> int:
    engine.step = recording_step
    code = pytest.main(["-q", "-p", "no:cacheprovider", str(ROOT / "tests/unit/rollout/test_engine.py")])
    if code != 0:
        return int(code)
    seed = 0
    for mode in ("Canary", "ABTest", "Shadow"):
        for challengers, method in (
            (1, "Sequential"),
            (2, "Sequential"),
            (1, "FixedHorizon"),
            (2, "GroupSequential"),
        ):
            if mode == "Shadow" and challengers > 1:
                continue
            for rates in ([0.10, 0.13, 0.08], [0.10, 0.10, 0.10], [0.10, 0.07, 0.12]):
                seed += 1
                random_run(seed, mode, challengers, method, rates)
    out = {
        "recordedFrom": "3d25e9a",
        "specs": [entry["spec"] for entry in sorted(SPECS.values(), key=lambda e: e["id"])],
        "ticks": TICKS,
    }
    (HERE / "ticks.json.gz").write_bytes(
        gzip.compress(json.dumps(out, sort_keys=True, separators=(",", ":")).encode(), mtime=0)
    )
    print(f"recorded {len(TICKS)} ticks over {len(SPECS)} specs")
    return 0


if __name__ == "__main__":
    sys.exit(run_all())
