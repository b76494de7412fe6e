"""The operator's own Prometheus metrics (served by `arbiter run --metrics-port`).

Two kinds:

- process-wide counters and histograms updated as the operator works (decisions, tick duration, query
  and routing errors);
- per-experiment gauges computed at scrape time from the last status the operator wrote for each
  experiment (:class:`ExperimentCollector`). The status stays the source of truth: every value here can
  be recomputed from ``kubectl get mexp -o json``, and an experiment that is deleted takes its series
  with it. docs/observability.md lists every series.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector
from pydantic import ValidationError

import arbiter
from arbiter.api import Mode, ModelExperimentSpec, Phase, parse_spec
from arbiter.api.status_view import primary_results, samples, step_samples

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
TICK_FAILURES = Counter(
    "arbiter_tick_failures",
    "Ticks that failed before their status was written (the API server unreachable, an unexpected error), "
    "by exception type; each is retried after ARBITER_RESYNC_SECONDS.",
    ["error"],
)
LEADER = Gauge(
    "arbiter_leader",
    "1 while this replica holds the leader Lease (or runs without leader election), 0 while it waits.",
)

PHASES = [p.value for p in Phase]
VERDICTS = ["Win", "Loss", "Inconclusive", "Futile"]
TRAFFIC_STATES = ["Yes", "No", "CannotTell", "Finalized"]
#: A guardrail whose query reads this router metric measures shadow agreement (examples/shadow.yaml).
AGREEMENT_METRIC = "arbiter_router_shadow_comparisons_total"

EXPERIMENT = ["namespace", "experiment"]


@dataclass(frozen=True)
class Snapshot:
    """The last status the operator wrote (or read) for one experiment, with its spec."""

    namespace: str
    name: str
    spec: ModelExperimentSpec | None
    status: Mapping[str, Any]


class ExperimentCollector(Collector):
    """Per-experiment gauges computed from the latest status of every experiment the operator handles."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snapshots: dict[tuple[str, str], Snapshot] = {}

    def record(
        self, namespace: str, name: str, spec: Mapping[str, Any] | None, status: Mapping[str, Any]
    ) -> None:
        """Remember an experiment's spec and status (the raw objects, as stored)."""
        parsed: ModelExperimentSpec | None
        try:
            parsed = parse_spec(dict(spec)) if spec else None
        except ValidationError:
            parsed = None
        snapshot = Snapshot(namespace, name, parsed, dict(status))
        with self._lock:
            self._snapshots[(namespace, name)] = snapshot

    def forget(self, namespace: str, name: str) -> None:
        """Drop an experiment: its series disappear from the next scrape."""
        with self._lock:
            self._snapshots.pop((namespace, name), None)

    def snapshots(self) -> list[Snapshot]:
        """Every remembered experiment, sorted by namespace and name."""
        with self._lock:
            return [self._snapshots[key] for key in sorted(self._snapshots)]

    def describe(self) -> Iterable[Any]:
        """No fixed description: the families depend on what is recorded (avoids a collect at registration)."""
        return []

    def collect(self) -> Iterator[Any]:
        """Every family, built from the snapshots at scrape time."""
        yield from experiment_families(self.snapshots())


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        return float(value)
    return None


def _timestamp(text: Any) -> float | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class _Families:
    """The gauge families of one scrape, created in a fixed order."""

    def __init__(self) -> None:
        self.items: dict[str, GaugeMetricFamily | InfoMetricFamily] = {}

    def gauge(self, name: str, documentation: str, labels: list[str]) -> GaugeMetricFamily:
        family = self.items.get(name)
        if family is None:
            family = GaugeMetricFamily(name, documentation, labels=labels)
            self.items[name] = family
        assert isinstance(family, GaugeMetricFamily)
        return family

    def add(self, name: str, documentation: str, labels: dict[str, str], value: Any) -> None:
        """Add one sample; a value that is missing or not a number adds nothing (no series)."""
        number = _number(value)
        family = self.gauge(name, documentation, list(labels))
        if number is not None:
            family.add_metric(list(labels.values()), number)


