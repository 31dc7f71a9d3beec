"""The pod's rate-limit counters over a real unix socket: a supervisor-side
`CounterServer` and worker-side `PodStore`s (the worker processes themselves are in
test_workers.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.config.schema import RateLimit, RateLimitingConfig
from gateway.jsonutil import dumps
from gateway.security.podstore import CounterServer, PodStore
from gateway.security.ratelimit import RateLimited, RateLimiter
from gateway.security.stores import Counter, StoreError


def counters(limit: int = 3, kind: str = "requests", tag: str = "r\x1falice") -> list[Counter]:
    return [Counter(tag, kind, 60, 1000, limit, 30)]


@pytest.fixture
async def server(tmp_path: Path):
    srv = CounterServer()
    path = str(tmp_path / "counters.sock")
    await srv.start(path)
    yield srv, path
    await srv.stop()


async def test_two_workers_share_one_set_of_counters(server) -> None:
    _, path = server
    a, b = PodStore(path), PodStore(path)
    got = [await (a if i % 2 else b).admit(counters(), 1) for i in range(5)]
    assert got == [(True, [1]), (True, [2]), (True, [3]), (False, [3]), (False, [3])]
    # Another identity has its own counter.
    assert await a.admit(counters(tag="r\x1fbob"), 1) == (True, [1])
    await a.close()
    await b.close()


async def test_spent_tokens_count_for_every_worker(server) -> None:
    _, path = server
    a, b = PodStore(path), PodStore(path)
    tokens = counters(limit=100, kind="tokens")
    assert await a.admit(tokens, 0) == (True, [0])
    assert a.spend(tokens, 60) is None  # connected: written at once, nothing to await
    # Each connection's lines are handled in order: an answer after a spend means the
    # spend is counted.
    assert await a.admit(tokens, 0) == (True, [60])
    later = b.spend(tokens, 50)
    assert later is not None  # not connected yet: connects first
    await later
    assert await b.admit(tokens, 0) == (False, [110])
    assert await a.admit(tokens, 0) == (False, [110])
    await a.close()
    await b.close()


async def test_many_admits_in_flight_each_get_their_own_answer(server) -> None:
    _, path = server
    store = PodStore(path)
    results = await asyncio.gather(*(store.admit(counters(limit=50), 1) for _ in range(80)))
    assert sorted(v for _, (v,) in results) == sorted([*range(1, 51), *[50] * 30])
    assert sum(ok for ok, _ in results) == 50
    await store.close()


async def test_a_stopped_supervisor_is_a_store_error_and_a_new_one_is_used(tmp_path) -> None:
    path = str(tmp_path / "c.sock")
    srv = CounterServer()
    await srv.start(path)
    store = PodStore(path)
    assert (await store.admit(counters(), 1))[0]
    await srv.stop()
    Path(path).unlink()
    with pytest.raises(StoreError):
        await store.admit(counters(), 1)
    with pytest.raises(StoreError):  # nobody listens: refused at once
        await store.admit(counters(), 1)
    again = CounterServer()
    await again.start(path)
    assert await store.admit(counters(), 1) == (True, [1])  # a fresh supervisor's count
    await store.close()
    await again.stop()


async def test_a_late_answer_never_goes_to_the_next_admit(tmp_path) -> None:
    """An admit that timed out leaves its answer on the wire: it must be dropped, not
    handed to the admit after it."""
    release = asyncio.Event()
    lines: list[bytes] = []

    async def slow_first(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        n = 0
        while await reader.readline():
            n += 1
            lines.append(b"")
            if n == 1:
                await release.wait()
            writer.write(dumps([True, [n * 100]]) + b"\n")

    path = str(tmp_path / "slow.sock")
    srv = await asyncio.start_unix_server(slow_first, path)
    store = PodStore(path, timeout=0.2)
    with pytest.raises(StoreError, match="in time"):
        await store.admit(counters(), 1)
    second = asyncio.ensure_future(store.admit(counters(), 1))
    await asyncio.sleep(0)
    release.set()
    assert await asyncio.wait_for(second, 10) == (True, [200])
    await store.close()
    srv.close()
    await srv.wait_closed()


async def test_garbage_from_a_peer_drops_only_that_connection(server) -> None:
    _, path = server
    reader, writer = await asyncio.open_unix_connection(path)
    writer.write(b"not json\n")
    assert await asyncio.wait_for(reader.read(), 10) == b""  # closed on us
    writer.close()
    store = PodStore(path)
    assert await store.admit(counters(), 1) == (True, [1])
    await store.close()


async def test_a_limiter_on_a_dead_pod_store_fails_open_or_closed(tmp_path) -> None:
    dead = str(tmp_path / "nobody.sock")
    limits = (RateLimit("requests", 1, 60),)
    open_ = RateLimiter(RateLimitingConfig("ip", limits), "r", PodStore(dead))
    assert (await open_.admit("1.2.3.4")).headers == {}
    assert open_.store_down
    closed = RateLimiter(
        RateLimitingConfig("ip", limits, fault_tolerant=False), "r", PodStore(dead)
    )
    with pytest.raises(RateLimited) as info:
        await closed.admit("1.2.3.4")
    assert info.value.status == 503
    await open_.close()
    await closed.close()


async def test_a_nonsense_answer_is_a_store_error(tmp_path) -> None:
    async def wrong(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.readline():
            writer.write(b'{"not": "a pair"}\n')

    path = str(tmp_path / "wrong.sock")
    srv = await asyncio.start_unix_server(wrong, path)
    store = PodStore(path)
    with pytest.raises(StoreError, match="nonsense"):
        await store.admit(counters(), 1)
    await store.close()
    srv.close()
    await srv.wait_closed()
