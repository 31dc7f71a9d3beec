"""lowest-usage: decayed usage ÷ weight, 60 s half-life, ties round-robin."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from balancer_kit import FakeClock, names, states

from balancers import BalancerOptions, Outcome, PickContext, make_balancer


def usage(strategy: str) -> BalancerOptions:
    return BalancerOptions(tokens_count_strategy=strategy)


def test_idle_equal_targets_alternate() -> None:
    ts = states(1, 1, 1)
    bal = make_balancer("lowest-usage", ts, FakeClock())
    assert names(bal, ts, 6) == ["t0", "t1", "t2", "t0", "t1", "t2"]


def test_reported_completion_tokens_balance_usage() -> None:
    clock, ts = FakeClock(), states(1, 1, 1)
    bal = make_balancer("lowest-usage", ts, clock, usage("completion-tokens"))
    rng = random.Random(3)
    picks = []
    for _ in range(300):
        s = bal.pick(ts, PickContext())
        assert s is not None
        picks.append(s.name)
        tokens = rng.randint(10, 100)
        bal.report(s, Outcome(ok=True, latency=1.0, prompt_tokens=999, completion_tokens=tokens))
        clock.now += 0.1
    now = clock.now
    levels = [bal.score(s, now) for s in ts]  # type: ignore[attr-defined]
    assert max(levels) - min(levels) <= 100, "never more than one request apart"
    assert all(90 <= n <= 110 for n in Counter(picks).values())


def test_weights_share_usage() -> None:
    clock, ts = FakeClock(), states(3, 1)
    bal = make_balancer("lowest-usage", ts, clock)
    for _ in range(400):
        s = bal.pick(ts, PickContext())
        assert s is not None
        bal.report(s, Outcome(ok=True, prompt_tokens=5, completion_tokens=5))
    assert ts[0].usage / ts[1].usage == pytest.approx(3.0, rel=0.05)


def test_usage_halves_every_60_seconds() -> None:
    clock, ts = FakeClock(), states(1, 1)
    bal = make_balancer("lowest-usage", ts, clock)
    bal.report(ts[0], Outcome(ok=True, prompt_tokens=60, completion_tokens=40))
    assert bal.score(ts[0], clock.now) == 100  # type: ignore[attr-defined]
    assert bal.score(ts[0], clock.now + 60) == pytest.approx(50)  # type: ignore[attr-defined]
    assert bal.score(ts[0], clock.now + 120) == pytest.approx(25)  # type: ignore[attr-defined]
    clock.now += 60
    bal.report(ts[0], Outcome(ok=True, completion_tokens=10))
    assert ts[0].usage == pytest.approx(60) and ts[0].usage_at == clock.now
    bal.report(ts[1], Outcome(ok=True, completion_tokens=50))
    assert bal.pick(ts, PickContext()) is ts[1]
    clock.now += 60  # both halve: t1 stays lower
    assert bal.pick(ts, PickContext()) is ts[1]


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        ("total-tokens", 30.0),
        ("prompt-tokens", 10.0),
        ("completion-tokens", 20.0),
        ("cost", 0.25),
    ],
)
def test_each_tokens_count_strategy(strategy: str, expected: float) -> None:
    clock, ts = FakeClock(), states(1, 1)
    bal = make_balancer("lowest-usage", ts, clock, usage(strategy))
    bal.report(ts[0], Outcome(ok=True, prompt_tokens=10, completion_tokens=20, cost=0.25))
    assert ts[0].usage == pytest.approx(expected)
    assert bal.pick(ts, PickContext()) is ts[1]


def test_cost_strategy_prefers_the_cheaper_target() -> None:
    clock, ts = FakeClock(), states(1, 1)
    bal = make_balancer("lowest-usage", ts, clock, usage("cost"))
    per_request = {"t0": 0.003, "t1": 0.001}  # t1 costs a third per request
    picks = []
    for _ in range(400):
        s = bal.pick(ts, PickContext())
        assert s is not None
        picks.append(s.name)
        bal.report(s, Outcome(ok=True, completion_tokens=100, cost=per_request[s.name]))
    assert Counter(picks)["t1"] == pytest.approx(300, abs=5)


def test_skips_unavailable() -> None:
    clock, ts = FakeClock(), states(1, 1)
    bal = make_balancer("lowest-usage", ts, clock)
    bal.report(ts[1], Outcome(ok=True, completion_tokens=1000))
    ts[0].healthy = False
    assert bal.pick(ts, PickContext()) is ts[1]