def experiment_families(snapshots: list[Snapshot]) -> list[GaugeMetricFamily | InfoMetricFamily]:
    """The per-experiment metric families for these snapshots (pure: no I/O, no global state).

    Families are always returned (with HELP and TYPE) even when no experiment is recorded, so a
    dashboard sees the metric names from the operator's first scrape.
    """
    out = _Families()
    build = InfoMetricFamily("arbiter_build", "The operator's version.", labels=["version"])
    build.add_metric([arbiter.version()], {})
    out.items["arbiter_build"] = build
    counts = dict.fromkeys(PHASES, 0)
    for snapshot in snapshots:
        phase = snapshot.status.get("phase")
        if phase in counts:
            counts[phase] += 1
    for phase, count in counts.items():
        out.add("arbiter_experiments", "Experiments by phase.", {"phase": phase}, count)
    _declare(out)
    for snapshot in snapshots:
        _experiment(out, snapshot)
    return list(out.items.values())


# name -> (help, extra labels after namespace and experiment); declared up front so every family is
# exposed with its HELP and TYPE even before any experiment has that series.
_SERIES: dict[str, tuple[str, list[str]]] = {
    "arbiter_experiment_info": (
        "1 for each experiment, labelled with its mode, champion, phase and pause reason.",
        ["mode", "champion", "phase", "pause_reason"],
    ),
    "arbiter_experiment_phase": ("1 for the experiment's current phase, 0 for the others.", ["phase"]),
    "arbiter_experiment_current_step": ("Index of the current canary step (0-based).", []),
    "arbiter_experiment_steps": ("Number of canary steps in the spec.", []),
    "arbiter_experiment_started_timestamp_seconds": ("When the experiment started progressing.", []),
    "arbiter_experiment_step_started_timestamp_seconds": ("When the current step started.", []),
    "arbiter_experiment_last_decision_timestamp_seconds": (
        "When the last decision was taken, labelled with its outcome.",
        ["outcome"],
    ),
    "arbiter_experiment_variant_weight_ratio": (
        "Share of the traffic routed to the variant (0-1).",
        ["variant", "role"],
    ),
    "arbiter_experiment_traffic_verified": (
        "1 for whether the data plane carries the weights (Yes, No, CannotTell, Finalized), 0 for the others.",
        ["state"],
    ),
    "arbiter_experiment_samples": ("Samples of the variant since the experiment (re)started.", ["variant"]),
    "arbiter_experiment_step_samples": ("Samples of the variant in the current step.", ["variant"]),
    "arbiter_experiment_alpha": ("The significance level of the experiment's test.", []),
    "arbiter_experiment_metric_value": (
        "Estimate of the metric for the variant (a rate for Proportion, a mean for Mean).",
        ["metric", "kind", "variant"],
    ),
    "arbiter_experiment_metric_value_ci_lower": (
        "Lower bound of the variant's own 1 - alpha interval (Wilson for a rate, Student t for a mean; primary "
        "metric; pointwise, for display).",
        ["metric", "kind", "variant"],
    ),
    "arbiter_experiment_metric_value_ci_upper": (
        "Upper bound of the variant's own 1 - alpha interval (Wilson for a rate, Student t for a mean; primary "
        "metric; pointwise, for display).",
        ["metric", "kind", "variant"],
    ),
    "arbiter_experiment_metric_absolute_difference": (
        "Challenger minus champion on the metric.",
        ["metric", "kind", "variant"],
    ),
    "arbiter_experiment_metric_relative_lift": (
        "Relative lift of the challenger over the champion (0.05 = +5%).",
        ["metric", "kind", "variant"],
    ),
    "arbiter_experiment_metric_difference_ci_lower": (
        "Lower bound of the confidence interval of the difference (always valid for Sequential).",
        ["metric", "kind", "variant"],
    ),
    "arbiter_experiment_metric_difference_ci_upper": (
        "Upper bound of the confidence interval of the difference (always valid for Sequential).",
        ["metric", "kind", "variant"],
    ),
    "arbiter_experiment_metric_p_value": (
        "P-value of the challenger against the champion.",
        ["metric", "kind", "variant"],
    ),
    "arbiter_experiment_metric_p_value_adjusted": (
        "Multiplicity-adjusted p-value (Holm across challengers; across metrics for secondary metrics).",
        ["metric", "kind", "variant"],
    ),
    "arbiter_experiment_metric_verdict": (
        "1 for the challenger's current verdict (Win, Loss, Inconclusive, Futile), 0 for the others.",
        ["metric", "kind", "variant", "verdict"],
    ),
    "arbiter_experiment_guardrail_value": (
        "The guardrail's value for the challenger.",
        ["guardrail", "variant"],
    ),
    "arbiter_experiment_guardrail_champion_value": (
        "The guardrail's value for the champion (relative bounds).",
        ["guardrail", "variant"],
    ),
    "arbiter_experiment_guardrail_p_value": (
        "Always-valid p-value of the harm test (rate guardrails).",
        ["guardrail", "variant"],
    ),
    "arbiter_experiment_guardrail_threshold": (
        "The guardrail's bound from the spec (max, min, max_increase_over_champion, max_decrease_from_champion).",
        ["guardrail", "bound"],
    ),
    "arbiter_experiment_guardrail_consecutive_breaches": (
        "Consecutive ticks the guardrail has been breached.",
        ["guardrail", "variant"],
    ),
    "arbiter_experiment_guardrail_failure_limit": (
        "Consecutive breaches that roll the experiment back (1 for a critical guardrail).",
        ["guardrail"],
    ),
    "arbiter_experiment_guardrail_breached": (
        "1 when the guardrail was breached at the last tick.",
        ["guardrail", "variant"],
    ),
    "arbiter_experiment_srm_p_value": ("P-value of the sample-ratio check in the current step.", []),
    "arbiter_experiment_srm_threshold": ("The sample-ratio check pauses below this p-value.", []),
    "arbiter_experiment_srm_mismatch": ("1 when the sample-ratio check found a mismatch.", []),
    "arbiter_experiment_shadow_mirror_ratio": (
        "Share of the champion's traffic mirrored to the shadow (0-1).",
        ["variant"],
    ),
    "arbiter_experiment_shadow_agreement_ratio": (
        "Share of the shadow's answers that agreed with the champion's, as the agreement guardrail read it.",
        ["variant"],
    ),
}


