"""Prometheus down, slow, answering garbage or NaN, with an experiment in the middle of a step.

The operator reads the real Prometheus through :class:`fault_support.FaultyPrometheus`. What must hold
for every fault: nothing is promoted, rolled back or advanced on data that could not be read; a
condition (and an Event) says what is wrong and names the query; when the fault ends, the experiment
goes on by itself from exactly where it was (same step, same weights, same step clock).

- down / slow / garbage are *errors*: after ``consecutiveErrorLimit`` ticks the experiment pauses with
  ``pauseReason: MetricsUnavailable`` and ``MetricsAvailable=False``, and resumes when queries answer.
- NaN is *no data* (Prometheus' answer to ``0/0``): never a pass, never a fail. The experiment stays in
  its step with ``GuardrailsHealthy=Unknown`` (``NoData``) and advances once numbers return.

``ARBITER_CHAOS_FULL=1`` cycles through the error faults twice instead of once.
"""

from __future__ import annotations

from typing import Any

import pytest
from fault_support import (
    FaultyPrometheus,
    faulty_prometheus,
    full_chaos,
    port_open,
    rollout_env,
    steps_entered,
    steps_entered_again,
)
from harness.env import RolloutEnv
from harness.experiment import (
    UNDECIDED_MDE,
    UNDECIDED_TEST,
    condition,
    conversion_metric,
    describe,
    latency_guardrail,
    wait_for_events,
    wait_for_status,
)

from arbiter_fixtures import OperatorProcess
from chaos_ledger import ChaosRun, record_run

pytestmark = [pytest.mark.chaos, pytest.mark.e2e, pytest.mark.timeout(300)]
__all__ = ["faulty_prometheus", "rollout_env"]  # fixtures, imported for pytest

TERMINAL = {"Promoted", "RolledBack", "Concluded", "Failed"}
# What the MetricsAvailable message says for each kind of error (the provider's own wording).
ERROR_WORDS = {
    "down": ("unreachable",),
    "slow": ("did not answer within",),
    "garbage": (
        "non-JSON",
        "not a Prometheus query result",
        "unexpected result",
        "not a numeric sample",
        "a series without the variant label",
    ),
}


