"""Sample-ratio mismatch: does the traffic split match the configured weights?"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from scipy import stats as sps

from arbiter.stats._types import JsonResult


@dataclass(frozen=True)
class SRMResult(JsonResult):
    """Pearson chi-square goodness of fit of the observed counts to the configured weights.

    ``mismatch`` is True when ``p_value < threshold``. Traffic to a variant whose weight is zero is a
    mismatch by definition (p-value 0).
    """

    p_value: float
    mismatch: bool
    statistic: float
    df: int
    threshold: float
    observed: dict[str, float] = field(default_factory=dict)
    expected: dict[str, float] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)
    error: str | None = None


def sample_ratio_mismatch(
    observed: Mapping[str, float], weights: Mapping[str, float], threshold: float = 0.001
) -> SRMResult:
    """Test whether ``observed`` counts per variant fit ``weights`` (any positive scale; normalised here).

    Args:
        observed: units (requests, users) seen per variant. Variants missing here count as zero.
        weights: the configured traffic weights per variant, e.g. ``{"stable": 90, "canary": 10}``.
        threshold: the p-value below which the split is a mismatch (0.001 is the usual, strict, choice
            because the check runs continuously and a false alarm halts an experiment).
    """
    observed_counts = {str(k): float(v) for k, v in observed.items()}

    def failed(message: str) -> SRMResult:
        return SRMResult(math.nan, False, math.nan, 0, threshold, observed_counts, {}, dict(weights), message)

    unknown = sorted(set(observed_counts) - set(weights))
    if unknown:
        return failed(f"traffic seen for variants without a weight: {', '.join(unknown)}")
    if len(weights) < 2:
        return failed("a sample-ratio check needs at least two variants")
    if any(not math.isfinite(w) or w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
        return failed("weights must be non-negative and not all zero")
    if any(not math.isfinite(c) or c < 0 for c in observed_counts.values()):
        return failed("observed counts must be non-negative")
    total_weight = float(sum(weights.values()))
    normalised = {name: float(w) / total_weight for name, w in weights.items()}
    counts = {name: observed_counts.get(name, 0.0) for name in weights}
    total = sum(counts.values())
    if total <= 0:
        return failed("no traffic observed yet")
    expected = {name: total * share for name, share in normalised.items()}
    if any(expected[name] == 0 and counts[name] > 0 for name in counts):
        return SRMResult(0.0, True, math.inf, len(counts) - 1, threshold, counts, expected, normalised)
    tested = [name for name in counts if expected[name] > 0]
    if len(tested) < 2:
        return SRMResult(1.0, False, 0.0, 0, threshold, counts, expected, normalised)
    statistic = sum((counts[name] - expected[name]) ** 2 / expected[name] for name in tested)
    df = len(tested) - 1
    p_value = float(sps.chi2.sf(statistic, df))
    return SRMResult(p_value, p_value < threshold, statistic, df, threshold, counts, expected, normalised)