def _declare(out: _Families) -> None:
    for name, (documentation, extra) in _SERIES.items():
        out.gauge(name, documentation, [*EXPERIMENT, *extra])


def _add(out: _Families, name: str, base: dict[str, str], value: Any, **labels: str) -> None:
    documentation, _ = _SERIES[name]
    out.add(name, documentation, {**base, **labels}, value)


def _experiment(out: _Families, snapshot: Snapshot) -> None:
    spec, status = snapshot.spec, snapshot.status
    base = {"namespace": snapshot.namespace, "experiment": snapshot.name}
    phase = str(status.get("phase") or "")
    _add(
        out,
        "arbiter_experiment_info",
        base,
        1,
        mode=spec.mode.value if spec else "",
        champion=spec.champion.name if spec else "",
        phase=phase,
        pause_reason=str(status.get("pauseReason") or ""),
    )
    for value in PHASES:
        _add(out, "arbiter_experiment_phase", base, int(value == phase), phase=value)
    _add(out, "arbiter_experiment_current_step", base, status.get("currentStep"))
    if spec is not None and spec.steps:
        _add(out, "arbiter_experiment_steps", base, len(spec.steps))
    _add(out, "arbiter_experiment_started_timestamp_seconds", base, _timestamp(status.get("startedAt")))
    _add(
        out,
        "arbiter_experiment_step_started_timestamp_seconds",
        base,
        _timestamp(status.get("stepStartedAt")),
    )
    decision = status.get("decision") or {}
    if decision.get("outcome"):
        _add(
            out,
            "arbiter_experiment_last_decision_timestamp_seconds",
            base,
            _timestamp(decision.get("time")),
            outcome=str(decision["outcome"]),
        )

    variants = [v.name for v in spec.variants] if spec else list(status.get("weights") or {})
    champion = variants[0] if spec and variants else None
    weights = status.get("weights") or {}
    for variant in variants:
        if variant in weights:
            role = "champion" if variant == champion else "challenger"
            weight = _number(weights[variant])
            _add(
                out,
                "arbiter_experiment_variant_weight_ratio",
                base,
                None if weight is None else weight / 100.0,
                variant=variant,
                role=role,
            )
    verified = (status.get("traffic") or {}).get("verified")
    if verified:
        for state in TRAFFIC_STATES:
            _add(out, "arbiter_experiment_traffic_verified", base, int(state == verified), state=state)
    for variant, n in samples(status, variants).items():
        _add(out, "arbiter_experiment_samples", base, n, variant=variant)
    for variant, n in step_samples(status, variants).items():
        _add(out, "arbiter_experiment_step_samples", base, n, variant=variant)

    if spec is not None:
        _add(out, "arbiter_experiment_alpha", base, spec.analysis.test.alpha)
    _metrics(out, base, status, champion)
    _guardrails(out, base, spec, status)
    srm = (status.get("analysis") or {}).get("srm") or {}
    _add(out, "arbiter_experiment_srm_p_value", base, srm.get("pValue"))
    if srm:
        _add(out, "arbiter_experiment_srm_mismatch", base, bool(srm.get("mismatch")))
    if spec is not None:
        _add(
            out,
            "arbiter_experiment_srm_threshold",
            base,
            spec.analysis.sample_ratio_mismatch.p_value_threshold,
        )
    _shadow(out, base, spec, status)


