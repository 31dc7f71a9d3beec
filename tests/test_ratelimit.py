"""Rate limits: the limiter with an injected clock (windows, refusals that do not eat
into the next request's room, tokens charged after the answer, headers), and the
gateway over real sockets (429 in the error shape, headers on answers)."""

from __future__ import annotations

import asyncio
import logging

import pytest
from helpers import LONG_WINDOW, route, target, url

from gateway.config.schema import RateLimit, RateLimitingConfig
from gateway.security.ratelimit import RateLimited, RateLimiter
from gateway.security.stores import Counter, LocalStore, StoreError

CHAT = {"messages": [{"role": "user", "content": "hi"}]}


class Clock:
    def __init__(self, now: float = 1_000_040.0) -> None:  # 20 s into a minute
        self.now = now

    def __call__(self) -> float:
        return self.now


def limiter(*limits: RateLimit, clock: Clock, **kw) -> RateLimiter:
    cfg = RateLimitingConfig(identifier="ip", limits=limits, **kw)
    return RateLimiter(cfg, "r", wall=clock)


async def test_requests_window_refuses_then_resets_at_the_window_edge():
    clock = Clock()
    lim = limiter(RateLimit("requests", 2, 60), clock=clock)
    a = await lim.admit("1.2.3.4")
    assert a.headers["X-RateLimit-Remaining"] == "1"
    assert a.headers["X-RateLimit-Limit"] == "2"
    assert a.headers["X-RateLimit-Reset"] == "40"
    assert a.headers["X-RateLimit-Remaining-Requests"] == "1"
    assert a.headers["X-RateLimit-Reset-Requests"] == "40s"
    await lim.admit("1.2.3.4")
    for _ in range(3):  # refusals do not count
        with pytest.raises(RateLimited) as err:
            await lim.admit("1.2.3.4")
        assert err.value.status == 429
        assert err.value.headers["Retry-After"] == "40"
        assert err.value.headers["X-RateLimit-Remaining"] == "0"
    assert (await lim.admit("5.6.7.8")).headers["X-RateLimit-Remaining"] == "1"  # per identity
    clock.now += 40  # the next minute
    assert (await lim.admit("1.2.3.4")).headers["X-RateLimit-Remaining"] == "1"


async def test_tokens_are_charged_after_the_answer_and_refuse_when_spent():
    clock = Clock()
    lim = limiter(RateLimit("tokens", 100, 3600), RateLimit("requests", 50, 60), clock=clock)
    a = await lim.admit("c")
    assert a.headers["X-RateLimit-Remaining-Tokens"] == "100"
    lim.spend("c", 60)
    b = await lim.admit("c")  # 40 left: admitted (the cost is unknown before)
    assert b.headers["X-RateLimit-Remaining-Tokens"] == "40"
    lim.spend("c", 70)  # the last answer may overshoot
    with pytest.raises(RateLimited) as err:
        await lim.admit("c")
    assert err.value.kind == "tokens"
    assert err.value.headers["X-RateLimit-Remaining-Tokens"] == "0"
    assert int(err.value.headers["Retry-After"]) == 3600 - int(clock.now % 3600)


async def test_the_tightest_limit_names_the_plain_headers():
    clock = Clock()
    lim = limiter(RateLimit("requests", 100, 60), RateLimit("requests", 3, 3600), clock=clock)
    a = await lim.admit("x")
    assert a.headers["X-RateLimit-Limit"] == "3"  # 2/3 left beats 99/100
    assert a.headers["X-RateLimit-Remaining"] == "2"


async def test_hide_client_headers_sends_none():
    lim = limiter(RateLimit("requests", 1, 60), clock=Clock(), hide_client_headers=True)
    assert (await lim.admit("x")).headers == {}
    with pytest.raises(RateLimited) as err:
        await lim.admit("x")
    assert set(err.value.headers) == {"Retry-After"}


