"""The handler's summary of the leading challenger (status.leading), written with every status."""

from __future__ import annotations

from typing import Any

from arbiter.handlers.experiment import _with_leading

RESULTS = {"primary": {"results": [{"variant": "v2", "relativeLift": -0.2, "pValue": 0.01},
                                   {"variant": "v3", "relativeLift": 0.1, "pValue": 0.3}]}}  # fmt: skip


def body(direction: str | None = None) -> dict[str, Any]:
    primary = {"name": "latency"} | ({"direction": direction} if direction else {})
    return {"spec": {"analysis": {"primary": primary}}}


def test_leading_follows_the_metrics_direction_and_leaves_the_rest_alone() -> None:
    status = {"phase": "Progressing", "analysis": RESULTS}
    assert _with_leading(body(), status)["leading"] == {"variant": "v3", "relativeLift": 0.1, "pValue": 0.3}
    assert _with_leading(body("Decrease"), status)["leading"]["variant"] == "v2"
    assert {k: v for k, v in _with_leading(body(), status).items() if k != "leading"} == status
    assert "leading" not in status, "the status passed in is not changed"


def test_leading_goes_away_with_the_results_and_a_bad_spec_gives_none() -> None:
    stale = {"phase": "Progressing", "leading": {"variant": "v2"}}  # e.g. after a retry reset the analysis
    assert "leading" not in _with_leading(body(), stale)
    assert "leading" not in _with_leading(body("Sideways"), {"analysis": RESULTS})
    assert "leading" not in _with_leading({}, {})
