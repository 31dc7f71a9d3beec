"""least-busy (ours): fewest busy slots ÷ capacity, then lowest latency EWMA.

Busy slots are what the gateway has in flight plus what the server reports for itself
(other clients of the same box), see `capacity.busy`. A target without a capacity
counts as one slot, so give every target `max_concurrency` (or `auto`) when mixing.
Ties on load go to the lower latency EWMA (a box that generates faster), then
round-robin. Targets never reported on are tried first, as with lowest-latency.
"""

from __future__ import annotations

from typing import Any

from .base import Balancer, PickContext, TargetState, rotation_start
from .capacity import busy
from .scores import latency_score, unexplored


class LeastBusy(Balancer):
    uses_latency = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._last = -1

    def choose(self, eligible: list[TargetState], ctx: PickContext) -> TargetState:
        now = self.clock()
        max_age = self.options.signal_max_age
        n = len(eligible)
        start = rotation_start(eligible, self._last)
        best: TargetState | None = None
        best_key = (0, 0, 0.0)
        for k in range(n):
            s = eligible[(start + k) % n]
            cap = s.capacity or 1
            # load = busy / cap, compared as a cross product (integers: ties really tie)
            key = (busy(s, now, max_age), cap, 0.0 if unexplored(s) else latency_score(s))
            if best is None or _before(key, best_key):
                best, best_key = s, key
        assert best is not None
        self._last = best.index
        return best

    def score(self, state: TargetState, now: float) -> float:
        """Busy slots ÷ capacity (a target without a capacity counts as one slot)."""
        return busy(state, now, self.options.signal_max_age) / (state.capacity or 1)


def _before(a: tuple[int, int, float], b: tuple[int, int, float]) -> bool:
    load_a, load_b = a[0] * b[1], b[0] * a[1]
    if load_a != load_b:
        return load_a < load_b
    return a[2] < b[2]
