"""Smooth weighted round-robin (nginx's algorithm).

Each pick adds every eligible target's weight to its running credit, takes the target
with the most credit and charges it the sum of weights: 70/25/5 comes out interleaved
(70 % in every window of 100 picks), never 70 in a row.
"""

from __future__ import annotations

from collections.abc import Sequence

from .base import Balancer, PickContext, TargetState


class RoundRobin(Balancer):
    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self._credit = [0] * len(self.states)

    def pick(self, candidates: Sequence[TargetState], ctx: PickContext) -> TargetState | None:
        pool = self.eligible(candidates, ctx)
        if not pool:
            return None
        if len(pool) == 1:
            return pool[0]
        credit = self._credit
        total = 0
        best: TargetState | None = None
        best_credit = 0
        for s in pool:
            c = credit[s.index] + s.weight
            credit[s.index] = c
            total += s.weight
            if best is None or c > best_credit:
                best, best_credit = s, c
        assert best is not None
        credit[best.index] -= total
        return best
