"""Passive circuit breaker: max_fails in a sliding window, open, half-open."""

from __future__ import annotations

import pytest
from balancer_kit import FakeClock, names, states

from balancers import BalancerOptions, Outcome, PickContext, Reason, TargetState, make_balancer
from balancers.base import Balancer

FAIL = Outcome(ok=False, failure=Reason.CONNECT)
OK = Outcome(ok=True, latency=1.0, completion_tokens=10)


def setup(n: int = 2, max_fails: int = 3) -> tuple[FakeClock, list[TargetState], Balancer]:
    clock = FakeClock()
    ts = states(*[1] * n)
    opts = BalancerOptions(max_fails=max_fails, fail_timeout=10.0)
    bal = make_balancer("round-robin", ts, clock, opts, wall=FakeClock(1.7e9))
    return clock, ts, bal


def test_opens_after_max_fails_within_the_window() -> None:
    clock, ts, bal = setup()
    t = ts[0]
    for _ in range(2):
        bal.report(t, FAIL)
        clock.now += 1
    assert t.breaker_state(clock.now) == "closed" and t.available(clock.now)
    bal.report(t, FAIL)
    assert t.breaker_state(clock.now) == "open"
    assert t.open_until == clock.now + 10.0, "Retry-After = open_until - now"
    assert t.last_change == 1.7e9
    assert not t.available(clock.now)
    assert set(names(bal, ts, 5)) == {"t1"}


def test_failures_spread_over_more_than_the_window_do_not_open() -> None:
    clock, ts, bal = setup()
    for _ in range(20):
        bal.report(ts[0], FAIL)
        clock.now += 5.0  # 3 failures span 10 s: the oldest has left the window
    assert ts[0].breaker_state(clock.now) == "closed"
    assert len(ts[0].fail_times) <= 2


def test_stays_open_for_fail_timeout_then_admits_exactly_one_trial() -> None:
    clock, ts, bal = setup()
    for _ in range(3):
        bal.report(ts[0], FAIL)
    clock.now += 9.999
    assert not ts[0].available(clock.now)
    clock.now += 0.001
    assert ts[0].breaker_state(clock.now) == "half_open" and ts[0].available(clock.now)
    picks = [bal.pick(ts, PickContext()) for _ in range(6)]
    assert picks.count(ts[0]) == 1, "one trial; the others skip it"
    assert ts[0].breaker == "half_open" and not ts[0].available(clock.now)
    only = [ts[0]]
    assert bal.pick(only, PickContext()) is None, "no second trial even when it is the only one"


def test_trial_success_closes_and_clears_the_count() -> None:
    clock, ts, bal = setup()
    for _ in range(3):
        bal.report(ts[0], FAIL)
    clock.now += 10
    trial = bal.pick(ts[:1], PickContext())
    assert trial is ts[0]
    clock.now += 30  # a long generation
    bal.report(trial, OK)
    assert ts[0].breaker_state(clock.now) == "closed" and ts[0].available(clock.now)
    assert not ts[0].fail_times
    bal.report(ts[0], FAIL)
    bal.report(ts[0], FAIL)
    assert ts[0].breaker == "closed", "the count restarted from zero"


def test_trial_failure_reopens() -> None:
    clock, ts, bal = setup()
    for _ in range(3):
        bal.report(ts[0], FAIL)
    clock.now += 12
    assert bal.pick(ts[:1], PickContext()) is ts[0]
    bal.report(ts[0], Outcome(ok=False, failure=Reason.STATUS, status=503))
    assert ts[0].breaker_state(clock.now) == "open"
    assert ts[0].open_until == clock.now + 10


def test_released_trial_can_be_claimed_again() -> None:
    clock, ts, bal = setup()
    for _ in range(3):
        bal.report(ts[0], FAIL)
    clock.now += 10
    assert bal.pick(ts[:1], PickContext()) is ts[0]
    assert bal.pick(ts[:1], PickContext()) is None
    bal.release(ts[0])  # e.g. the client went away before the attempt reported
    assert bal.pick(ts[:1], PickContext()) is ts[0]


def test_unreported_trial_expires_after_trial_timeout() -> None:
    clock, ts, bal = setup()
    for _ in range(3):
        bal.report(ts[0], FAIL)
    clock.now += 10
    assert bal.pick(ts[:1], PickContext()) is ts[0]
    clock.now += 299
    assert bal.pick(ts[:1], PickContext()) is None
    clock.now += 1  # BalancerOptions.trial_timeout = 300 s, a safety net only
    assert bal.pick(ts[:1], PickContext()) is ts[0]


def test_late_reports_while_open_are_ignored() -> None:
    clock, ts, bal = setup()
    for _ in range(3):
        bal.report(ts[0], FAIL)
    until = ts[0].open_until
    clock.now += 5
    bal.report(ts[0], FAIL)  # an attempt started before it opened
    bal.report(ts[0], OK)
    assert ts[0].open_until == until and ts[0].breaker == "open"


def test_success_while_closed_does_not_clear_the_window() -> None:
    clock, ts, bal = setup()
    for outcome in (FAIL, FAIL, OK, FAIL):
        bal.report(ts[0], outcome)
        clock.now += 1
    assert ts[0].breaker == "open"


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 422, 499])
def test_client_errors_never_count(status: int) -> None:
    _, ts, bal = setup(max_fails=1)
    for _ in range(10):
        bal.report(ts[0], Outcome(ok=False, failure=Reason.STATUS, status=status))
    bal.report(ts[0], Outcome(ok=False))  # client went away: no verdict
    assert ts[0].breaker == "closed"


@pytest.mark.parametrize(
    "outcome",
    [
        Outcome(ok=False, failure=Reason.STATUS, status=429),
        Outcome(ok=False, failure=Reason.STATUS, status=500),
        Outcome(ok=False, failure=Reason.STATUS, status=502),
        Outcome(ok=False, failure=Reason.STATUS, status=503),
        Outcome(ok=False, failure=Reason.STATUS, status=504),
        Outcome(ok=False, failure=Reason.CONNECT),
        Outcome(ok=False, failure=Reason.RESET),
        Outcome(ok=False, failure=Reason.TIMEOUT),
        Outcome(ok=False, failure=Reason.INVALID),
        Outcome(ok=False, failure=Reason.MIDSTREAM, completion_tokens=5),
    ],
)
def test_counted_failures(outcome: Outcome) -> None:
    _, ts, bal = setup(max_fails=1)
    bal.report(ts[0], outcome)
    assert ts[0].breaker == "open"


def test_max_fails_zero_is_off() -> None:
    clock, ts, bal = setup(max_fails=0)
    for _ in range(100):
        bal.report(ts[0], FAIL)
    assert ts[0].breaker_state(clock.now) == "closed" and ts[0].available(clock.now)
    assert not ts[0].fail_times