class DownStore(LocalStore):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.down = True

    async def admit(self, counters: list[Counter], n_requests: int):
        self.calls += 1
        if self.down:
            raise StoreError("ConnectionError: refused")
        return await super().admit(counters, n_requests)


@pytest.mark.parametrize("tolerant", [True, False])
async def test_store_down_fails_open_or_closed_with_backoff_and_one_log_line(tolerant, caplog):
    clock = Clock()
    store = DownStore()
    seen: list[str] = []
    cfg = RateLimitingConfig("ip", (RateLimit("requests", 1, 60),), fault_tolerant=tolerant)
    lim = RateLimiter(cfg, "r", store, wall=clock, on_store_error=seen.append)
    caplog.set_level(logging.INFO, "llama_gateway")
    for _ in range(5):
        if tolerant:
            assert (await lim.admit("x")).headers == {}
        else:
            with pytest.raises(RateLimited) as err:
                await lim.admit("x")
            assert err.value.status == 503
            assert err.value.message == "rate limiting is unavailable"
    assert store.calls == 1  # backing off: the store is not asked on every request
    # Every request decided without the store is counted, in its backoff too.
    assert seen == ["allowed" if tolerant else "rejected"] * 5
    downs = [r for r in caplog.records if "ratelimit.store_down" in getattr(r, "event", "")]
    assert len(downs) == 1
    store.down = False
    clock.now += 1.5  # past the first backoff
    await lim.admit("x")
    assert any("ratelimit.store_up" in getattr(r, "event", "") for r in caplog.records)


async def test_local_store_forgets_past_windows_when_it_sweeps():
    store = LocalStore()
    store._sweep_at = 4
    for i in range(3):
        await store.admit([Counter(f"ip{i}", "requests", 60, 1, 10, 61)], 1)
    await store.admit([Counter("ip9", "requests", 60, 2, 10, 61)], 1)  # a later window
    assert len(store._counts) == 1


# ---- over real sockets --------------------------------------------------------------


async def test_gateway_answers_429_with_headers_and_counts_it(gateway, upstream, http):
    up = await upstream("ollama")
    r = route(target(up, "/api/chat"), path="/chat", name="chat")
    r["rate_limiting"] = {"limits": [{"requests": 2, "window": LONG_WINDOW}]}
    gw = await gateway(r)
    for remaining in ("1", "0"):
        async with http.post(url(gw), json=CHAT) as resp:
            assert resp.status == 200
            assert resp.headers["X-RateLimit-Remaining"] == remaining
    async with http.post(url(gw), json=CHAT) as resp:
        assert resp.status == 429
        assert resp.headers["Content-Type"].startswith("application/json")
        assert int(resp.headers["Retry-After"]) >= 1
        assert (await resp.json()) == {"error": {"message": "API rate limit exceeded"}}
    assert len(up.generation_requests()) == 2
    text = gw.metrics.exposition().decode()
    assert (
        'llama_gateway_rate_limited_total{route="chat",consumer="-",limit="requests"} 1.0' in text
    )


async def test_stream_answers_carry_the_headers_and_tokens_are_charged(gateway, upstream, http):
    up = await upstream("ollama")
    r = route(target(up, "/api/chat"), path="/chat", name="chat")
    r["rate_limiting"] = {"limits": [{"tokens": 1000000, "window": LONG_WINDOW}]}
    gw = await gateway(r)
    async with http.post(url(gw), json={**CHAT, "stream": True}) as resp:
        assert resp.status == 200
        assert resp.headers["X-RateLimit-Remaining-Tokens"] == "1000000"
        await resp.read()
    async with http.post(url(gw), json=CHAT) as resp:
        used = 1000000 - int(resp.headers["X-RateLimit-Remaining-Tokens"])
        assert used > 0  # the stream's usage was charged


