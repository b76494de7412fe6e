"""The decision core, transition by transition: every test drives ticks through `engine.step` like the
operator does, carrying the status from one tick to the next, and checks phase, weights, routing,
events and the reason it gives."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import pytest

from arbiter.api import ModelExperimentSpec, parse_spec
from arbiter.rollout.engine import Controls, Plan, step
from arbiter.rollout.lifecycle import admit
from arbiter.rollout.observations import MetricData, Observations, Reading
from arbiter.stats import MeanStats, ProportionStats

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

BASE_SPEC: dict[str, Any] = {
    "mode": "Canary",
    "champion": {"name": "v1", "deployment": "d1", "service": "s1"},
    "challengers": [{"name": "v2", "deployment": "d2", "service": "s2"}],
    "routing": {"provider": "Router", "router": {"configMap": "routes"}},
    "steps": [{"weight": 10, "minDuration": "60s"}, {"weight": 50, "minDuration": "60s"}],
    "analysis": {
        "interval": "10s",
        "prometheus": {"url": "http://prometheus:9090"},
        "guardrails": [{"name": "latency", "query": "q", "max": 0.2, "failureLimit": 2}],
        "primary": {
            "name": "conversion",
            "type": "Proportion",
            "successes": "s",
            "trials": "t",
            "minimumDetectableEffect": 0.05,
        },
    },
}


def make_spec(**changes: Any) -> ModelExperimentSpec:
    """The base spec with top-level or dotted-path changes (None deletes)."""
    spec = copy.deepcopy(BASE_SPEC)
    for path, value in changes.items():
        *parents, last = path.split("__")
        node = spec
        for key in parents:
            node = node.setdefault(key, {})
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return parse_spec(spec)


def conversions(**rates: tuple[int, int]) -> MetricData:
    return MetricData(stats={v: ProportionStats(successes=s, trials=n) for v, (s, n) in rates.items()})


def observe(
    latency: dict[str, float] | None = None,
    primary: MetricData | None = None,
    errors: dict[str, str] | None = None,
    **extra: Any,
) -> Observations:
    latency = latency if latency is not None else {"v1": 0.1, "v2": 0.1}
    readings = {v: Reading(value=x) for v, x in latency.items()}
    for v, message in (errors or {}).items():
        readings[v] = Reading(error=message)
    return Observations(guardrails={"latency": readings}, primary=primary, **extra)


class Run:
    """Carries the status across ticks, as the operator does through the API server."""

    def __init__(self, spec: ModelExperimentSpec, start: dt.datetime = T0) -> None:
        self.spec = spec
        self.now = start
        admitted = admit(status={}, generation=1, spec=spec, spec_error=None, workload_problems=[], now="t0")
        self.status: dict[str, Any] = admitted.status
        self.status["startedAt"] = self.status["stepStartedAt"] = _ts(start)
        self.plans: list[Plan] = []

    def tick(
        self,
        observations: Observations,
        after: float = 10,
        controls: dict[str, str] | None = None,
        spec: Any = None,
        data_plane: str = "Yes",
    ) -> Plan:
        """One tick; then, as the handler does, route the plan and record what the provider verified."""
        self.now += dt.timedelta(seconds=after)
        if spec is not None:
            self.spec = spec
        plan = step(self.spec, self.status, observations, self.now, Controls(controls or {}), 1)
        self.status = plan.status
        if plan.routing is not None and not plan.routing.final:
            self.status["traffic"] = {"verified": data_plane, "weights": plan.routing.weights}
        self.plans.append(plan)
        return plan

    @property
    def phase(self) -> str:
        return str(self.status["phase"])

    def events(self) -> list[str]:
        return [e.reason for plan in self.plans for e in plan.events]


def _ts(moment: dt.datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


# Counts that match the split they were collected under (a mismatch would rightly pause on SRM).
GOOD = {"v1": (1000, 10000), "v2": (1500, 10000)}  # at 50/50
EQUAL = {"v1": (1000, 10000), "v2": (1000, 10000)}  # at 50/50
GOOD_10 = {"v1": (9000, 90000), "v2": (1500, 10000)}  # at 90/10
BAD_10 = {"v1": (13500, 90000), "v2": (1000, 10000)}  # at 90/10
EQUAL_10 = {"v1": (9000, 90000), "v2": (1000, 10000)}  # at 90/10


def grow(rates: dict[str, tuple[int, int]], factor: int) -> MetricData:
    return conversions(**{v: (s * factor, n * factor) for v, (s, n) in rates.items()})


# ------------------------------------------------------------------ steps


def test_first_tick_routes_step_zero_and_holds_until_min_duration() -> None:
    run = Run(make_spec())
    plan = run.tick(observe(primary=conversions(v1=(0, 0), v2=(0, 0))))
    assert run.phase == "Progressing"
    assert run.status["weights"] == {"v1": 90, "v2": 10}
    assert (
        plan.routing is not None and plan.routing.weights == {"v1": 90, "v2": 10} and not plan.routing.final
    )
    assert plan.outcome == "Hold"
    assert "10s of 60s" in run.status["decision"]["reason"]


def test_step_advances_after_min_duration_with_healthy_guardrails() -> None:
    run = Run(make_spec())
    run.tick(observe(primary=conversions(v1=(0, 0), v2=(0, 0))))
    run.tick(
        observe(primary=conversions(v1=(0, 0), v2=(0, 0)))
    )  # the step's weights are verified: its samples count from here
    plan = run.tick(observe(primary=grow(EQUAL_10, 1)), after=60)
    assert plan.outcome == "Advance"
    assert run.status["currentStep"] == 1
    assert run.status["weights"] == {"v1": 50, "v2": 50}
    assert run.status["stepStartedAt"] == _ts(run.now)
    assert run.status["history"][-1]["to"] == "Progressing(step 1)"
    assert "Advanced" in run.events()


def test_step_holds_for_min_samples_per_variant() -> None:
    spec = make_spec(steps=[{"weight": 10, "minSamples": 500}, {"weight": 50}])
    run = Run(spec)
    run.tick(observe(primary=conversions(v1=(0, 0), v2=(0, 0))))
    run.tick(observe(primary=conversions(v1=(0, 0), v2=(0, 0))))  # the step's sample count starts here
    plan = run.tick(observe(primary=conversions(v1=(50, 4000), v2=(10, 400))))
    assert plan.outcome == "Hold"
    assert "v2 400/500" in run.status["decision"]["reason"]
    plan = run.tick(observe(primary=conversions(v1=(60, 5000), v2=(12, 600))))
    assert plan.outcome == "Advance"


def test_several_challengers_share_the_step_weight() -> None:
    spec = make_spec(
        challengers=[
            {"name": "v2", "deployment": "d2", "service": "s2"},
            {"name": "v3", "deployment": "d3", "service": "s3"},
        ]
    )
    run = Run(spec)
    run.tick(observe(latency={"v1": 0.1, "v2": 0.1, "v3": 0.1}))
    assert run.status["weights"] == {"v1": 90, "v2": 5, "v3": 5}
    assert run.status["challengerWeight"] == 10


# ------------------------------------------------------------------ verdicts


def test_last_step_promotes_a_significant_winner() -> None:
    run = Run(make_spec(steps=[{"weight": 50}]))
    run.tick(observe(primary=conversions(v1=(0, 0), v2=(0, 0))))
    run.tick(
        observe(primary=conversions(v1=(0, 0), v2=(0, 0)))
    )  # the step's weights are verified: its samples count from here
    plan = run.tick(observe(primary=grow(GOOD, 1)))
    assert run.phase == "Promoted"
    assert plan.routing is not None and plan.routing.final and plan.routing.winner == "v2"
    assert run.status["weights"] == {"v1": 0, "v2": 100}
    assert run.status["decision"]["winner"] == "v2"
    assert "v2 wins" in run.status["decision"]["reason"]
    results = run.status["analysis"]["primary"]["results"]
    assert results[0]["verdict"] == "Win" and results[0]["pValue"] < 0.001
    assert "Promoted" in run.events()


def test_a_win_before_the_last_step_does_not_skip_steps() -> None:
    run = Run(make_spec(steps=[{"weight": 10}, {"weight": 50}]))
    run.tick(observe(primary=conversions(v1=(0, 0), v2=(0, 0))))
    run.tick(
        observe(primary=conversions(v1=(0, 0), v2=(0, 0)))
    )  # the step's weights are verified: its samples count from here
    plan = run.tick(observe(primary=grow(GOOD_10, 1)))
    assert plan.outcome == "Advance" and run.phase == "Progressing"
    assert run.status["analysis"]["primary"]["results"][0]["verdict"] == "Win"
    run.tick(observe(primary=conversions(v1=(9000, 90000), v2=(1500, 10000))))  # the 50/50 step starts
    run.tick(observe(primary=conversions(v1=(10000, 100000), v2=(3000, 20000))))
    assert run.phase == "Promoted"


def test_on_win_pause_waits_for_a_manual_promote() -> None:
    run = Run(make_spec(steps=[{"weight": 50}], decision={"onWin": "Pause"}))
    run.tick(observe(primary=conversions(v1=(0, 0), v2=(0, 0))))
    run.tick(
        observe(primary=conversions(v1=(0, 0), v2=(0, 0)))
    )  # the step's weights are verified: its samples count from here
    run.tick(observe(primary=grow(GOOD, 1)))
    assert run.phase == "Paused" and run.status["pauseReason"] == "AwaitingPromotion"
    assert run.status["weights"] == {"v1": 50, "v2": 50}
    run.tick(observe(primary=grow(GOOD, 2)), controls={"promote": "now"})
    assert run.phase == "Promoted" and run.status["weights"]["v2"] == 100


def test_a_significant_loss_rolls_back() -> None:
    run = Run(make_spec())
    run.tick(observe(primary=conversions(v1=(0, 0), v2=(0, 0))))
    plan = run.tick(observe(primary=grow(BAD_10, 1)))
    assert run.phase == "RolledBack"
    assert plan.routing is not None and plan.routing.final and plan.routing.winner == "v1"
    assert run.status["weights"] == {"v1": 100, "v2": 0}
    assert "conversion" in run.status["decision"]["reason"]


def test_on_loss_pause_holds_the_traffic() -> None:
    run = Run(make_spec(decision={"onLoss": "Pause"}))
    run.tick(observe(primary=conversions(v1=(0, 0), v2=(0, 0))))
    run.tick(observe(primary=grow(BAD_10, 1)))
    assert run.phase == "Paused" and run.status["pauseReason"] == "Loss"


def test_no_primary_metric_promotes_after_the_last_step() -> None:
    run = Run(make_spec(steps=[{"weight": 50}], analysis__primary=None))
    run.tick(observe())
    run.tick(observe())
    assert run.phase == "Progressing", "the step is looked at once at its weights first"
    run.tick(observe())
    assert run.phase == "Promoted"
    assert "no primary metric" in run.status["decision"]["reason"]


def test_without_data_the_last_step_holds_and_never_promotes() -> None:
    run = Run(make_spec(steps=[{"weight": 50}]))
    for _ in range(5):
        run.tick(observe(primary=MetricData(missing={"v1": "no data", "v2": "no data"})))
    assert run.phase == "Progressing"
    assert run.status["decision"]["outcome"] == "Hold"


# ------------------------------------------------------------------ guardrails


def test_guardrail_breaches_count_to_the_failure_limit() -> None:
    run = Run(make_spec())
    run.tick(observe(latency={"v1": 0.1, "v2": 0.5}))
    assert run.phase == "Progressing"
    state = run.status["guardrails"][0]
    assert state["breaches"] == 1 and state["breached"] and state["value"] == 0.5
    run.tick(observe(latency={"v1": 0.1, "v2": 0.1}))
    assert run.status["guardrails"][0]["breaches"] == 0, "a healthy value resets the count"
    run.tick(observe(latency={"v1": 0.1, "v2": 0.5}))
    run.tick(observe(latency={"v1": 0.1}))  # no data: inconclusive, the count is kept
    assert run.status["guardrails"][0]["breaches"] == 1
    run.tick(observe(latency={"v1": 0.1, "v2": 0.5}))
    assert run.phase == "RolledBack"
    assert "latency of v2 = 0.5 > max 0.2 (2/2 consecutive)" in run.status["decision"]["reason"]


def test_critical_guardrail_rolls_back_on_the_first_breach() -> None:
    run = Run(
        make_spec(analysis__guardrails=[{"name": "latency", "query": "q", "max": 0.2, "critical": True}])
    )
    run.tick(observe(latency={"v1": 0.1, "v2": 0.3}))
    assert run.phase == "RolledBack"


def test_champion_breaches_do_not_roll_back_the_challenger() -> None:
    run = Run(
        make_spec(analysis__guardrails=[{"name": "latency", "query": "q", "max": 0.2, "critical": True}])
    )
    run.tick(observe(latency={"v1": 0.9, "v2": 0.1}))
    assert run.phase == "Progressing"


def test_relative_guardrail_compares_with_the_champion() -> None:
    guardrails = [{"name": "errors", "query": "q", "maxIncreaseOverChampion": 0.005, "critical": True}]
    run = Run(make_spec(analysis__guardrails=guardrails))
    run.tick(Observations(guardrails={"errors": {"v1": Reading(0.010), "v2": Reading(0.014)}}))
    assert run.phase == "Progressing"
    run.tick(Observations(guardrails={"errors": {"v1": Reading(0.010), "v2": Reading(0.016)}}))
    assert run.phase == "RolledBack"
    assert "exceeds the champion's by 0.006" in run.status["decision"]["reason"]


def rate_guardrail() -> list[dict[str, Any]]:
    return [
        {
            "name": "errors",
            "maxIncreaseOverChampion": 0.005,
            "critical": True,
            "rate": {"type": "Proportion", "successes": "e", "trials": "n"},
        }
    ]


def test_statistical_guardrail_ignores_noise_within_the_margin() -> None:
    run = Run(make_spec(analysis__guardrails=rate_guardrail()))
    run.tick(Observations(guardrail_rates={"errors": conversions(v1=(0, 0), v2=(0, 0))}))
    for k in range(1, 6):
        run.tick(
            Observations(
                guardrail_rates={"errors": conversions(v1=(100 * k, 10000 * k), v2=(104 * k, 10000 * k))}
            )
        )
    assert run.phase == "Progressing"
    assert run.status["guardrails"][0]["pValue"] > 0.05


def test_statistical_guardrail_rolls_back_on_real_harm() -> None:
    run = Run(make_spec(analysis__guardrails=rate_guardrail()))
    run.tick(Observations(guardrail_rates={"errors": conversions(v1=(0, 0), v2=(0, 0))}))
    run.tick(Observations(guardrail_rates={"errors": conversions(v1=(100, 10000), v2=(400, 10000))}))
    assert run.phase == "RolledBack"
    assert "harm beyond the margin 0.005" in run.status["decision"]["reason"]


# ------------------------------------------------------------------ sample-ratio mismatch


def test_sample_ratio_mismatch_pauses_and_resume_acknowledges_it() -> None:
    run = Run(make_spec(steps=[{"weight": 50, "minDuration": "1h"}]))
    run.tick(observe(primary=conversions(v1=(0, 0), v2=(0, 0))))
    run.tick(observe(primary=conversions(v1=(0, 0), v2=(0, 0))))
    run.tick(observe(primary=conversions(v1=(500, 5000), v2=(500, 5000))))
    assert run.phase == "Progressing", "a matching split does not pause"
    plan = run.tick(observe(primary=conversions(v1=(900, 9000), v2=(600, 6000))))
    assert run.phase == "Paused" and run.status["pauseReason"] == "SampleRatioMismatch"
    srm = run.status["analysis"]["srm"]
    assert srm["mismatch"] and srm["pValue"] < 0.001 and srm["observed"] == {"v1": 9000, "v2": 6000}
    conditions = {c["type"]: c for c in run.status["conditions"]}
    assert conditions["SampleRatioMismatch"]["status"] == "True"
    assert [e.reason for e in plan.events] == ["PausedSampleRatioMismatch"]
    run.tick(observe(primary=conversions(v1=(950, 9500), v2=(610, 6100))), controls={"resume": "1"})
    assert run.phase == "Progressing"
    run.tick(observe(primary=conversions(v1=(1000, 10000), v2=(620, 6200))))
    assert run.phase == "Progressing", "an acknowledged mismatch does not pause the same step again"


def srm_run(method: str | None) -> Run:
    """One 50/50 step of an hour, its weights verified: the next tick's counts are the step's samples."""
    spec = make_spec(steps=[{"weight": 50, "minDuration": "1h"}])
    if method is not None:
        spec = make_spec(
            steps=[{"weight": 50, "minDuration": "1h"}], analysis__sampleRatioMismatch={"method": method}
        )
    run = Run(spec)
    run.tick(observe(primary=conversions(v1=(0, 0), v2=(0, 0))))
    run.tick(observe(primary=conversions(v1=(0, 0), v2=(0, 0))))
    return run


# A correct 50/50 split whose counts wander: at the middle look one chi-square alone says p = 0.0008.
WANDERING = [(5000, 5020), (5000, 5340), (10000, 10050)]


def test_a_correct_split_that_wanders_pauses_under_repeated_chi_square_looks_only() -> None:
    chi_square = srm_run("ChiSquare")
    sequential = srm_run(None)
    for v1, v2 in WANDERING[:2]:
        for run in (chi_square, sequential):
            run.tick(observe(primary=conversions(v1=(v1 // 10, v1), v2=(v2 // 10, v2))))
    assert chi_square.status["pauseReason"] == "SampleRatioMismatch"
    assert chi_square.status["analysis"]["srm"]["method"] == "ChiSquare"
    assert "chi-square p = 0.000827" in chi_square.status["message"]
    assert sequential.phase == "Progressing", "the default test allows for looking every tick"
    srm = sequential.status["analysis"]["srm"]
    assert srm["method"] == "Sequential" and not srm["mismatch"]
    assert srm["pValue"] == pytest.approx(0.0403, abs=1e-4)


def test_sequential_srm_p_value_is_a_running_minimum_kept_in_status() -> None:
    """The p-value never rises within a step, also across an operator restart (the state is in status)."""
    run = srm_run(None)
    run.tick(observe(primary=conversions(v1=(500, 5000), v2=(534, 5340))))
    lowest = run.status["analysis"]["srm"]["pValue"]
    restarted = Run(run.spec)
    restarted.status, restarted.now = copy.deepcopy(run.status), run.now
    restarted.tick(observe(primary=conversions(v1=(1000, 10000), v2=(1005, 10050))))
    srm = restarted.status["analysis"]["srm"]
    assert srm["pValue"] == lowest < 1.0, "the balanced counts alone would give p = 1"
    conditions = {c["type"]: c for c in restarted.status["conditions"]}
    assert conditions["SampleRatioMismatch"]["reason"] == "Matches"
    assert "always-valid p = 0.0403" in conditions["SampleRatioMismatch"]["message"]


def test_sequential_srm_starts_over_when_the_step_changes() -> None:
    spec = make_spec(steps=[{"weight": 20, "minDuration": "20s"}, {"weight": 50, "minDuration": "1h"}])
    run = Run(spec)
    run.tick(observe(primary=conversions(v1=(0, 0), v2=(0, 0))))
    run.tick(observe(primary=conversions(v1=(0, 0), v2=(0, 0))))
    run.tick(observe(primary=conversions(v1=(800, 8000), v2=(220, 2200))))  # 8000/2200 at 80/20
    assert 0.001 < run.status["analysis"]["srm"]["pValue"] < 0.01
    assert run.status["currentStep"] == 1, "judged, then on to 50/50 after its 20s"
    run.tick(observe(primary=conversions(v1=(810, 8100), v2=(222, 2220))))  # 50/50 verified: baseline
    run.tick(observe(primary=conversions(v1=(1310, 13100), v2=(722, 7220))))  # +5000 / +5000
    srm = run.status["analysis"]["srm"]
    assert srm["observed"] == {"v1": 5000, "v2": 5000}
    assert srm["pValue"] == 1.0, "the previous step's running minimum does not carry over"


def test_no_srm_check_while_the_challenger_gets_no_traffic() -> None:
    run = Run(
        make_spec(mode="Shadow", steps=None, routing={"provider": "Router", "router": {"configMap": "r"}})
    )
    run.tick(observe(primary=conversions(v1=(0, 0), v2=(0, 0))))
    run.tick(observe(primary=conversions(v1=(1000, 10000), v2=(0, 0))))
    assert run.phase == "Progressing"


# ------------------------------------------------------------------ missing data and errors


def test_query_errors_hold_then_pause_then_resume_by_themselves() -> None:
    run = Run(make_spec(analysis__consecutiveErrorLimit=2, steps=[{"weight": 50}]))
    run.tick(observe(primary=conversions(v1=(0, 0), v2=(0, 0))))
    run.tick(
        observe(primary=conversions(v1=(0, 0), v2=(0, 0)))
    )  # the step's weights are verified: its samples count from here
    failing = {"v2": "connection refused; query: histogram_quantile(...)"}
    run.tick(observe(primary=grow(GOOD, 1), errors=failing))
    assert run.phase == "Progressing", "one failed tick is inconclusive, not a pause"
    available = next(c for c in run.status["conditions"] if c["type"] == "MetricsAvailable")
    assert available["status"] == "False" and "histogram_quantile" in available["message"]
    run.tick(observe(primary=grow(GOOD, 2), errors=failing))
    assert run.phase == "Paused" and run.status["pauseReason"] == "MetricsUnavailable"
    assert "histogram_quantile" in run.status["message"]
    assert run.status["weights"] == {"v1": 50, "v2": 50}, "a pause holds the traffic where it is"
    run.tick(observe(primary=grow(GOOD, 3)))
    assert run.phase == "Promoted", "data back: resumes by itself and decides on readable data"
    assert [h["to"] for h in run.status["history"]][-3:] == ["Paused", "Progressing(step 0)", "Promoted"]


def test_never_promotes_on_a_tick_with_errors() -> None:
    run = Run(make_spec(steps=[{"weight": 50}], analysis__consecutiveErrorLimit=5))
    run.tick(observe(primary=conversions(v1=(0, 0), v2=(0, 0))))
    run.tick(observe(primary=grow(GOOD, 1), errors={"v2": "timeout"}))
    assert run.phase == "Progressing"


# ------------------------------------------------------------------ manual control


def test_spec_paused_freezes_and_resumes() -> None:
    run = Run(make_spec())
    run.tick(observe())
    run.tick(observe(), after=120, spec=make_spec(paused=True))
    assert run.phase == "Paused" and run.status["pauseReason"] == "Spec"
    assert run.status["currentStep"] == 0, "a paused experiment does not advance"
    run.tick(observe(), spec=make_spec(paused=False))
    assert run.phase == "Progressing" and "pauseReason" not in run.status


def test_abort_rolls_back_and_is_handled_once() -> None:
    run = Run(make_spec())
    run.tick(observe())
    run.tick(observe(), controls={"abort": "a1"})
    assert run.phase == "RolledBack" and "aborted" in run.status["decision"]["reason"]
    assert run.status["handledActions"] == {"abort": "a1"}
    run.tick(observe(), controls={"abort": "a1"})
    assert run.phase == "RolledBack"


def test_retry_after_rollback_starts_over_with_fresh_counters() -> None:
    run = Run(make_spec())
    run.tick(observe(primary=conversions(v1=(0, 0), v2=(0, 0))))
    run.tick(observe(primary=grow(BAD_10, 1)))
    assert run.phase == "RolledBack"
    run.tick(observe(primary=grow(BAD_10, 2)), controls={"retry": "r1"})
    assert run.phase == "Progressing" and run.status["currentStep"] == 0
    assert run.status["weights"] == {"v1": 90, "v2": 10}
    run.tick(observe(primary=grow(BAD_10, 2)), controls={"retry": "r1"})
    assert run.phase == "Progressing", "old data is the new baseline: no instant second rollback"


def test_promote_annotation_must_name_a_challenger_when_there_are_several() -> None:
    spec = make_spec(
        challengers=[
            {"name": "v2", "deployment": "d2", "service": "s2"},
            {"name": "v3", "deployment": "d3", "service": "s3"},
        ]
    )
    run = Run(spec)
    run.tick(observe(latency={"v1": 0.1, "v2": 0.1, "v3": 0.1}), controls={"promote": "yes"})
    assert run.phase == "Progressing" and "ActionIgnored" in run.events()
    run.tick(observe(latency={"v1": 0.1, "v2": 0.1, "v3": 0.1}), controls={"promote": "v3"})
    assert run.phase == "Promoted" and run.status["decision"]["winner"] == "v3"


@pytest.mark.parametrize(("on_timeout", "phase"), [("KeepChampion", "Concluded"), ("Pause", "Paused")])
def test_max_duration(on_timeout: str, phase: str) -> None:
    run = Run(make_spec(decision={"maxDuration": "5m", "onTimeout": on_timeout}))
    run.tick(observe())
    run.tick(observe(), after=400)
    assert run.phase == phase
    assert "maxDuration 5m reached" in run.status["message"]
    if phase == "Concluded":
        assert run.status["weights"] == {"v1": 100, "v2": 0}


def test_a_change_of_variants_restarts_the_analysis() -> None:
    run = Run(make_spec())
    run.tick(observe())
    run.tick(observe())
    run.tick(observe(), after=60)
    assert run.status["currentStep"] == 1
    changed = make_spec(challengers=[{"name": "v3", "deployment": "d3", "service": "s3"}])
    run.tick(observe(latency={"v1": 0.1, "v3": 0.1}), spec=changed)
    assert run.status["currentStep"] == 0
    assert "Restarted" in run.events()


def test_a_threshold_change_does_not_restart() -> None:
    run = Run(make_spec())
    run.tick(observe())
    run.tick(observe())
    run.tick(observe(), after=60)
    looser = make_spec(analysis__guardrails=[{"name": "latency", "query": "q", "max": 0.5}])
    run.tick(observe(), spec=looser)
    assert run.status["currentStep"] == 1


# ------------------------------------------------------------------ modes


def shadow_spec(**changes: Any) -> ModelExperimentSpec:
    settings: dict[str, Any] = {
        "mode": "Shadow",
        "steps": None,
        "routing": {"provider": "Router", "router": {"configMap": "r"}, "shadow": {"percent": 50}},
        "analysis__shadow": {"minDuration": "60s"},
        "analysis__primary": None,
    }
    return make_spec(**{**settings, **changes})


def test_shadow_mirrors_then_concludes_safe_to_canary() -> None:
    run = Run(shadow_spec())
    plan = run.tick(observe())
    assert plan.routing is not None and plan.routing.mirror == ("v2", 50)
    assert run.status["weights"] == {"v1": 100, "v2": 0}
    run.tick(observe(), after=60)
    assert run.phase == "Concluded"
    assert "safe to canary" in run.status["decision"]["reason"]


def test_shadow_with_an_unhealthy_challenger_rolls_back() -> None:
    run = Run(
        shadow_spec(analysis__guardrails=[{"name": "latency", "query": "q", "max": 0.2, "critical": True}])
    )
    run.tick(observe(latency={"v1": 0.1, "v2": 0.4}))
    assert run.phase == "RolledBack"


def test_shadow_can_continue_as_a_canary() -> None:
    spec = shadow_spec(steps=[{"weight": 20}, {"weight": 40}])
    spec = spec.model_copy(
        update={
            "analysis": spec.analysis.model_copy(
                update={"shadow": spec.analysis.shadow.model_copy(update={"continue_as_canary": True})}
            )
        }
    )
    run = Run(spec)
    run.tick(observe())
    plan = run.tick(observe(), after=60)
    assert run.phase == "Progressing" and run.status["weights"] == {"v1": 80, "v2": 20}
    assert plan.routing is not None and plan.routing.mirror is None
    assert "guardrails latency healthy; continuing as a canary" in run.status["decision"]["reason"]
    # ...and every canary step after the shadow is in the history, like in a plain canary.
    run.tick(observe())  # step 0's weights verified: its samples count from here
    run.tick(observe(), after=60)
    assert run.status["currentStep"] == 1 and run.status["weights"] == {"v1": 60, "v2": 40}
    transitions = [(h["from"], h["to"]) for h in run.status["history"]]
    assert transitions[-2:] == [
        ("Progressing", "Progressing(step 0)"),
        ("Progressing(step 0)", "Progressing(step 1)"),
    ], transitions


def test_ab_test_splits_at_once_and_decides_statistically() -> None:
    run = Run(make_spec(mode="ABTest", steps=None))
    run.tick(observe(primary=conversions(v1=(0, 0), v2=(0, 0))))
    assert run.status["weights"] == {"v1": 50, "v2": 50}
    run.tick(observe(primary=grow(EQUAL, 1)))
    assert run.phase == "Progressing"
    run.tick(observe(primary=conversions(v1=(2000, 20000), v2=(2700, 20000))))
    assert run.phase == "Promoted"


def test_mean_metric() -> None:
    primary = {
        "name": "basket",
        "type": "Mean",
        "count": "c",
        "sum": "s",
        "sumSquares": "q",
        "minimumDetectableEffect": 0.02,
    }
    run = Run(make_spec(mode="ABTest", steps=None, analysis__primary=primary))
    zero = MetricData(stats={"v1": MeanStats(0, 0, 0), "v2": MeanStats(0, 0, 0)})
    run.tick(observe(primary=zero))
    n = 5000
    data = MetricData(
        stats={
            "v1": MeanStats(n, 50.0 * n, (50.0**2 + 100.0) * n),
            "v2": MeanStats(n, 53.0 * n, (53.0**2 + 100.0) * n),
        }
    )
    run.tick(observe(primary=data))
    assert run.phase == "Promoted"
    assert run.status["analysis"]["primary"]["results"][0]["relativeLift"] == pytest.approx(0.06, rel=1e-6)


def test_counters_from_before_the_experiment_are_not_counted() -> None:
    run = Run(make_spec(steps=[{"weight": 50}]))
    # The champion served 1M requests before the experiment at a 15% rate; the challenger starts at 0.
    run.tick(observe(primary=conversions(v1=(150000, 1000000), v2=(0, 0))))
    run.tick(observe(primary=conversions(v1=(150000 + 1000, 1000000 + 10000), v2=(1000, 10000))))
    result = run.status["analysis"]["primary"]["results"][0]
    assert result["nControl"] == 10000 and result["controlValue"] == pytest.approx(0.1)
    assert run.phase == "Progressing"


def test_fixed_horizon_plans_once_from_the_champion_and_waits_for_the_horizon() -> None:
    run = Run(make_spec(mode="ABTest", steps=None, analysis__test={"method": "FixedHorizon"}))
    run.tick(observe(primary=conversions(v1=(0, 0), v2=(0, 0))))
    run.tick(observe(primary=conversions(v1=(10, 100), v2=(12, 100))))
    assert (
        "plannedSampleSize" not in run.status["engine"] or run.status["engine"]["plannedSampleSize"] is None
    )
    run.tick(observe(primary=conversions(v1=(100, 1000), v2=(150, 1000))))
    planned = run.status["engine"]["plannedSampleSize"]
    assert planned is not None and planned > 1000, "10% baseline, 5% relative MDE needs far more than 1000"
    assert run.phase == "Progressing", "a fixed-horizon test does not decide before its horizon"
    run.tick(observe(primary=conversions(v1=(100, 1000), v2=(150, 1000))))
    assert run.status["engine"]["plannedSampleSize"] == planned, "the plan is frozen"


def test_secondary_metrics_are_reported_with_their_own_plan_and_never_decide() -> None:
    """FixedHorizon: a secondary metric with a large MDE reaches its own (small) horizon and is reported
    with its verdict and family-adjusted p-value, while the primary waits for its far larger horizon."""
    clicks = {
        "name": "clicks",
        "type": "Proportion",
        "successes": "cs",
        "trials": "ct",
        "minimumDetectableEffect": 0.3,
    }
    run = Run(
        make_spec(
            mode="ABTest",
            steps=None,
            analysis__test={"method": "FixedHorizon"},
            analysis__secondary=[clicks],
        )
    )
    zero = conversions(v1=(0, 0), v2=(0, 0))
    run.tick(observe(primary=zero, secondary={"clicks": zero}))
    run.tick(
        observe(
            primary=conversions(v1=(100, 1000), v2=(101, 1000)),
            secondary={"clicks": conversions(v1=(300, 1000), v2=(450, 1000))},
        )
    )
    engine = run.status["engine"]
    assert engine["plannedSampleSize"] > 20000, "10% baseline, 5% relative MDE"
    assert 0 < engine["plannedSampleSize/clicks"] <= 1000, "30% baseline, 30% relative MDE"
    (row,) = run.status["analysis"]["secondary"]
    assert row["metric"] == "clicks" and row["verdict"] == "Win", row
    assert row["pValueFamilyAdjusted"] == pytest.approx(row["pValue"]), "a family of one"
    assert run.phase == "Progressing", "a secondary metric never decides the experiment"
    assert run.status["analysis"]["primary"]["results"][0]["verdict"] == "Inconclusive"


def test_baselines_are_not_taken_on_a_tick_with_errors() -> None:
    run = Run(make_spec(steps=[{"weight": 50}], analysis__consecutiveErrorLimit=5))
    # The first look fails for the champion; its history must not be counted when it shows up.
    run.tick(observe(primary=MetricData(stats={}, errors={"v1": "timeout", "v2": "timeout"})))
    run.tick(observe(primary=conversions(v1=(150000, 1000000), v2=(0, 0))))
    run.tick(observe(primary=conversions(v1=(150000 + 1000, 1000000 + 10000), v2=(1000, 10000))))
    result = run.status["analysis"]["primary"]["results"][0]
    assert result["nControl"] == 10000


def test_a_challenger_series_born_after_the_start_counts_in_full() -> None:
    run = Run(make_spec(steps=[{"weight": 50}]))
    run.tick(observe(primary=MetricData(stats={"v1": ProportionStats(500, 5000)}, missing={"v2": "no data"})))
    run.tick(observe(primary=conversions(v1=(1500, 15000), v2=(1000, 10000))))
    result = run.status["analysis"]["primary"]["results"][0]
    assert (result["nControl"], result["nTreatment"]) == (10000, 10000)
    assert run.phase == "Progressing", "10000 vs 10000 at 50/50 is no sample-ratio mismatch"


def test_a_step_is_counted_only_once_the_data_plane_carries_its_weights() -> None:
    """Replicas takes a while to scale: until the provider verifies the step's weights, the step's samples
    are not counted, so a half-converged split is never read as a sample-ratio mismatch."""
    run = Run(make_spec(steps=[{"weight": 20, "minDuration": "20s"}, {"weight": 50}]))
    run.tick(observe(primary=conversions(v1=(0, 0), v2=(0, 0))), data_plane="No")
    for total in (1000, 2000, 3000):  # served 100/0 while the challenger's replicas start
        plan = run.tick(observe(primary=conversions(v1=(total // 10, total), v2=(0, 0))), data_plane="No")
        assert run.phase == "Progressing"
        assert "waiting for the data plane" in run.status["decision"]["reason"]
    assert run.status["engine"].get("stepSamples") is None
    run.tick(observe(primary=conversions(v1=(300, 3000), v2=(0, 0))))  # the provider verifies the weights
    assert run.status["engine"].get("stepSamples") is None
    # The engine learns of the verification on the next tick: counting starts then.
    run.tick(observe(primary=conversions(v1=(310, 3100), v2=(0, 0))))
    assert run.status["engine"]["stepSamples"] == {"v1": 3100.0, "v2": 0.0}
    run.tick(observe(primary=conversions(v1=(390, 3900), v2=(20, 200))))
    assert run.phase == "Progressing"
    assert plan.outcome == "Hold"


def test_a_losing_challenger_among_several_is_eliminated_and_the_rest_go_on() -> None:
    spec = make_spec(
        mode="ABTest",
        steps=None,
        challengers=[
            {"name": "v2", "deployment": "d2", "service": "s2"},
            {"name": "v3", "deployment": "d3", "service": "s3"},
        ],
    )
    run = Run(spec)
    zero = conversions(v1=(0, 0), v2=(0, 0), v3=(0, 0))
    run.tick(observe(latency={"v1": 0.1, "v2": 0.1, "v3": 0.1}, primary=zero))
    assert run.status["weights"] == {"v1": 50, "v2": 25, "v3": 25}
    run.tick(observe(latency={"v1": 0.1, "v2": 0.1, "v3": 0.1}, primary=zero))
    run.tick(
        observe(
            latency={"v1": 0.1, "v2": 0.1, "v3": 0.1},
            primary=conversions(v1=(2000, 20000), v2=(1020, 10000), v3=(700, 10000)),
        )
    )
    assert run.phase == "Progressing", run.status["decision"]
    assert run.status["engine"]["eliminated"] == ["v3"]
    assert "ChallengerEliminated" in run.events()
    assert run.status["weights"] == {"v1": 50, "v2": 50, "v3": 0}


def test_a_futile_and_worse_challenger_concludes_because_no_harm_was_shown() -> None:
    """RolledBack pages people: an estimate below the champion's that is not a significant Loss concludes."""
    run = Run(make_spec(mode="ABTest", steps=None, analysis__primary__minimumDetectableEffect=0.5))
    run.tick(observe(primary=conversions(v1=(0, 0), v2=(0, 0))))
    run.tick(observe(primary=conversions(v1=(0, 0), v2=(0, 0))))
    run.tick(observe(primary=conversions(v1=(1000, 10000), v2=(960, 10000))))
    assert run.phase == "Concluded", run.status["decision"]
    assert run.status["decision"]["outcome"] == "Conclude"
    assert run.status["decision"]["reason"].startswith("no improvement worth the MDE: ")
    assert run.status["weights"] == {"v1": 100, "v2": 0}, "the same traffic as a rollback: champion only"
    assert "Concluded" in run.events() and "RolledBack" not in run.events()


