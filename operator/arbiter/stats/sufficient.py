"""Sufficient statistics: small frozen values that add, so per-interval counts aggregate exactly."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class ProportionStats:
    """Successes out of trials for a 0/1 outcome (e.g. converted, errored)."""

    successes: float
    trials: float

    def __add__(self, other: ProportionStats) -> ProportionStats:
        if not isinstance(other, ProportionStats):
            return NotImplemented
        return ProportionStats(self.successes + other.successes, self.trials + other.trials)

    @property
    def n(self) -> float:
        """The number of observations."""
        return self.trials

    @property
    def mean(self) -> float:
        """The observed rate, NaN without trials."""
        return self.successes / self.trials if self.trials > 0 else math.nan

    @property
    def variance(self) -> float:
        """The Bernoulli variance ``p(1 - p)`` of one observation."""
        rate = self.mean
        return rate * (1.0 - rate)

    def validation_error(self) -> str | None:
        """Why these counts cannot be analysed, or None when they can."""
        if not (math.isfinite(self.successes) and math.isfinite(self.trials)):
            return "counts must be finite"
        if self.trials < 0 or self.successes < 0:
            return "counts must not be negative"
        if self.successes > self.trials:
            return f"successes ({self.successes:g}) exceed trials ({self.trials:g})"
        return None

    @classmethod
    def from_values(cls, values: npt.ArrayLike) -> ProportionStats:
        """Count successes (values equal to 1 or True) among raw 0/1 outcomes."""
        array = np.asarray(values, dtype=np.float64)
        return cls(float(array.sum()), float(array.size))


@dataclass(frozen=True)
class MeanStats:
    """Count, sum and sum of squares of a numeric outcome (e.g. latency, revenue)."""

    n: float
    sum: float
    sum_squares: float

    def __add__(self, other: MeanStats) -> MeanStats:
        if not isinstance(other, MeanStats):
            return NotImplemented
        return MeanStats(self.n + other.n, self.sum + other.sum, self.sum_squares + other.sum_squares)

    @property
    def mean(self) -> float:
        """The sample mean, NaN without observations."""
        return self.sum / self.n if self.n > 0 else math.nan

    @property
    def variance(self) -> float:
        """The unbiased sample variance (divisor ``n - 1``), NaN with fewer than two observations."""
        if self.n < 2:
            return math.nan
        # sum_squares - sum * mean loses precision when the mean dwarfs the spread; clamp the tiny
        # negative values that cancellation can leave.
        return max(self.sum_squares - self.sum * (self.sum / self.n), 0.0) / (self.n - 1)

    def validation_error(self) -> str | None:
        """Why these statistics cannot be analysed, or None when they can."""
        if not all(math.isfinite(v) for v in (self.n, self.sum, self.sum_squares)):
            return "statistics must be finite"
        if self.n < 0 or self.sum_squares < 0:
            return "count and sum of squares must not be negative"
        return None

    @classmethod
    def from_values(cls, values: npt.ArrayLike) -> MeanStats:
        """Summarise raw numeric outcomes."""
        array = np.asarray(values, dtype=np.float64)
        return cls(float(array.size), math.fsum(array.tolist()), math.fsum((array * array).tolist()))


SufficientStats = ProportionStats | MeanStats
