"""What the balancer tests share: a clock moved by hand, targets by weight, and the
names a balancer picks in turn."""

from __future__ import annotations

from collections.abc import Sequence

from balancers import Balancer, PickContext, TargetState


class FakeClock:
    """A clock (monotonic or wall) that moves only when a test sets `now`."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def states(*weights: int) -> list[TargetState]:
    """One target per weight, named t0, t1, ..."""
    return [TargetState(index=i, name=f"t{i}", weight=w) for i, w in enumerate(weights)]


def names(
    bal: Balancer, ts: Sequence[TargetState], n: int, ctx: PickContext | None = None
) -> list[str | None]:
    """The names of `n` picks in a row (None when no target was available)."""
    out: list[str | None] = []
    for _ in range(n):
        s = bal.pick(ts, ctx or PickContext())
        out.append(s.name if s is not None else None)
    return out
