"""What the engine sees on one tick: per-variant readings and cumulative counters, each possibly missing.

The handlers fill these from the metrics provider; the engine never talks to Prometheus itself.
Missing data (no series yet) and errors (unreachable, bad query) are kept apart because they are
treated differently: no data is simply inconclusive, repeated errors pause the experiment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from arbiter.stats import MeanStats, ProportionStats

SufficientStats = ProportionStats | MeanStats


@dataclass(frozen=True)
class Reading:
    """One number for one variant: a value, no data (both None), or an error naming the query."""

    value: float | None = None
    error: str | None = None

    @property
    def has_value(self) -> bool:
        """True when a number was read."""
        return self.value is not None and self.error is None


@dataclass(frozen=True)
class MetricData:
    """Cumulative sufficient statistics of one metric, per variant.

    Args:
        stats: the variants whose counters were read.
        missing: variant -> why nothing was read (no data yet).
        errors: variant -> the error, naming the failing query.
    """

    stats: Mapping[str, SufficientStats] = field(default_factory=dict)
    missing: Mapping[str, str] = field(default_factory=dict)
    errors: Mapping[str, str] = field(default_factory=dict)

    def complete(self, variants: list[str]) -> bool:
        """True when every variant has counters."""
        return all(v in self.stats for v in variants)


@dataclass(frozen=True)
class Observations:
    """Everything read for one tick."""

    guardrails: Mapping[str, Mapping[str, Reading]] = field(default_factory=dict)
    guardrail_rates: Mapping[str, MetricData] = field(default_factory=dict)
    primary: MetricData | None = None
    secondary: Mapping[str, MetricData] = field(default_factory=dict)
    samples: Mapping[str, Reading] = field(default_factory=dict)

    def errors(self) -> list[str]:
        """Every distinct error message of this tick, in a stable order."""
        found: list[str] = []
        for readings in self.guardrails.values():
            found.extend(r.error for r in readings.values() if r.error)
        for data in [
            *self.guardrail_rates.values(),
            *([self.primary] if self.primary else []),
            *self.secondary.values(),
        ]:
            found.extend(data.errors.values())
        found.extend(r.error for r in self.samples.values() if r.error)
        return list(dict.fromkeys(found))
