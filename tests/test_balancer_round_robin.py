"""Smooth weighted round-robin behind the balancer interface (SPEC §6.1)."""

from __future__ import annotations

from collections import Counter

from balancers import PickContext, TargetState, make_balancer


def states(*weights: int) -> list[TargetState]:
    return [TargetState(index=i, name=f"t{i}", weight=w) for i, w in enumerate(weights)]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_weights_hold_in_every_window_of_100_and_interleave() -> None:
    ts = states(70, 25, 5)
    bal = make_balancer("round-robin", ts, FakeClock())
    picks = [bal.pick(ts, PickContext()) for _ in range(1000)]
    names = [p.name for p in picks if p is not None]
    assert Counter(names) == {"t0": 700, "t1": 250, "t2": 50}
    for start in range(0, 1000, 100):
        assert Counter(names[start : start + 100]) == {"t0": 70, "t1": 25, "t2": 5}
    longest = max(
        len(run)
        for run in "".join(n[-1] for n in names).replace("1", " ").replace("2", " ").split()
    )
    assert longest <= 3, "smooth: the heavy target is interleaved, never 70 in a row"


def test_skips_unavailable_and_tried_targets() -> None:
    clock = FakeClock()
    ts = states(1, 1, 1)
    bal = make_balancer("round-robin", ts, clock)
    ts[0].healthy = False
    ts[1].open_until = clock.now + 5
    assert {bal.pick(ts, PickContext()).name for _ in range(10)} == {"t2"}  # type: ignore[union-attr]
    ts[1].open_until = 0
    ctx = PickContext(tried=[ts[2]])
    assert bal.pick(ts, ctx) is ts[1], "an untried target is preferred"
    ctx.tried.append(ts[1])
    assert bal.pick(ts, ctx) in (ts[1], ts[2]), "then tried ones again"
    ts[1].healthy = ts[2].healthy = False
    assert bal.pick(ts, PickContext()) is None


def test_candidate_subset() -> None:
    ts = states(5, 1, 1)
    bal = make_balancer("round-robin", ts, FakeClock())
    subset = ts[1:]
    assert Counter(bal.pick(subset, PickContext()).name for _ in range(10)) == {"t1": 5, "t2": 5}  # type: ignore[union-attr]
