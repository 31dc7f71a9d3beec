"""Smooth weighted round-robin behind the balancer interface."""

from __future__ import annotations

from collections import Counter

from balancer_kit import FakeClock, names, states

from balancers import PickContext, make_balancer


def test_weights_hold_in_every_window_of_100_and_interleave() -> None:
    ts = states(70, 25, 5)
    bal = make_balancer("round-robin", ts, FakeClock())
    picked = names(bal, ts, 1000)
    assert Counter(picked) == {"t0": 700, "t1": 250, "t2": 50}
    for start in range(0, 1000, 100):
        assert Counter(picked[start : start + 100]) == {"t0": 70, "t1": 25, "t2": 5}
    longest = max(
        len(run)
        for run in "".join(str(n)[-1] for n in picked).replace("1", " ").replace("2", " ").split()
    )
    assert longest <= 3, "smooth: the heavy target is interleaved, never 70 in a row"


def test_skips_unavailable_and_tried_targets() -> None:
    clock = FakeClock()
    ts = states(1, 1, 1)
    bal = make_balancer("round-robin", ts, clock)
    ts[0].healthy = False
    ts[1].open_until = clock.now + 5
    assert set(names(bal, ts, 10)) == {"t2"}
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
    assert Counter(names(bal, subset, 10)) == {"t1": 5, "t2": 5}
