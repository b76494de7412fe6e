"""Off-by-default crash points for the fault-injection suite (``make chaos``, docs/chaos.md).

A SIGKILL at a random moment rarely lands in the few milliseconds between a tick's routing change and
its status write, yet that window is where a crash can lose or repeat a step. With
``ARBITER_CHAOS_CRASH_AT=<point>[:<phase>]`` the operator kills itself (SIGKILL: no cleanup, no lease
release, exactly like an OOM kill) the first time a tick that changes the traffic reaches ``point``:

- ``before-route``: the engine decided a traffic change; nothing was routed or written yet.
- ``after-route``: the routing provider applied the change; the status is not written yet.

With ``:<phase>`` only a tick whose decision enters that phase counts, e.g. ``after-route:Promoted``
(the promotion was routed, the status still says Progressing) or ``after-route:RolledBack``.
Unset (the default, and in every deployment) nothing here does anything.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal

log = logging.getLogger("arbiter.handlers.crashpoint")

ENV = "ARBITER_CHAOS_CRASH_AT"
POINTS = frozenset({"before-route", "after-route"})


def _parse(setting: str) -> tuple[str, str | None] | None:
    """``point[:phase]`` -> (point, phase); None when unset. Raises ValueError on an unknown point."""
    if not setting:
        return None
    point, _, phase = setting.partition(":")
    if point not in POINTS:
        raise ValueError(f"{ENV}={setting!r}: the point must be one of {sorted(POINTS)}")
    return point, phase or None


_ARMED = _parse(os.environ.get(ENV, "").strip())


def reach(point: str, phase: str | None) -> None:
    """A traffic-changing tick reached ``point`` deciding ``phase``: SIGKILL this process if armed there."""
    if _ARMED is None or _ARMED[0] != point or _ARMED[1] not in (None, phase):
        return
    log.warning("%s=%s: crash point reached (deciding %s), SIGKILL now", ENV, os.environ.get(ENV), phase)
    for handler in logging.getLogger().handlers:
        # A closed stream must not stop the kill: the crash matters more than the last log line.
        with contextlib.suppress(OSError, ValueError):
            handler.flush()
    os.kill(os.getpid(), signal.SIGKILL)
