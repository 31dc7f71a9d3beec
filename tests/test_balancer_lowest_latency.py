"""lowest-latency: EWMA ÷ weight, exploration first, a small probing share."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest
from balancer_kit import FakeClock, names, states

from balancers import BalancerOptions, Outcome, PickContext, Reason, make_balancer


def served(latency_per_token: float, tokens: int = 10) -> Outcome:
    return Outcome(ok=True, latency=latency_per_token * tokens, completion_tokens=tokens)


def test_fastest_gets_at_least_80_percent_and_every_target_is_sampled() -> None:
    clock, ts = FakeClock(), states(1, 1, 1)
    bal = make_balancer("lowest-latency", ts, clock, rng=random.Random(7))
    per_token = {"t0": 2.0, "t1": 1.0, "t2": 3.0}  # the fastest is not the first
    picks: list[str] = []
    for _ in range(200):
        s = bal.pick(ts, PickContext())
        assert s is not None
        picks.append(s.name)
        bal.report(s, served(per_token[s.name]))
        clock.now += 0.5
    counts = Counter(picks)
    assert picks[:3] == ["t0", "t1", "t2"], "unsampled targets are explored first, in order"
    assert counts["t1"] >= 160, counts  # seed 7: t1 187, t0 7, t2 6 (seeds 0-9: 180-190)
    assert all(s.samples >= 2 for s in ts), "probes keep every score fresh"
    assert ts[1].ewma == pytest.approx(1.0)


def test_probes_let_a_recovered_target_win_again() -> None:
    clock, ts = FakeClock(), states(1, 1)
    bal = make_balancer(
        "lowest-latency", ts, clock, BalancerOptions(probe_share=0.1), rng=random.Random(1)
    )
    per_token = {"t0": 1.0, "t1": 5.0}
    for _ in range(50):
        s = bal.pick(ts, PickContext())
        assert s is not None
        bal.report(s, served(per_token[s.name]))
        clock.now += 1.0
    per_token = {"t0": 1.0, "t1": 0.2}  # t1 got faster: only probes can notice
    picks = []
    for _ in range(300):
        s = bal.pick(ts, PickContext())
        assert s is not None
        picks.append(s.name)
        bal.report(s, served(per_token[s.name]))
        clock.now += 1.0
    assert Counter(picks[-100:])["t1"] >= 80


def test_weight_divides_the_score() -> None:
    clock, ts = FakeClock(), states(1, 4)
    bal = make_balancer("lowest-latency", ts, clock, BalancerOptions(probe_share=0.0))
    bal.report(ts[0], served(1.0))
    bal.report(ts[1], served(3.0))  # 3 / 4 < 1 / 1
    assert set(names(bal, ts, 20)) == {"t1"}


def test_one_target_works() -> None:
    clock, ts = FakeClock(), states(100)
    bal = make_balancer("lowest-latency", ts, clock)
    for _ in range(3):
        s = bal.pick(ts, PickContext())
        assert s is ts[0]
        bal.report(s, served(1.0))
    ts[0].healthy = False
    assert bal.pick(ts, PickContext()) is None


def test_ewma_formula() -> None:
    clock, ts = FakeClock(), states(1)
    bal = make_balancer("lowest-latency", ts, clock, BalancerOptions(latency_strategy="e2e"))
    s = ts[0]
    bal.report(s, Outcome(ok=True, latency=2.0))
    assert s.ewma == 2.0, "the first sample sets it"
    clock.now += 5.0  # alpha = 1 - exp(-0.5) ≈ 0.393
    bal.report(s, Outcome(ok=True, latency=4.0))
    expected = 2.0 + (1 - math.exp(-0.5)) * (4.0 - 2.0)
    assert s.ewma == pytest.approx(expected)
    clock.now += 0.1  # 1 - exp(-0.01) ≈ 0.00995 < 0.1: alpha is floored at 0.1
    bal.report(s, Outcome(ok=True, latency=0.0))
    expected += 0.1 * (0.0 - expected)
    assert s.ewma == pytest.approx(expected)
    clock.now += 1000.0  # alpha ≈ 1: an old score is nearly forgotten
    bal.report(s, Outcome(ok=True, latency=7.0))
    assert s.ewma == pytest.approx(7.0, abs=1e-6)
    assert s.samples == 4 and s.ewma_at == clock.now
    assert bal.score(s, clock.now) == s.ewma  # type: ignore[attr-defined]


def test_tpot_divides_by_completion_tokens_and_skips_zero_tokens() -> None:
    clock, ts = FakeClock(), states(1, 1)
    tpot = make_balancer("lowest-latency", ts[:1], clock)
    tpot.report(ts[0], Outcome(ok=True, latency=6.0, prompt_tokens=50, completion_tokens=3))
    assert ts[0].ewma == 2.0
    tpot.report(ts[0], Outcome(ok=True, latency=0.001, completion_tokens=0))
    assert (ts[0].ewma, ts[0].samples) == (2.0, 1), "no tokens: no sample"
    e2e = make_balancer("lowest-latency", ts[1:], clock, BalancerOptions(latency_strategy="e2e"))
    e2e.report(ts[1], Outcome(ok=True, latency=6.0, completion_tokens=3))
    assert ts[1].ewma == 6.0


def test_failures_never_feed_fast_numbers() -> None:
    clock, ts = FakeClock(), states(1, 1)
    bal = make_balancer("lowest-latency", ts, clock, BalancerOptions(probe_share=0.0))
    bal.report(ts[0], served(1.0))
    bal.report(ts[0], Outcome(ok=False, latency=0.001, failure=Reason.CONNECT))
    assert ts[0].ewma == 2.0 and ts[0].samples == 1, "a refused connection is not fast"
    # An unsampled target that fails is not explored first on every request.
    bal.report(ts[1], Outcome(ok=False, failure=Reason.RESET))
    assert ts[1].ewma == math.inf
    assert set(names(bal, ts, 5)) == {"t0"}
    bal.report(ts[1], served(0.5))
    assert ts[1].ewma == 0.5, "its first success sets the EWMA"
    # A client error or a client that went away says nothing about the target.
    bal.report(ts[1], Outcome(ok=False, failure=Reason.STATUS, status=400))
    bal.report(ts[1], Outcome(ok=False))
    assert ts[1].ewma == 0.5
