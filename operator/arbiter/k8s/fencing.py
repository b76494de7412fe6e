"""The write fence of leader election: who may write to the API server right now.

While leader election is on, :func:`arbiter.k8s.leader.install` registers the elector here and every
write of the operator (status, routes, weights) calls :func:`fence` first. Kept apart from
``leader.py`` so the writers (``traffic.py``, ``experiments.py``) need not import the elector.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["Leadership", "NotLeaderError", "fence", "install"]


class NotLeaderError(RuntimeError):
    """A write was attempted by a replica that does not (or may no longer) hold the leader Lease."""


class Leadership(Protocol):
    """What the fence asks of an elector."""

    @property
    def identity(self) -> str:
        """This replica's holder identity."""
        ...

    def is_leading(self) -> bool:
        """True while this replica holds the Lease and renewed it within the renew deadline."""
        ...


_installed: Leadership | None = None


def install(elector: Leadership | None) -> None:
    """Make :func:`fence` consult ``elector`` (None: no leader election, every write allowed)."""
    global _installed
    _installed = elector


def fence(what: str) -> None:
    """Raise :class:`NotLeaderError` when leader election is on and this replica may not write.

    Args:
        what: the write about to happen, for the message.
    """
    elector = _installed
    if elector is not None and not elector.is_leading():
        raise NotLeaderError(f"not writing {what}: this replica ({elector.identity}) is not the leader")
