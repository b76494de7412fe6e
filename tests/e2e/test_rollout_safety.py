"""Stories where the right decision is *not* to promote: identical variants, a broken split, no metrics.

Same real parts as test_rollout_canary.py. Every story records the experiment's status in the background,
because what must hold here ("never promoted", "never rolled back while blind") holds over the whole run.
"""

from __future__ import annotations

from typing import Any

import pytest
from harness.env import RolloutEnv
from harness.experiment import (
    UNDECIDED_MDE,
    UNDECIDED_TEST,
    condition,
    conversion_metric,
    latency_guardrail,
    wait_for_events,
    wait_for_status,
)

from arbiter_fixtures import OperatorProcess

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(180)]

TERMINAL = {"Promoted", "RolledBack", "Concluded", "Failed"}


def test_aa_experiment_is_never_promoted(rollout_env: Any, operator: OperatorProcess, kube_api: Any) -> None:
    """v1 and v2 are the same model (12% conversion). Within maxDuration nothing may call v2 a winner.

    alpha is 0.001 so that the test itself is not flaky: a false Win or Loss has probability at most alpha.
    """
    env: RolloutEnv = rollout_env(experiment="same")
    env.apply(
        [
            env.experiment(
                steps=[{"weight": 50, "minDuration": "2s"}],
                primary=conversion_metric(mde=0.2),
                test={"method": "Sequential", "alpha": 0.001},
                decision={"maxDuration": "40s", "onTimeout": "KeepChampion"},
            )
        ]
    )
    recorder = env.record_status("same")
    traffic = env.traffic({"v1": 0.12, "v2": 0.12}, rate=150, max_seconds=120, seed=21)

    # It ends keeping the champion: at maxDuration, or earlier once the confidence sequence rules out the
    # MDE. Either way Concluded: RolledBack means harm was shown (a Loss or a guardrail breach), which an
    # A/A experiment can show with probability at most alpha, whatever the sign of its estimate
    # (docs/rollout.md). A promotion, a Win/Loss verdict or a rollback fails the test.
    ended = wait_for_status(
        kube_api,
        env.namespace,
        "same",
        lambda s: s.get("phase") == "Concluded",
        forbid=lambda s: s.get("phase") in ("Promoted", "RolledBack", "Failed", "Paused"),
        timeout=90,
        message="the A/A experiment to end Concluded, keeping the champion",
    )
    seen = recorder.stop()
    traffic.stop()

    assert {"Promoted", "RolledBack"}.isdisjoint({o.phase for o in seen})
    verdicts = [v for o in seen for v in o.verdicts.values()]
    assert verdicts, "the primary metric was judged at least once"
    assert "Win" not in verdicts and "Loss" not in verdicts, sorted(set(verdicts))
    assert ended["weights"] == {"v1": 100, "v2": 0}
    assert ended["decision"].get("winner", "v1") == "v1"
    assert ended["decision"]["outcome"] == "Conclude", ended["decision"]
    if verdicts[-1] == "Futile":
        assert ended["decision"]["reason"].startswith("no improvement worth the MDE"), ended["decision"]
    wait_for_events(kube_api, env.namespace, "same", "Concluded")
    # The engine forecast the decision for v2 from the real counts (status.forecast, docs/statistics.md);
    # the recorder keeps a status only when phase/step/weights/verdicts change, so the last one counts too.
    forecasts = [o.raw.get("forecast") or {} for o in seen] + [ended.get("forecast") or {}]
    timed = [f for f in forecasts if f.get("secondsToDecision") is not None]
    assert timed, [f.get("summary") for f in forecasts][-5:]
    assert all(f["variant"] == "v2" and 0.0 <= f["conditionalPower"] <= 1.0 for f in timed), timed[-1]
    assert all(f["rateTreatment"] > 0 and f["decisionIn"] != "n/a" for f in timed), timed[-1]
    # The split was right all along: no false sample-ratio alarm either.
    assert all(condition(o.raw, "SampleRatioMismatch").get("status") != "True" for o in seen)


