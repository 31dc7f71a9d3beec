"""Active health checks (SPEC §6.4): balancers.health against real sockets on 127.0.0.1.

Intervals are tiny; nothing asserts timing. Exact counting is checked with a scripted
server that records the target's `healthy` flag as each probe *arrives*: probes of one
prober are sequential, so at arrival every earlier probe's outcome has been counted.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from balancers.base import TargetState
from balancers.health import HealthChecker, HealthPolicy, ProbeSpec, public_url
from gateway.sim import FakeUpstream

SECRET = "sk-very-secret-123"
T, F = True, False


def fast(**kw: Any) -> HealthPolicy:
    base: dict[str, Any] = {"timeout": 1.0, "healthy_interval": 0.02, "unhealthy_interval": 0.02}
    return HealthPolicy(**{**base, **kw})


def state(name: str = "t", healthy: bool = True) -> TargetState:
    s = TargetState(index=0, name=name, weight=100)
    s.healthy = healthy
    return s


async def until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


class Scripted:
    """Answers GET /h from a script (status | "reset" | "hang"; the last entry repeats)
    and records `watch.healthy` and the headers of every probe as it arrives."""

    def __init__(self, script: Sequence[int | str], watch: TargetState | None = None) -> None:
        self.script = list(script)
        self.watch = watch
        self.trace: list[bool | None] = []
        self.headers: list[dict[str, str]] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    def url(self, path: str = "/h") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        i = len(self.trace)
        self.trace.append(self.watch.healthy if self.watch is not None else None)
        self.headers.append(dict(request.headers))
        action = self.script[min(i, len(self.script) - 1)]
        if action == "reset":
            assert request.transport is not None
            request.transport.abort()
            return web.Response()
        if action == "hang":
            await asyncio.sleep(3600)  # cancelled when the prober gives up and hangs up
        assert isinstance(action, int)
        return web.Response(status=action, text="x")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/h", self.handle)
        runner = web.AppRunner(
            app, handler_cancellation=True, access_log=None, shutdown_timeout=0.1
        )
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runner = runner
        self.port = runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def scripted() -> AsyncIterator[Callable[..., Awaitable[Scripted]]]:
    servers: list[Scripted] = []

    async def make(script: Sequence[int | str], watch: TargetState | None = None) -> Scripted:
        srv = Scripted(script, watch)
        await srv.start()
        servers.append(srv)
        return srv

    yield make
    for srv in servers:
        await srv.stop()


@pytest.fixture
async def checker() -> AsyncIterator[Callable[..., HealthChecker]]:
    made: list[HealthChecker] = []

    def make(*args: Any, **kwargs: Any) -> HealthChecker:
        hc = HealthChecker(*args, **kwargs)
        made.append(hc)
        return hc

    yield make
    for hc in made:
        await hc.stop()


async def run_trace(
    scripted: Any, checker: Any, script: Sequence[int | str], n: int, **policy: Any
) -> list[bool | None]:
    """The target's `healthy` flag as each of the first `n` probes arrived."""
    st = state()
    srv = await scripted(script, st)
    hc = checker()
    hc.add(ProbeSpec(srv.url()), fast(**policy), st)
    await hc.start()
    await until(lambda: len(srv.trace) >= n)
    await hc.stop()
    return srv.trace[:n]


# -- counting rules ---------------------------------------------------------------------


async def test_http_failures_trip_and_successes_recover(scripted, checker) -> None:
    script = [500, 500, 200, 500, 500, 500, 200, 200, 200]
    trace = await run_trace(scripted, checker, script, 9, unhealthy_http_failures=3)
    # a success in between clears the failure count; the 3rd failure in a row trips;
    # the 2nd success in a row brings it back.
    assert trace == [T, T, T, T, T, T, F, F, T]


async def test_tcp_failures_reset_connections(scripted, checker) -> None:
    trace = await run_trace(scripted, checker, ["reset", "reset", 200, 200, 200], 5)
    assert trace == [T, T, F, F, T]


async def test_timeouts(scripted, checker) -> None:
    trace = await run_trace(scripted, checker, ["hang", "hang", 200, 200, 200], 5, timeout=0.1)
    assert trace == [T, T, F, F, T]


async def test_failure_kinds_do_not_clear_each_other(scripted, checker) -> None:
    trace = await run_trace(scripted, checker, [500, "reset", 500, 500], 4)
    assert trace == [T, T, T, F]


