"""Rollout stories on real models: scikit-learn models served by MLServer, judged by their true labels.

Nobody sets a conversion rate here. Users send held-out transactions of the fraud task through the
router to MLServer; each answer's true label arrives seconds later and goes to the router's /feedback
(success = the model's class was right); the operator judges that from Prometheus. The models are the
ones hack/models/train.py trained (docs/models.md); their accuracies on the same rows are known offline,
so the story knows which model should win, but the operator does not.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from harness.env import RolloutEnv
from harness.experiment import (
    agreement_guardrail,
    condition,
    conversion_metric,
    describe,
    error_rate_guardrail,
    steps_in_history,
    wait_for_events,
    wait_for_phase,
    wait_for_status,
)
from harness.mlserver import CLASS_POINTER, SCORE_POINTER, V2_VOLATILE_FIELDS
from kubernetes import client

from arbiter_fixtures import OperatorProcess
from helpers import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(420)]

TERMINAL = {"Promoted", "RolledBack", "Concluded", "Failed"}
# Half of the transactions are frauds (a queue a rules engine already flagged): at about 10% the better
# model's edge in accuracy (0.963 vs 0.922) needs thousands of labels per arm, at half it needs hundreds,
# which a shared 2-core machine serves in a minute or two. Measured accuracy at this mix: 0.63 vs 0.85.
FRAUD_SHARE = 0.5
RATE = 15


def expected_accuracy(variant: dict[str, Any]) -> float:
    """Accuracy at FRAUD_SHARE from the catalogue's recall and overall accuracy (positives ~10%)."""
    return FRAUD_SHARE * variant["recall"] + (1 - FRAUD_SHARE) * variant["specificity"]


def test_better_model_served_by_mlserver_is_promoted_on_delayed_labels(
    rollout_env: Any, operator: OperatorProcess, kube_api: Any
) -> None:
    """The gradient-boosting challenger catches far more fraud than the champion's forest: it wins on the
    labels that arrive 1-3 s after each answer, goes through both steps and gets all the traffic."""
    name = "real-canary"
    env: RolloutEnv = rollout_env(experiment=name, real_models={"v1": "champion", "v2": "better"})
    assert env.router is not None and env.catalogue is not None
    experiment = env.experiment(
        steps=[{"weight": 20, "minDuration": "5s"}, {"weight": 50, "minDuration": "5s"}],
        # A busy machine may time a request out now and then; a broken model would fail most of them.
        guardrails=[error_rate_guardrail(max_rate=0.3, window="10s")],
        primary=conversion_metric(mde=0.2, name="correct"),
        decision={"maxDuration": "6m"},
    )
    env.apply([experiment])
    traffic = env.model_traffic(
        success="correct",
        fraud_share=FRAUD_SHARE,
        rate=RATE,
        label_delay=(1.0, 3.0),
        anonymous_share=0.1,
        max_seconds=330,
        seed=5,
    )
    promoted = wait_for_phase(
        kube_api,
        env.namespace,
        name,
        "Promoted",
        timeout=330,
        forbid_phases={"RolledBack", "Concluded", "Failed", "Paused"},
    )
    assert steps_in_history(promoted["history"]) == [0, 1], promoted["history"]
    assert promoted["weights"] == {"v1": 0, "v2": 100}
    decision = promoted["decision"]
    assert decision["outcome"] == "Promote" and decision.get("winner") == "v2", decision
    result = next(r for r in promoted["analysis"]["primary"]["results"] if r["variant"] == "v2")
    assert result["verdict"] == "Win" and result["treatmentValue"] > result["controlValue"], result
    wait_for_events(kube_api, env.namespace, name, "Promoted")
    wait_for(lambda: env.router.weights() == {"v2": 100}, timeout=30, message="the router to serve v2 only")

    snapshot = traffic.stop()
    v1, v2 = snapshot.of("v1"), snapshot.of("v2")
    # What the operator measured online is what the models do: the labels say v2 is right more often.
    assert v2.accuracy > v1.accuracy, (v1, v2)
    assert v1.labels_sent > 30 and v2.labels_sent > 30, snapshot
    for counts in (v1, v2):
        assert counts.labels_failed == 0 and counts.labels_due == counts.labels_sent, counts
        assert counts.anonymous > 0, "anonymous visitors were served and labelled by request id"
    # The operator's estimates are those of the true labels (a few sigma of sampling noise apart).
    assert abs(result["treatmentValue"] - expected_accuracy(variant_stats(env, "better"))) < 0.15, result
    assert abs(result["controlValue"] - expected_accuracy(variant_stats(env, "champion"))) < 0.15, result


