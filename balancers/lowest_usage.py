"""lowest-usage: lowest decayed usage ÷ weight; ties go round-robin."""

from __future__ import annotations

from .base import Balancer, PickContext, TargetState, rotation_start
from .scores import usage_now


class LowestUsage(Balancer):
    uses_usage = True

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self._last = -1

    def choose(self, eligible: list[TargetState], ctx: PickContext) -> TargetState:
        now = self.clock()
        n = len(eligible)
        start = rotation_start(eligible, self._last)
        best = eligible[start]
        best_score = usage_now(best, now) / best.weight
        # Scanning from after the last pick keeps the first of equal scores: idle
        # targets of equal weight alternate instead of the first one taking everything.
        for k in range(1, n):
            s = eligible[(start + k) % n]
            score = usage_now(s, now) / s.weight
            if score < best_score:
                best, best_score = s, score
        self._last = best.index
        return best

    def score(self, state: TargetState, now: float) -> float:
        """Usage (tokens or cost) decayed to now."""
        return usage_now(state, now)
