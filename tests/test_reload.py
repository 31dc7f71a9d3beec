"""Config hot reload in-process: the swap under load with live streams, state kept for
unchanged targets, bad configs kept out, front doors and metrics following."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from helpers import route, target, until, url
from prometheus_client.parser import text_string_to_metric_families

from gateway.config import load_file, parse
from gateway.reload import reload_from
from gateway.server import GatewayServer
from gateway.sim import Behaviour, FakeUpstream

HI = [{"role": "user", "content": "Hi"}]


def t(up: FakeUpstream | str, name: str) -> dict[str, Any]:
    """A llama2 target at `up`'s /api/chat, called `name`."""
    return {**target(up, "/api/chat"), "name": name}


def config(*routes: dict[str, Any], **extra: Any) -> Any:
    return parse({"server": {"port": 0, "status_port": 0}, "routes": list(routes), **extra}, {})


async def metric(http: aiohttp.ClientSession, gw: GatewayServer, name: str, **labels: str) -> float:
    async with http.get(f"http://127.0.0.1:{gw.status_port}/metrics") as r:
        text = await r.text()
    return sum(
        s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


async def read_stream(http: aiohttp.ClientSession, gw: GatewayServer, path: str = "/chat") -> str:
    body = {"messages": HI, "stream": True}
    async with http.post(url(gw, path), json=body) as r:
        assert r.status == 200, await r.text()
        return await r.text()


async def test_reload_under_load_with_live_streams(upstream, gateway, http) -> None:
    """Streams started before the swap finish on the old routes (also on a removed
    target and a removed route); requests before, during and after it all succeed;
    new requests see the new routes at once."""
    models = ("slow", "fast")
    a, b, c, f = [await upstream("ollama", models=models) for _ in range(4)]
    for up in (a, b):
        # Long enough to outlast the reload by far; sped up once it is done.
        up.behaviour = Behaviour(token_interval=0.05, n_tokens=200)

    def m(up: FakeUpstream, name: str, model: str) -> dict[str, Any]:
        return {**target(up, "/api/chat", name=model), "name": name}

    v1 = (
        route(m(a, "a", "slow"), m(b, "b", "slow"), m(f, "f", "fast"), name="chat"),
        route(m(b, "b", "slow"), path="/old", name="old"),
    )
    gw = await gateway(*v1)
    slow = {"model": "slow", "messages": HI, "stream": True}

    async def stream(path: str) -> str:
        async with http.post(url(gw, path), json=slow) as r:
            assert r.status == 200, await r.text()
            return await r.text()

    streams = [asyncio.create_task(stream("/chat")) for _ in range(6)]
    streams.append(asyncio.create_task(stream("/old")))
    await until(lambda: a.active_streams + b.active_streams == 7)
    assert a.active_streams and b.active_streams

    ok = failed = 0

    async def load(n: int) -> None:
        nonlocal ok, failed
        for _ in range(n):
            async with http.post(url(gw, "/chat"), json={"model": "fast", "messages": HI}) as r:
                await r.read()
                if r.status == 200:
                    ok += 1
                else:
                    failed += 1

    clients = [asyncio.create_task(load(40)) for _ in range(4)]
    await until(lambda: ok >= 20)
    # v2: b leaves /chat (c joins), /old goes, /new comes; f is unchanged.
    await gw.reload(
        config(
            route(m(a, "a", "slow"), m(c, "c", "slow"), m(f, "f", "fast"), name="chat"),
            route(m(c, "c", "slow"), path="/new", name="new"),
        )
    )
    assert a.active_streams + b.active_streams == 7  # all still streaming over the swap
    await asyncio.gather(*clients)
    for up in (a, b):
        up.behaviour.token_interval = 0.0
    texts = await asyncio.gather(*streams)
    assert (ok, failed) == (160, 0)
    for text in texts:  # every stream finished whole, old route or not
        assert text.rstrip().endswith("data: [DONE]")
        assert text.count('"content"') >= 200
    async with http.post(url(gw, "/old"), json={"messages": HI}) as r:
        assert r.status == 404
    async with http.post(url(gw, "/new"), json={"model": "slow", "messages": HI}) as r:
        assert r.status == 200
    chat = gw.router.match("/chat")
    assert chat is not None and [x.name for x in chat.targets] == ["a", "c", "f"]
    before_b = len(b.generation_requests())
    for _ in range(6):
        async with http.post(url(gw, "/chat"), json={"model": "slow", "messages": HI}) as r:
            assert r.status == 200
    assert len(b.generation_requests()) == before_b  # the removed target gets nothing new
    assert await metric(http, gw, "llama_gateway_config_reloads_total", result="success") == 1
    assert await metric(http, gw, "llama_gateway_config_reloads_total", result="failure") == 0


async def test_unchanged_targets_keep_their_state(upstream, gateway, http) -> None:
    """An unchanged route is the same object; in a changed route, a target with the same
    config and position keeps its live state (in-flight count, breaker, latency), one
    that moved keeps its verdicts but not the old route's in-flight count."""
    a = await upstream("ollama")
    b = await upstream("ollama")
    other = await upstream("ollama")
    breaker = {"max_fails": 1, "fail_timeout": 600_000}
    v1 = [
        route(
            t(a, "a"),
            t(b, "b"),
            name="chat",
            balancer={"algorithm": "round-robin", **breaker},
        ),
        route(target(other, "/api/chat"), path="/other", name="other"),
    ]
    gw = await gateway(*v1)
    chat, other_route = gw.router.routes
    sa, sb = (t.state for t in chat.targets)
    # b fails once: its circuit opens. a serves a stream that stays open over the reload.
    b.behaviour = Behaviour(status=500)
    for _ in range(2):
        async with http.post(url(gw), json={"messages": HI}) as r:
            await r.read()
    assert sb.breaker == "open" and sa.requests >= 1
    a.behaviour = Behaviour(token_interval=0.05, n_tokens=20)
    stream = asyncio.create_task(read_stream(http, gw))
    await until(lambda: sa.in_flight == 1)

    # v2: a new target first (a and b move), the other route unchanged.
    c = await upstream("ollama")
    moved = route(
        t(c, "c"),
        t(a, "a"),
        t(b, "b"),
        name="chat",
        balancer={"algorithm": "round-robin", **breaker},
    )
    carried = await gw.reload(config(moved, v1[1]))
    assert carried.routes_kept == ["other"] and carried.routes_changed == ["chat"]
    assert carried.targets_moved == ["chat/a", "chat/b"] and carried.targets_new == ["chat/c"]
    assert gw.router.routes[1] is other_route
    new_a, new_b = gw.router.routes[0].targets[1].state, gw.router.routes[0].targets[2].state
    assert new_b is not sb and new_b.breaker == "open" and new_b.opens == 1
    assert new_a.in_flight == 0 and new_a.requests == sa.requests

    # v3: same positions as v2 but a new timeout: the states are the very objects.
    same_places = {**moved, "config": {**moved["config"], "balancer": {**breaker, "retries": 2}}}
    carried = await gw.reload(config(same_places, v1[1]))
    assert carried.targets_kept == ["chat/c", "chat/a", "chat/b"]
    route3 = gw.router.routes[0]
    assert route3.targets[1].state is new_a and route3.targets[2].state is new_b
    # The stream on the v1 route is still counted on a's v1 state, and finishes there.
    assert sa.in_flight == 1
    text = await stream
    assert text.rstrip().endswith("data: [DONE]") and sa.in_flight == 0
    # b's circuit is still open in v3: requests go to c and a only.
    a.behaviour = Behaviour()
    before = len(b.generation_requests())
    for _ in range(4):
        async with http.post(url(gw), json={"messages": HI}) as r:
            assert r.status == 200
    assert len(b.generation_requests()) == before


async def test_health_verdict_survives_a_reload(upstream, gateway, http) -> None:
    """A target found down by active health checks stays down across a reload of its
    route (the new prober starts from the kept verdict), and requests avoid it."""
    up = await upstream("ollama")
    hc = {
        "active": {
            "healthy": {"interval": 0.05, "successes": 1},
            "unhealthy": {"interval": 0.05, "tcp_failures": 1, "http_failures": 1},
        }
    }
    dead = "http://127.0.0.1:9/api/chat"  # the discard port: nothing listens
    raw = route(
        t(up, "up"),
        t(dead, "dead"),
        name="chat",
        balancer={"healthchecks": hc},
    )
    gw = await gateway(raw)
    state = gw.router.routes[0].targets[1].state
    await until(lambda: not state.healthy)
    changed = {**raw, "config": {**raw["config"], "balancer": {"healthchecks": hc, "retries": 1}}}
    await gw.reload(config(changed))
    assert gw.router.routes[0].targets[1].state is state and not state.healthy
    assert gw.health is not None
    snap = gw.health.prober_of(state)
    assert snap is not None and snap["healthy"] is False
    for _ in range(4):
        async with http.post(url(gw), json={"messages": HI}) as r:
            assert r.status == 200
    assert not state.healthy


async def test_bad_config_is_kept_out(upstream, gateway, http, tmp_path: Path, caplog) -> None:
    up = await upstream("ollama")
    gw = await gateway(route(target(up, "/api/chat"), name="chat"))
    running = gw.runtime
    path = tmp_path / "gw.yaml"
    bad = {"routes": [route(target(up, "/api/chat", weight=0), name="chat")]}
    path.write_text(yaml.safe_dump(bad))
    with caplog.at_level(logging.INFO, logger="llama_gateway"):
        ok = await reload_from(gw, lambda: load_file(str(path)), str(path))
    assert ok is False and gw.runtime is running
    failures = [r for r in caplog.records if getattr(r, "event", None) == "config.reload_failed"]
    assert len(failures) == 1
    errors: list[str] = failures[0].fields["errors"]  # type: ignore[attr-defined]
    assert any("routes[0].config.targets[0].weight" in e for e in errors), errors
    # Unreadable YAML and a missing file: the same, never a traceback.
    path.write_text("routes: [\n")
    assert await reload_from(gw, lambda: load_file(str(path)), str(path)) is False
    assert await reload_from(gw, lambda: load_file(str(tmp_path / "nope")), "nope") is False
    async with http.post(url(gw), json={"messages": HI}) as r:
        assert r.status == 200
    assert await metric(http, gw, "llama_gateway_config_reloads_total", result="failure") == 3
    assert await metric(http, gw, "llama_gateway_config_last_reload_successful") == 0
    # A good one after the bad ones.
    path.write_text(yaml.safe_dump({"routes": [route(target(up, "/api/chat"), path="/v2")]}))
    assert await reload_from(gw, lambda: load_file(str(path)), str(path)) is True
    async with http.post(url(gw, "/v2"), json={"messages": HI}) as r:
        assert r.status == 200
    assert await metric(http, gw, "llama_gateway_config_last_reload_successful") == 1
    assert await metric(http, gw, "llama_gateway_config_reloads_total", result="success") == 1
    stamp = await metric(http, gw, "llama_gateway_config_last_reload_timestamp_seconds")
    assert stamp >= gw.started_at


async def test_server_settings_wait_for_a_restart(upstream, gateway, http) -> None:
    up = await upstream("ollama")
    gw = await gateway(route(target(up, "/api/chat")), server={"drain_timeout": 5})
    port = gw.port
    new = parse(
        {"server": {"port": 1234, "drain_timeout": 9}, "routes": [route(target(up, "/api/chat"))]},
        {},
    )
    carried = await gw.reload(new)
    assert carried.restart_needed == ["server.port", "server.status_port", "server.drain_timeout"]
    assert gw.config.server.drain_timeout == 5 and gw.port == port
    async with http.post(url(gw), json={"messages": HI}) as r:
        assert r.status == 200


async def test_front_doors_follow_the_reload(upstream, gateway, http) -> None:
    up = await upstream("ollama", models=("llama2", "mistral"))
    gw = await gateway(route(target(up, "/api/chat"), name="chat"))
    async with http.get(url(gw, "/api/tags")) as r:
        assert r.status == 404
    both = {"openai": {"prefix": "/v1"}, "ollama": {"prefix": ""}}
    await gw.reload(
        config(
            route(target(up, "/api/chat"), name="chat"),
            route(target(up, "/api/chat", name="mistral"), path="/m", name="m"),
            frontends=both,
        )
    )
    async with http.get(url(gw, "/api/tags")) as r:
        assert r.status == 200
        assert sorted(m["name"] for m in (await r.json())["models"]) == ["llama2", "mistral"]
    async with http.get(url(gw, "/v1/models/mistral")) as r:
        assert r.status == 200 and (await r.json())["owned_by"] == "m"
    body = {"model": "mistral", "messages": HI}
    async with http.post(url(gw, "/v1/chat/completions"), json=body) as r:
        assert r.status == 200
    assert up.generation_requests()[-1].json["model"] == "mistral"
    # And off again.
    await gw.reload(config(route(target(up, "/api/chat"), name="chat")))
    async with http.get(url(gw, "/v1/models")) as r:
        assert r.status == 404


@pytest.mark.parametrize("limit", [16, 0])
async def test_body_limit_is_the_routes_own_after_a_reload(upstream, gateway, http, limit) -> None:
    """The request size limit is enforced per route while reading (chunked too), so a
    reload that raises or removes it applies at once."""
    up = await upstream("ollama")
    gw = await gateway(route(target(up, "/api/chat"), max_request_body_size=64))
    big = b'{"messages": [{"role": "user", "content": "' + b"x" * 200 + b'"}]}'

    async def chunked() -> Any:
        yield big[:50]
        yield big[50:]

    async with http.post(url(gw), data=chunked()) as r:
        assert r.status == 413
    await gw.reload(config(route(target(up, "/api/chat"), max_request_body_size=limit)))
    async with http.post(url(gw), data=chunked()) as r:
        assert r.status == (413 if limit and limit < len(big) else 200)
    async with http.post(url(gw), data=big) as r:
        assert r.status == (413 if limit and limit < len(big) else 200)
