"""Multi-target routing over real sockets: algorithms, failover, breaker, /status."""

from __future__ import annotations

import asyncio
import random
import socket
from collections import Counter
from typing import Any

import aiohttp
from balancer_kit import FakeClock
from helpers import route, target, until, url

from gateway.sim import Behaviour

CHAT = [{"role": "user", "content": "hi"}]


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/api/chat"


async def ask(
    http: aiohttp.ClientSession, u: str, body: dict[str, Any] | None = None
) -> tuple[int, str, Any]:
    async with http.post(u, json=body or {"messages": CHAT}) as r:
        data = await r.read()
        return r.status, r.headers.get("X-Gateway-Target", ""), data


async def test_lowest_latency_prefers_the_fastest_and_keeps_sampling(
    upstream, gateway, http
) -> None:
    # Time per output token 2 ms vs 10 ms vs 20 ms: a 5x margin, no tight timing.
    ups = [
        await upstream("ollama", behaviour=Behaviour(token_interval=t, n_tokens=3))
        for t in (0.01, 0.002, 0.02)
    ]
    gw = await gateway(
        route(*(target(u, "/api/chat") for u in ups), balancer={"algorithm": "lowest-latency"})
    )
    for _ in range(200):
        status, _, _ = await ask(http, url(gw))
        assert status == 200
    counts = [len(u.generation_requests()) for u in ups]
    assert counts[1] >= 160, counts  # ≥ 80 % to the fastest
    assert counts[0] >= 1 and counts[2] >= 1, f"the others are still sampled: {counts}"


async def test_lowest_usage_balances_completion_tokens(upstream, gateway, http) -> None:
    ups = [await upstream("ollama", behaviour=Behaviour(n_tokens=64)) for _ in range(3)]
    gw = await gateway(
        route(
            *(target(u, "/api/chat") for u in ups),
            balancer={"algorithm": "lowest-usage", "tokens_count_strategy": "completion-tokens"},
        )
    )
    rng = random.Random(42)
    for _ in range(150):
        status, _, _ = await ask(
            http, url(gw), {"messages": CHAT, "max_tokens": rng.randint(1, 64)}
        )
        assert status == 200
    tokens = [sum(r.json["options"]["num_predict"] for r in u.generation_requests()) for u in ups]
    assert max(tokens) <= 1.2 * min(tokens), tokens


async def test_least_connections_avoids_the_busy_target(upstream, gateway, http) -> None:
    slow = await upstream("ollama", behaviour=Behaviour(token_interval=0.5, n_tokens=100))
    fast = [await upstream("ollama") for _ in range(2)]
    gw = await gateway(
        route(
            target(slow, "/api/chat"),
            *(target(u, "/api/chat") for u in fast),
            balancer={"algorithm": "least-connections"},
        )
    )
    body = {"messages": CHAT, "stream": True}
    hung = [asyncio.ensure_future(http.post(url(gw), json=body)) for _ in range(3)]
    await asyncio.gather(*hung)
    # The slow target now holds at least one long stream; new requests go elsewhere.
    assert len(slow.generation_requests()) >= 1
    before = len(slow.generation_requests())
    for _ in range(10):
        status, _, _ = await ask(http, url(gw))
        assert status == 200
    assert len(slow.generation_requests()) == before
    for f in hung:
        f.result().close()


async def test_consistent_hashing_sticks_by_header(upstream, gateway, http) -> None:
    ups = [await upstream("ollama") for _ in range(3)]
    gw = await gateway(
        route(
            *(target(u, "/api/chat") for u in ups),
            balancer={"algorithm": "consistent-hashing", "hash_on_header": "X-User"},
        )
    )
    seen: dict[str, set[str]] = {}
    for i in range(60):
        user = f"user-{i % 12}"
        async with http.post(url(gw), json={"messages": CHAT}, headers={"X-User": user}) as r:
            assert r.status == 200
            seen.setdefault(user, set()).add(r.headers["X-Gateway-Target"])
    assert all(len(t) == 1 for t in seen.values()), seen
    assert len({next(iter(t)) for t in seen.values()}) >= 2, "keys spread over targets"


async def test_priority_uses_lower_group_only_on_failure(upstream, gateway, http) -> None:
    primary = await upstream("ollama")
    backup = await upstream("ollama")
    gw = await gateway(
        route(
            target(primary, "/api/chat", weight=100),
            target(backup, "/api/chat", weight=10),
            balancer={"algorithm": "priority"},
        )
    )
    for _ in range(10):
        await ask(http, url(gw))
    assert (len(primary.generation_requests()), len(backup.generation_requests())) == (10, 0)
    await primary.stop()
    status, tname, _ = await ask(http, url(gw))
    assert status == 200 and tname.endswith(f":{backup.port}")


