"""Active health probes: what each outcome counts as, the request and its connections,
real servers of each kind, and secrets kept out of everything shown. Where an exact
number of probes matters, the target starts unhealthy with `healthy_interval: 0`, so
the prober stops by itself once it has brought the target back.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import AsyncIterator

import pytest
from health_kit import SECRET, F, Lab, T, fast, run_trace, state
from helpers import until

from gateway.health import ProbeSpec, public_url
from gateway.http1 import Pool
from gateway.sim import FakeUpstream


@pytest.fixture
async def lab() -> AsyncIterator[Lab]:
    started = Lab()
    yield started
    await started.close()


# -- what each outcome counts as -------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "counter", "error", "status"),
    [
        ("reset", "tcp_failures", "reset", None),
        ("garbage", "tcp_failures", "invalid", None),
        ("hang", "timeouts", "timeout", None),
        # Each byte restarts the client's read timeout: only the probe's overall bound
        # ends this one.
        ("trickle", "timeouts", "timeout", None),
        (503, "http_failures", "status", 503),
        (302, "http_failures", "status", 302),  # an answer, never followed
    ],
)
async def test_each_outcome_counts_as_its_kind(lab, action, counter, error, status) -> None:
    srv = await lab.server([action, 200])
    hc = lab.checker()
    srv.watch = lambda: hc.snapshot()[0]
    hc.add(ProbeSpec(srv.url()), fast(timeout=0.1 if counter == "timeouts" else 5.0), state())
    await hc.start()
    await until(lambda: len(srv.trace) >= 2)
    after_one = srv.trace[1]  # as the second probe arrived: the first one counted
    assert after_one["last_error"] == error and after_one["last_status"] == status
    assert after_one[counter] == 1 and after_one["probes"] == 1
    others = {"successes", "http_failures", "tcp_failures", "timeouts"} - {counter}
    assert all(after_one[c] == 0 for c in others)
    assert {line for line, _ in srv.heads} == {"GET /h HTTP/1.1"}  # no redirect followed


async def test_an_endless_body_is_never_read(lab) -> None:
    # Were the body awaited, every probe would time out and the target go down.
    trace = await run_trace(lab, ["endless"], 4)
    assert trace == [T] * 4


# -- the probe request, its connections ------------------------------------------------


async def test_every_probe_is_one_request_on_a_fresh_connection(lab) -> None:
    st = state(healthy=False)
    srv = await lab.server([200], st)
    pools: list[Pool] = []

    def own_pool() -> Pool:
        pools.append(Pool())
        return pools[-1]

    hc = lab.checker(pool_factory=own_pool)
    spec = ProbeSpec(srv.url(f"/h?api_key={SECRET}"), (("Authorization", f"Bearer {SECRET}"),))
    # Starts down, never probed once up: exactly `healthy_successes` probes.
    hc.add(spec, fast(healthy_interval=0, healthy_successes=3), st)
    await hc.start()
    await until(lambda: not hc.snapshot()[0]["probing"])
    assert st.healthy and srv.trace == [F, F, F]
    # The server kept every connection open, yet none carried a second request.
    assert srv.conn_of == [0, 1, 2] and srv.connections == 3
    line, fields = srv.heads[0]
    assert line == f"GET /h?api_key={SECRET} HTTP/1.1"
    assert fields == {
        "Host": f"127.0.0.1:{srv.port}",
        "User-Agent": "llama-gateway-healthcheck",
        "Connection": "close",
        "authorization": f"Bearer {SECRET}",
    }
    # The checker's own pool opened them and holds none idle afterwards.
    ((origin, idle, _busy, opened),) = pools[0].stats()
    assert origin == f"http://127.0.0.1:{srv.port}" and idle == 0 and opened == 3
    (snap,) = hc.snapshot()
    assert snap["url"] == srv.url("/h?api_key=***") and SECRET not in json.dumps(snap)


async def test_wall_clock_is_injected(lab) -> None:
    st = state(healthy=False)
    srv = await lab.server([200], st)
    hc = lab.checker(clock=lambda: 1234.5)
    hc.add(ProbeSpec(srv.url()), fast(healthy_interval=0), st)
    await hc.start()
    await until(lambda: not hc.snapshot()[0]["probing"])
    snap = hc.snapshot()[0]
    assert snap["last_probe"] == snap["last_change"] == st.last_change == 1234.5
    assert hc.prober_of(st) == snap and hc.prober_of(state()) is None


# -- real servers ------------------------------------------------------------------------


async def test_closed_port_goes_down_and_comes_back(lab) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    st = state()
    hc = lab.checker()
    hc.add(ProbeSpec(f"http://127.0.0.1:{port}/"), fast(), st)
    await hc.start()
    await until(lambda: not st.healthy)
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


async def test_llamacpp_loading_is_not_ready(upstream, lab) -> None:
    up = await upstream("llamacpp")
    up.behaviour.loading = True
    st = state()
    hc = lab.checker()
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
async def test_each_kind_is_healthy_on_its_probe_path(upstream, lab, kind, path) -> None:
    up = await upstream(kind)
    st = state()
    hc = lab.checker()
    hc.add(ProbeSpec(up.url(path)), fast(), st)
    await hc.start()
    await until(lambda: hc.snapshot()[0]["probes"] >= 3)
    assert st.healthy and hc.snapshot()[0]["last_status"] == 200
    assert {(r.method, r.path) for r in up.received} == {("GET", path)}


async def test_auth_header_is_sent_and_never_shown(upstream, lab, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="llama_gateway")
    up = await upstream("openai", api_key=SECRET)
    plain = await upstream("openai")
    with_key, without_key, creds = state("with"), state("without"), state("creds")
    spec = ProbeSpec(up.url("/v1/models"), (("Authorization", f"Bearer {SECRET}"),))
    url = plain.url("/v1/models").replace("//", f"//user:{SECRET}@") + f"?api_key={SECRET}"
    hc = lab.checker()
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
    shown += [json.dumps(hc.prober_of(s)) for s in (with_key, without_key, creds)]
    assert all(SECRET not in text for text in shown)
    assert "authorization" in repr(spec)  # the name may show, never the value
    assert public_url(url).endswith("/v1/models?api_key=***") and "user" not in public_url(url)