def _metrics(out: _Families, base: dict[str, str], status: Mapping[str, Any], champion: str | None) -> None:
    """The primary metric's and the secondary metrics' per-challenger numbers."""
    analysis = status.get("analysis") or {}
    rows: list[tuple[str, str, Mapping[str, Any]]] = []
    primary = analysis.get("primary") or {}
    for result in primary_results(status):
        rows.append((str(primary.get("metric") or "primary"), "primary", result))
    for row in analysis.get("secondary") or []:
        if isinstance(row, Mapping) and row.get("variant") and row.get("metric"):
            rows.append((str(row["metric"]), "secondary", row))
    for variant_row in primary.get("variants") or []:
        if isinstance(variant_row, Mapping) and variant_row.get("variant"):
            labels = {"metric": str(primary.get("metric") or "primary"), "kind": "primary"}
            for name, key in (
                ("arbiter_experiment_metric_value_ci_lower", "ciLow"),
                ("arbiter_experiment_metric_value_ci_upper", "ciHigh"),
            ):
                _add(out, name, base, variant_row.get(key), **labels, variant=str(variant_row["variant"]))
    seen_champion: set[tuple[str, str]] = set()
    for metric, kind, row in rows:
        labels = {"metric": metric, "kind": kind}
        variant = str(row["variant"])
        if champion is not None and (metric, kind) not in seen_champion:
            seen_champion.add((metric, kind))
            _add(
                out,
                "arbiter_experiment_metric_value",
                base,
                row.get("controlValue"),
                **labels,
                variant=champion,
            )
        _add(
            out, "arbiter_experiment_metric_value", base, row.get("treatmentValue"), **labels, variant=variant
        )
        for name, key in (
            ("arbiter_experiment_metric_absolute_difference", "absoluteDifference"),
            ("arbiter_experiment_metric_relative_lift", "relativeLift"),
            ("arbiter_experiment_metric_difference_ci_lower", "ciLow"),
            ("arbiter_experiment_metric_difference_ci_upper", "ciHigh"),
            ("arbiter_experiment_metric_p_value", "pValue"),
        ):
            _add(out, name, base, row.get(key), **labels, variant=variant)
        adjusted = row.get("pValueAdjusted") if kind == "primary" else row.get("pValueFamilyAdjusted")
        _add(out, "arbiter_experiment_metric_p_value_adjusted", base, adjusted, **labels, variant=variant)
        verdict = row.get("verdict")
        if verdict:
            for value in VERDICTS:
                _add(
                    out,
                    "arbiter_experiment_metric_verdict",
                    base,
                    int(value == verdict),
                    **labels,
                    variant=variant,
                    verdict=value,
                )


