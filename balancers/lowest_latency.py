"""lowest-latency: lowest latency EWMA ÷ weight.

Targets never reported on are tried first, in config order (exploration). A share
`probe_share` of picks goes to one of the others instead, round-robin, so the EWMA of a
target that was slow once is refreshed and it can win again.
"""

from __future__ import annotations

from .base import Balancer, PickContext, TargetState, rotation_start
from .scores import latency_score, unexplored


class LowestLatency(Balancer):
    uses_latency = True

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self._last_probe = -1

    def choose(self, eligible: list[TargetState], ctx: PickContext) -> TargetState:
        best = eligible[0]
        best_score = latency_score(best)
        for s in eligible:
            if unexplored(s):
                return s
            score = latency_score(s)
            if score < best_score:
                best, best_score = s, score
        if self.rng.random() < self.options.probe_share:
            return self._probe(eligible, best)
        return best

    def _probe(self, eligible: list[TargetState], best: TargetState) -> TargetState:
        n = len(eligible)
        start = rotation_start(eligible, self._last_probe)
        for k in range(n):
            s = eligible[(start + k) % n]
            if s is not best:
                self._last_probe = s.index
                return s
        return best  # unreachable with two or more targets

    def score(self, state: TargetState, now: float) -> float:
        """EWMA in seconds (e2e) or seconds per completion token (tpot)."""
        return state.ewma
