"""Family-wise error control: Holm's step-down and Bonferroni adjustments."""

from __future__ import annotations

import math
from collections.abc import Sequence


def _clean(p_values: Sequence[float]) -> list[float]:
    # A comparison that produced no p-value still belongs to the family: count it, as if p = 1.
    return [1.0 if p is None or not math.isfinite(p) else min(max(float(p), 0.0), 1.0) for p in p_values]


def _restore_missing(original: Sequence[float], adjusted: list[float]) -> list[float]:
    return [
        math.nan if p is None or not math.isfinite(p) else a for p, a in zip(original, adjusted, strict=True)
    ]


def bonferroni(p_values: Sequence[float]) -> list[float]:
    """Bonferroni-adjusted p-values ``min(1, m p)``, in input order; NaN stays NaN but counts in ``m``."""
    cleaned = _clean(p_values)
    m = len(cleaned)
    return _restore_missing(p_values, [min(1.0, m * p) for p in cleaned])


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values, in input order; reject where ``adjusted <= alpha``.

    The i-th smallest p-value is multiplied by ``m - i + 1`` and the running maximum keeps the
    adjusted values monotone. NaN (no test) stays NaN but counts towards the family size ``m``.
    """
    cleaned = _clean(p_values)
    m = len(cleaned)
    order = sorted(range(m), key=lambda i: cleaned[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * cleaned[index]))
        adjusted[index] = running
    return _restore_missing(p_values, adjusted)
