"""A provider that routes nothing and remembers what it was told: a null object for tests and dry runs."""

from __future__ import annotations

from arbiter.routing.base import BaseProvider, Mirror, TrafficState


class NopProvider(BaseProvider):
    """Keeps the weights in memory. ``reconcile`` starts at the champion 100%; ``verify`` always agrees.

    Not reachable through ``spec.routing.provider``; build it directly.
    """

    name = "Nop"

    _state: TrafficState | None = None

    def _reconcile(self) -> None:
        if self._state is None:
            self._state = TrafficState({n: 100 if n == self.champion else 0 for n in self.variant_names})

    def _apply(self, weights: dict[str, int], mirror: Mirror | None, *, finalizing: bool) -> None:
        self._state = TrafficState(dict(weights), mirror)

    def _read(self) -> TrafficState:
        self._reconcile()
        assert self._state is not None
        return self._state