async def test_threshold_zero_never_trips(scripted, checker) -> None:
    trace = await run_trace(scripted, checker, [500], 8, unhealthy_http_failures=0)
    assert trace == [T] * 8
    # healthy_successes 0: an unhealthy target never comes back by probing
    st = state(healthy=False)
    srv = await scripted([200], st)
    hc = checker()
    hc.add(ProbeSpec(srv.url()), fast(healthy_successes=0), st)
    await hc.start()
    await until(lambda: len(srv.trace) >= 8)
    await hc.stop()
    assert srv.trace[:8] == [F] * 8 and not st.healthy


async def test_healthy_statuses_are_configurable(scripted, checker) -> None:
    trace = await run_trace(scripted, checker, [204], 4, healthy_statuses=frozenset({204}))
    assert trace == [T] * 4
    trace = await run_trace(scripted, checker, [204], 4)  # default: only 200
    assert trace == [T, T, F, F]


# -- real failure conditions ----------------------------------------------------------


async def test_closed_port_goes_down_and_comes_back(checker) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    st = state()
    hc = checker()
    hc.add(ProbeSpec(f"http://127.0.0.1:{port}/"), fast(), st)
    before = st.last_change
    await hc.start()
    await until(lambda: not st.healthy)
    assert st.last_change >= before
    snap = hc.snapshot()[0]
    assert snap["healthy"] is False and snap["last_error"] == "connect"
    # the server comes up on that very port: back after 2 successes
    up = FakeUpstream("ollama")
    await up.start(port=port)
    try:
        await until(lambda: st.healthy)
        assert hc.snapshot()[0]["last_status"] == 200
    finally:
        await hc.stop()
        await up.stop()


async def test_server_that_never_answers_times_out(checker) -> None:
    writers: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        while await reader.read(4096):  # read the request, never answer; end at EOF
            pass
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    st = state()
    hc = checker()
    hc.add(ProbeSpec(f"http://127.0.0.1:{port}/"), fast(timeout=0.1), st)
    try:
        await hc.start()
        await until(lambda: not st.healthy)
        assert hc.snapshot()[0]["last_error"] == "timeout"
    finally:
        await hc.stop()
        for w in writers:
            w.close()
        server.close()
        await server.wait_closed()


async def test_llamacpp_loading_is_not_ready(upstream, checker) -> None:
    up = await upstream("llamacpp")
    up.behaviour.loading = True
    st = state()
    hc = checker()
    hc.add(ProbeSpec(up.url("/health")), fast(), st)
    await hc.start()
    await until(lambda: not st.healthy)
    snap = hc.snapshot()[0]
    assert snap["last_status"] == 503 and snap["last_error"] == "status"
    up.behaviour.loading = False
    await until(lambda: st.healthy)


@pytest.mark.parametrize(
    ("kind", "path"),
    [("ollama", "/"), ("llamacpp", "/health"), ("tgi", "/health"), ("openai", "/v1/models")],
)
async def test_each_kind_is_healthy_on_its_probe_path(upstream, checker, kind, path) -> None:
    up = await upstream(kind)
    st = state()
    hc = checker()
    hc.add(ProbeSpec(up.url(path)), fast(), st)
    await hc.start()
    await until(lambda: hc.snapshot()[0]["probes"] >= 3)
    assert st.healthy and hc.snapshot()[0]["last_status"] == 200
    assert {(r.method, r.path) for r in up.received} == {("GET", path)}


# -- sharing, secrets ---------------------------------------------------------------------


async def test_equal_specs_share_one_prober(scripted, checker) -> None:
    a, b = state("a"), state("b")
    srv = await scripted([500], a)
    hc = checker()
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


async def test_different_headers_are_different_probers(scripted, checker) -> None:
    srv = await scripted([200])
    hc = checker()
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


async def test_auth_header_is_sent_and_never_shown(upstream, checker, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="llama_gateway")
    up = await upstream("openai", api_key=SECRET)
    plain = await upstream("openai")
    with_key, without_key, creds = state("with"), state("without"), state("creds")
    spec = ProbeSpec(up.url("/v1/models"), (("Authorization", f"Bearer {SECRET}"),))
    url = plain.url("/v1/models").replace("//", f"//user:{SECRET}@") + f"?api_key={SECRET}"
    hc = checker()
    hc.add(spec, fast(), with_key)
    hc.add(ProbeSpec(up.url("/v1/models")), fast(), without_key)  # 401: http failures
    hc.add(ProbeSpec(url), fast(), creds)
    await hc.start()
    await until(lambda: not without_key.healthy)
    await until(lambda: all(s["probes"] >= 3 for s in hc.snapshot()))
    assert with_key.healthy and creds.healthy
    authed = [r for r in up.received if r.headers.get("Authorization") == f"Bearer {SECRET}"]
    assert len(authed) >= 3
    shown = [json.dumps(hc.snapshot()), repr(hc), repr(spec), str(spec), caplog.text]
    assert all(SECRET not in text for text in shown)
    assert "authorization" in repr(spec)  # the name may show, never the value
    assert public_url(url).endswith("/v1/models?api_key=***") and "user" not in public_url(url)


