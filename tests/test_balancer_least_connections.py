"""least-connections: lowest (in_flight + 1) / weight, ties round-robin."""

from __future__ import annotations

from collections import Counter

from balancer_kit import FakeClock, names, states

from balancers import Outcome, PickContext, make_balancer


def test_ties_alternate() -> None:
    ts = states(1, 1, 1)
    bal = make_balancer("least-connections", ts, FakeClock())
    assert names(bal, ts, 6) == ["t0", "t1", "t2", "t0", "t1", "t2"]


def test_stuck_target_gets_no_new_picks() -> None:
    ts = states(1, 1, 1)
    ts[0].in_flight = 50  # e.g. long generations piling up
    bal = make_balancer("least-connections", ts, FakeClock())
    picks = []
    for _ in range(40):  # requests that start and finish in turn
        s = bal.pick(ts, PickContext())
        assert s is not None
        picks.append(s.name)
        bal.report(s, Outcome(ok=True, latency=0.1))
    assert Counter(picks) == {"t1": 20, "t2": 20}


def test_in_flight_fills_the_idle_ones_first() -> None:
    ts = states(1, 1, 1)
    ts[0].in_flight = 3
    bal = make_balancer("least-connections", ts, FakeClock())
    picks = []
    for _ in range(6):  # concurrent: each pick stays in flight until reported
        s = bal.pick(ts, PickContext())
        assert s is not None
        picks.append(s.name)
    assert Counter(picks[:6]) == {"t1": 3, "t2": 3}
    assert [s.in_flight for s in ts] == [3, 3, 3]


def test_weight_scales_connections() -> None:
    ts = states(3, 1)
    bal = make_balancer("least-connections", ts, FakeClock())
    for _ in range(8):
        s = bal.pick(ts, PickContext())
        assert s is not None
    assert [s.in_flight for s in ts] == [6, 2]


def test_skips_unavailable() -> None:
    clock = FakeClock()
    ts = states(1, 1)
    ts[1].in_flight = 9
    ts[0].open_until = clock.now + 1
    bal = make_balancer("least-connections", ts, clock)
    assert bal.pick(ts, PickContext()) is ts[1]