def test_a_significantly_worse_challenger_is_rolled_back() -> None:
    run = Run(make_spec(mode="ABTest", steps=None, analysis__primary__minimumDetectableEffect=0.5))
    run.tick(observe(primary=conversions(v1=(0, 0), v2=(0, 0))))
    run.tick(observe(primary=conversions(v1=(0, 0), v2=(0, 0))))
    run.tick(observe(primary=conversions(v1=(1000, 10000), v2=(700, 10000))))
    assert run.phase == "RolledBack", run.status["decision"]
    assert run.status["analysis"]["primary"]["results"][0]["verdict"] == "Loss"
    assert "RolledBack" in run.events()


def test_a_futile_but_not_worse_challenger_concludes() -> None:
    run = Run(make_spec(mode="ABTest", steps=None, analysis__primary__minimumDetectableEffect=0.5))
    run.tick(observe(primary=conversions(v1=(0, 0), v2=(0, 0))))
    run.tick(observe(primary=conversions(v1=(0, 0), v2=(0, 0))))
    run.tick(observe(primary=conversions(v1=(1000, 10000), v2=(1010, 10000))))
    assert run.phase == "Concluded", run.status["decision"]
    assert run.status["weights"] == {"v1": 100, "v2": 0}


def test_the_forecast_measures_the_rate_at_the_current_split_and_says_when_the_test_decides() -> None:
    """status.forecast (issue 13 §5): no forecast until a rate was measured at this split, then one."""
    from arbiter.api.v1alpha1 import ModelExperimentStatus
    from arbiter.rollout.forecast import human_duration

    run = Run(make_spec(mode="ABTest", steps=None, analysis__primary__minimumDetectableEffect=0.1))
    run.tick(observe(primary=conversions(v1=(0, 0), v2=(0, 0))))
    run.tick(observe(primary=conversions(v1=(100, 1000), v2=(104, 1000))))
    first = run.status["forecast"]
    assert first["variant"] == "v2" and first["decisionIn"] == "n/a", first
    assert "no traffic rate" in first["summary"]
    run.tick(observe(primary=conversions(v1=(200, 2000), v2=(208, 2000))), after=10)
    forecast = run.status["forecast"]
    assert forecast["rateControl"] == pytest.approx(100.0) and forecast["rateTreatment"] == pytest.approx(
        100.0
    )
    assert forecast["method"] == "Sequential" and 0.0 < forecast["conditionalPower"] < 1.0
    assert forecast["secondsToDecision"] > 0 and forecast["samplesTreatment"] == pytest.approx(
        100.0 * forecast["secondsToDecision"]
    )
    assert forecast["decisionIn"] == human_duration(forecast["secondsToDecision"])
    assert forecast["summary"].startswith("at this traffic a decision is expected in ~")
    ModelExperimentStatus.model_validate(run.status)  # the CRD's status schema holds it
    # Within a minute the forecast is kept (it is not free); then it follows the counts: half the traffic.
    run.tick(observe(primary=conversions(v1=(250, 2500), v2=(260, 2500))), after=10)
    assert run.status["forecast"] == forecast
    run.tick(observe(primary=conversions(v1=(300, 3000), v2=(312, 3000))), after=50)
    assert run.status["forecast"]["rateTreatment"] == pytest.approx(2000 / 70)
    assert run.status["forecast"]["computedAt"] != forecast["computedAt"]


def test_the_forecast_of_a_decided_challenger_is_now() -> None:
    run = Run(make_spec(mode="ABTest", steps=None, decision__onWin="Pause"))
    run.tick(observe(primary=conversions(v1=(0, 0), v2=(0, 0))))
    run.tick(observe(primary=conversions(v1=(1000, 10000), v2=(1050, 10000))))
    run.tick(observe(primary=conversions(v1=(2000, 20000), v2=(3000, 20000))))
    assert run.status["analysis"]["primary"]["results"][0]["verdict"] == "Win"
    forecast = run.status["forecast"]
    assert (forecast["secondsToDecision"], forecast["conditionalPower"], forecast["decisionIn"]) == (
        0.0,
        1.0,
        "now",
    )


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "n/a"), (0.0, "now"), (42.0, "~42s"), (150.0, "~2m"), (10800.0, "~3h"), (2e5, "~2d")],
)
def test_the_forecast_reads_like_a_person_would_say_it(seconds: float | None, text: str) -> None:
    from arbiter.rollout.forecast import human_duration

    assert human_duration(seconds) == text
