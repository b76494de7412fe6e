"""Status written by the engine before its redesign resumes exactly (an upgrade mid-experiment).

``golden/ticks.json.gz`` holds 1,100 ticks recorded from the engine at commit 3d25e9a (every tick of
``test_engine.py`` plus seeded random canary, A/B/n and shadow runs with guardrails, secondary metrics,
exporter restarts, query errors, resume and retry; see ``golden/capture.py``). Each tick is replayed from its
recorded input status: the current engine must write the same status, post the same events, route the same
traffic and report the same outcome.

Deliberate differences, each adjusted for explicitly (and nothing else):

- the package formats numbers in messages one way, so a number that does not exist reads ``n/a`` where the
  old engine wrote ``nan`` or ``inf``;
- two fixes found by the per-judge tests (:data:`FIXED_TICKS`): a guardrail condition that said "no data yet
  for: " with nothing after it now says why, and a canary that eliminates a challenger holds the step until the
  new split is in place instead of judging the step on samples counted since the start;
- status fields added after the recording (:data:`ADDED_STATUS_FIELDS`) are dropped before comparing;
- a guardrail that could not be judged then and is judged now (:data:`JUDGED_NOW`) changes only its own
  judgement;
- a deliberate behaviour change (issue 13 §6, :data:`FUTILE_CONCLUDES`): ``RolledBack`` means harm was shown.
  When every challenger is out and none lost, the experiment ends ``Concluded`` with the reason "no improvement
  worth the MDE: ..." even if a futile challenger's estimate is below the champion's. Ticks 143 (an A/A-like
  run: 0.096 vs 0.1, p = 1), 220, 604 and 982 used to roll back such a challenger (``RolledBack``, Warning
  Event); they now conclude with the same traffic (champion 100%, ``routing`` unchanged). Tick 146 already
  concluded; only its reason gains the "no improvement worth the MDE: " prefix.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from arbiter.api import ModelExperimentSpec, parse_spec
from arbiter.rollout.engine import Controls, step
from arbiter.rollout.observations import MetricData, Observations, Reading
from arbiter.stats import MeanStats, ProportionStats

GOLDEN = Path(__file__).parent / "golden" / "ticks.json.gz"


@cache
def recorded() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(gzip.decompress(GOLDEN.read_bytes()))
    return data


_NON_FINITE_IN_TEXT = re.compile(r"-?\b(?:nan|inf)\b")


def respelled(recorded_value: dict[str, Any]) -> dict[str, Any]:
    """A recorded status or result, with non-finite numbers in messages spelled as the current formatter does."""
    value: dict[str, Any] = json.loads(_NON_FINITE_IN_TEXT.sub("n/a", json.dumps(recorded_value)))
    return value


#: Recorded ticks whose result changed on purpose, and the change.
FIXED_TICKS: dict[int, dict[str, str]] = {
    126: {"condition GuardrailsHealthy": "a query of this tick failed: health is not claimed on it"},
    321: {
        "decision": "step 2 (50% challenger) held: waiting for the data plane to carry this step's weights"
    },
}


#: Recorded ticks that ended on futility without a Loss: concluded (or worded) differently on purpose.
FUTILE_CONCLUDES = frozenset({143, 146, 220, 604, 982})

_FUTILE_ROLLBACK = re.compile(
    r'"\w+: cannot reach the minimum detectable effect and is estimated worse than the champion: (.*?) \(p = [^)]*\)"'
)
_NO_IMPROVEMENT = "no improvement worth the MDE: no challenger can reach the minimum detectable effect"


def futile_concluded(expected: dict[str, Any]) -> dict[str, Any]:
    """A recorded end on futility as the engine now writes it: Concluded, not RolledBack, same traffic."""
    text = json.dumps(expected)
    text = _FUTILE_ROLLBACK.sub(lambda m: f'"{_NO_IMPROVEMENT} ({m.group(1)}); keeping the champion"', text)
    text = text.replace('"no challenger can reach the minimum detectable effect', f'"{_NO_IMPROVEMENT}')
    changed: dict[str, Any] = json.loads(text)
    status = changed["status"]
    if changed["outcome"] == "Rollback":
        changed["outcome"] = status["decision"]["outcome"] = "Conclude"
        status["phase"] = status["history"][-1]["to"] = "Concluded"
        changed["events"] = [
            {**e, "type": "Normal", "reason": "Concluded"} if e["reason"] == "RolledBack" else e
            for e in changed["events"]
        ]
        for condition in status["conditions"]:
            condition["reason"] = {"RolledBack": "Concluded", "Rollback": "Conclude"}.get(
                condition["reason"], condition["reason"]
            )
    return changed


def expected_of(tick: dict[str, Any], index: int | None = None) -> dict[str, Any]:
    """The recorded result of a tick, with the deliberate changes of :data:`FIXED_TICKS` and
    :data:`FUTILE_CONCLUDES` applied."""
    expected = respelled(tick["expected"])
    if index in FUTILE_CONCLUDES:
        expected = futile_concluded(expected)
    for what, text in FIXED_TICKS.get(index if index is not None else -1, {}).items():
        status = expected["status"]
        if what == "decision":
            status["decision"]["reason"] = status["message"] = text
        else:
            kind = what.split()[1]
            next(c for c in status["conditions"] if c["type"] == kind)["message"] = text
    return expected


@cache
def spec_of(index: int) -> ModelExperimentSpec:
    return parse_spec(recorded()["specs"][index])


def _stats(raw: dict[str, Any]) -> ProportionStats | MeanStats:
    if raw["kind"] == "proportion":
        return ProportionStats(successes=raw["successes"], trials=raw["trials"])
    return MeanStats(n=raw["n"], sum=raw["sum"], sum_squares=raw["sum_squares"])


def _metric(raw: dict[str, Any] | None) -> MetricData | None:
    if raw is None:
        return None
    return MetricData(
        stats={v: _stats(s) for v, s in raw["stats"].items()}, missing=raw["missing"], errors=raw["errors"]
    )


def _readings(raw: dict[str, Any]) -> dict[str, Reading]:
    return {v: Reading(value=r["value"], error=r["error"]) for v, r in raw.items()}


def decode_observations(raw: dict[str, Any]) -> Observations:
    """The inverse of ``capture.encode_observations``."""
    return Observations(
        guardrails={g: _readings(rs) for g, rs in raw["guardrails"].items()},
        guardrail_rates={g: m for g, m in ((g, _metric(r)) for g, r in raw["guardrail_rates"].items()) if m},
        primary=_metric(raw["primary"]),
        secondary={g: m for g, m in ((g, _metric(r)) for g, r in raw["secondary"].items()) if m},
        samples=_readings(raw["samples"]),
    )


#: Status fields added after the recording, as paths of keys: the recording cannot hold them, so the replay
#: drops them before comparing (their values are tested where they are computed).
ADDED_STATUS_FIELDS: tuple[tuple[str, ...], ...] = (("analysis", "primary", "variants"), ("forecast",))


def without_added_fields(status: dict[str, Any]) -> dict[str, Any]:
    """``status`` without the fields of :data:`ADDED_STATUS_FIELDS`."""
    for path in ADDED_STATUS_FIELDS:
        parent: Any = status
        for key in path[:-1]:
            parent = parent.get(key) if isinstance(parent, dict) else None
        if isinstance(parent, dict):
            parent.pop(path[-1], None)
    return status


def replay(tick: dict[str, Any]) -> dict[str, Any]:
    """Run one recorded tick on the current engine, in the recorded shape."""
    plan = step(
        spec_of(tick["spec"]),
        respelled(tick["status"]),
        decode_observations(tick["observations"]),
        dt.datetime.fromisoformat(tick["now"]),
        Controls(tick["controls"] or {}),
        tick["generation"],
    )
    routing = plan.routing
    return {
        "status": without_added_fields(json.loads(json.dumps(plan.status))),
        "events": [{"type": e.type, "reason": e.reason, "message": e.message} for e in plan.events],
        "routing": None
        if routing is None
        else {
            "weights": routing.weights,
            "mirror": list(routing.mirror) if routing.mirror else None,
            "final": routing.final,
            "winner": routing.winner,
        },
        "outcome": str(plan.outcome),
    }


def test_the_recording_covers_every_outcome_and_mode() -> None:
    ticks = recorded()["ticks"]
    outcomes = {t["expected"]["outcome"] for t in ticks}
    assert outcomes >= {"Wait", "Hold", "Advance", "Promote", "Rollback", "Pause", "Resume", "Conclude"}
    modes = {recorded()["specs"][t["spec"]]["mode"] for t in ticks}
    assert modes == {"Canary", "ABTest", "Shadow"}
    assert len(ticks) > 1000


@pytest.mark.parametrize("chunk", range(10))
def test_every_recorded_tick_is_decided_the_same(chunk: int) -> None:
    ticks = recorded()["ticks"]
    for index in range(chunk, len(ticks), 10):
        tick = ticks[index]
        spec = recorded()["specs"][tick["spec"]]
        if index in JUDGED_NOW:
            continue
        assert replay(tick) == expected_of(tick, index), f"tick {index} ({spec['mode']}) decided differently"


#: Recorded ticks where a guardrail that could not be judged then is judged now, by a later rule:
#: tick -> (guardrail, variant, the reason it now gives).
JUDGED_NOW: dict[int, tuple[str, str, str]] = {
    # A rate guardrail with no errors in either arm was "no data yet" for ever (its harm test had no
    # variance), so a step could never pass it; it is now judged healthy (stats.guardrail_harm_test).
    849: ("errors", "v2", "errors of v2 healthy"),
}


def _without_guardrail_judgement(result: dict[str, Any]) -> dict[str, Any]:
    status = dict(result["status"])
    status.pop("guardrails", None)
    status["conditions"] = [c for c in status.get("conditions") or [] if c["type"] != "GuardrailsHealthy"]
    status["engine"] = {k: v for k, v in (status.get("engine") or {}).items() if k != "guardrailTests"}
    return {**result, "status": status}


@pytest.mark.parametrize("index", sorted(JUDGED_NOW))
def test_a_guardrail_judged_now_changes_only_its_judgement(index: int) -> None:
    tick = recorded()["ticks"][index]
    got, expected = replay(tick), expected_of(tick, index)
    assert _without_guardrail_judgement(got) == _without_guardrail_judgement(expected)
    name, variant, reason = JUDGED_NOW[index]
    (was,) = [g for g in expected["status"]["guardrails"] if (g["name"], g["variant"]) == (name, variant)]
    (now,) = [g for g in got["status"]["guardrails"] if (g["name"], g["variant"]) == (name, variant)]
    assert was["reason"].endswith("no data yet") and now["reason"] == reason and not now["breached"]
    others = [g for g in got["status"]["guardrails"] if (g["name"], g["variant"]) != (name, variant)]
    assert others == [
        g for g in expected["status"]["guardrails"] if (g["name"], g["variant"]) != (name, variant)
    ]


def test_the_futile_conclusions_change_exactly_the_ticks_listed() -> None:
    """Every end on futility in the recording is listed in :data:`FUTILE_CONCLUDES`, and nothing else is."""
    ticks = recorded()["ticks"]
    futile_ends = {
        i
        for i, t in enumerate(ticks)
        if t["expected"]["outcome"] in ("Rollback", "Conclude")
        and re.match(
            r"(\w+: cannot reach|no challenger can reach)", t["expected"]["status"]["decision"]["reason"]
        )
    }
    assert futile_ends == FUTILE_CONCLUDES
    for index in FUTILE_CONCLUDES:
        changed = futile_concluded(respelled(ticks[index]["expected"]))
        assert changed["status"]["phase"] == "Concluded"
        assert changed["status"]["decision"]["reason"].startswith("no improvement worth the MDE: ")
