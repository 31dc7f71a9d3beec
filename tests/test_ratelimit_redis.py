"""`strategy: redis` against a real redis-server: the store's atomic operations, two
gateway processes sharing one set of counters, and Redis going away (fail open or
closed, counted, never a hang)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis
from helpers import LONG_WINDOW, route, target, url
from redis_kit import RedisServer, needs_redis
from test_process import start_serve

from gateway.config.schema import RedisConfig
from gateway.security.stores import Counter, RedisStore

pytestmark = needs_redis
CHAT = {"messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def redis_server(tmp_path: Path) -> AsyncIterator[RedisServer]:
    server = RedisServer(tmp_path, password="redis-pass-s3cr3t")
    await server.start()
    yield server
    await server.stop()


def counters(tag: str, req_limit: int, tok_limit: int) -> list[Counter]:
    return [
        Counter(tag, "requests", 60, 7, req_limit, 61),
        Counter(tag, "tokens", 3600, 1, tok_limit, 3601),
    ]


async def test_store_admits_atomically_and_sets_expiry(redis_server: RedisServer):
    store = RedisStore(RedisConfig(url=redis_server.url, prefix="t"))
    try:
        cs = counters("r\x1f1.2.3.4", 3, 100)
        results = await asyncio.gather(*(store.admit(cs, 1) for _ in range(10)))
        assert sum(ok for ok, _ in results) == 3  # concurrent, yet exactly the limit
        assert sorted(v[0] for ok, v in results if ok) == [1, 2, 3]
        await store.spend(cs[1:], 150)
        ok, values = await store.admit(cs, 1)
        assert not ok and values == [3, 150]
        probe = aioredis.Redis.from_url(redis_server.url)
        keys = sorted(k.decode() for k in await probe.keys("t:*"))
        assert keys == ["t:{r\x1f1.2.3.4}:requests:60:7", "t:{r\x1f1.2.3.4}:tokens:3600:1"]
        assert 0 < await probe.ttl(keys[0]) <= 61
        assert 3600 < await probe.ttl(keys[1]) <= 3601
        await probe.aclose()
    finally:
        await store.close()


def _limited_route(up_url: str, redis_url: str, tolerant: bool = True) -> dict:
    r = route(target(up_url, "/api/chat"), path="/chat", name="chat")
    r["rate_limiting"] = {
        "limits": [{"requests": 3, "window": LONG_WINDOW}],
        "strategy": "redis",
        "redis": {"url": redis_url, "timeout": 1},
        "fault_tolerant": tolerant,
    }
    return r


async def test_two_gateway_processes_share_the_counters(
    redis_server: RedisServer, upstream, tmp_path: Path
):
    up = await upstream("ollama")
    r = _limited_route(up.url("/api/chat"), redis_server.url)
    gws = [await start_serve(tmp_path, [r], name=f"gw{i}.yaml") for i in range(2)]
    try:
        statuses = []
        async with aiohttp.ClientSession() as http:
            for i in range(6):  # alternate between the two processes
                gw = gws[i % 2]
                async with http.post(f"http://127.0.0.1:{gw.port}/chat", json=CHAT) as resp:
                    statuses.append(resp.status)
                    if resp.status == 429:
                        assert (await resp.json())["error"]["message"] == "API rate limit exceeded"
        assert statuses == [200, 200, 200, 429, 429, 429]
        assert len(up.generation_requests()) == 3
    finally:
        for gw in gws:
            gw.proc.terminate()
            await gw.proc.wait()


@pytest.mark.parametrize("tolerant", [True, False])
async def test_redis_down_fails_open_or_closed_and_is_counted(
    redis_server: RedisServer, upstream, gateway, tolerant
):
    up = await upstream("ollama")
    gw = await gateway(_limited_route(up.url("/api/chat"), redis_server.url, tolerant))
    async with aiohttp.ClientSession() as http:
        async with http.post(url(gw), json=CHAT) as resp:
            assert resp.status == 200
            assert resp.headers["X-RateLimit-Remaining"] == "2"
        await redis_server.stop()
        for _ in range(3):
            async with http.post(url(gw), json=CHAT) as resp:
                if tolerant:
                    assert resp.status == 200
                    assert "X-RateLimit-Remaining" not in resp.headers
                else:
                    assert resp.status == 503
                    body = await resp.json()
                    assert body["error"]["message"] == "rate limiting is unavailable"
                    assert resp.headers["Retry-After"] == "1"
        async with http.get(f"http://127.0.0.1:{gw.status_port}/status") as resp:
            access = (await resp.json())["routes"][0]["access"]
        assert access["key_auth"] is False
        assert access["rate_limiting"]["store"] == "down"  # and no URL or password
        assert "redis" not in str(access["rate_limiting"]).replace("'strategy': 'redis'", "")
    text = gw.metrics.exposition().decode()
    action = "allowed" if tolerant else "rejected"
    # All three, the two decided during the backoff too.
    series = f'llama_gateway_rate_limit_store_errors_total{{route="chat",action="{action}"}}'
    assert f"{series} 3.0" in text
    assert redis_server.password is not None and redis_server.password not in text
