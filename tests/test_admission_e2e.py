"""Capacity and the admission queue over real sockets: never more in flight than a
target's `max_concurrency`, late binding in queue order, 429 / 503 with Retry-After, a
client gone while queued is never sent upstream, retries go through capacity.

The upstream holds every request until the test releases it, so order and counts are
asserted, never timings."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from helpers import route, target, until, url

ANSWER = {
    "model": "llama2",
    "created_at": "2024-01-15T08:13:38.876196Z",
    "message": {"role": "assistant", "content": "ok"},
    "done": True,
    "done_reason": "stop",
    "prompt_eval_count": 1,
    "eval_count": 1,
}


class Gate:
    """An Ollama-like /api/chat that answers only when the test opens a gate; records
    the order requests arrived in (their message text) and the most held at once."""

    def __init__(self, status: int = 200, log: list[str] | None = None) -> None:
        self.arrived: list[str] = []
        self.log = log if log is not None else []  # arrivals across gates, in order
        self.active = 0
        self.max_active = 0
        self.status = status
        self.release = asyncio.Semaphore(0)
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.arrived.append(body["messages"][0]["content"])
        self.log.append(body["messages"][0]["content"])
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            await self.release.acquire()
        finally:
            self.active -= 1
        if self.status != 200:
            return web.json_response({"error": "busy"}, status=self.status)
        return web.json_response(ANSWER)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/api/chat", self.chat)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/chat"

    def open(self, n: int = 1) -> None:
        for _ in range(n):
            self.release.release()


@pytest.fixture
async def gates() -> AsyncIterator[list[Gate]]:
    made: list[Gate] = []
    yield made
    for g in made:
        g.open(1000)
        assert g.runner is not None
        await g.runner.cleanup()


async def gate(gates: list[Gate], status: int = 200, log: list[str] | None = None) -> Gate:
    g = Gate(status, log)
    await g.start()
    gates.append(g)
    return g


def body(text: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}]}


async def send(http: aiohttp.ClientSession, u: str, text: str, **kw: Any) -> tuple[int, Any, Any]:
    async with http.post(u, json=body(text), **kw) as r:
        return r.status, await r.json(content_type=None), r.headers


async def test_capacity_is_never_exceeded_and_the_queue_is_fifo(gates, gateway, http) -> None:
    log: list[str] = []
    a, b = await gate(gates, log=log), await gate(gates, log=log)
    gw = await gateway(
        route(
            target(a.url(), "", max_concurrency=2),
            target(b.url(), "", max_concurrency=1),
            balancer={"queue": {"max_size": 50, "timeout": 60000}},
        )
    )
    u = url(gw)
    tasks = [asyncio.create_task(send(http, u, f"r{i}")) for i in range(3)]
    await until(lambda: len(a.arrived) + len(b.arrived) == 3)
    queued = []
    for i in range(3, 8):  # queued in this order
        queued.append(asyncio.create_task(send(http, u, f"r{i}")))
        await until(lambda i=i: gw.router.routes[0].admission.depth == i - 2)  # type: ignore[union-attr]
    status = await (await http.get(f"http://127.0.0.1:{gw.status_port}/status")).json()
    assert status["routes"][0]["queue"]["depth"] == 5
    assert [t["capacity"] for t in status["routes"][0]["targets"]] == [2, 1]
    for n in range(5):  # each freed slot takes the oldest waiter, wherever it frees
        (a if n % 2 == 0 else b).open()
        await until(lambda n=n: len(a.arrived) + len(b.arrived) == 4 + n)
        assert a.active <= 2 and b.active <= 1
    a.open(100)
    b.open(100)
    results = await asyncio.gather(*tasks, *queued)
    assert [r[0] for r in results] == [200] * 8
    assert a.max_active <= 2 and b.max_active <= 1
    assert log[3:] == [f"r{i}" for i in range(3, 8)]  # dispatched oldest first
    text = await (await http.get(f"http://127.0.0.1:{gw.status_port}/metrics")).text()
    assert 'llama_gateway_queue_wait_seconds_count{route="r"} 5.0' in text
    assert 'llama_gateway_target_capacity{route="r",target=' in text


async def test_queue_order_is_fifo_across_targets(gates, gateway, http) -> None:
    """One slot: requests are served strictly in arrival order."""
    a = await gate(gates)
    gw = await gateway(
        route(target(a.url(), "", max_concurrency=1), balancer={"queue": {"max_size": 50}})
    )
    u = url(gw)
    first = asyncio.create_task(send(http, u, "first"))
    await until(lambda: a.arrived == ["first"])
    rest = []
    for i in range(5):
        rest.append(asyncio.create_task(send(http, u, f"q{i}")))
        await until(lambda i=i: gw.router.routes[0].admission.depth == i + 1)  # type: ignore[union-attr]
    for n in range(6):
        a.open()
        await until(lambda n=n: len(a.arrived) == min(n + 2, 6) or n == 5)
    await asyncio.gather(first, *rest)
    assert a.arrived == ["first", "q0", "q1", "q2", "q3", "q4"]
    assert a.max_active == 1


async def test_priority_orders_the_queue(gates, gateway, http) -> None:
    a = await gate(gates)
    gw = await gateway(
        route(target(a.url(), "", max_concurrency=1), balancer={"queue": {"max_size": 50}})
    )
    u = url(gw)
    first = asyncio.create_task(send(http, u, "first"))
    await until(lambda: a.arrived == ["first"])
    order = [("low", "-5"), ("mid1", "0"), ("high", "7"), ("mid2", "0")]
    waiting = []
    for i, (text, prio) in enumerate(order):
        waiting.append(asyncio.create_task(send(http, u, text, headers={"X-Priority": prio})))
        await until(lambda i=i: gw.router.routes[0].admission.depth == i + 1)  # type: ignore[union-attr]
    for n in range(5):
        a.open()
        await until(lambda n=n: len(a.arrived) >= min(n + 2, 5))
    await asyncio.gather(first, *waiting)
    assert a.arrived == ["first", "high", "mid1", "mid2", "low"]
    status, data, _ = await send(http, u, "x", headers={"X-Priority": "11"})
    assert (status, data["error"]["message"]) == (
        400,
        "X-Priority must be an integer from -10 to 10",
    )


async def test_queue_full_is_429_and_timeout_is_503(gates, gateway, http) -> None:
    a = await gate(gates)
    gw = await gateway(
        route(
            target(a.url(), "", max_concurrency=1),
            balancer={"queue": {"max_size": 1, "timeout": 300}},
        )
    )
    u = url(gw)
    first = asyncio.create_task(send(http, u, "first"))
    await until(lambda: a.arrived == ["first"])
    second = asyncio.create_task(send(http, u, "second"))
    await until(lambda: gw.router.routes[0].admission.depth == 1)  # type: ignore[union-attr]
    status, data, headers = await send(http, u, "third")
    assert status == 429 and headers["Retry-After"] == "1"
    assert data["error"]["message"] == "route r: every target is at capacity and the queue is full"
    status, data, headers = await second  # nobody freed the slot within 300 ms
    assert status == 503 and headers["Retry-After"] == "1"
    assert data["error"]["message"] == "route r: no target had a free slot within 300 ms"
    a.open()
    assert (await first)[0] == 200
    assert a.arrived == ["first"]
    text = await (await http.get(f"http://127.0.0.1:{gw.status_port}/metrics")).text()
    assert 'llama_gateway_queue_rejected_total{route="r",reason="full"} 1.0' in text
    assert 'llama_gateway_queue_rejected_total{route="r",reason="timeout"} 1.0' in text


async def test_without_a_queue_a_full_route_answers_429(gates, gateway, http) -> None:
    a = await gate(gates)
    gw = await gateway(route(target(a.url(), "", max_concurrency=1)))
    u = url(gw)
    first = asyncio.create_task(send(http, u, "first"))
    await until(lambda: a.arrived == ["first"])
    status, data, _ = await send(http, u, "second")
    assert (status, data["error"]["message"]) == (429, "route r: every target is at capacity")
    a.open()
    assert (await first)[0] == 200


async def test_client_gone_while_queued_is_never_sent(gates, gateway, http) -> None:
    a = await gate(gates)
    gw = await gateway(
        route(target(a.url(), "", max_concurrency=1), balancer={"queue": {"max_size": 5}})
    )
    u = url(gw)
    first = asyncio.create_task(send(http, u, "first"))
    await until(lambda: a.arrived == ["first"])
    async with aiohttp.ClientSession() as other:
        gone = asyncio.create_task(send(other, u, "gone"))
        await until(lambda: gw.router.routes[0].admission.depth == 1)  # type: ignore[union-attr]
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
    await until(lambda: gw.router.routes[0].admission.depth == 0)  # type: ignore[union-attr]
    a.open(2)
    assert (await first)[0] == 200
    assert (await send(http, u, "after"))[0] == 200
    assert a.arrived == ["first", "after"]
    s = gw.router.routes[0].targets[0].state
    assert s.in_flight == 0


async def test_retries_go_through_capacity(gates, gateway, http) -> None:
    """A failover attempt needs a free slot too: it waits for the busy target instead of
    exceeding it."""
    bad, good = await gate(gates, status=503), await gate(gates)
    gw = await gateway(
        route(
            target(bad.url(), "", max_concurrency=1, weight=100),
            target(good.url(), "", max_concurrency=1, weight=1),
            balancer={"failover_criteria": ["http_503"], "queue": {"max_size": 5}},
        )
    )
    u = url(gw)
    hold = asyncio.create_task(send(http, u, "hold"))  # takes `bad` (weight 100)
    await until(lambda: bad.arrived == ["hold"])
    second = asyncio.create_task(send(http, u, "second"))  # takes `good`
    await until(lambda: good.arrived == ["second"])
    bad.open()  # `hold` fails with 503; its retry needs `good`, which is full: it queues
    await until(lambda: gw.router.routes[0].admission.depth == 1)  # type: ignore[union-attr]
    assert good.max_active == 1
    good.open(2)
    results = await asyncio.gather(hold, second)
    assert [r[0] for r in results] == [200, 200]
    assert good.arrived == ["second", "hold"] and good.max_active == 1


async def test_config_errors() -> None:
    from gateway.config import ConfigError, parse

    raw = {
        "routes": [
            route(
                target("http://127.0.0.1:1/api/chat", "", max_concurrency="auto"),
                balancer={"queue": {"max_size": 0, "timeout": 5, "extra": 1}},
            )
        ]
    }
    with pytest.raises(ConfigError) as exc:
        parse(raw, {})
    text = str(exc.value)
    assert "routes[0].config.targets[0].max_concurrency: auto reads the slot count" in text
    assert "routes[0].config.balancer.queue.max_size" in text
    assert "routes[0].config.balancer.queue: unknown key 'extra'" in text or "extra" in text
    assert json.dumps(raw)  # the raw config stays plain data
