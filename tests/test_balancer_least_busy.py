"""least-busy: fewest busy slots ÷ capacity (server-reported load counts while fresh),
then the lower latency EWMA; capacity filters full targets for every algorithm."""

from __future__ import annotations

from balancer_kit import FakeClock, names, states

from balancers import BalancerOptions, Outcome, PickContext, make_balancer
from balancers.capacity import busy, has_slot


def setup(*caps: int | None):  # type: ignore[no-untyped-def]
    clock = FakeClock()
    ts = states(*[1] * len(caps))
    for s, cap in zip(ts, caps, strict=True):
        s.capacity = cap
    bal = make_balancer("least-busy", ts, clock, BalancerOptions(signal_max_age=15.0))
    return clock, ts, bal


def test_fewest_busy_per_slot_wins() -> None:
    _, ts, bal = setup(4, 2)
    ts[0].in_flight = 2  # 2/4
    ts[1].in_flight = 0  # 0/2
    for s in ts:
        s.samples = 1  # explored
    assert bal.pick(ts, PickContext()) is ts[1]
    ts[1].in_flight = 1  # 1/2 == 2/4 → tie → lower EWMA
    ts[0].in_flight = 2
    ts[0].ewma, ts[1].ewma = 0.5, 0.1
    assert bal.pick(ts, PickContext()) is ts[1]


def test_server_reported_load_counts_while_fresh() -> None:
    clock, ts, bal = setup(2, 2)
    for s in ts:
        s.samples = 1
    ts[0].busy_reported, ts[0].signals_at = 2, clock.now  # another client fills it
    assert busy(ts[0], clock.now, 15.0) == 2 and not has_slot(ts[0], clock.now, 15.0)
    assert names(bal, ts, 1) == ["t1"]
    clock.now += 16  # stale: only our own in-flight count is known
    assert busy(ts[0], clock.now, 15.0) == 0 and has_slot(ts[0], clock.now, 15.0)


def test_reported_below_our_own_count_never_lowers_it() -> None:
    clock, ts, _ = setup(3)
    ts[0].in_flight = 2
    ts[0].busy_reported, ts[0].signals_at = 1, clock.now  # read before our last request
    ts[0].own_at_signal = 1
    assert busy(ts[0], clock.now, 15.0) == 2


def test_our_own_requests_that_ended_since_the_read_do_not_count() -> None:
    """The server counted our two requests; both ended since: the target is free, not
    full until the next poll."""
    clock, ts, _ = setup(2)
    ts[0].busy_reported, ts[0].signals_at, ts[0].own_at_signal = 2, clock.now, 2
    ts[0].in_flight = 0
    assert busy(ts[0], clock.now, 15.0) == 0 and has_slot(ts[0], clock.now, 15.0)
    ts[0].busy_reported = 3  # one more from another client
    assert busy(ts[0], clock.now, 15.0) == 1


def test_capacity_filters_full_targets_for_any_algorithm() -> None:
    clock = FakeClock()
    ts = states(1, 1)
    ts[0].capacity, ts[1].capacity = 1, 1
    bal = make_balancer("round-robin", ts, clock)
    a = bal.pick(ts, PickContext())
    b = bal.pick(ts, PickContext())
    assert {a, b} == set(ts)
    assert bal.pick(ts, PickContext()) is None  # both full
    assert a is not None
    bal.report(a, Outcome(ok=True, latency=0.1))
    assert bal.pick(ts, PickContext()) is a


def test_a_retry_waits_for_an_untried_full_target() -> None:
    clock = FakeClock()
    ts = states(1, 1)
    ts[0].capacity, ts[1].capacity = 1, 1
    bal = make_balancer("round-robin", ts, clock)
    ts[1].in_flight = 1  # full
    ctx = PickContext(tried=[ts[0]])  # t0 just failed for this request
    assert bal.pick(ts, ctx) is None  # not t0 again: wait for t1
