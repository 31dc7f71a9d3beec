"""Smooth weighted round-robin (nginx's algorithm).

Each pick adds every eligible target's weight to its running credit, takes the target
with the most credit and charges it the sum of weights: 70/25/5 comes out interleaved
(70 % in every window of 100 picks), never 70 in a row.
"""

from __future__ import annotations

from collections.abc import Sequence

from .base import Balancer, PickContext, TargetState


class SmoothWeighted:
    """The credit table, shared by algorithms that fall back to round-robin."""

    def __init__(self, size: int) -> None:
        self.credit = [0] * size

    def choose(self, eligible: Sequence[TargetState]) -> TargetState:
        credit = self.credit
        total = 0
        best = eligible[0]
        best_credit = None
        for s in eligible:
            c = credit[s.index] + s.weight
            credit[s.index] = c
            total += s.weight
            if best_credit is None or c > best_credit:
                best, best_credit = s, c
        credit[best.index] -= total
        return best


class RoundRobin(Balancer):
    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self._smooth = SmoothWeighted(len(self.states))

    def choose(self, eligible: list[TargetState], ctx: PickContext) -> TargetState:
        return self._smooth.choose(eligible)
