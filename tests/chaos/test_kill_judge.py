"""The judge of the chaos suite, on made-up timelines: it must see what it is there to see.

No cluster: these check that a lost step, a doubled step, a different outcome and a long divergence
are each counted, so a green ``make chaos`` cannot come from a judge that counts nothing.
"""

from __future__ import annotations

import pytest
from kill_support import Outcome, Sample, divergence_ticks, history_steps, judge, settled

pytestmark = [pytest.mark.chaos]

A = {"v1": 80.0, "v2": 20.0}
B = {"v1": 50.0, "v2": 50.0}
C = {"v2": 100.0}
REFERENCE = Outcome("Promoted", [0, 1, 2], [A, B, C])


def sample(at: float, status: dict[str, float], plane: dict[str, float]) -> Sample:
    return Sample(at, "Progressing", 0, status, plane)


def test_an_identical_run_is_clean() -> None:
    run = judge("operator_sigkill", REFERENCE, Outcome("Promoted", [0, 1, 2], [A, B, C]), 1, "same")
    assert (run.outcome_differed, run.steps_lost, run.steps_doubled) == (False, 0, 0)


def test_a_different_phase_a_lost_step_and_a_doubled_step_are_each_counted() -> None:
    assert judge("k", REFERENCE, Outcome("RolledBack", [0, 1, 2], [A, B, C]), 0, "").outcome_differed
    # Status skipped step 1 and the router never loaded its weights: two losses.
    assert judge("k", REFERENCE, Outcome("Promoted", [0, 2], [A, C]), 0, "").steps_lost == 2
    # Step 1 entered twice in status, and the router went back to A after B.
    doubled = judge("k", REFERENCE, Outcome("Promoted", [0, 1, 1, 2], [A, B, A, B, C]), 0, "")
    assert doubled.steps_doubled == 1 + 2
    assert doubled.steps_lost == 0


def test_history_steps_lists_every_entry_that_enters_a_step() -> None:
    history = [
        {"from": "New", "to": "Progressing(step 0)"},
        {"from": "Progressing(step 0)", "to": "Progressing(step 1)"},
        {"from": "Progressing(step 1)", "to": "Progressing(step 1)"},
        {"from": "Progressing(step 1)", "to": "Promoted"},
    ]
    assert history_steps(history) == [0, 1, 1]


def test_divergence_is_the_longest_disagreement_outside_downtime_in_ticks() -> None:
    samples = [
        sample(0.0, A, A),
        sample(0.2, B, A),  # 0.2 s behind, then agrees: one tick
        sample(0.4, B, B),
        sample(1.0, B, C),  # 2.6 s of disagreement, 1.0 s of it while no operator served
        sample(3.6, C, C),
        sample(4.0, {}, C),  # no status weights: not compared
    ]
    assert divergence_ticks(samples, [], 1.0) == 3
    assert divergence_ticks(samples, [(1.5, 2.5)], 1.0) == 2
    assert divergence_ticks(samples, [(0.0, 10.0)], 1.0) == 0
    assert divergence_ticks([sample(0.0, A, A), sample(5.0, A, A)], [], 1.0) == 0


def test_settled_means_the_last_comparable_look_agrees() -> None:
    assert settled([sample(0.0, A, B), sample(1.0, B, B), sample(2.0, {}, C)])
    assert not settled([sample(0.0, A, A), sample(1.0, B, A)])
    assert not settled([sample(0.0, {}, A)])