# -- interval 0, lifecycle, logging ---------------------------------------------------


async def test_healthy_interval_zero_never_probes_a_healthy_target(scripted, checker) -> None:
    srv = await scripted([200])
    hc = checker()
    hc.add(ProbeSpec(srv.url()), fast(healthy_interval=0), state())
    await hc.start()
    await until(lambda: not hc.snapshot()[0]["probing"])
    assert srv.trace == []


async def test_healthy_interval_zero_stops_once_recovered(scripted, checker) -> None:
    st = state(healthy=False)
    srv = await scripted([200], st)
    hc = checker()
    hc.add(ProbeSpec(srv.url()), fast(healthy_interval=0), st)
    await hc.start()
    await until(lambda: not hc.snapshot()[0]["probing"])
    assert st.healthy and srv.trace == [F, F]


async def test_unhealthy_interval_zero_stays_down(scripted, checker) -> None:
    st = state()
    srv = await scripted([500], st)
    hc = checker()
    hc.add(ProbeSpec(srv.url()), fast(unhealthy_interval=0), st)
    await hc.start()
    await until(lambda: not hc.snapshot()[0]["probing"])
    assert not st.healthy and srv.trace == [T, T]


async def test_both_intervals_zero_start_no_task(scripted, checker) -> None:
    srv = await scripted([200])
    hc = checker()
    hc.add(ProbeSpec(srv.url()), fast(healthy_interval=0, unhealthy_interval=0), state())
    await hc.start()
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("health-probe")]
    assert hc.snapshot()[0]["probing"] is False and srv.trace == []


async def test_stop_is_clean_and_idempotent(scripted, checker, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="asyncio")
    sessions: list[aiohttp.ClientSession] = []

    def factory() -> aiohttp.ClientSession:
        sessions.append(aiohttp.ClientSession())
        return sessions[-1]

    srv = await scripted(["hang"])
    hc = checker(factory)
    await hc.stop()  # before start: a no-op
    hc.add(ProbeSpec(srv.url()), fast(timeout=30), state())
    await hc.start()
    await until(lambda: len(srv.trace) == 1)  # a probe is in flight
    await hc.stop()
    await hc.stop()
    assert len(sessions) == 1 and sessions[0].closed
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("health-probe")]
    assert hc.snapshot()[0]["probing"] is False
    with pytest.raises(RuntimeError):  # add() after start() is refused, stop() allows it
        await hc.start()
        hc.add(ProbeSpec(srv.url()), fast(), state())
    await hc.stop()
    gc.collect()
    await asyncio.sleep(0)
    assert not [r for r in caplog.records if r.name == "asyncio"]


async def test_unexpected_exception_is_logged_once_and_probing_goes_on(
    scripted, checker, caplog
) -> None:
    caplog.set_level(logging.DEBUG, logger="llama_gateway")

    class Flaky:
        """A session whose first three get() calls blow up (a bug, not a target fault)."""

        def __init__(self) -> None:
            self.real = aiohttp.ClientSession()
            self.calls = 0

        def get(self, *args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self.calls <= 3:
                raise RuntimeError("boom")
            return self.real.get(*args, **kwargs)

        async def close(self) -> None:
            await self.real.close()

    st = state()
    srv = await scripted([200])
    hc = checker(Flaky)
    hc.add(ProbeSpec(srv.url()), fast(), st)
    await hc.start()
    await until(lambda: hc.snapshot()[0]["probes"] >= 2)
    snap = hc.snapshot()[0]
    assert snap["probing"] and snap["last_error"] is None and st.healthy
    warned = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warned) == 1 and "unexpectedly" in warned[0].getMessage()


async def test_changes_are_logged_once_failures_only_at_debug(scripted, checker, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="llama_gateway")
    trace = await run_trace(scripted, checker, [500] * 5 + [200] * 5, 10)
    assert trace == [T, T, F, F, F, F, F, T, T, T]
    loud = [r for r in caplog.records if r.levelno > logging.DEBUG]
    assert [r.levelname for r in loud] == ["WARNING", "INFO"]
    assert "127.0.0.1:" in loud[0].getMessage() and "unhealthy" in loud[0].getMessage()
    assert sum(r.levelno == logging.DEBUG for r in caplog.records) >= 10


def test_policy_validation() -> None:
    with pytest.raises(ValueError):
        HealthPolicy(timeout=0)
    with pytest.raises(ValueError):
        HealthPolicy(healthy_interval=-1)
    with pytest.raises(ValueError):
        HealthPolicy(unhealthy_timeouts=-1)