async def test_failover_with_dead_and_503_targets_loses_no_request(upstream, gateway, http) -> None:
    busy = await upstream("ollama", behaviour=Behaviour(status=503))
    good = await upstream("ollama")
    targets = (target(closed_port_url(), ""), target(busy, "/api/chat"), target(good, "/api/chat"))
    gw = await gateway(
        route(*targets, balancer={"failover_criteria": ["error", "timeout", "http_503"]}),
        route(*targets, path="/plain", name="plain"),
    )
    results = Counter()
    for _ in range(100):
        status, _, _ = await ask(http, url(gw))
        results[status] += 1
    assert results == {200: 100}
    # Without http_503 the 503s pass through unchanged (connection errors still fail over).
    statuses = Counter()
    for _ in range(30):
        status, _, data = await ask(http, url(gw, "/plain"))
        statuses[status] += 1
        if status == 503:
            assert data == busy.behaviour.error_body or b"server busy" in data
    assert statuses[503] >= 1 and statuses[200] >= 1 and set(statuses) <= {200, 503}


async def test_killed_upstream_during_concurrent_requests(upstream, gateway, http) -> None:
    victim = await upstream("ollama", behaviour=Behaviour(delay=0.05))
    survivor = await upstream("ollama", behaviour=Behaviour(delay=0.05))
    gw = await gateway(route(target(victim, "/api/chat"), target(survivor, "/api/chat")))

    async def client(n: int) -> list[int]:
        out = []
        for _ in range(n):
            status, _, _ = await ask(http, url(gw))
            out.append(status)
        return out

    clients = [asyncio.ensure_future(client(15)) for _ in range(8)]
    # Kill it once it has real work, however slow the machine is to get there.
    await until(lambda: len(victim.generation_requests()) >= 2)
    await victim.stop()  # connection refused from now on; in-flight ones are reset
    seen_by_victim = len(victim.generation_requests())
    statuses = [s for c in await asyncio.gather(*clients) for s in c]
    assert statuses == [200] * 120
    assert len(victim.generation_requests()) == seen_by_victim
    # Every answer the victim did not give, the survivor gave.
    assert len(survivor.generation_requests()) >= 120 - seen_by_victim


async def test_circuit_breaker_opens_half_opens_and_closes(upstream, gateway, http) -> None:
    clock = FakeClock()
    flaky = await upstream("ollama", behaviour=Behaviour(status=500))
    gw = await gateway(
        route(
            target(flaky, "/api/chat"),
            balancer={"max_fails": 2, "fail_timeout": 5000, "retries": 0},
            name="cb",
        ),
        clock=clock,
    )
    for _ in range(2):
        status, _, _ = await ask(http, url(gw))
        assert status == 500  # passed through, and counted by the breaker
    status, _, data = await ask(http, url(gw))
    assert status == 503 and b"no healthy targets for route cb" in data
    async with http.post(url(gw), json={"messages": CHAT}) as r:
        assert r.headers["Retry-After"] == "5"
    assert len(flaky.generation_requests()) == 2, "an open circuit sends nothing upstream"
    clock.now += 3
    async with http.post(url(gw), json={"messages": CHAT}) as r:
        assert r.status == 503 and r.headers["Retry-After"] == "2"
    clock.now += 2.5  # half-open: one trial, which fails → open again
    status, _, _ = await ask(http, url(gw))
    assert status == 500 and len(flaky.generation_requests()) == 3
    status, _, _ = await ask(http, url(gw))
    assert status == 503
    clock.now += 5.5
    flaky.behaviour.status = None  # the trial succeeds → closed
    for _ in range(3):
        status, _, _ = await ask(http, url(gw))
        assert status == 200
    async with http.get(f"http://127.0.0.1:{gw.status_port}/status") as r:
        doc = await r.json()
    assert doc["routes"][0]["targets"][0]["health"]["breaker"] == "closed"


async def test_status_document(upstream, gateway, http) -> None:
    up = await upstream("ollama")
    t = target(
        up,
        "/api/chat?key=in-url-secret",
        weight=7,
        auth={"header_name": "Authorization", "header_value": "Bearer status-secret"},
    )
    gw = await gateway(
        route(
            t,
            target(up, "/api/chat", fmt="openai", name="other"),
            balancer={"algorithm": "lowest-latency"},
            name="st",
        )
    )
    await ask(http, url(gw))
    async with http.get(f"http://127.0.0.1:{gw.status_port}/status") as r:
        assert r.status == 200
        raw = await r.text()
        doc = await r.json()
    assert "status-secret" not in raw and "in-url-secret" not in raw
    assert doc["ready"] is True and doc["draining"] is False
    (rt,) = doc["routes"]
    assert rt["name"] == "st" and rt["algorithm"] == "lowest-latency" and rt["paths"] == ["/chat"]
    first = rt["targets"][0]
    assert first["name"] == f"llama2@127.0.0.1:{up.port}"
    assert first["format"] == "ollama" and first["upstream"] == f"127.0.0.1:{up.port}"
    assert first["path"] == "/api/chat" and first["weight"] == 7
    assert set(first["health"]) == {"active", "breaker", "available", "last_change", "probe"}
    assert first["health"]["probe"] is None  # health checks are off in these routes
    assert first["health"]["active"] == "healthy" and first["health"]["breaker"] == "closed"
    assert set(first) >= {"in_flight", "score", "requests", "failures"}
    assert sum(t["requests"] for t in rt["targets"]) == 1
