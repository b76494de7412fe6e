"""Read-only views of a ModelExperiment status: what the operator's metrics, the printer columns and
`kubectl arbiter` show, computed from the status alone (the status is the source of truth).

Nothing here writes or decides; every function takes the status as stored (a JSON mapping) and
tolerates missing or partial fields, because a status may come from an older or newer operator.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from arbiter.api.v1alpha1 import Direction


def _number(value: Any) -> float | None:
    """A finite float, or None (JSON null, NaN, missing or not a number)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def primary_results(status: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The primary metric's per-challenger results (``status.analysis.primary.results``)."""
    analysis = status.get("analysis") or {}
    primary = analysis.get("primary") or {}
    results = primary.get("results") or []
    return [dict(r) for r in results if isinstance(r, Mapping) and r.get("variant")]


def leading_challenger(
    status: Mapping[str, Any], direction: Direction | str = Direction.INCREASE
) -> dict[str, Any] | None:
    """The challenger ahead on the primary metric: ``{variant, relativeLift, pValue}``, or None.

    The winner of a final decision leads. Otherwise the challenger with the best relative lift in the
    metric's direction (highest for Increase, lowest for Decrease); a challenger without a lift never
    leads one that has one.

    Args:
        status: the stored status.
        direction: the primary metric's ``direction``.
    """
    results = primary_results(status)
    if not results:
        return None
    winner = (status.get("decision") or {}).get("winner")
    chosen = next((r for r in results if r.get("variant") == winner), None)
    if chosen is None:
        sign = -1.0 if Direction(direction) is Direction.DECREASE else 1.0
        with_lift = [r for r in results if _number(r.get("relativeLift")) is not None]
        if with_lift:
            chosen = max(with_lift, key=lambda r: sign * (_number(r.get("relativeLift")) or 0.0))
        else:
            chosen = results[0]
    leading: dict[str, Any] = {"variant": str(chosen["variant"])}
    lift = _number(chosen.get("relativeLift"))
    p_value = _number(chosen.get("pValue"))
    if lift is not None:
        leading["relativeLift"] = lift
    if p_value is not None:
        leading["pValue"] = p_value
    return leading


def _tracker_total(tracker: Any) -> float | None:
    """Samples counted by one count tracker of the engine (totals since the experiment started)."""
    if not isinstance(tracker, Mapping):
        return None
    try:
        base, carry, last = (float(tracker[key][-1]) for key in ("base", "carry", "last"))
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    return max(0.0, carry + last - base)


def samples(status: Mapping[str, Any], variants: list[str]) -> dict[str, float]:
    """Samples per variant since the experiment (re)started.

    Read from the engine's sample counters (the ``sampleCount`` query, or the primary metric's trials
    or count); where those are absent, from the primary metric's ``nControl``/``nTreatment``.
    """
    engine = status.get("engine") or {}
    trackers = (engine.get("counters") or {}).get("samples") or {}
    out: dict[str, float] = {}
    for variant in variants:
        total = _tracker_total(trackers.get(variant))
        if total is not None:
            out[variant] = total
    if len(out) < len(variants):
        results = primary_results(status)
        if results and variants:
            champion = variants[0]
            control = _number(results[0].get("nControl"))
            if champion not in out and control is not None:
                out[champion] = control
            for result in results:
                treated = _number(result.get("nTreatment"))
                if result["variant"] in variants and result["variant"] not in out and treated is not None:
                    out[str(result["variant"])] = treated
    return out


def step_samples(status: Mapping[str, Any], variants: list[str]) -> dict[str, float]:
    """Samples per variant in the current step (0 until the step's split is in place and counting)."""
    baseline = (status.get("engine") or {}).get("stepSamples")
    totals = samples(status, variants)
    if not isinstance(baseline, Mapping):
        return dict.fromkeys(totals, 0.0)
    return {v: max(0.0, n - (_number(baseline.get(v)) or 0.0)) for v, n in totals.items()}
