"""Active health checks, Kong's counting rules: gateway.health's checker against real
sockets on 127.0.0.1 (a scripted server, see health_kit). Intervals are tiny; nothing
asserts timing.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from health_kit import F, Lab, T, fast, run_trace, state
from helpers import until

from gateway.health import HealthPolicy, ProbeSpec
from gateway.http1 import Pool


@pytest.fixture
async def lab() -> AsyncIterator[Lab]:
    started = Lab()
    yield started
    await started.close()


# -- counting rules ---------------------------------------------------------------------


async def test_http_failures_trip_and_successes_recover(lab) -> None:
    script = [500, 500, 200, 500, 500, 500, 200, 200, 200]
    trace = await run_trace(lab, script, 9, unhealthy_http_failures=3)
    # a success in between clears the failure count; the 3rd failure in a row trips;
    # the 2nd success in a row brings it back.
    assert trace == [T, T, T, T, T, T, F, F, T]


async def test_tcp_failures_reset_connections(lab) -> None:
    trace = await run_trace(lab, ["reset", "reset", 200, 200, 200], 5)
    assert trace == [T, T, F, F, T]


async def test_malformed_responses_are_tcp_failures(lab) -> None:
    trace = await run_trace(lab, ["garbage", "garbage", 200, 200, 200], 5)
    assert trace == [T, T, F, F, T]


async def test_timeouts(lab) -> None:
    trace = await run_trace(lab, ["hang", "hang", 200, 200, 200], 5, timeout=0.1)
    assert trace == [T, T, F, F, T]


async def test_failure_kinds_do_not_clear_each_other(lab) -> None:
    trace = await run_trace(lab, [500, "reset", 500, 500], 4)
    assert trace == [T, T, T, F]


async def test_threshold_zero_never_trips(lab) -> None:
    trace = await run_trace(lab, [500], 8, unhealthy_http_failures=0)
    assert trace == [T] * 8
    # healthy_successes 0: an unhealthy target never comes back by probing
    st = state(healthy=False)
    srv = await lab.server([200], st)
    hc = lab.checker()
    hc.add(ProbeSpec(srv.url()), fast(healthy_successes=0), st)
    await hc.start()
    await until(lambda: len(srv.trace) >= 8)
    await hc.stop()
    assert srv.trace[:8] == [F] * 8 and not st.healthy


async def test_healthy_statuses_are_configurable(lab) -> None:
    trace = await run_trace(lab, [204], 4, healthy_statuses=frozenset({204}))
    assert trace == [T] * 4
    trace = await run_trace(lab, [204], 4)  # default: only 200
    assert trace == [T, T, F, F]


# -- sharing, secrets ---------------------------------------------------------------------


async def test_equal_specs_share_one_prober(lab) -> None:
    a, b = state("a"), state("b")
    srv = await lab.server([500], a)
    hc = lab.checker()
    # equal after normalization: header name case and order do not matter
    hc.add(ProbeSpec(srv.url(), (("X-A", "1"), ("Authorization", "k"))), fast(), a)
    hc.add(ProbeSpec(srv.url(), (("authorization", "k"), ("x-a", "1"))), fast(), b)
    await hc.start()
    await until(lambda: not a.healthy and not b.healthy)
    await until(lambda: len(srv.trace) >= 6)
    await hc.stop()
    (snap,) = hc.snapshot()
    assert snap["targets"] == ["a", "b"]
    # one prober: the server saw only its probes (the last may have been cut by stop())
    assert snap["probes"] <= len(srv.trace) <= snap["probes"] + 1
    assert a.last_change == b.last_change
    assert hc.prober_of(a) == hc.prober_of(b) == snap


async def test_different_headers_are_different_probers(lab) -> None:
    srv = await lab.server([200])
    hc = lab.checker()
    hc.add(ProbeSpec(srv.url(), (("Authorization", "k1"),)), fast(), state("a"))
    hc.add(ProbeSpec(srv.url(), (("Authorization", "k2"),)), fast(), state("b"))
    await hc.start()
    assert len(hc.snapshot()) == 2


def test_shared_policies_merge_to_the_most_eager() -> None:
    merged = HealthPolicy.merge(
        [
            HealthPolicy(timeout=2, healthy_interval=0, unhealthy_interval=10,
                         healthy_successes=0, unhealthy_http_failures=5, unhealthy_timeouts=0),
            HealthPolicy(timeout=1, healthy_interval=3, unhealthy_interval=0,
                         healthy_successes=4, unhealthy_http_failures=1, unhealthy_timeouts=0,
                         healthy_statuses=frozenset({204})),
        ]
    )  # fmt: skip
    assert merged == HealthPolicy(
        timeout=1, healthy_interval=3, unhealthy_interval=10, healthy_successes=4,
        unhealthy_http_failures=1, unhealthy_tcp_failures=2, unhealthy_timeouts=0,
        healthy_statuses=frozenset({200, 204}),
    )  # fmt: skip


# -- interval 0, lifecycle, logging ---------------------------------------------------


async def test_healthy_interval_zero_never_probes_a_healthy_target(lab) -> None:
    srv = await lab.server([200])
    hc = lab.checker()
    hc.add(ProbeSpec(srv.url()), fast(healthy_interval=0), state())
    await hc.start()
    await until(lambda: not hc.snapshot()[0]["probing"])
    assert srv.trace == []


async def test_healthy_interval_zero_stops_once_recovered(lab) -> None:
    st = state(healthy=False)
    srv = await lab.server([200], st)
    hc = lab.checker()
    hc.add(ProbeSpec(srv.url()), fast(healthy_interval=0), st)
    await hc.start()
    await until(lambda: not hc.snapshot()[0]["probing"])
    assert st.healthy and srv.trace == [F, F]


async def test_unhealthy_interval_zero_stays_down(lab) -> None:
    st = state()
    srv = await lab.server([500], st)
    hc = lab.checker()
    hc.add(ProbeSpec(srv.url()), fast(unhealthy_interval=0), st)
    await hc.start()
    await until(lambda: not hc.snapshot()[0]["probing"])
    assert not st.healthy and srv.trace == [T, T]


async def test_both_intervals_zero_start_no_task(lab) -> None:
    srv = await lab.server([200])
    hc = lab.checker()
    hc.add(ProbeSpec(srv.url()), fast(healthy_interval=0, unhealthy_interval=0), state())
    await hc.start()
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("health-probe")]
    assert hc.snapshot()[0]["probing"] is False and srv.trace == []


async def test_stop_is_clean_and_idempotent(lab, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="asyncio")
    pools: list[Pool] = []

    def factory() -> Pool:
        pools.append(Pool())
        return pools[-1]

    srv = await lab.server(["hang"])
    hc = lab.checker(pool_factory=factory)
    await hc.stop()  # before start: a no-op
    hc.add(ProbeSpec(srv.url()), fast(timeout=30), state())
    await hc.start()
    await until(lambda: len(srv.trace) == 1)  # a probe is in flight
    await hc.stop()
    await hc.stop()
    assert len(pools) == 1 and pools[0].closed
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("health-probe")]
    assert hc.snapshot()[0]["probing"] is False
    with pytest.raises(RuntimeError):  # add() after start() is refused, stop() allows it
        await hc.start()
        hc.add(ProbeSpec(srv.url()), fast(), state())
    await hc.stop()
    assert len(pools) == 2 and pools[1].closed  # a restart gets a pool of its own
    gc.collect()
    await asyncio.sleep(0)
    assert not [r for r in caplog.records if r.name == "asyncio"]


async def test_unexpected_exception_is_logged_once_and_probing_goes_on(lab, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="llama_gateway")

    seen: list[Any] = []  # the prober's last_error as each request is attempted

    class Flaky(Pool):
        """A pool whose first three requests blow up (a bug, not a target fault)."""

        calls = 0

        async def request(self, *args: Any, **kwargs: Any) -> Any:
            seen.append(hc.snapshot()[0]["last_error"])
            self.calls += 1
            if self.calls <= 3:
                raise RuntimeError("boom")
            return await super().request(*args, **kwargs)

    st = state()
    srv = await lab.server([200])
    hc = lab.checker(pool_factory=Flaky)
    hc.add(ProbeSpec(srv.url()), fast(), st)
    await hc.start()
    await until(lambda: hc.snapshot()[0]["probes"] >= 2)
    snap = hc.snapshot()[0]
    # internal errors count as nothing: no probe, no failure, the target stays healthy
    assert seen[:5] == [None, "internal", "internal", "internal", None]
    assert snap["probing"] and snap["last_error"] is None and st.healthy
    warned = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warned) == 1 and "unexpectedly" in warned[0].getMessage()


async def test_changes_are_logged_once_failures_only_at_debug(lab, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="llama_gateway")
    trace = await run_trace(lab, [500] * 5 + [200] * 5, 10)
    assert trace == [T, T, F, F, F, F, F, T, T, T]
    loud = [r for r in caplog.records if r.levelno > logging.DEBUG]
    assert [r.levelname for r in loud] == ["WARNING", "INFO"]
    assert "127.0.0.1:" in loud[0].getMessage() and "unhealthy" in loud[0].getMessage()
    # one per counted probe: the 10th arrived, but stop() may have cut it short
    assert sum(r.levelno == logging.DEBUG for r in caplog.records) >= 9


def test_policy_validation() -> None:
    with pytest.raises(ValueError):
        HealthPolicy(timeout=0)
    with pytest.raises(ValueError):
        HealthPolicy(healthy_interval=-1)
    with pytest.raises(ValueError):
        HealthPolicy(unhealthy_timeouts=-1)
