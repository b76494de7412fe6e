"""`arbiter plan --challengers K`: sized for the Holm family the engine's `decide` judges challengers in."""

from __future__ import annotations

import json

import numpy as np

from arbiter.cli import main
from arbiter.stats import DecisionConfig, ProportionStats, Verdict, decide, sample_size_proportion

BASELINE, MDE = 0.15, 0.10


def plan(capsys, *argv: str) -> dict:
    assert main(["plan", "--baseline", str(BASELINE), "--mde", str(MDE), *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def win_rate_of_the_better_challenger(per_arm: int, challengers: int, runs: int, seed: int) -> float:
    """Fixed horizon at ``per_arm``, one challenger at the MDE and the rest equal: how often it wins."""
    rng = np.random.default_rng(seed)
    config = DecisionConfig(
        metric="Proportion", mde=MDE, method="FixedHorizon", planned_sample_size=per_arm, alpha=0.05
    )
    rates = [BASELINE * (1 + MDE)] + [BASELINE] * (challengers - 1)
    wins = 0
    for _ in range(runs):
        control = ProportionStats(float(rng.binomial(per_arm, BASELINE)), per_arm)
        treatments = {
            f"v{i}": ProportionStats(float(rng.binomial(per_arm, rate)), per_arm)
            for i, rate in enumerate(rates)
        }
        wins += decide(control, treatments, config).challengers["v0"].verdict is Verdict.WIN
    return wins / runs


def test_three_challengers_are_planned_at_alpha_over_three_and_keep_their_power_under_decide(capsys):
    out = plan(capsys, "--challengers", "3", "--daily-traffic", "40000")
    assert out["alpha_per_comparison"] == 0.05 / 3
    per_arm = out["sample_size_per_variant"]
    assert per_arm == sample_size_proportion(BASELINE, MDE, alpha=0.05 / 3).sample_size_per_variant
    assert out["total_sample_size"] == 4 * per_arm
    assert out["days"] == round(4 * per_arm / 40000, 3)
    # The engine's decide (Holm over the three) reaches the planned 80% power at this size ...
    # (Monte Carlo SE at 1,500 runs is about 1 point.)
    assert win_rate_of_the_better_challenger(per_arm, 3, 1500, seed=1) >= 0.77
    # ... and the uncorrected single-challenger size does not: it is the correction that keeps it.
    single = plan(capsys)["sample_size_per_variant"]
    assert single < per_arm
    assert win_rate_of_the_better_challenger(single, 3, 1500, seed=2) < 0.74


def test_a_share_per_challenger_sizes_the_champion_arm_from_what_is_left(capsys):
    out = plan(capsys, "--challengers", "3", "--allocation", "0.1")
    expected = sample_size_proportion(BASELINE, MDE, alpha=0.05 / 3, allocation=0.1 / 0.8)
    assert out["sample_size_by_variant"]["control"] == expected.sample_size_by_variant["control"]
    assert out["sample_size_by_variant"]["challenger-3"] == expected.sample_size_by_variant["treatment"]
    assert (
        main(["plan", "--baseline", "0.15", "--mde", "0.1", "--challengers", "3", "--allocation", "0.4"]) == 2
    )
    assert "leaves the champion" in capsys.readouterr().err
    assert main(["plan", "--baseline", "0.15", "--mde", "0.1", "--challengers", "0"]) == 2
    assert main(["plan", "--baseline", "0.15", "--mde", "0.1", "--challengers", "2"]) == 0
    human = capsys.readouterr().out
    assert "2 challengers, one Holm family" in human and "alpha / 2" in human
