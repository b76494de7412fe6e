"""Pins of bugs the e2e stories found, reduced to the pure function where they live (no cluster needed).

These fail until the bug is fixed; then they belong in tests/unit/stats.

Found by ``test_better_challenger_is_promoted_through_every_step[Router]``, which failed about one run in
eight with: ``Concluded: no challenger can reach the minimum detectable effect (... v2 0.1644 vs control
0.106 (diff 0.05842, CI [-0.09586, 0.003402])); keeping the champion`` -- a challenger converting 15%
against 10% was dropped, with a "confidence sequence" that excludes its own point estimate.
"""

from __future__ import annotations

from arbiter.stats import DecisionConfig, ProportionStats, Verdict, decide
from arbiter.stats import MetricType as StatsMetricType


def test_an_early_look_with_a_handful_of_samples_does_not_decide_futility_later() -> None:
    """The first tick after a step change sees the challenger with 5 samples and 0 conversions.

    That look is below ``min_sample_size`` (100), so it must not decide anything, yet ``decide`` already
    folds it into the running intersection of the confidence sequence. With the plug-in variance
    p(1-p)/n = 0 for the 0/5 arm the sequence is [-0.24, +0.003], so the upper bound stays at 0.003 for
    ever: at n = 1000 per arm, 14% vs 10%, the challenger is declared Futile ("rules out an improvement of
    0.02") with the interval [-0.006, 0.003], which is not even an interval around the estimate 0.04.
    Without the early look the same data is Inconclusive, as it should be.
    """
    config = DecisionConfig(metric=StatsMetricType.PROPORTION, mde=0.2)
    early = decide(ProportionStats(14, 118), {"v2": ProportionStats(0, 5)}, config)
    assert early.challengers["v2"].verdict is Verdict.INCONCLUSIVE  # below min_sample_size: no verdict

    later = decide(ProportionStats(100, 1000), {"v2": ProportionStats(140, 1000)}, config, early.state)
    fresh = decide(ProportionStats(100, 1000), {"v2": ProportionStats(140, 1000)}, config)
    assert fresh.challengers["v2"].verdict is Verdict.INCONCLUSIVE
    result = later.challengers["v2"]
    assert result.ci_low <= result.absolute_difference <= result.ci_high, result.reason
    assert result.verdict is not Verdict.FUTILE, result.reason
