"""RFC 3339 timestamps as the status stores them (UTC, whole seconds, ``Z``)."""

from __future__ import annotations

import datetime as dt


def rfc3339(moment: dt.datetime) -> str:
    """Format a timezone-aware moment as ``2026-01-01T00:00:00Z``."""
    return moment.astimezone(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def now_rfc3339() -> str:
    """The current time, formatted by :func:`rfc3339`."""
    return rfc3339(dt.datetime.now(dt.UTC))


def parse_rfc3339(text: str | None) -> dt.datetime | None:
    """Parse a stored timestamp; None or empty gives None."""
    if not text:
        return None
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
