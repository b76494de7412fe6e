"""The forecast of the primary metric's decision for the leading challenger: ``status.forecast``. Pure, no I/O.

Computed each analysis tick from what the engine already holds (the primary metric's cumulative counts,
its decision state and frozen plan, the weights); the statistics are :mod:`arbiter.stats.forecast`.
The traffic rate per arm is measured at the current split: ``rateBasis`` remembers the counts when the
split was first seen, and the rate is the growth since then (no forecast on the first tick of a split:
an average over earlier splits would misstate a canary's rate).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from arbiter.api import ModelExperimentSpec, parse_duration
from arbiter.rollout.observations import SufficientStats
from arbiter.rollout.primary import PRIMARY_PLAN, MetricReport, decision_config
from arbiter.rollout.state import EngineState
from arbiter.rollout.view import TickView
from arbiter.stats import Direction, Verdict
from arbiter.stats.forecast import Forecast, forecast_decision

#: A forecast is recomputed at most this often while its challenger, split and verdict stay the same.
REFRESH_SECONDS = 60.0


def human_duration(seconds: float | None) -> str:
    """``~40s``, ``~12m``, ``~3h``, ``~2d``, or ``n/a``."""
    if seconds is None or not math.isfinite(seconds):
        return "n/a"
    if seconds <= 0:
        return "now"
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0)):
        if seconds >= size * 1.5 or (unit == "m" and seconds >= 60):
            return f"~{round(seconds / size)}{unit}"
    return f"~{max(1, round(seconds))}s"


def leading_of(spec: ModelExperimentSpec, report: MetricReport, eliminated: tuple[str, ...]) -> str | None:
    """The challenger the forecast is about: a winner, else the best estimate among those still in."""
    if report.decision is None or spec.analysis.primary is None:
        return None
    results = report.decision.challengers
    winners = [c for c, d in results.items() if d.verdict is Verdict.WIN]
    if winners:
        return winners[0]
    active = [c for c in results if c not in eliminated] or list(results)
    sign = 1.0 if spec.analysis.primary.direction.value == Direction.INCREASE.value else -1.0

    def ahead(challenger: str) -> float:
        difference = results[challenger].absolute_difference
        return -math.inf if difference is None or not math.isfinite(difference) else sign * difference

    return max(active, key=ahead)


def forecast_status(
    spec: ModelExperimentSpec,
    view: TickView,
    state: EngineState,
    report: MetricReport,
    counters: Mapping[str, SufficientStats],
    previous: Mapping[str, Any] | None,
) -> dict[str, Any] | None:
    """``status.forecast`` for this tick (None: nothing to forecast, no primary metric or data)."""
    metric = spec.analysis.primary
    leader = leading_of(spec, report, tuple(state.eliminated or ()))
    champion = spec.champion.name
    if metric is None or leader is None or champion not in counters or leader not in counters:
        return None
    counts = {champion: counters[champion].n, leader: counters[leader].n}
    basis = _rate_basis(view, counts, previous)
    challenger_state = report.state.challengers.get(leader) if report.state else None
    decided = challenger_state is not None and challenger_state.verdict is not None
    if not decided and _recent(previous, leader, basis, view.now):
        return dict(previous or {})
    now = view.now.isoformat().replace("+00:00", "Z")
    out: dict[str, Any] = {"variant": leader, "rateBasis": basis, "computedAt": now}
    seconds = (view.now - _time(basis["time"])).total_seconds()
    rates = {v: (counts[v] - basis["n"].get(v, 0.0)) / seconds if seconds > 0 else 0.0 for v in counts}
    config = decision_config(spec, metric, report.planned_sizes.get(PRIMARY_PLAN))
    elapsed = (view.now - view.started_at).total_seconds() if view.started_at else None
    config = replace(config, max_duration_seconds=parse_duration(spec.decision.max_duration))
    active = [c.name for c in spec.challengers if c.name not in (state.eliminated or ())]
    forecast = forecast_decision(
        counters[champion],
        counters[leader],
        config,
        challenger_state,
        rate_control=rates[champion],
        rate_treatment=rates[leader],
        variant=leader,
        elapsed_seconds=elapsed,
        family_size=max(1, len(active)),
        look_interval_seconds=parse_duration(spec.analysis.interval),
    )
    out.update(_fields(forecast))
    return out


def _fields(forecast: Forecast) -> dict[str, Any]:
    raw = forecast.to_dict()
    names = {
        "method": "method",
        "seconds_to_decision": "secondsToDecision",
        "samples_control": "samplesControl",
        "samples_treatment": "samplesTreatment",
        "conditional_power": "conditionalPower",
        "mde": "mde",
        "observed_effect": "observedEffect",
        "rate_control": "rateControl",
        "rate_treatment": "rateTreatment",
        "horizon_seconds": "horizonSeconds",
        "error": "reason",
    }
    out = {camel: raw[snake] for snake, camel in names.items() if raw.get(snake) is not None}
    if forecast.error is None:
        eta = human_duration(forecast.seconds_to_decision)
        power = forecast.conditional_power
        out["decisionIn"] = eta
        out["summary"] = (
            f"at this traffic a decision is expected {'now' if eta == 'now' else 'in ' + eta} "
            f"(if the true effect is the MDE); if the true lift is the observed one, P(win) = {power:.2f}"
        )
    else:
        out["decisionIn"] = "n/a"
        out["summary"] = f"no forecast: {forecast.error}"
    return out


def _recent(
    previous: Mapping[str, Any] | None, leader: str, basis: Mapping[str, Any], now: dt.datetime
) -> bool:
    """A forecast of the same challenger at the same split made less than REFRESH_SECONDS ago: keep it
    (it costs up to ~0.1 s of CPU; a replica may tick hundreds of experiments)."""
    if not isinstance(previous, Mapping) or previous.get("variant") != leader:
        return False
    if previous.get("secondsToDecision") is None or previous.get("rateBasis") != basis:
        return False
    try:
        return (now - _time(str(previous["computedAt"]))).total_seconds() < REFRESH_SECONDS
    except (KeyError, ValueError):
        return False


def _time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _rate_basis(
    view: TickView, counts: Mapping[str, float], previous: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The counts when the current split was first seen (kept while the split and the counts hold)."""
    weights = dict(view.weights or {})
    old = (previous or {}).get("rateBasis") if isinstance(previous, Mapping) else None
    if isinstance(old, Mapping) and old.get("weights") == weights and isinstance(old.get("n"), Mapping):
        try:
            same = (
                all(float(old["n"][v]) <= counts[v] for v in counts) and _time(str(old["time"])) <= view.now
            )
        except (KeyError, TypeError, ValueError):
            same = False
        if same:
            return dict(old)
    now = view.now.isoformat().replace("+00:00", "Z")
    return {"time": now, "weights": weights, "n": dict(counts)}
