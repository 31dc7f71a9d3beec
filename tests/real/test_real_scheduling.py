"""Capacity `auto` and load signals against a real llama-server (`--parallel 2`,
`--slots`, `--metrics`): the gateway reads the slot count and never exceeds it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from helpers import target, url
from realkit import wait_for

pytestmark = pytest.mark.real_upstream

CHAT = [{"role": "user", "content": "Count to ten."}]


def llamacpp_route(server_url: str, **balancer: Any) -> dict[str, Any]:
    return {
        "name": "r",
        "paths": ["/chat"],
        "config": {
            "balancer": balancer,
            "targets": [
                target(
                    server_url,
                    "",
                    fmt="raw",
                    options={"raw_flavor": "llamacpp", "max_tokens": 8, "temperature": 0},
                    max_concurrency="auto",
                )
            ],
        },
    }


async def test_auto_reads_the_real_slot_count_and_is_never_exceeded(
    llama_server, gateway, http
) -> None:
    gw = await gateway(
        llamacpp_route(llama_server.url("/completion"), queue={"max_size": 20, "timeout": 60000})
    )
    t = gw.router.routes[0].targets[0]

    async def read() -> bool:
        return t.state.capacity == 2

    assert await wait_for(read, 10.0), "capacity never read from /props or /slots"
    peak = 0

    async def one() -> int:
        async with http.post(url(gw), json={"messages": CHAT}) as r:
            await r.read()
            return r.status

    async def watch(done: asyncio.Event) -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, t.state.in_flight)
            await asyncio.sleep(0)

    done = asyncio.Event()
    watcher = asyncio.create_task(watch(done))
    statuses = await asyncio.gather(*(one() for _ in range(6)))
    done.set()
    await watcher
    assert statuses == [200] * 6
    assert peak <= 2
    status = await (await http.get(f"http://127.0.0.1:{gw.status_port}/status")).json()
    target_status = status["routes"][0]["targets"][0]
    assert target_status["capacity"] == 2
    assert target_status["discovery"]["llama_server"] is True
