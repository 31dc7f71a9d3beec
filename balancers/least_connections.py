"""least-connections: lowest (in_flight + 1) / weight; ties go round-robin."""

from __future__ import annotations

from .base import Balancer, PickContext, TargetState, rotation_start


class LeastConnections(Balancer):
    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self._last = -1

    def choose(self, eligible: list[TargetState], ctx: PickContext) -> TargetState:
        n = len(eligible)
        start = rotation_start(eligible, self._last)
        best = eligible[start]
        # Compared as cross products of integers: exact, so ties really tie.
        for k in range(1, n):
            s = eligible[(start + k) % n]
            if (s.in_flight + 1) * best.weight < (best.in_flight + 1) * s.weight:
                best = s
        self._last = best.index
        return best
