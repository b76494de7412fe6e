"""Prometheus range queries (`/api/v1/query_range`) for reports that draw a whole experiment over time.

Kept apart from the provider (which answers instant queries for a tick): a report asks a few questions
once, and a failure means only that a chart is missing, so errors are one exception with a short reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RangeQueryError", "RangeSeries", "range_query", "step_for"]

#: Prometheus refuses a range query with more points than this per series.
MAX_POINTS = 11000


class RangeQueryError(Exception):
    """Prometheus could not be asked or refused the query; the message is one line."""


@dataclass(frozen=True)
class RangeSeries:
    """One series of a range query: its labels and its (Unix seconds, value) points, oldest first."""

    labels: dict[str, str]
    points: list[tuple[float, float]] = field(default_factory=list)


def step_for(start: float, end: float, *, points: int = 400, minimum: float = 1.0) -> float:
    """A resolution (seconds) that gives about ``points`` points over ``[start, end]``."""
    span = max(end - start, minimum)
    step = max(minimum, span / points)
    return max(step, span / MAX_POINTS)


def range_query(
    base_url: str, query: str, start: float, end: float, step: float, *, timeout: float = 10.0
) -> list[RangeSeries]:
    """Run one PromQL range query and return its series (NaN points dropped).

    Raises:
        RangeQueryError: unreachable server, HTTP error, or an answer that is not a matrix.
    """
    import requests  # here, so that `arbiter --help` and `arbiter plan` do not load it

    url = base_url.rstrip("/") + "/api/v1/query_range"
    params = {"query": query, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"}
    try:
        response = requests.get(url, params=params, timeout=timeout)
    except requests.RequestException as exc:
        raise RangeQueryError(f"cannot reach Prometheus at {base_url}: {type(exc).__name__}") from exc
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    if response.status_code != 200 or not isinstance(body, dict) or body.get("status") != "success":
        detail = body.get("error") if isinstance(body, dict) else response.text[:200]
        raise RangeQueryError(f"Prometheus answered {response.status_code}: {detail}")
    data = body.get("data") or {}
    if data.get("resultType") != "matrix":
        raise RangeQueryError(f"expected a matrix, Prometheus answered {data.get('resultType')}")
    series = []
    for item in data.get("result") or []:
        points = []
        for at, text in item.get("values") or []:
            value = float(text)
            if not math.isnan(value):
                points.append((float(at), value))
        series.append(RangeSeries(labels=dict(item.get("metric") or {}), points=points))
    return series
