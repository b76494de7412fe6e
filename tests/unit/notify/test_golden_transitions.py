"""On the engine's own statuses, notifications and Events say the same thing, tick for tick.

The 1,100 recorded ticks of tests/unit/rollout/golden (canary, A/B/n and shadow runs with guardrails,
query errors, SRM, resume and retry) carry the status each tick read, the status it wrote and the Events
it posted. Every transition Event must yield exactly its notification, and a tick without one none.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path
from typing import Any

from arbiter.notify.transitions import detect

GOLDEN = Path(__file__).parents[1] / "rollout" / "golden" / "ticks.json.gz"

#: The Event reason each notification stands for (Events that are no transition are left out).
EVENT_TO_NOTICE = {
    "Advanced": ("Advanced", None),
    "ShadowPassed": ("Advanced", None),
    "Promoted": ("Promoted", None),
    "RolledBack": ("RolledBack", None),
    "Concluded": ("Concluded", None),
    "Retried": ("Started", None),
    "Restarted": ("Started", None),
    "Resumed": ("Resumed", None),
    "PausedSpec": ("Paused", "Spec"),
    "PausedLoss": ("Paused", "Loss"),
    "PausedTimeout": ("Paused", "Timeout"),
    "PausedAwaitingPromotion": ("Paused", "AwaitingPromotion"),
    "PausedSampleRatioMismatch": ("SampleRatioMismatch", "SampleRatioMismatch"),
    "PausedMetricsUnavailable": ("MetricsUnavailable", "MetricsUnavailable"),
}
NOT_TRANSITIONS = {"ChallengerEliminated", "ActionIgnored"}


def ticks() -> list[dict[str, Any]]:
    data: dict[str, Any] = json.loads(gzip.decompress(GOLDEN.read_bytes()))
    return list(data["ticks"])


def test_every_transition_event_is_one_notification_and_nothing_else_is() -> None:
    seen: Counter[str] = Counter()
    for index, tick in enumerate(ticks()):
        reasons = [e["reason"] for e in tick["expected"]["events"] if e["reason"] not in NOT_TRANSITIONS]
        notices = [(n.kind.value, n.pause_reason) for n in detect(tick["status"], tick["expected"]["status"])]
        if "Promoted" in reasons:
            # A manual promote while paused posts Resumed and Promoted in one tick: one transition, Promoted.
            reasons = ["Promoted"]
        expected = [EVENT_TO_NOTICE[r] for r in reasons]
        assert notices == expected, f"tick {index}: events {reasons}, notices {notices}"
        seen.update(kind for kind, _ in notices)
    # The recording exercises every kind the engine can produce on its own.
    assert set(seen) == {
        "Advanced",
        "Promoted",
        "RolledBack",
        "Concluded",
        "Started",
        "Resumed",
        "Paused",
        "SampleRatioMismatch",
        "MetricsUnavailable",
    }, seen
