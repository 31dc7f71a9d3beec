"""Slow and idle clients over raw sockets (issue 15, finding 1): idle connections, heads
and bodies sent a byte at a time, idle keep-alive, too many connections, a broken chunk
mid-body. Timeouts are set small; each wait is bounded far above them (no timing
assertions: a hang fails, a slow machine does not)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from helpers import route, target, until
from rawhttp_kit import Raw, request

from gateway.server import GatewayServer

CHAT = json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode()
FAST = {"client_header_timeout": 0.5, "client_body_timeout": 0.5, "keepalive_timeout": 0.5}


def rejected(gw: GatewayServer, reason: str) -> float:
    return sample(gw, f'llama_gateway_client_connections_rejected_total{{reason="{reason}"}}')


def open_connections(gw: GatewayServer) -> float:
    return sample(gw, "llama_gateway_client_connections")


def sample(gw: GatewayServer, series: str) -> float:
    for line in gw.metrics.exposition().decode().splitlines():
        name, _, value = line.rpartition(" ")
        if name == series:
            return float(value)
    raise AssertionError(f"{series} not exported")


async def start(upstream: Any, gateway: Any, **server: Any) -> GatewayServer:
    up = await upstream("ollama")
    gw: GatewayServer = await gateway(route(target(up, "/api/chat")), server=server or FAST)
    return gw


async def test_idle_connection_is_closed_without_an_answer(upstream, gateway) -> None:
    gw = await start(upstream, gateway)
    c = await Raw.connect(gw.port)
    assert await c.closed() == b""  # nothing sent: nothing answered, like nginx
    await until(lambda: rejected(gw, "idle_timeout") == 1)


async def test_head_sent_byte_by_byte_gets_408_and_is_closed(upstream, gateway) -> None:
    gw = await start(upstream, gateway)
    c = await Raw.connect(gw.port)
    sender = asyncio.ensure_future(c.trickle(request(body=CHAT), every=0.05))
    try:
        a = await c.answer()
        assert a.status == 408 and a.error() == "client header timeout"
        assert a.headers["Connection"] == "close" and a.headers["X-Request-Id"]
        await c.closed()
    finally:
        sender.cancel()
        c.close()
    assert rejected(gw, "header_timeout") == 1


async def test_kept_alive_connection_times_its_next_head_from_its_first_byte(
    upstream, gateway
) -> None:
    gw = await start(upstream, gateway)
    c = await Raw.connect(gw.port)
    await c.send(request(body=CHAT))
    assert (await c.answer()).status == 200
    await c.send(b"POST /chat HTTP/1.1\r\nHost: gw\r\n")  # and nothing more
    a = await c.answer()
    assert a.status == 408 and a.error() == "client header timeout"
    await c.closed()


async def test_idle_keepalive_connection_is_closed(upstream, gateway) -> None:
    gw = await start(upstream, gateway)
    c = await Raw.connect(gw.port)
    await c.send(request(body=CHAT))
    assert (await c.answer()).status == 200
    assert await c.closed() == b""  # keepalive_timeout: closed, no answer owed
    await until(lambda: open_connections(gw) == 0)
    assert rejected(gw, "idle_timeout") == 0  # a normal end, not counted as a refusal


async def test_short_keepalive_is_kept_after_longer_head_and_body_timeouts(
    upstream, gateway
) -> None:
    """The idle close comes at keepalive_timeout even when the timer was last set for a
    longer header or body deadline (here 60 s, far beyond the wait bound)."""
    gw = await start(
        upstream, gateway, client_header_timeout=60, client_body_timeout=60, keepalive_timeout=0.5
    )
    c = await Raw.connect(gw.port)
    whole = request(body=CHAT)
    await c.send(whole[:-5])
    await asyncio.sleep(1.0)  # the body read waits past a keepalive_timeout
    await c.send(whole[-5:])
    assert (await c.answer()).status == 200
    assert await c.closed() == b""


async def test_stalled_body_gets_408_and_the_connection_closes(upstream, gateway) -> None:
    gw = await start(upstream, gateway)
    c = await Raw.connect(gw.port)
    await c.send(request(body=CHAT)[: -len(CHAT) // 2])  # half the body, then nothing
    a = await c.answer()
    assert a.status == 408 and a.error() == "client body timeout"
    assert a.headers["Connection"] == "close"
    await c.closed()
    assert rejected(gw, "body_timeout") == 1


async def test_body_trickle_faster_than_the_timeout_is_read(upstream, gateway) -> None:
    """client_body_timeout is between reads (nginx), not for the whole body: with no
    minimum rate, a body that keeps coming, however slowly in total, is read."""
    gw = await start(upstream, gateway, client_body_timeout=2.0, client_body_min_rate=0)
    c = await Raw.connect(gw.port)
    whole = request(body=CHAT)
    head = whole[: -len(CHAT)]
    await c.send(head + CHAT[:-12])
    await c.trickle(CHAT[-12:], every=0.2)  # 2.4 s in all, 0.2 s between bytes
    assert (await c.answer()).status == 200
    c.close()


async def test_stalled_chunked_body_on_a_front_door_gets_408(upstream, gateway) -> None:
    up = await upstream("ollama")
    gw = await gateway(
        route(target(up, "/api/chat")), server=FAST, frontends={"openai": {"prefix": "/v1"}}
    )
    c = await Raw.connect(gw.port)
    head = request(path="/v1/chat/completions", headers={"Transfer-Encoding": "chunked"})
    await c.send(head + b"%x\r\n%s\r\n" % (10, CHAT[:10]))  # one chunk, then nothing
    a = await c.answer()
    assert a.status == 408 and a.error() == "client body timeout"
    await c.closed()


async def test_bad_chunk_size_mid_body_is_answered_400_at_once(upstream, gateway) -> None:
    """Before: the handler waited for body bytes that could never come (>70 s, no
    answer). The timeouts here are long: the answer cannot come from them."""
    gw = await start(upstream, gateway, client_header_timeout=60, client_body_timeout=60)
    c = await Raw.connect(gw.port)
    await c.send(request(headers={"Transfer-Encoding": "chunked"}) + b'5\r\n{"mes\r\n')
    await asyncio.sleep(0.1)  # the handler is waiting for the rest of the body
    await c.send(b"zz\r\nmore\r\n")
    a = await c.answer()
    assert a.status == 400 and a.error().startswith("malformed request body: ")
    assert a.headers["Connection"] == "close"
    await c.closed()
    assert rejected(gw, "bad_request") == 1


async def test_over_max_connections_gets_503_and_close(upstream, gateway) -> None:
    gw = await start(upstream, gateway, max_connections=2)
    held = [await Raw.connect(gw.port), await Raw.connect(gw.port)]
    await until(lambda: open_connections(gw) == 2)
    extra = await Raw.connect(gw.port)
    a = await extra.answer()  # at once: nothing of the request is waited for or read
    assert a.status == 503 and a.error() == "too many connections"
    assert a.headers["Connection"] == "close"
    await extra.closed()
    assert rejected(gw, "max_connections") == 1
    # the held ones still work, and a freed slot takes a new connection
    await held[0].send(request(body=CHAT))
    assert (await held[0].answer()).status == 200
    held[1].close()
    await until(lambda: open_connections(gw) == 1)
    again = await Raw.connect(gw.port)
    await again.send(request(body=CHAT))
    assert (await again.answer()).status == 200
    for c in (held[0], again):
        c.close()


async def test_zero_turns_the_timeouts_off(upstream, gateway) -> None:
    gw = await start(
        upstream, gateway, client_header_timeout=0, client_body_timeout=0, keepalive_timeout=0
    )
    c = await Raw.connect(gw.port)
    await c.send(b"POST /chat HTTP/1.1\r\n")
    await asyncio.sleep(1.0)  # would be several timeouts of the other tests
    await c.send(b"Host: gw\r\nContent-Length: %d\r\n\r\n" % len(CHAT) + CHAT)
    assert (await c.answer()).status == 200
    c.close()


# ---------------------------------------------------------------- the status listener


async def test_the_status_listener_cuts_off_idle_and_slow_clients(upstream, gateway) -> None:
    """Probes and scrapes need the status port: idle and slow clients are cut off there
    as on the proxy listener (counted for the proxy listener only)."""
    gw = await start(upstream, gateway)
    idle = await Raw.connect(gw.status_port)
    assert await idle.closed() == b""
    slow = await Raw.connect(gw.status_port)
    await slow.send(b"GET /metrics HTTP/1.1\r\n")  # and nothing more
    a = await slow.answer()
    assert a.status == 408 and a.error() == "client header timeout"
    await slow.closed()
    assert rejected(gw, "idle_timeout") == rejected(gw, "header_timeout") == 0


async def test_the_status_listener_has_its_own_max_connections(upstream, gateway) -> None:
    gw = await start(upstream, gateway, max_connections=2)
    held = [await Raw.connect(gw.status_port), await Raw.connect(gw.status_port)]
    for c in held:
        await c.send(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n")
        assert (await c.answer()).status == 200
    extra = await Raw.connect(gw.status_port)
    a = await extra.answer()
    assert a.status == 503 and a.error() == "too many connections"
    await extra.closed()
    for c in held:
        await c.send(b"GET /readyz HTTP/1.1\r\nHost: gw\r\n\r\n")
        assert (await c.answer()).status == 200
        c.close()
    proxy = await Raw.connect(gw.port)  # the proxy listener's connections are apart
    await proxy.send(request(body=CHAT))
    assert (await proxy.answer()).status == 200
    proxy.close()
    assert rejected(gw, "max_connections") == 0


# ---------------------------------------------------------------- red-team follow-ups


async def test_a_body_trickled_below_the_minimum_rate_gets_408(upstream, gateway) -> None:
    """Pauses shorter than client_body_timeout, but far below client_body_min_rate: a
    per-read timeout alone would let this hold the connection for 100 s."""
    gw = await start(upstream, gateway, **FAST, client_body_min_rate=1000)
    c = await Raw.connect(gw.port)
    await c.send(request(headers={"Content-Length": "1000"}))
    sender = asyncio.ensure_future(c.trickle(b"x" * 1000, every=0.1))
    try:
        # Closed within the bound (the trickle alone would last 100 s). The 408 is sent,
        # but the bytes still trickling in may turn the close into a reset that
        # discards it before it is read, so it is checked only when it arrived.
        seen = await c.closed()
    finally:
        sender.cancel()
        c.close()
    if seen:
        assert seen.startswith(b"HTTP/1.1 408 ") and b"client body timeout" in seen
    assert rejected(gw, "body_timeout") == 1


async def test_a_steady_slow_body_above_the_minimum_rate_is_read(upstream, gateway) -> None:
    gw = await start(upstream, gateway, **FAST, client_body_min_rate=1000)
    body = json.dumps({"messages": [{"role": "user", "content": "x" * 3000}]}).encode()
    c = await Raw.connect(gw.port)
    await c.send(request(headers={"Content-Length": str(len(body))}))
    for i in range(0, len(body), 400):  # ~4000 bytes/s against a 1000 bytes/s minimum
        await c.send(body[i : i + 400])
        await asyncio.sleep(0.1)
    assert (await c.answer()).status == 200
    c.close()


async def test_a_partial_head_sent_at_once_after_connecting_gets_408(upstream, gateway) -> None:
    """The first bytes can arrive before aiohttp's reader task waits for them: still a
    head in progress (408, counted as header_timeout), not an idle connection."""
    gw = await start(upstream, gateway)

    async def one() -> int:
        c = await Raw.connect(gw.port)
        try:
            await c.send(b"POST /chat HTTP/1.1\r\nHost: gw\r\n")
            a = await c.answer()
            return a.status
        finally:
            c.close()

    assert await asyncio.gather(*(one() for _ in range(10))) == [408] * 10
    assert rejected(gw, "header_timeout") == 10 and rejected(gw, "idle_timeout") == 0
