"""Active health checks through the gateway: bad targets are kept out before a client
request hits them, come back after enough good probes, and show in /status."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from helpers import route, target, until, url

from gateway.health import probe_path, probe_spec
from gateway.jsonutil import loads
from gateway.sim import Behaviour

CHAT = [{"role": "user", "content": "hi"}]
FAST = {
    "active": {
        "timeout": 1,
        "healthy": {"interval": 0.05, "successes": 2},
        "unhealthy": {"interval": 0.05, "http_failures": 1, "tcp_failures": 1, "timeouts": 1},
    }
}


def with_health(r: dict[str, Any]) -> dict[str, Any]:
    r["config"]["balancer"]["healthchecks"] = FAST
    return r


async def test_dead_target_is_kept_out_before_any_client_request(upstream, gateway, http) -> None:
    good = await upstream("ollama")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    gw = await gateway(
        with_health(
            route(target(f"http://127.0.0.1:{dead_port}/api/chat", ""), target(good, "/api/chat"))
        )
    )
    dead_state = gw.router.routes[0].targets[0].state
    await until(lambda: not dead_state.healthy)
    for _ in range(10):
        async with http.post(url(gw), json={"messages": CHAT}) as r:
            assert r.status == 200
            assert r.headers["X-Gateway-Attempts"] == "1", "never tried: the probe found it first"
    # It comes back after `successes` good probes once something listens there.
    revived = await upstream("ollama")
    await revived.stop()
    await revived.start(port=dead_port)
    await until(lambda: dead_state.healthy)
    for _ in range(4):
        async with http.post(url(gw), json={"messages": CHAT}) as r:
            assert r.status == 200
    assert len(revived.generation_requests()) == 2
    probes = [r for r in revived.received if r.method == "GET"]
    assert probes and all(p.path == "/" for p in probes)


async def test_loading_llamacpp_is_not_chosen_until_ready(upstream, gateway, http) -> None:
    loading = await upstream("llamacpp", behaviour=Behaviour(loading=True))
    other = await upstream("llamacpp")
    t = [
        target(u, "/completion", fmt="raw", options={"raw_flavor": "llamacpp", "max_tokens": 2})
        for u in (loading, other)
    ]
    gw = await gateway(with_health(route(*t)))
    state = gw.router.routes[0].targets[0].state
    await until(lambda: not state.healthy)
    for _ in range(6):
        async with http.post(url(gw), json={"messages": CHAT}) as r:
            assert r.status == 200
    assert loading.generation_requests() == []
    loading.behaviour.loading = False
    await until(lambda: state.healthy)
    for _ in range(6):
        async with http.post(url(gw), json={"messages": CHAT}) as r:
            assert r.status == 200
    assert len(loading.generation_requests()) == 3
    async with http.get(f"http://127.0.0.1:{gw.status_port}/metrics") as r:
        assert 'llama_gateway_target_healthy{route="r"' in await r.text()


async def test_probe_paths_and_auth_per_format(upstream, gateway) -> None:
    up = await upstream("openai", api_key="k-123")
    t = target(
        up,
        "/v1/chat/completions",
        fmt="openai",
        auth={"header_name": "Authorization", "header_value": "Bearer k-123"},
    )
    gw = await gateway(with_health(route(t)))
    await until(lambda: any(r.method == "GET" for r in up.received))
    probe = next(r for r in up.received if r.method == "GET")
    assert probe.path == "/v1/models" and probe.headers["Authorization"] == "Bearer k-123"
    assert gw.router.routes[0].targets[0].state.healthy
    cfgs = {fmt: gw.router.routes[0].targets[0].cfg for fmt in ("openai",)}
    assert probe_path(cfgs["openai"]) == "/v1/models"
    assert "k-123" not in repr(
        probe_spec(cfgs["openai"], gw.router.routes[0].cfg.balancer.healthchecks)
    )


async def test_health_checks_stop_with_the_server(upstream, gateway) -> None:
    up = await upstream("ollama")
    gw = await gateway(with_health(route(target(up, "/api/chat"))))
    await until(lambda: len(up.received) >= 2)
    await gw.stop()
    seen = len(up.received)
    await asyncio.sleep(0.3)  # several probe intervals: none may arrive after stop
    assert len(up.received) == seen
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("health-probe")]


async def test_status_shows_each_targets_probe(upstream, gateway, http) -> None:
    loading = await upstream("llamacpp", behaviour=Behaviour(loading=True))
    keyed = await upstream("openai", api_key="k-status-123")
    raw = {"raw_flavor": "llamacpp", "max_tokens": 2}
    probed = route(
        target(loading, "/completion", fmt="raw", options=raw),
        target(
            keyed,
            "/v1/chat/completions",
            fmt="openai",
            name="other",
            auth={"header_name": "Authorization", "header_value": "Bearer k-status-123"},
        ),
    )
    unprobed = route(target(keyed, "/v1/chat/completions", fmt="openai"), path="/off", name="off")
    gw = await gateway(with_health(probed), unprobed)
    checker = gw.health
    assert checker is not None
    await until(lambda: all(s["probes"] >= 2 for s in checker.snapshot()))
    async with http.get(f"http://127.0.0.1:{gw.status_port}/status") as r:
        text = await r.text()
    assert "k-status-123" not in text
    doc = loads(text)
    down, up = (t["health"] for t in doc["routes"][0]["targets"])
    assert down["active"] == "unhealthy" and set(down) >= {"breaker", "available", "last_change"}
    assert down["probe"]["url"] == loading.url("/health")
    assert down["probe"]["last_status"] == 503 and down["probe"]["last_error"] == "status"
    assert up["probe"]["url"] == keyed.url("/v1/models") and up["active"] == "healthy"
    assert up["probe"]["last_status"] == 200 and up["probe"]["last_error"] is None
    for probe in (down["probe"], up["probe"]):
        assert probe["probes"] >= 2 and probe["last_probe"].endswith("Z")
        assert set(probe) == {"url", "last_status", "last_error", "last_probe", "probes"}
    assert doc["routes"][1]["targets"][0]["health"]["probe"] is None  # checks off there


async def test_probes_stay_out_of_the_proxy_pool(upstream, gateway, http) -> None:
    up = await upstream("ollama")
    gw = await gateway(with_health(route(target(up, "/api/chat"))))
    await until(lambda: len(up.received) >= 3)
    assert gw.gateway is not None and gw.gateway.pool.stats() == []
    async with http.get(f"http://127.0.0.1:{gw.status_port}/metrics") as r:
        assert f'upstream="http://127.0.0.1:{up.port}"' not in await r.text()
