"""priority: targets of equal weight form a group, highest weight first.

`eligible()` already drops unavailable targets and, while an untried one exists, the
ones tried for this request, so "the highest weight among eligible targets" is exactly the group
to use: a lower group appears only once every higher target is unavailable or tried.
Inside the group, round-robin (equal weights, so plain rotation is the smooth order).
"""

from __future__ import annotations

from .base import Balancer, PickContext, TargetState, rotation_start


class Priority(Balancer):
    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self._last = -1

    def choose(self, eligible: list[TargetState], ctx: PickContext) -> TargetState:
        top = max(s.weight for s in eligible)
        n = len(eligible)
        start = rotation_start(eligible, self._last)
        for k in range(n):
            s = eligible[(start + k) % n]
            if s.weight == top:
                self._last = s.index
                return s
        raise AssertionError("the top weight is in the eligible")
