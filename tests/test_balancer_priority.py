"""priority: equal weights form a group, highest group first, round-robin inside."""

from __future__ import annotations

from collections import Counter

from balancer_kit import FakeClock, names, states

from balancers import PickContext, make_balancer


def test_highest_group_only_round_robin_inside() -> None:
    ts = states(5, 10, 1, 10, 5)  # groups: {t1, t3} > {t0, t4} > {t2}
    bal = make_balancer("priority", ts, FakeClock())
    assert names(bal, ts, 6) == ["t1", "t3"] * 3


def test_lower_group_only_when_the_higher_is_unavailable() -> None:
    clock, ts = FakeClock(), states(5, 10, 1, 10, 5)
    bal = make_balancer("priority", ts, clock)
    ts[1].healthy = False
    assert set(names(bal, ts, 10)) == {"t3"}, "one of the group left: still that group"
    ts[3].open_until = clock.now + 10
    assert Counter(names(bal, ts, 10)) == {"t0": 5, "t4": 5}
    ts[0].healthy = ts[4].healthy = False
    assert set(names(bal, ts, 3)) == {"t2"}
    ts[2].healthy = False
    assert names(bal, ts, 1) == [None]
    ts[1].healthy = True
    assert set(names(bal, ts, 3)) == {"t1"}, "back to the top group as soon as it returns"


def test_lower_group_only_when_the_higher_was_tried() -> None:
    ts = states(10, 10, 5, 1)
    bal = make_balancer("priority", ts, FakeClock())
    assert bal.pick(ts, PickContext(tried=[ts[0]])) is ts[1]
    assert bal.pick(ts, PickContext(tried=[ts[1], ts[0]])) is ts[2]
    assert bal.pick(ts, PickContext(tried=[ts[0], ts[1], ts[2]])) is ts[3]
    every = PickContext(tried=list(ts))
    assert set(names(bal, ts, 4, every)) == {"t0", "t1"}


def test_candidate_subset() -> None:
    ts = states(10, 5, 5)
    bal = make_balancer("priority", ts, FakeClock())
    assert names(bal, ts[1:], 4) == ["t1", "t2", "t1", "t2"]
