"""The operator's own Prometheus metrics (served by `arbiter run --metrics-port`)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EXPERIMENT_PHASE = Gauge(
    "arbiter_experiment_info",
    "1 for each experiment, labelled with its current phase.",
    ["namespace", "name", "phase"],
)
EXPERIMENTS_BY_PHASE = Gauge("arbiter_experiments", "Experiments by phase.", ["phase"])
DECISIONS = Counter("arbiter_decisions", "Decisions taken by the engine, by outcome.", ["outcome"])
TICK_SECONDS = Histogram(
    "arbiter_tick_duration_seconds",
    "Time to read metrics, decide, route and write status for one experiment tick.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
TICK_LATENESS = Histogram(
    "arbiter_tick_lateness_seconds",
    "How much later than planned a scheduled tick started (ticks started by a wake-up are not counted). "
    "A replica that holds more experiments than it can tick on time shows here first.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
)
QUERY_ERRORS = Counter("arbiter_query_errors", "Metric queries that failed, per tick and query.")
ROUTING_ERRORS = Counter(
    "arbiter_routing_errors", "Failed attempts to route traffic, by provider.", ["provider"]
)

_phases: dict[tuple[str, str], str] = {}


def record_phase(namespace: str, name: str, phase: str | None) -> None:
    """Track one experiment's phase (None when it is gone) and refresh the per-phase counts."""
    key = (namespace, name)
    old = _phases.pop(key, None)
    if old is not None:
        EXPERIMENT_PHASE.remove(namespace, name, old)
    if phase is not None:
        _phases[key] = phase
        EXPERIMENT_PHASE.labels(namespace, name, phase).set(1)
    counts: dict[str, int] = {}
    for value in _phases.values():
        counts[value] = counts.get(value, 0) + 1
    for value in ("Pending", "Progressing", "Paused", "Promoted", "RolledBack", "Concluded", "Failed"):
        EXPERIMENTS_BY_PHASE.labels(value).set(counts.get(value, 0))
