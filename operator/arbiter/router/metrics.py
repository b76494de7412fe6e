"""The router's Prometheus metrics, in a registry of their own so several routers can share a process."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary

if TYPE_CHECKING:
    from arbiter.router.compare import Comparison

__all__ = ["LATENCY_BUCKETS", "LATENCY_DELTA_BUCKETS", "SCORE_DELTA_BUCKETS", "RouterMetrics"]

# Model latencies: a few ms for a small tree model up to tens of seconds for a large generative one.
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
# Shadow minus served latency: negative when the shadow model is faster.
_POSITIVE_DELTAS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LATENCY_DELTA_BUCKETS = (*(-d for d in reversed(_POSITIVE_DELTAS)), 0.0, *_POSITIVE_DELTAS)
# |shadow score - served score| for probabilities: `le="0"` counts identical scores, the rest how far apart.
SCORE_DELTA_BUCKETS = (0.0, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)


class RouterMetrics:
    """Every metric the router exports, with cached label children for the hot path."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "arbiter_router_requests",
            "Requests answered, by the variant that served them (`none` if the router answered itself)"
            " and the HTTP status code.",
            ["experiment", "variant", "code"],
            registry=r,
        )
        self.duration = Histogram(
            "arbiter_router_request_duration_seconds",
            "Time from the request's arrival to the end of the served upstream response.",
            ["experiment", "variant"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.outcomes = Counter(
            "arbiter_router_outcomes",
            "Outcomes posted to /feedback, by the variant the key was routed to;"
            " result is success, failure or value.",
            ["experiment", "variant", "result"],
            registry=r,
        )
        self.outcome_value = Summary(
            "arbiter_router_outcome_value",
            "Numeric outcomes posted to /feedback: _sum and _count per variant.",
            ["experiment", "variant"],
            registry=r,
        )
        self.outcome_value_squares = Counter(
            "arbiter_router_outcome_value_squares",
            "Sum of the squares of the numeric outcomes posted to /feedback (for the variance).",
            ["experiment", "variant"],
            registry=r,
        )
        self.shadow_comparisons = Counter(
            "arbiter_router_shadow_comparisons",
            "Shadow responses compared with the served response; agree is true or false.",
            ["experiment", "variant", "agree"],
            registry=r,
        )
        self.shadow_latency_delta = Histogram(
            "arbiter_router_shadow_latency_delta_seconds",
            "Shadow response time minus served response time, for compared requests.",
            ["experiment", "variant"],
            buckets=LATENCY_DELTA_BUCKETS,
            registry=r,
        )
        self.shadow_score_delta = Histogram(
            "arbiter_router_shadow_score_delta",
            "Absolute difference between the shadow's and the served answer's score (shadow.compare.score),"
            " the largest over a list of scores.",
            ["experiment", "variant"],
            buckets=SCORE_DELTA_BUCKETS,
            registry=r,
        )
        self.shadow_unreadable = Counter(
            "arbiter_router_shadow_unreadable",
            "Compared answers the shadow.compare rules could not read (counted as disagreements when they"
            " decide agreement); reason is not_json, field or score.",
            ["experiment", "variant", "reason"],
            registry=r,
        )
        self.shadow_dropped = Counter(
            "arbiter_router_shadow_dropped",
            "Mirrored requests not sent because shadow.maxConcurrent were already in flight.",
            ["experiment", "variant"],
            registry=r,
        )
        self.upstream_errors = Counter(
            "arbiter_router_upstream_errors",
            "Upstream requests that got no HTTP response; role is serve or shadow,"
            " reason is connect, timeout or protocol.",
            ["experiment", "variant", "role", "reason"],
            registry=r,
        )
        self.retries = Counter(
            "arbiter_router_retries",
            "Requests to a challenger that failed and were retried once on the champion;"
            " variant is the challenger.",
            ["experiment", "variant", "reason"],
            registry=r,
        )
        self.config_reloads = Counter(
            "arbiter_router_config_reloads",
            "Configuration loads; result is success or failure (a failure keeps the previous routes).",
            ["result"],
            registry=r,
        )
        self.variant_weight = Gauge(
            "arbiter_router_variant_weight",
            "Weight in force per variant (0 for the shadow variant, which serves nothing).",
            ["experiment", "variant"],
            registry=r,
        )
        self.shadow_percent = Gauge(
            "arbiter_router_shadow_percent",
            "Share of requests mirrored to the shadow variant, in percent.",
            ["experiment", "variant"],
            registry=r,
        )
        self.attribution_rejected = Counter(
            "arbiter_router_attribution_rejected",
            "Feedback refused for its attribution token; reason is malformed, signature, expired,"
            " experiment, variant or disabled (the router has no keys).",
            ["experiment", "reason"],
            registry=r,
        )
        self._children: dict[tuple[Any, ...], Any] = {}

    def request_done(self, experiment: str, variant: str, code: int, seconds: float | None) -> None:
        """Count one answered request and, if it reached a model, its duration."""
        key = ("r", experiment, variant, code)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.requests.labels(experiment, variant, str(code))
        child.inc()
        if seconds is not None:
            hist_key = ("d", experiment, variant)
            hist = self._children.get(hist_key)
            if hist is None:
                hist = self._children[hist_key] = self.duration.labels(experiment, variant)
            hist.observe(seconds)

    def shadow_compared(
        self, experiment: str, variant: str, comparison: Comparison, latency_delta: float
    ) -> None:
        """Count one shadow comparison: agreement, score delta, unreadable answers and the latency delta."""
        agree = "true" if comparison.agree else "false"
        self.shadow_comparisons.labels(experiment, variant, agree).inc()
        self.shadow_latency_delta.labels(experiment, variant).observe(latency_delta)
        if comparison.score_delta is not None:
            self.shadow_score_delta.labels(experiment, variant).observe(comparison.score_delta)
        if comparison.unreadable:
            self.shadow_unreadable.labels(experiment, variant, comparison.unreadable).inc()

    def show_routes(
        self, experiment: str, weights: dict[str, float], shadow: tuple[str, float] | None
    ) -> None:
        """Publish the weights (and the shadow share) now in force, forgetting previous experiments'.

        Also creates, at 0, the counter series a query divides by or compares across variants -- outcomes
        success/failure for every variant, a 500 count per variant, agree true/false for the shadow -- so
        "it never happened" reads 0 in Prometheus rather than no data: a challenger that never converts,
        never fails or whose shadow never agrees must be judged, not waited for.
        """
        self.variant_weight.clear()
        self.shadow_percent.clear()
        for name, weight in weights.items():
            self.variant_weight.labels(experiment, name).set(weight)
            for result in ("success", "failure"):
                self.outcomes.labels(experiment, name, result)
            self.requests.labels(experiment, name, "500")
        if shadow is not None:
            self.shadow_percent.labels(experiment, shadow[0]).set(shadow[1])
            for agree in ("true", "false"):
                self.shadow_comparisons.labels(experiment, shadow[0], agree)