def test_prometheus_errors_pause_blind_and_resume(
    rollout_env: Any, operator: OperatorProcess, kube_api: Any, faulty_prometheus: FaultyPrometheus
) -> None:
    env: RolloutEnv = rollout_env(experiment="blind")
    env.apply(
        [
            env.experiment(
                prometheus_url=faulty_prometheus.url,
                steps=[{"weight": 30, "minDuration": "10m"}],
                guardrails=[latency_guardrail(max_seconds=0.5)],
                primary=conversion_metric(mde=UNDECIDED_MDE),
                test=UNDECIDED_TEST,
                consecutive_error_limit=2,
            )
        ]
    )
    env.traffic({"v1": 0.10, "v2": 0.10}, rate=100, max_seconds=280, seed=41)
    healthy = wait_for_status(
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
    faults = ["down", "slow", "garbage"] * (2 if full_chaos() else 1)
    for fault in faults:
        faulty_prometheus.set_mode(fault)
        if fault == "down":
            assert not port_open(faulty_prometheus.port), "a Prometheus that is down refuses connections"
        try:
            paused = wait_for_status(
                kube_api,
                env.namespace,
                "blind",
                lambda s: s.get("phase") == "Paused",
                forbid=lambda s: s.get("phase") in TERMINAL,
                timeout=60,
                message=f"the experiment to pause while Prometheus is {fault}",
            )
        finally:
            faulty_prometheus.set_mode("pass")
        if fault != "down":  # refused connections never reach the proxy's handler
            assert faulty_prometheus.count(fault) > 0, f"the operator never met the {fault} Prometheus"
        assert paused["pauseReason"] == "MetricsUnavailable", describe(paused)
        metrics = condition(paused, "MetricsAvailable")
        assert metrics["status"] == "False" and metrics["reason"] == "QueryFailed", metrics
        assert any(word in metrics["message"] for word in ERROR_WORDS[fault]), (fault, metrics["message"])
        assert "sum" in metrics["message"] or "histogram_quantile" in metrics["message"], (
            "the condition names the failing query"
        )
        resumed = wait_for_status(
            kube_api,
            env.namespace,
            "blind",
            lambda s: (
                s.get("phase") == "Progressing" and condition(s, "MetricsAvailable").get("status") == "True"
            ),
            forbid=lambda s: s.get("phase") in TERMINAL,
            timeout=60,
            message=f"the experiment to resume once Prometheus is no longer {fault}",
        )
        same_place = (
            resumed["currentStep"] == healthy["currentStep"]
            and resumed["weights"] == healthy["weights"]
            and resumed["stepStartedAt"] == healthy["stepStartedAt"]
        )
        record_run(
            ChaosRun(
                fault=f"prometheus_{fault}",
                outcome_differed=not same_place,
                detail=f"{env.namespace}/blind paused ({metrics['message'][:120]}) and resumed",
            )
        )
        assert same_place, f"resumed elsewhere: {describe(resumed)}"
        assert "pauseReason" not in resumed

    seen = recorder.stop()
    assert not {o.phase for o in seen} & TERMINAL, [o.phase for o in seen]
    assert all(o.weights == healthy["weights"] for o in seen if o.weights), "traffic never moved while blind"
    assert all(o.step == healthy["currentStep"] for o in seen if o.step is not None), "no step while blind"
    wait_for_events(kube_api, env.namespace, "blind", "PausedMetricsUnavailable", "Resumed")
    operator.assert_alive()


def test_prometheus_nan_holds_the_step_and_recovers(
    rollout_env: Any, operator: OperatorProcess, kube_api: Any, faulty_prometheus: FaultyPrometheus
) -> None:
    """Every value NaN: the guardrail cannot be judged, so the step does not end; real numbers end it."""
    env: RolloutEnv = rollout_env(experiment="nan")
    faulty_prometheus.set_mode("nan")
    env.apply(
        [
            env.experiment(
                prometheus_url=faulty_prometheus.url,
                steps=[{"weight": 20, "minDuration": "2s"}, {"weight": 50, "minDuration": "10m"}],
                guardrails=[latency_guardrail(max_seconds=0.5)],
                primary=conversion_metric(mde=UNDECIDED_MDE),
                test=UNDECIDED_TEST,
                consecutive_error_limit=2,
            )
        ]
    )
    env.traffic({"v1": 0.10, "v2": 0.10}, rate=100, max_seconds=200, seed=42)
    recorder = env.record_status("nan")
    holding = wait_for_status(
        kube_api,
        env.namespace,
        "nan",
        lambda s: (
            s.get("phase") == "Progressing"
            and condition(s, "GuardrailsHealthy").get("reason") == "NoData"
            and faulty_prometheus.count("nan") > 15
        ),
        forbid=lambda s: s.get("phase") in TERMINAL | {"Paused"} or (s.get("currentStep") or 0) > 0,
        timeout=60,
        message="step 0 held on NaN answers",
    )
    guardrails = condition(holding, "GuardrailsHealthy")
    assert guardrails["status"] == "Unknown" and "p95-latency/v2" in guardrails["message"], guardrails
    # NaN is not an error: no error streak, no pause; simply nothing judged.
    assert condition(holding, "MetricsAvailable").get("status") == "True", describe(holding)
    # Held past its minDuration: a guardrail that cannot be judged never lets a step end.
    wait_for_status(
        kube_api,
        env.namespace,
        "nan",
        lambda s: faulty_prometheus.count("nan") > 40,
        forbid=lambda s: s.get("phase") in TERMINAL | {"Paused"} or (s.get("currentStep") or 0) > 0,
        timeout=60,
        message="more NaN ticks, still in step 0",
    )

    faulty_prometheus.set_mode("pass")
    advanced = wait_for_status(
        kube_api,
        env.namespace,
        "nan",
        lambda s: s.get("currentStep") == 1 and condition(s, "GuardrailsHealthy").get("status") == "True",
        forbid=lambda s: s.get("phase") in TERMINAL | {"Paused"},
        timeout=60,
        message="step 1 once real numbers return",
    )
    seen = recorder.stop()
    steps = [*(o.step for o in seen if o.step is not None), advanced["currentStep"]]
    record_run(
        ChaosRun(
            fault="prometheus_nan",
            outcome_differed=advanced["weights"] != {"v1": 50, "v2": 50},
            steps_doubled=steps_entered_again(steps),
            detail=f"{env.namespace}/nan held step 0 on NaN, advanced after",
        )
    )
    assert advanced["weights"] == {"v1": 50, "v2": 50}, describe(advanced)
    assert steps_entered(steps) == [0, 1], steps
    operator.assert_alive()