def test_sample_ratio_mismatch_pauses(rollout_env: Any, operator: OperatorProcess, kube_api: Any) -> None:
    """A logging bug loses the feedback of 30% of v2's users: the split no longer matches and it pauses."""
    env: RolloutEnv = rollout_env(experiment="srm")
    manifest = env.experiment(steps=[{"weight": 50, "minDuration": "10m"}], srm_threshold=0.001)
    # No primary metric: nothing but the split is judged here. The samples are the feedback events, which
    # is where the logging bug bites.
    manifest["spec"]["analysis"]["sampleCount"] = conversion_metric()["trials"]
    env.apply([manifest])
    recorder = env.record_status("srm")
    traffic = env.traffic({"v1": 0.12, "v2": 0.12}, rate=150, max_seconds=150, seed=22)

    # First the split is checked and found right...
    matching = wait_for_status(
        kube_api,
        env.namespace,
        "srm",
        lambda s: condition(s, "SampleRatioMismatch").get("reason") == "Matches",
        forbid=lambda s: s.get("phase") in TERMINAL or s.get("phase") == "Paused",
        timeout=60,
        message="the sample-ratio check to find the 50/50 split right",
    )
    assert condition(matching, "SampleRatioMismatch")["status"] == "False"

    # ...then the logging bug starts.
    traffic.inject_srm("v2", 0.3)
    paused = wait_for_status(
        kube_api,
        env.namespace,
        "srm",
        lambda s: s.get("phase") == "Paused",
        forbid=lambda s: s.get("phase") in TERMINAL,
        timeout=90,
        message="the experiment to pause on the sample-ratio mismatch",
    )
    assert paused["pauseReason"] == "SampleRatioMismatch", paused.get("pauseReason")
    srm = condition(paused, "SampleRatioMismatch")
    assert srm["status"] == "True" and srm["reason"] == "Mismatch", srm
    numbers = paused["analysis"]["srm"]
    # The default anytime-valid test, which the correct split before the bug could not trip (<= 0.1%).
    assert numbers["method"] == "Sequential", numbers
    assert numbers["mismatch"] is True and numbers["pValue"] < 0.001, numbers
    assert numbers["observed"]["v2"] < numbers["observed"]["v1"], numbers
    assert paused["weights"] == {"v1": 50, "v2": 50}, "a pause holds the split where it is"
    wait_for_events(kube_api, env.namespace, "srm", "PausedSampleRatioMismatch")
    dropped = traffic.snapshot().of("v2").feedback_dropped
    assert dropped > 0
    assert not {o.phase for o in recorder.stop()} & TERMINAL


def test_prometheus_outage_pauses_and_resumes(
    rollout_env: Any, operator: OperatorProcess, kube_api: Any, prometheus: Any
) -> None:
    """Prometheus goes away mid-step: the experiment pauses blind (no promotion, no rollback) and resumes."""
    env: RolloutEnv = rollout_env(experiment="blind")
    env.apply(
        [
            env.experiment(
                steps=[{"weight": 30, "minDuration": "10m"}],
                guardrails=[latency_guardrail(max_seconds=0.5)],
                primary=conversion_metric(mde=UNDECIDED_MDE),
                test=UNDECIDED_TEST,
                consecutive_error_limit=3,
            )
        ]
    )
    env.traffic({"v1": 0.10, "v2": 0.10}, rate=120, max_seconds=150, seed=23)
    before = wait_for_status(
        kube_api,
        env.namespace,
        "blind",
        lambda s: (
            s.get("weights") == {"v1": 70, "v2": 30}
            and condition(s, "MetricsAvailable").get("status") == "True"
            and condition(s, "GuardrailsHealthy").get("status") == "True"
        ),
        forbid=lambda s: s.get("phase") in TERMINAL | {"Paused"},
        timeout=60,
        message="step 0 at 30% with metrics and healthy guardrails",
    )
    recorder = env.record_status("blind")
    try:
        prometheus.stop()
        paused = wait_for_status(
            kube_api,
            env.namespace,
            "blind",
            lambda s: s.get("phase") == "Paused",
            forbid=lambda s: s.get("phase") in TERMINAL,
            timeout=60,
            message="the experiment to pause while Prometheus is down",
        )
        assert paused["pauseReason"] == "MetricsUnavailable", paused.get("pauseReason")
        metrics = condition(paused, "MetricsAvailable")
        assert metrics["status"] == "False", metrics
        assert "sum" in metrics["message"] or "histogram_quantile" in metrics["message"], (
            "the condition names the failing query"
        )
        assert paused["weights"] == before["weights"] and paused["currentStep"] == before["currentStep"]
    finally:
        prometheus.start()
    prometheus.wait_for_target_up(env.job, timeout=30)

    resumed = wait_for_status(
        kube_api,
        env.namespace,
        "blind",
        lambda s: (
            s.get("phase") == "Progressing" and condition(s, "MetricsAvailable").get("status") == "True"
        ),
        forbid=lambda s: s.get("phase") in TERMINAL,
        timeout=60,
        message="the experiment to resume once Prometheus is back",
    )
    assert "pauseReason" not in resumed
    assert resumed["currentStep"] == before["currentStep"] and resumed["weights"] == before["weights"]
    assert resumed["stepStartedAt"] == before["stepStartedAt"]
    seen = recorder.stop()
    assert not {o.phase for o in seen} & TERMINAL, [o.phase for o in seen]
    assert all(o.weights == before["weights"] for o in seen if o.weights), "traffic never moved while blind"
    wait_for_events(kube_api, env.namespace, "blind", "PausedMetricsUnavailable", "Resumed")
