"""Small helpers shared by tests: wait for a condition instead of sleeping."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T],
    timeout: float,
    interval: float = 0.1,
    message: str = "condition not met",
) -> T:
    """Call ``predicate`` until it returns a truthy value, and return that value.

    Exceptions raised by ``predicate`` count as "not yet" (the last one is reported), so a
    predicate may read a resource that does not exist yet.

    Args:
        predicate: called with no arguments.
        timeout: seconds before giving up.
        interval: seconds between calls.
        message: what was awaited, for the failure message.

    Raises:
        AssertionError: on timeout, with ``message`` and the last value or exception.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = predicate()
        except Exception as err:  # the predicate's errors mean "not yet"; reported on timeout
            last = err
        else:
            if value:
                return value
            last = value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{message} (timed out after {timeout}s; last value: {last!r})")
        time.sleep(interval)
