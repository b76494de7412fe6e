"""Pins of bugs the e2e stories found, reduced to the pure function where they live (no cluster needed).

Each fails while its bug is there; once fixed it stays as a regression test (its place is then
tests/unit/stats or tests/unit/rollout). The first one was fixed in 11d1969.

The first was found by ``test_better_challenger_is_promoted_through_every_step[Router]``, which failed about one run in
eight with: ``Concluded: no challenger can reach the minimum detectable effect (... v2 0.1644 vs control
0.106 (diff 0.05842, CI [-0.09586, 0.003402])); keeping the champion`` -- a challenger converting 15%
against 10% was dropped, with a "confidence sequence" that excludes its own point estimate.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from harness.experiment import VariantRef, conversion_metric, experiment_manifest

from arbiter.api import parse_spec
from arbiter.rollout.engine import step
from arbiter.rollout.observations import MetricData, Observations
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


def test_a_challenger_whose_series_appear_after_the_step_began_is_not_a_sample_ratio_mismatch() -> None:
    """Found by ``test_better_challenger_is_promoted_through_every_step[Router]``, which paused 2.5s into
    step 0 with ``sample-ratio mismatch: observed v1 240, v2 0 against weights v1 80%, v2 20%`` while the
    router had been serving v2 its 20% for those 2.5s.

    The challenger's counters do not exist in Prometheus until its first request is scraped, which is
    usually a tick or two after its weight was applied. When the series appears, ``accumulate`` takes its
    first reading as the baseline ("what happened before the experiment"), so everything the challenger
    did so far counts as 0 -- but a series born after the experiment started has nothing before it. If the
    champion already has 200 samples in the step at that tick, the check sees N vs 0 and pauses.
    """
    manifest = experiment_manifest(
        "pin",
        champion=VariantRef("v1", "model-v1", "model-v1", "http://127.0.0.1:1"),
        challengers=[VariantRef("v2", "model-v2", "model-v2", "http://127.0.0.1:2")],
        prometheus_url="http://127.0.0.1:9",
        steps=[{"weight": 20, "minDuration": "10m"}],
        primary=conversion_metric(),
    )
    spec = parse_spec(manifest["spec"])
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    status = {
        "phase": "Progressing",
        "currentStep": 0,
        "weights": {"v1": 100, "v2": 0},
        "startedAt": "2026-01-01T00:00:00Z",
        "stepStartedAt": "2026-01-01T00:00:00Z",
    }

    def tick(status: dict[str, Any], seconds: int, primary: MetricData) -> dict[str, Any]:
        return step(spec, status, Observations(primary=primary), t0 + dt.timedelta(seconds=seconds)).status

    # Tick 1: the champion has history, the challenger no series yet; the step's 20% is applied.
    status = tick(status, 1, MetricData(stats={"v1": ProportionStats(100, 1000)}, missing={"v2": "no data"}))
    assert status["weights"] == {"v1": 80, "v2": 20}
    status = tick(status, 2, MetricData(stats={"v1": ProportionStats(110, 1100)}, missing={"v2": "no data"}))
    # Tick 3: 250 more champion samples and the challenger's first 60 (a 20% share): the split is right.
    status = tick(
        status, 3, MetricData(stats={"v1": ProportionStats(135, 1350), "v2": ProportionStats(9, 60)})
    )
    assert status["phase"] == "Progressing", status.get("decision")
    assert status.get("pauseReason") is None