async def test_consumer_identity_limits_each_consumer_apart(gateway, upstream, http):
    up = await upstream("ollama")
    r = route(target(up, "/api/chat"), path="/chat", name="chat")
    r["key_auth"] = {}
    r["rate_limiting"] = {"limits": [{"requests": 1, "window": LONG_WINDOW}]}
    consumers = [
        {"username": "a", "keyauth_credentials": [{"key": "key-a-123456"}]},
        {"username": "b", "keyauth_credentials": [{"key": "key-b-123456"}]},
    ]
    gw = await gateway(r, consumers=consumers)
    statuses = []
    for key in ("key-a-123456", "key-a-123456", "key-b-123456"):
        async with http.post(url(gw), json=CHAT, headers={"apikey": key}) as resp:
            statuses.append(resp.status)
    assert statuses == [200, 429, 200]
    text = gw.metrics.exposition().decode()
    assert (
        'llama_gateway_rate_limited_total{route="chat",consumer="a",limit="requests"} 1.0' in text
    )


async def test_reload_keeps_counters_of_an_unchanged_rate_limit(gateway, upstream, http):
    from gateway.config import parse

    up = await upstream("ollama")
    r = route(target(up, "/api/chat"), path="/chat", name="chat")
    r["rate_limiting"] = {"limits": [{"requests": 1, "window": LONG_WINDOW}]}
    gw = await gateway(r)
    async with http.post(url(gw), json=CHAT) as resp:
        assert resp.status == 200
    other = route(target(up, "/api/chat"), path="/other", name="other")
    raw = {"server": {"port": 0, "status_port": 0}, "routes": [r, other]}
    await gw.reload(parse(raw, {}))
    async with http.post(url(gw), json=CHAT) as resp:
        assert resp.status == 429  # the same window's count survived the reload
    await asyncio.sleep(0)


# ---- the client's address behind trusted proxies --------------------------------------


@pytest.mark.parametrize(
    ("peer", "xff", "want"),
    [
        ("203.0.113.9", ["1.1.1.1"], "203.0.113.9"),  # an untrusted peer's header is ignored
        ("10.0.0.5", [], "10.0.0.5"),  # a trusted peer without a header
        ("10.0.0.5", ["1.1.1.1"], "1.1.1.1"),
        ("10.0.0.5", ["9.9.9.9, 1.1.1.1, 10.0.0.7"], "1.1.1.1"),  # skip trusted hops only
        ("10.0.0.5", ["9.9.9.9", "1.1.1.1"], "1.1.1.1"),  # several field lines, in order
        ("10.0.0.5", ["10.0.0.8, 10.0.0.7"], "10.0.0.8"),  # all trusted: the farthest
        ("10.0.0.5", ["junk, 1.1.1.1"], "1.1.1.1"),
        ("10.0.0.5", ["1.1.1.1, junk"], "10.0.0.5"),  # garbage next to us: the peer
        ("::1", ["2001:db8::1"], "2001:db8::1"),
    ],
)
def test_client_address(peer, xff, want):
    from gateway.security.clientip import client_address, networks

    assert client_address(peer, xff, networks(["10.0.0.0/8", "::1"])) == want


@pytest.mark.parametrize("trusted", [True, False])
async def test_ip_limits_follow_x_forwarded_for_only_from_trusted_proxies(
    gateway, upstream, http, trusted
):
    up = await upstream("ollama")
    r = route(target(up, "/api/chat"), path="/chat", name="chat")
    r["rate_limiting"] = {"limits": [{"requests": 1, "window": LONG_WINDOW}]}
    server = {"trusted_proxies": ["127.0.0.1"]} if trusted else {}
    gw = await gateway(r, server=server)
    statuses = []
    for client in ("198.51.100.1", "198.51.100.2", "198.51.100.1"):
        headers = {"X-Forwarded-For": client}
        async with http.post(url(gw), json=CHAT, headers=headers) as resp:
            statuses.append(resp.status)
    # Trusted: each client has its own counter. Not: the header is anyone's to forge,
    # every request is 127.0.0.1's.
    assert statuses == ([200, 200, 429] if trusted else [200, 429, 429])
