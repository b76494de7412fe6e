"""`arbiter run --selector`: the label selector that limits a replica to its shard of experiments."""

from __future__ import annotations

import pytest

from arbiter.handlers.shard import LabelSelector, SelectorError


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ("", {}, True),
        ("arbiter.dev/shard=a", {"arbiter.dev/shard": "a"}, True),
        ("arbiter.dev/shard=a", {"arbiter.dev/shard": "b"}, False),
        ("arbiter.dev/shard=a", {}, False),
        ("arbiter.dev/shard==a", {"arbiter.dev/shard": "a"}, True),
        ("arbiter.dev/shard!=a", {}, True),
        ("arbiter.dev/shard!=a", {"arbiter.dev/shard": "a"}, False),
        ("team", {"team": "fraud"}, True),
        ("!team", {"team": "fraud"}, False),
        ("!team", {}, True),
        ("shard in (a, b)", {"shard": "b"}, True),
        ("shard in (a, b)", {"shard": "c"}, False),
        ("shard notin (a,b)", {"shard": "c"}, True),
        ("shard notin (a,b)", {}, True),
        ("shard in (a,b),team=fraud", {"shard": "a", "team": "fraud"}, True),
        ("shard in (a,b),team=fraud", {"shard": "a", "team": "ads"}, False),
    ],
)
def test_selector_matches_like_kubectl(selector: str, labels: dict[str, str], expected: bool) -> None:
    assert LabelSelector.parse(selector).matches(labels) is expected


@pytest.mark.parametrize("bad", ["shard=a=b", "=a", "shard in a,b", "sh ard=a", "shard=(a)"])
def test_a_bad_selector_is_refused_with_its_part_named(bad: str) -> None:
    with pytest.raises(SelectorError, match="not a label selector requirement"):
        LabelSelector.parse(bad)


def test_arbiter_run_refuses_a_bad_selector_before_starting(capsys: pytest.CaptureFixture[str]) -> None:
    from arbiter.cli import main

    assert main(["run", "--selector", "shard in a,b"]) == 2
    assert "--selector: not a label selector requirement: 'shard in a'" in capsys.readouterr().err
