"""Real models, the offline loop and the demo's scenarios, end to end.

- The router writes its prediction log while the operator decides a canary of MLServer models online;
  `arbiter join-predictions` + `arbiter analyze` on that log reach the same verdict on the same labels.
- Every `make demo SCENARIO=...` scenario (hack/demo.py: the same models, experiment and traffic) ends in
  its expected phase. Their time scale is the demo's, shortened where it only waits (see SHORTER).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from harness.env import RolloutEnv
from harness.experiment import conversion_metric, error_rate_guardrail, wait_for_phase
from harness.mlserver import CLASS_POINTER, SCORE_POINTER

from arbiter_fixtures import OperatorProcess

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(480)]

ROOT = Path(__file__).resolve().parents[2]
ARBITER = Path(sys.executable).with_name("arbiter")
KEY = "e2e-attribution-key-0123456789abcdef"
MDE = 0.2


def _arbiter(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(ARBITER), *args], capture_output=True, text=True, timeout=120, check=False)


def test_analyze_on_the_prediction_log_reaches_the_operators_verdict(
    rollout_env: Any, operator: OperatorProcess, kube_api: Any, tmp_path: Path
) -> None:
    """A 50/50 test of the champion against the better model, labels by attribution token: the operator
    promotes v2 on Prometheus' counters; the router's own log, joined and analysed offline on the labels
    the operator had counted, says Win for v2 too, with the same success rates."""
    name = "real-offline"
    keys = tmp_path / "keys"
    keys.write_text(KEY + "\n")
    log_dir = tmp_path / "prediction-log"
    env: RolloutEnv = rollout_env(
        experiment=name,
        real_models={"v1": "champion", "v2": "better"},
        router_args=[
            "--attribution-keys",
            str(keys),
            "--prediction-log",
            str(log_dir),
            "--prediction-log-field",
            f"class={CLASS_POINTER}",
            "--prediction-log-field",
            f"score={SCORE_POINTER}",
        ],
    )
    env.apply(
        [
            env.experiment(
                steps=[{"weight": 50, "minDuration": "5s"}],  # one split all along: SRM is checkable offline
                guardrails=[error_rate_guardrail(max_rate=0.3, window="10s")],
                primary=conversion_metric(mde=MDE, name="correct"),
                decision={"maxDuration": "6m"},
            )
        ]
    )
    traffic = env.model_traffic(
        success="correct",
        fraud_share=0.5,
        rate=15,
        label_delay=(1.0, 3.0),
        max_seconds=330,
        seed=7,
        by_token=True,
    )
    promoted = wait_for_phase(
        kube_api,
        env.namespace,
        name,
        "Promoted",
        timeout=330,
        forbid_phases={"RolledBack", "Concluded", "Failed"},
    )
    online = next(r for r in promoted["analysis"]["primary"]["results"] if r["variant"] == "v2")
    assert online["verdict"] == "Win", online
    snapshot = traffic.stop()
    assert snapshot.of("v1").labels_failed == 0 and snapshot.of("v2").labels_failed == 0, snapshot
    assert env.router is not None
    env.router.stop()  # the log is complete once the router has stopped

    joined = tmp_path / "labelled.jsonl"
    result = _arbiter("join-predictions", str(log_dir), "-o", str(joined))
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in joined.read_text().splitlines()]
    # Labels came by token and found their prediction, with the model's class and score. (An answer the
    # router itself gave -- a 504 on a busy machine -- carries no token: its user's label goes by key.)
    by_token = [r for r in rows if r["attribution"] == "token"]
    assert len(by_token) >= 0.9 * len(rows), len(rows) - len(by_token)
    assert all("predictedAt" in r for r in by_token), [r for r in by_token if "predictedAt" not in r][:3]
    answered = [r for r in by_token if r["status"] == 200]
    assert answered and all(r["class"] in (0, 1) and 0.0 <= r["score"] <= 1.0 for r in answered)
    assert all(r["timestamp"].endswith("Z") for r in rows)
    # The labels the operator had counted when it decided: the first nControl / nTreatment of each arm.
    first: dict[str, int] = {"v1": int(online["nControl"]), "v2": int(online["nTreatment"])}
    counted = {"v1": 0, "v2": 0}
    decided = tmp_path / "decided.jsonl"
    with decided.open("w") as handle:
        for row in rows:
            if counted[row["variant"]] < first[row["variant"]]:
                counted[row["variant"]] += 1
                handle.write(json.dumps(row) + "\n")
    assert counted == first, (counted, first, len(rows))

    # The operator's test: its method and the experiment's minimum detectable effect (mSPRT's mixture).
    method = "sequential" if str(online.get("method", "")).lower().startswith("seq") else "fixed"
    result = _arbiter(
        "analyze", str(decided), "--control", "v1", "--time-col", "timestamp",
        "--method", method, "--mde", str(MDE), "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    offline = json.loads(result.stdout)
    assert offline["valid"] and not offline["srm"]["mismatch"], offline["srm"]
    (comparison,) = offline["comparisons"]
    assert comparison["variant"] == "v2" and comparison["decision"] == "Win", comparison
    assert (comparison["n_control"], comparison["n_treatment"]) == (first["v1"], first["v2"])
    assert abs(comparison["control_value"] - online["controlValue"]) < 1e-9, (comparison, online)
    assert abs(comparison["treatment_value"] - online["treatmentValue"]) < 1e-9, (comparison, online)


def _demo() -> Any:
    spec = importlib.util.spec_from_file_location("arbiter_demo", ROOT / "hack" / "demo.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


DEMO = _demo()
# Waiting the demo does for a human to watch (15 s per step, a 45 s shadow, a 90 s A/A) shortened; the
# models, traffic, guardrails and tests are the demo's own.
SHORTER = {"stepSeconds": "5s", "shadowMinDuration": "20s", "aaMaxDuration": "45s"}


def _shorten(experiment: dict[str, Any], scenario: str) -> dict[str, Any]:
    spec = experiment["spec"]
    for step in spec.get("steps") or []:
        step["minDuration"] = SHORTER["stepSeconds"]
    text = json.dumps(experiment)
    if scenario == "shadow":
        text = text.replace('"minDuration": "45s"', f'"minDuration": "{SHORTER["shadowMinDuration"]}"')
    if scenario == "aa":
        text = text.replace('"maxDuration": "90s"', f'"maxDuration": "{SHORTER["aaMaxDuration"]}"')
    shortened: dict[str, Any] = json.loads(text)
    return shortened


@pytest.mark.parametrize("scenario", sorted(DEMO.SCENARIOS))
def test_demo_scenario_on_real_models_ends_in_its_expected_phase(
    scenario: str, rollout_env: Any, operator: OperatorProcess, kube_api: Any
) -> None:
    expected = DEMO.SCENARIOS[scenario]
    name = f"demo-{scenario}"
    env: RolloutEnv = rollout_env(experiment=name, real_models={"v1": "champion", "v2": expected.challenger})
    experiment = _shorten(DEMO.experiment_for(scenario, env), scenario)
    env.apply([experiment])
    env.model_traffic(
        success=expected.success,
        fraud_share=None if scenario == "shadow" else 0.5,
        rate=15,
        label_delay=(1.0, 3.0),
        max_seconds=400,
    )
    # The demo's own rule: its expected phase, or another it names as right too (``regression`` may end
    # Concluded when Futile comes before Loss: no improvement worth the MDE, champion kept).
    accepted = {expected.expected, *expected.also}
    others = set(DEMO.TERMINAL) - accepted
    final = wait_for_phase(kube_api, env.namespace, name, accepted, timeout=400, forbid_phases=others)
    assert final["phase"] in accepted
    if scenario == "good":
        assert final["weights"] == {"v1": 0, "v2": 100}
    if scenario in ("regression", "latency"):
        assert final["weights"] == {"v1": 100, "v2": 0}
