"""Arbiter's statistics: pure numpy/scipy, no I/O, nothing else of Arbiter's.

Sufficient statistics (``ProportionStats``, ``MeanStats``) add together; every test works from them.
``decide`` judges one analysis tick; the rest are the building blocks it uses, exported for the
command line and for anyone who wants one test on its own.
"""

from arbiter.stats._types import (
    Alternative,
    Direction,
    Method,
    MetricType,
    Spending,
    Verdict,
    alternative_for,
    format_number,
    json_value,
)
from arbiter.stats.calibration import CalibrationResult, CellHistory, GuardrailRule, calibrate
from arbiter.stats.decision import (
    ChallengerDecision,
    ChallengerState,
    DecisionConfig,
    DecisionState,
    TickDecision,
    decide,
)
from arbiter.stats.extension import Extension, extension_needed, family_alpha
from arbiter.stats.fixed import (
    ComparisonResult,
    compare_fixed,
    relative_lift_interval,
    two_proportion_ztest,
    variant_interval,
    welch_ttest,
)
from arbiter.stats.group_sequential import (
    GroupSequentialBoundaries,
    crossing_probabilities,
    group_sequential_boundaries,
    spent_alpha,
)
from arbiter.stats.guardrail import GuardrailResult, guardrail_harm_test
from arbiter.stats.multiplicity import bonferroni, holm
from arbiter.stats.planning import (
    SampleSize,
    expected_days,
    power_normal,
    power_welch_t,
    sample_size_mean,
    sample_size_proportion,
    sample_size_t_test,
    sequential_inflation_factor,
)
from arbiter.stats.ratio import RatioStats
from arbiter.stats.sequential import (
    SequentialResult,
    SequentialState,
    confidence_sequence,
    msprt_log_likelihood_ratio,
    msprt_one_sided_z_boundary,
    msprt_p_value,
    msprt_test,
    msprt_z_boundary,
)
from arbiter.stats.srm import (
    SRMResult,
    multinomial_log_likelihood_ratio,
    sample_ratio_mismatch,
    sequential_sample_ratio_mismatch,
)
from arbiter.stats.sufficient import MeanStats, ProportionStats, SufficientStats

__all__ = [
    "Alternative",
    "CalibrationResult",
    "CellHistory",
    "ChallengerDecision",
    "ChallengerState",
    "ComparisonResult",
    "DecisionConfig",
    "DecisionState",
    "Direction",
    "Extension",
    "GroupSequentialBoundaries",
    "GuardrailResult",
    "GuardrailRule",
    "MeanStats",
    "Method",
    "MetricType",
    "ProportionStats",
    "RatioStats",
    "SRMResult",
    "SampleSize",
    "SequentialResult",
    "SequentialState",
    "Spending",
    "SufficientStats",
    "TickDecision",
    "Verdict",
    "alternative_for",
    "bonferroni",
    "calibrate",
    "compare_fixed",
    "confidence_sequence",
    "crossing_probabilities",
    "decide",
    "expected_days",
    "extension_needed",
    "family_alpha",
    "format_number",
    "group_sequential_boundaries",
    "guardrail_harm_test",
    "holm",
    "json_value",
    "msprt_log_likelihood_ratio",
    "msprt_one_sided_z_boundary",
    "msprt_p_value",
    "msprt_test",
    "msprt_z_boundary",
    "multinomial_log_likelihood_ratio",
    "power_normal",
    "power_welch_t",
    "relative_lift_interval",
    "sample_ratio_mismatch",
    "sample_size_mean",
    "sample_size_proportion",
    "sample_size_t_test",
    "sequential_inflation_factor",
    "sequential_sample_ratio_mismatch",
    "spent_alpha",
    "two_proportion_ztest",
    "variant_interval",
    "welch_ttest",
]
