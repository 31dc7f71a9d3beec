"""The balancer contract: every pick ends in exactly one report or release, and the
balancer alone keeps the target counters; one rule says what a target failure is."""

from __future__ import annotations

import pytest
from balancer_kit import FakeClock, states

from balancers import BalancerOptions, Outcome, PickContext, Reason, make_balancer, upstream_fault


@pytest.mark.parametrize(
    ("outcome", "counts"),
    [
        (Outcome(ok=True), False),
        (Outcome(ok=False), False),  # no verdict: the client left
        *[(Outcome(ok=False, failure=r), True) for r in Reason if r is not Reason.STATUS],
        (Outcome(ok=False, failure=Reason.STATUS, status=500), True),
        (Outcome(ok=False, failure=Reason.STATUS, status=501), True),
        (Outcome(ok=False, failure=Reason.STATUS, status=429), True),
        (Outcome(ok=False, failure=Reason.STATUS, status=599), True),
        (Outcome(ok=False, failure=Reason.STATUS, status=404), False),
        (Outcome(ok=False, failure=Reason.STATUS, status=400), False),
        (Outcome(ok=False, failure=Reason.STATUS, status=None), False),
    ],
)
def test_one_rule_for_a_target_failure(outcome: Outcome, counts: bool) -> None:
    assert outcome.counts is counts


def test_upstream_fault() -> None:
    assert [
        s for s in (200, 400, 404, 422, 428, 429, 430, 499, 500, 501, 504) if upstream_fault(s)
    ] == [
        429,
        500,
        501,
        504,
    ]


def test_reason_values_are_the_metric_labels() -> None:
    assert [r.value for r in Reason] == [
        "connect",
        "reset",
        "timeout",
        "invalid",
        "status",
        "midstream",
    ]
    assert Reason("reset") is Reason.RESET


def _balancer(algorithm: str = "round-robin", max_fails: int = 0):  # type: ignore[no-untyped-def]
    clock = FakeClock()
    ts = states(1, 1)
    bal = make_balancer(
        algorithm, ts, clock, BalancerOptions(max_fails=max_fails, fail_timeout=10.0)
    )
    return clock, ts, bal


@pytest.mark.parametrize("algorithm", ["round-robin", "least-connections", "lowest-latency"])
def test_counters_follow_pick_report_release(algorithm: str) -> None:
    _, ts, bal = _balancer(algorithm)
    a = bal.pick(ts, PickContext())
    b = bal.pick(ts, PickContext())
    assert a is not None and b is not None
    assert sum(s.in_flight for s in ts) == 2 and sum(s.requests for s in ts) == 0
    bal.report(a, Outcome(ok=True, latency=0.1, completion_tokens=1))
    assert a.in_flight == (1 if a is b else 0) and a.requests == 1 and a.failures == 0
    bal.release(b)  # never sent: not a request
    assert sum(s.in_flight for s in ts) == 0 and sum(s.requests for s in ts) == 1
    c = bal.pick(ts, PickContext())
    assert c is not None
    bal.report(c, Outcome(ok=False, failure=Reason.STATUS, status=501))
    assert c.failures == 1 and c.in_flight == 0
    d = bal.pick(ts, PickContext())
    assert d is not None
    bal.report(d, Outcome(ok=False, failure=Reason.STATUS, status=404))
    assert d.failures == (1 if d is c else 0) and d.requests >= 1


def test_no_verdict_hands_back_a_half_open_trial_without_closing() -> None:
    clock, ts, bal = _balancer(max_fails=1)
    t = ts[0]
    first = bal.pick([t], PickContext())
    assert first is t
    bal.report(t, Outcome(ok=False, failure=Reason.CONNECT))
    assert t.breaker_state(clock.now) == "open"
    clock.now += 10.0
    trial = bal.pick([t], PickContext())
    assert trial is t and t.breaker == "half_open"
    assert bal.pick([t], PickContext()) is None  # one trial at a time
    bal.report(t, Outcome(ok=False))  # the client left: no verdict
    assert t.breaker_state(clock.now) == "half_open" and t.breaker == "open"
    assert t.requests == 2 and t.failures == 1 and t.in_flight == 0
    again = bal.pick([t], PickContext())
    assert again is t  # claimable again at once
    bal.report(t, Outcome(ok=True, latency=0.1))
    assert t.breaker_state(clock.now) == "closed"


def test_a_501_opens_the_breaker_like_a_500() -> None:
    clock, ts, bal = _balancer(max_fails=1)
    t = bal.pick(ts, PickContext())
    assert t is not None
    bal.report(t, Outcome(ok=False, failure=Reason.STATUS, status=501))
    assert t.breaker_state(clock.now) == "open"


def test_no_verdict_still_counts_the_tokens_served() -> None:
    """A stream the client abandoned served tokens: lowest-usage must see them."""
    _, ts, bal = _balancer("lowest-usage", max_fails=1)
    t = bal.pick(ts, PickContext())
    assert t is not None
    bal.report(t, Outcome(ok=False, prompt_tokens=3, completion_tokens=5))
    assert t.usage == 8.0 and t.failures == 0 and t.breaker == "closed"
