"""The fault-injection suite's crash points: off unless armed, and then only at the point and phase named."""

from __future__ import annotations

import os
import signal

import pytest

from arbiter.handlers import crashpoint


def test_the_setting_names_a_point_and_optionally_a_phase() -> None:
    assert crashpoint._parse("") is None
    assert crashpoint._parse("after-route") == ("after-route", None)
    assert crashpoint._parse("before-route:Promoted") == ("before-route", "Promoted")
    with pytest.raises(ValueError, match="must be one of"):
        crashpoint._parse("after-write")


@pytest.mark.parametrize(
    ("armed", "point", "phase", "kills"),
    [
        (None, "after-route", "Progressing", False),
        (("after-route", None), "after-route", "Progressing", True),
        (("after-route", None), "before-route", "Progressing", False),
        (("after-route", "Promoted"), "after-route", "Progressing", False),
        (("after-route", "Promoted"), "after-route", "Promoted", True),
    ],
)
def test_only_the_armed_point_and_phase_kill_the_process(
    monkeypatch: pytest.MonkeyPatch,
    armed: tuple[str, str | None] | None,
    point: str,
    phase: str,
    kills: bool,
) -> None:
    sent: list[tuple[int, int]] = []
    monkeypatch.setattr(crashpoint, "_ARMED", armed)
    monkeypatch.setattr(os, "kill", lambda pid, sig: sent.append((pid, sig)))
    crashpoint.reach(point, phase)
    assert sent == ([(os.getpid(), signal.SIGKILL)] if kills else [])
