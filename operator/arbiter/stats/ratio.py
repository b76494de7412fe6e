"""Ratio metrics per randomisation unit (user): the delta method, by linearisation.

When users are randomised but requests are measured, a metric such as "conversions per request" is a
ratio of two per-user sums, ``R = sum_i Y_i / sum_i N_i``, and the requests of one user are not
independent: treating them as independent understates the variance and makes the test anti-conservative.
The delta method gives the variance of ``R`` from per-user moments (Deng, Knoblich & Lu 2018, *Applying
the Delta Method in Metric Analytics*, eq. 4; Kohavi, Tang & Xu 2020, *Trustworthy Online Controlled
Experiments*, ch. 18)::

    Var(R) ~= (1 / (n mu_N^2)) (s_Y^2 - 2 R s_YN + R^2 s_N^2)

with ``n`` users, ``mu_N`` the mean requests per user and ``s`` the sample (co)variances over users.
Equivalently, the per-user *linearised* values ``L_i = R + (Y_i - R N_i) / mu_N`` have mean ``R`` and
sample variance ``n Var(R)``; ``RatioStats.as_mean_stats()`` returns their count, sum and sum of squares,
so every test that takes ``MeanStats`` (Welch, the mSPRT, ``decide``) runs at the user level unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from arbiter.stats.sufficient import MeanStats


@dataclass(frozen=True)
class RatioStats:
    """Per-user moments of a ratio metric ``sum Y / sum N``; they add like the other sufficient statistics.

    Attributes:
        units: users (randomisation units).
        sum_y, sum_n: totals of the numerator (successes, or a value's sum) and denominator (requests).
        sum_yy, sum_nn, sum_yn: sums over users of ``Y_i^2``, ``N_i^2`` and ``Y_i N_i``.
    """

    units: float
    sum_y: float
    sum_n: float
    sum_yy: float
    sum_nn: float
    sum_yn: float

    def __add__(self, other: RatioStats) -> RatioStats:
        if not isinstance(other, RatioStats):
            return NotImplemented
        return RatioStats(
            self.units + other.units,
            self.sum_y + other.sum_y,
            self.sum_n + other.sum_n,
            self.sum_yy + other.sum_yy,
            self.sum_nn + other.sum_nn,
            self.sum_yn + other.sum_yn,
        )

    @classmethod
    def from_units(cls, numerators: npt.ArrayLike, denominators: npt.ArrayLike) -> RatioStats:
        """Summarise per-user numerators ``Y_i`` and denominators ``N_i`` (same length)."""
        y = np.asarray(numerators, dtype=np.float64)
        n = np.asarray(denominators, dtype=np.float64)
        return cls(
            float(y.size),
            float(y.sum()),
            float(n.sum()),
            float(np.dot(y, y)),
            float(np.dot(n, n)),
            float(np.dot(y, n)),
        )

    @property
    def ratio(self) -> float:
        """``sum Y / sum N``, NaN without requests."""
        return self.sum_y / self.sum_n if self.sum_n > 0 else math.nan

    @property
    def linearized_variance(self) -> float:
        """Sample variance (divisor ``n - 1``) of the linearised per-user values; NaN with < 2 users."""
        units = self.units
        if units < 2 or self.sum_n <= 0:
            return math.nan
        ratio = self.ratio
        mean_n = self.sum_n / units
        var_y = (self.sum_yy - self.sum_y**2 / units) / (units - 1)
        var_n = (self.sum_nn - self.sum_n**2 / units) / (units - 1)
        cov_yn = (self.sum_yn - self.sum_y * self.sum_n / units) / (units - 1)
        return max(var_y - 2 * ratio * cov_yn + ratio**2 * var_n, 0.0) / mean_n**2

    @property
    def ratio_variance(self) -> float:
        """The delta-method variance of ``ratio``: ``linearized_variance / units``."""
        return self.linearized_variance / self.units if self.units >= 2 else math.nan

    def as_mean_stats(self) -> MeanStats:
        """Count, sum and sum of squares of the linearised values: a ``MeanStats`` with mean ``ratio``.

        Its ``variance / n`` is the delta-method variance, so Welch, the mSPRT and ``decide`` judge the
        ratio at the level of users. With fewer than two users the variance is 0 (tests then say so).
        """
        units = self.units
        ratio = self.ratio
        if units <= 0 or not math.isfinite(ratio):
            return MeanStats(units, 0.0, 0.0)
        variance = self.linearized_variance
        spread = (units - 1) * variance if math.isfinite(variance) else 0.0
        return MeanStats(units, units * ratio, spread + units * ratio**2)
