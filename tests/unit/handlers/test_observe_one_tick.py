"""A tick stops querying a Prometheus that is unreachable or timing out (handlers/observe.py)."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import pytest

from arbiter.api import parse_spec
from arbiter.handlers.observe import read_observations
from arbiter.metrics import ErrorKind, QueryContext, QueryResult

SPEC: dict[str, Any] = {
    "mode": "Canary",
    "champion": {"name": "v1", "deployment": "d1", "service": "s1"},
    "challengers": [{"name": "v2", "deployment": "d2", "service": "s2"}],
    "routing": {"provider": "Router", "router": {"configMap": "routes"}},
    "steps": [{"weight": 10}],
    "analysis": {
        "guardrails": [
            {"name": "latency", "query": 'q_latency{variant="{{variant}}"}', "max": 0.2},
            {"name": "errors", "query": 'q_errors{variant="{{variant}}"}', "max": 0.1},
        ],
        "primary": {
            "name": "conversion",
            "type": "Proportion",
            "successes": 'q_successes{variant="{{variant}}"}',
            "trials": 'q_trials{variant="{{variant}}"}',
            "minimumDetectableEffect": 0.1,
        },
    },
}


class Scripted:
    """A metrics provider at the HTTP boundary: every query answers with ``answer`` (and is counted)."""

    def __init__(self, answer: QueryResult) -> None:
        self.answer = answer
        self.sent: list[str] = []

    def query_per_variant(
        self, template: str, context: QueryContext, variants: Sequence[str]
    ) -> dict[str, QueryResult]:
        self.sent.append(template)
        return dict.fromkeys(variants, self.answer)

    def is_online(self) -> bool:
        return self.answer.is_value


@pytest.mark.parametrize("kind", [ErrorKind.TIMEOUT, ErrorKind.UNREACHABLE, ErrorKind.UNAUTHORIZED])
def test_a_dead_server_costs_one_query_per_tick(kind: ErrorKind) -> None:
    provider = Scripted(QueryResult.error(kind, "Prometheus did not answer", query="q"))
    observations = read_observations(provider, parse_spec(copy.deepcopy(SPEC)), "ns", "exp")
    assert len(provider.sent) == 1, provider.sent
    errors = observations.errors()
    assert errors, "every reading the tick skipped is an error, never missing data"
    assert any("not sent: Prometheus did not answer" in e for e in errors), errors
    assert observations.guardrails["errors"]["v2"].error is not None
    assert observations.primary is not None and observations.primary.errors


@pytest.mark.parametrize(
    "answer",
    [QueryResult.of(1.0, query="q"), QueryResult.error(ErrorKind.BAD_QUERY, "parse error", query="q")],
)
def test_answers_and_query_errors_do_not_stop_the_tick(answer: QueryResult) -> None:
    provider = Scripted(answer)
    read_observations(provider, parse_spec(copy.deepcopy(SPEC)), "ns", "exp")
    assert len(provider.sent) == 4, provider.sent  # two guardrails, successes and trials
