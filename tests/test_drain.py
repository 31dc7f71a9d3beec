"""Drain deadline: what in-flight requests get when drain time runs out."""

from __future__ import annotations

import asyncio
import json

import aiohttp
from helpers import route, target, url

from gateway.sim import Behaviour

CHAT = [{"role": "user", "content": "hi"}]


async def test_request_waiting_for_upstream_gets_503_at_drain_deadline(upstream, gateway) -> None:
    up = await upstream("ollama", behaviour=Behaviour(delay=30))
    gw = await gateway(route(target(up, "/api/chat")))
    async with aiohttp.ClientSession() as http:
        pending = asyncio.ensure_future(http.post(url(gw), json={"messages": CHAT}))
        while not up.generation_requests():
            await asyncio.sleep(0.01)
        await gw.drain(timeout=0.2)
        r = await asyncio.wait_for(pending, 10)
        assert r.status == 503
        assert await r.json() == {"error": {"message": "gateway is shutting down"}}
        r.close()


async def test_stream_before_first_token_gets_503_and_committed_one_an_error_event(
    upstream, gateway
) -> None:
    silent = await upstream("ollama", behaviour=Behaviour(stall_after=0))
    talking = await upstream("ollama", behaviour=Behaviour(token_interval=0.05, n_tokens=2000))
    gw = await gateway(
        route(target(silent, "/api/chat")), route(target(talking, "/api/chat"), path="/t", name="t")
    )
    body = {"messages": CHAT, "stream": True}
    async with aiohttp.ClientSession() as http:
        waiting = asyncio.ensure_future(http.post(url(gw), json=body))
        streaming = await http.post(url(gw, "/t"), json=body)
        await streaming.content.readuntil(b"\n\n")
        while not silent.generation_requests():
            await asyncio.sleep(0.01)
        await gw.drain(timeout=0.2)
        r = await asyncio.wait_for(waiting, 10)
        assert (
            r.status == 503 and (await r.json())["error"]["message"] == "gateway is shutting down"
        )
        rest = (await asyncio.wait_for(streaming.content.read(), 10)).decode()
        last = rest.strip().split("\n\n")[-1]
        assert json.loads(last.removeprefix("data: ")) == {
            "error": {"message": "gateway is shutting down"}
        }
        r.close()
        streaming.close()
    state = gw.router.routes[1].targets[0].state
    assert state.failures == 0, "our own shutdown is not held against the target"