def variant_stats(env: RolloutEnv, model: str) -> dict[str, Any]:
    """The catalogue's offline numbers for ``model``, with its specificity (true negatives / negatives)."""
    assert env.catalogue is not None
    stats = dict(env.catalogue.variants[model])
    rate = env.catalogue.data["positiveRate"]
    stats["specificity"] = (stats["accuracy"] - rate * stats["recall"]) / (1 - rate)
    return stats


def test_disagreeing_model_in_shadow_is_judged_by_its_class_and_rolled_back(
    rollout_env: Any, operator: OperatorProcess, kube_api: Any
) -> None:
    """A forest with balanced class weights flags many more frauds: its class agrees with the champion's on
    about 83% of the transactions. Compared by the class pointer (spec.routing.shadow.compare) the agreement
    guardrail reads about 0.83 -- not 0, which whole V2 bodies would give -- and rolls it back."""
    name = "real-shadow"
    env: RolloutEnv = rollout_env(experiment=name, real_models={"v1": "champion", "v2": "disagreeing"})
    assert env.router is not None and env.catalogue is not None
    compare = {"fields": [CLASS_POINTER], "ignore": list(V2_VOLATILE_FIELDS), "score": SCORE_POINTER}
    env.apply(
        [
            env.experiment(
                mode="Shadow",
                guardrails=[agreement_guardrail(0.95, failure_limit=3)],
                shadow={"percent": 100, "timeoutSeconds": 5, "compare": compare},
                shadow_analysis={"minDuration": "10m"},  # only the guardrail can end it within the test
            )
        ]
    )
    core = client.CoreV1Api(kube_api)

    def shadow_rules() -> Any:
        """The shadow block of the routes the operator wrote (None before the ConfigMap, or without a mirror)."""
        body = core.read_namespaced_config_map(env.config_map, env.namespace, _request_timeout=5)
        return yaml.safe_load((body.data or {}).get("routes.yaml", "{}")).get("shadow")

    written = env.record(shadow_rules)
    traffic = env.model_traffic(rate=RATE, label_delay=(1.0, 2.0), max_seconds=200, seed=7)
    rolled_back = wait_for_status(
        kube_api,
        env.namespace,
        name,
        lambda s: s.get("phase") == "RolledBack",
        forbid=lambda s: s.get("phase") in TERMINAL - {"RolledBack"} or s.get("phase") == "Paused",
        timeout=180,
        message="the disagreeing shadow to be rolled back",
    )
    decision = rolled_back["decision"]
    assert decision["outcome"] == "Rollback" and "agreement" in decision["reason"], describe(rolled_back)
    assert rolled_back["weights"] == {"v1": 100, "v2": 0}
    guardrails = condition(rolled_back, "GuardrailsHealthy")
    assert guardrails["status"] == "False" and guardrails["reason"] == "GuardrailTripped", guardrails
    agreement = next(
        g for g in rolled_back["guardrails"] if g["name"] == "agreement" and g["variant"] == "v2"
    )
    # The class rules were in force: real disagreement, far from the 0 of whole-body comparison.
    expected = env.catalogue.variants["disagreeing"]["agreementWithChampion"]
    assert 0.5 < agreement["value"] < 0.95, agreement
    assert abs(agreement["value"] - expected) < 0.2, (agreement, expected)

    # The router got the rules from the spec through the ConfigMap (while it mirrored), and exported what
    # they measure.
    mirrors = [rules for rules in written.stop() if rules]
    assert mirrors, "the operator wrote a mirror"
    assert all(rules["compare"] == compare for rules in mirrors), mirrors
    selector = f'job="{env.job}",experiment="{name}",variant="v2"'
    deltas = env.prometheus.query(f"sum(arbiter_router_shadow_score_delta_count{{{selector}}})")
    assert deltas and float(deltas[0]["value"][1]) > 0, deltas
    moved = env.prometheus.query(
        f'1 - sum(arbiter_router_shadow_score_delta_bucket{{{selector},le="0.1"}})'
        f" / sum(arbiter_router_shadow_score_delta_count{{{selector}}})"
    )
    # The balanced forest moves many scores by more than 0.1 (its p95 delta is about 0.45 offline).
    assert moved and float(moved[0]["value"][1]) > 0.2, moved
    snapshot = traffic.stop(flush=False)
    assert set(snapshot.variants) <= {"v1", "none"}, "the shadow served nobody"
