"""Per-experiment operator metrics, computed from the status alone, as Prometheus would parse them."""

from __future__ import annotations

import copy
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from arbiter.handlers.telemetry import ExperimentCollector

SPEC: dict[str, Any] = {
    "mode": "Canary",
    "champion": {"name": "v1", "deployment": "d1", "service": "s1"},
    "challengers": [{"name": "v2", "deployment": "d2", "service": "s2"}],
    "routing": {"provider": "Router", "router": {"configMap": "routes"}},
    "steps": [{"weight": 20}, {"weight": 50}],
    "analysis": {
        "prometheus": {"url": "http://prometheus:9090"},
        "guardrails": [
            {"name": "latency", "query": "q", "max": 0.2, "failureLimit": 3},
            {"name": "errors", "query": "q", "max": 0.05, "critical": True},
        ],
        "primary": {
            "name": "conversion",
            "type": "Proportion",
            "successes": "s",
            "trials": "t",
            "minimumDetectableEffect": 0.05,
        },
        "secondary": [
            {
                "name": "clicks",
                "type": "Proportion",
                "successes": "s",
                "trials": "t",
                "minimumDetectableEffect": 0.1,
            }
        ],
        "test": {"alpha": 0.01},
        "sampleRatioMismatch": {"pValueThreshold": 0.002},
    },
}
STATUS: dict[str, Any] = {
    "phase": "Progressing",
    "currentStep": 1,
    "weights": {"v1": 50, "v2": 50},
    "challengerWeight": 50,
    "startedAt": "2026-01-01T00:00:00Z",
    "stepStartedAt": "2026-01-01T00:10:00Z",
    "decision": {"outcome": "Hold", "reason": "holding", "time": "2026-01-01T00:11:00Z"},
    "traffic": {"verified": "Yes", "weights": {"v1": 50, "v2": 50}},
    "guardrails": [
        {"name": "latency", "variant": "v2", "value": 0.25, "breaches": 2, "breached": True},
        {"name": "errors", "variant": "v2", "value": 0.01, "breaches": 0, "breached": False},
    ],
    "analysis": {
        "primary": {
            "metric": "conversion",
            "method": "Sequential",
            "results": [
                {
                    "variant": "v2",
                    "verdict": "Inconclusive",
                    "nControl": 1200,
                    "nTreatment": 1100,
                    "controlValue": 0.1,
                    "treatmentValue": 0.12,
                    "absoluteDifference": 0.02,
                    "relativeLift": 0.2,
                    "ciLow": -0.004,
                    "ciHigh": 0.044,
                    "pValue": 0.08,
                    "pValueAdjusted": 0.08,
                }
            ],
            "variants": [
                {"variant": "v1", "n": 1200, "value": 0.1, "ciLow": 0.085, "ciHigh": 0.117},
                {"variant": "v2", "n": 1100, "value": 0.12, "ciLow": 0.102, "ciHigh": 0.14},
                {"variant": "v3", "n": 1, "value": 1.0},
            ],
        },
        "secondary": [
            {
                "variant": "v2",
                "metric": "clicks",
                "verdict": "Win",
                "pValue": 0.001,
                "pValueFamilyAdjusted": 0.002,
            }
        ],
        "srm": {"method": "Sequential", "pValue": 0.4, "mismatch": False},
    },
    "engine": {
        "counters": {
            "samples": {
                "v1": {"base": [0, 300], "carry": [0, 0], "last": [0, 1500]},
                "v2": {"base": [0, 0], "carry": [0, 0], "last": [0, 1100]},
            }
        },
        "stepSamples": {"v1": 1000, "v2": 600},
    },
}