def _guardrails(
    out: _Families, base: dict[str, str], spec: ModelExperimentSpec | None, status: Mapping[str, Any]
) -> None:
    if spec is not None:
        for guardrail in spec.analysis.guardrails:
            for bound in ("max", "min", "max_increase_over_champion", "max_decrease_from_champion"):
                _add(
                    out,
                    "arbiter_experiment_guardrail_threshold",
                    base,
                    getattr(guardrail, bound),
                    guardrail=guardrail.name,
                    bound=bound,
                )
            limit = 1 if guardrail.critical else guardrail.failure_limit
            _add(out, "arbiter_experiment_guardrail_failure_limit", base, limit, guardrail=guardrail.name)
    for state in status.get("guardrails") or []:
        if not isinstance(state, Mapping) or not state.get("name") or not state.get("variant"):
            continue
        labels = {"guardrail": str(state["name"]), "variant": str(state["variant"])}
        _add(out, "arbiter_experiment_guardrail_value", base, state.get("value"), **labels)
        _add(out, "arbiter_experiment_guardrail_champion_value", base, state.get("championValue"), **labels)
        _add(out, "arbiter_experiment_guardrail_p_value", base, state.get("pValue"), **labels)
        _add(
            out, "arbiter_experiment_guardrail_consecutive_breaches", base, state.get("breaches", 0), **labels
        )
        _add(out, "arbiter_experiment_guardrail_breached", base, bool(state.get("breached")), **labels)


def _shadow(
    out: _Families, base: dict[str, str], spec: ModelExperimentSpec | None, status: Mapping[str, Any]
) -> None:
    if spec is None or spec.mode is not Mode.SHADOW:
        return
    shadow = spec.challengers[0].name
    mirroring = status.get("phase") in (Phase.PROGRESSING.value, Phase.PAUSED.value) and not (
        status.get("engine") or {}
    ).get("shadowPassed")
    percent = spec.routing.shadow.percent if spec.routing.shadow else 100
    _add(
        out,
        "arbiter_experiment_shadow_mirror_ratio",
        base,
        percent / 100.0 if mirroring else 0.0,
        variant=shadow,
    )
    agreement = {g.name for g in spec.analysis.guardrails if g.query and AGREEMENT_METRIC in g.query}
    for state in status.get("guardrails") or []:
        if isinstance(state, Mapping) and state.get("name") in agreement and state.get("variant") == shadow:
            _add(out, "arbiter_experiment_shadow_agreement_ratio", base, state.get("value"), variant=shadow)
            break


EXPERIMENTS = ExperimentCollector()
REGISTRY.register(EXPERIMENTS)


def record(namespace: str, name: str, body: Mapping[str, Any], status: Mapping[str, Any]) -> None:
    """Remember the status just written (or read) for an experiment; a deleted object is forgotten."""
    if (body.get("metadata") or {}).get("deletionTimestamp"):
        EXPERIMENTS.forget(namespace, name)
        return
    EXPERIMENTS.record(namespace, name, body.get("spec"), status)


def forget(namespace: str, name: str) -> None:
    """The experiment is gone: drop its series."""
    EXPERIMENTS.forget(namespace, name)