def scrape(collector: ExperimentCollector) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample as Prometheus parses it: (name, labels) -> value."""
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict[Any, float], name: str, **labels: str) -> float | None:
    """The sample of ``name`` whose labels include ``labels`` (exactly one must match)."""
    found = [v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= ls]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else None


def recorded(spec: dict[str, Any] = SPEC, status: dict[str, Any] = STATUS) -> ExperimentCollector:
    collector = ExperimentCollector()
    collector.record("ml", "fraud", spec, status)
    return collector


def test_every_number_comes_from_the_status_and_spec() -> None:
    s = scrape(recorded())
    exp = {"namespace": "ml", "experiment": "fraud"}
    assert value(s, "arbiter_build_info") == 1.0
    assert value(s, "arbiter_experiment_info", **exp, mode="Canary", champion="v1", phase="Progressing") == 1
    assert value(s, "arbiter_experiment_phase", **exp, phase="Progressing") == 1
    assert value(s, "arbiter_experiment_phase", **exp, phase="Promoted") == 0
    assert value(s, "arbiter_experiments", phase="Progressing") == 1
    assert value(s, "arbiter_experiment_current_step", **exp) == 1
    assert value(s, "arbiter_experiment_steps", **exp) == 2
    assert value(s, "arbiter_experiment_started_timestamp_seconds", **exp) == 1767225600
    assert value(s, "arbiter_experiment_step_started_timestamp_seconds", **exp) == 1767225600 + 600
    assert (
        value(s, "arbiter_experiment_last_decision_timestamp_seconds", **exp, outcome="Hold")
        == 1767225600 + 660
    )
    assert value(s, "arbiter_experiment_variant_weight_ratio", **exp, variant="v1", role="champion") == 0.5
    assert value(s, "arbiter_experiment_variant_weight_ratio", **exp, variant="v2", role="challenger") == 0.5
    assert value(s, "arbiter_experiment_traffic_verified", **exp, state="Yes") == 1
    assert value(s, "arbiter_experiment_samples", **exp, variant="v1") == 1200
    assert value(s, "arbiter_experiment_samples", **exp, variant="v2") == 1100
    assert value(s, "arbiter_experiment_step_samples", **exp, variant="v1") == 200
    assert value(s, "arbiter_experiment_step_samples", **exp, variant="v2") == 500
    assert value(s, "arbiter_experiment_alpha", **exp) == 0.01
    primary = {**exp, "metric": "conversion", "kind": "primary"}
    assert value(s, "arbiter_experiment_metric_value", **primary, variant="v1") == 0.1
    assert value(s, "arbiter_experiment_metric_value", **primary, variant="v2") == 0.12
    assert value(s, "arbiter_experiment_metric_absolute_difference", **primary, variant="v2") == 0.02
    assert value(s, "arbiter_experiment_metric_relative_lift", **primary, variant="v2") == 0.2
    assert value(s, "arbiter_experiment_metric_difference_ci_lower", **primary, variant="v2") == -0.004
    assert value(s, "arbiter_experiment_metric_difference_ci_upper", **primary, variant="v2") == 0.044
    assert value(s, "arbiter_experiment_metric_p_value", **primary, variant="v2") == 0.08
    assert value(s, "arbiter_experiment_metric_value_ci_lower", **primary, variant="v1") == 0.085
    assert value(s, "arbiter_experiment_metric_value_ci_upper", **primary, variant="v1") == 0.117
    assert value(s, "arbiter_experiment_metric_value_ci_lower", **primary, variant="v2") == 0.102
    assert value(s, "arbiter_experiment_metric_value_ci_upper", **primary, variant="v2") == 0.14
    assert value(s, "arbiter_experiment_metric_value_ci_lower", **primary, variant="v3") is None
    assert value(s, "arbiter_experiment_metric_p_value_adjusted", **primary, variant="v2") == 0.08
    assert value(s, "arbiter_experiment_metric_verdict", **primary, variant="v2", verdict="Inconclusive") == 1
    assert value(s, "arbiter_experiment_metric_verdict", **primary, variant="v2", verdict="Win") == 0
    secondary = {**exp, "metric": "clicks", "kind": "secondary"}
    assert value(s, "arbiter_experiment_metric_p_value_adjusted", **secondary, variant="v2") == 0.002
    assert value(s, "arbiter_experiment_metric_verdict", **secondary, variant="v2", verdict="Win") == 1
    latency = {**exp, "guardrail": "latency"}
    assert value(s, "arbiter_experiment_guardrail_value", **latency, variant="v2") == 0.25
    assert value(s, "arbiter_experiment_guardrail_threshold", **latency, bound="max") == 0.2
    assert value(s, "arbiter_experiment_guardrail_threshold", **latency, bound="min") is None
    assert value(s, "arbiter_experiment_guardrail_consecutive_breaches", **latency, variant="v2") == 2
    assert value(s, "arbiter_experiment_guardrail_failure_limit", **latency) == 3
    assert value(s, "arbiter_experiment_guardrail_failure_limit", **exp, guardrail="errors") == 1
    assert value(s, "arbiter_experiment_guardrail_breached", **latency, variant="v2") == 1
    assert value(s, "arbiter_experiment_srm_p_value", **exp) == 0.4
    assert value(s, "arbiter_experiment_srm_mismatch", **exp) == 0
    assert value(s, "arbiter_experiment_srm_threshold", **exp) == 0.002
    assert value(s, "arbiter_experiment_shadow_mirror_ratio", **exp, variant="v2") is None, "not a shadow"


def test_a_forgotten_experiment_takes_its_series_with_it() -> None:
    collector = recorded()
    collector.record("ml", "other", SPEC, {"phase": "Promoted", "weights": {"v1": 0, "v2": 100}})
    collector.forget("ml", "fraud")
    s = scrape(collector)
    assert not [key for key in s if ("experiment", "fraud") in key[1]]
    assert value(s, "arbiter_experiment_variant_weight_ratio", experiment="other", variant="v2") == 1.0
    assert value(s, "arbiter_experiments", phase="Progressing") == 0
    assert value(s, "arbiter_experiments", phase="Promoted") == 1


def test_shadow_agreement_is_the_agreement_guardrails_reading() -> None:
    spec = copy.deepcopy(SPEC)
    spec.update(mode="Shadow", steps=None)
    spec["routing"]["shadow"] = {"percent": 40}
    spec["analysis"]["guardrails"] = [
        {
            "name": "agreement",
            "query": 'sum(arbiter_router_shadow_comparisons_total{agree="true"}) / '
            "sum(arbiter_router_shadow_comparisons_total)",
            "min": 0.95,
        }
    ]
    status = {
        "phase": "Progressing",
        "weights": {"v1": 100, "v2": 0},
        "guardrails": [{"name": "agreement", "variant": "v2", "value": 0.97, "breaches": 0}],
    }
    s = scrape(recorded(spec, status))
    assert value(s, "arbiter_experiment_shadow_agreement_ratio", variant="v2") == 0.97
    assert value(s, "arbiter_experiment_shadow_mirror_ratio", variant="v2") == 0.4
    done = scrape(recorded(spec, {**status, "phase": "Concluded"}))
    assert value(done, "arbiter_experiment_shadow_mirror_ratio", variant="v2") == 0.0


def test_a_bad_spec_or_a_strange_status_never_breaks_the_scrape() -> None:
    collector = ExperimentCollector()
    collector.record("ml", "broken", {"mode": "Nope"}, {"phase": "Failed", "weights": {"v1": "x"}})
    collector.record(
        "ml",
        "odd",
        SPEC,
        {
            "guardrails": [None, {"name": "g"}],
            "analysis": {"primary": {"results": [{"variant": "v2", "pValue": "?"}]}},
        },
    )
    s = scrape(collector)
    assert value(s, "arbiter_experiment_info", experiment="broken", phase="Failed", mode="") == 1
    assert value(s, "arbiter_experiment_metric_p_value", experiment="odd") is None
