"""/metrics after known traffic through fake upstreams: exact counter values."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import aiohttp
import pytest
from helpers import route, target, url
from prometheus_client.parser import text_string_to_metric_families

from gateway.sim import Behaviour

KONG = {
    "ai_provider": "llama2",
    "ai_model": "llama2",
    "cache_status": "",
    "vector_db": "",
    "embeddings_provider": "",
    "embeddings_model": "",
    "workspace": "default",
}
# 21 words + 4 tokens of per-message overhead in the fake = 25 prompt tokens.
PROMPT = " ".join(["word"] * 21)
CHAT = [{"role": "user", "content": PROMPT}]


async def scrape(http: aiohttp.ClientSession, gw: Any) -> str:
    async with http.get(f"http://127.0.0.1:{gw.status_port}/metrics") as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        return await r.text()


def value(text: str, name: str, **labels: str) -> float:
    """The one sample called `name` whose labels include `labels` (0 when absent)."""
    found = [
        s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else 0.0


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_kong_series_cost_case_doubles_and_ignores_gateway_400(
    upstream, gateway, http
) -> None:
    up = await upstream("ollama", behaviour=Behaviour(n_tokens=12))
    t = target(up, "/api/chat", options={"input_cost": 10, "output_cost": 10})
    gw = await gateway(route(t, name="kong"))
    assert up.count_prompt_tokens({"messages": CHAT}) == 25
    text = await scrape(http, gw)
    assert value(text, "kong_ai_llm_cost_total", **KONG) == 0, "no cost series before a cost"
    assert "kong_ai_llm_cost_total{" not in text
    for n in (1, 2):
        async with http.post(url(gw), json={"messages": CHAT}) as r:
            assert r.status == 200
        text = await scrape(http, gw)
        assert value(text, "kong_ai_llm_requests_total", **KONG) == n
        assert value(text, "kong_ai_llm_tokens_total", token_type="prompt_tokens", **KONG) == 25 * n
        assert (
            value(text, "kong_ai_llm_tokens_total", token_type="completion_tokens", **KONG)
            == 12 * n
        )
        assert value(text, "kong_ai_llm_tokens_total", token_type="total_tokens", **KONG) == 37 * n
        assert value(text, "kong_ai_llm_cost_total", **KONG) == pytest.approx(0.00037 * n)
        assert value(text, "kong_ai_llm_provider_latency_ms_count", **KONG) == n
    # Kong's label order is kept in the text (Prometheus ignores it; diffs against Kong do not).
    assert (
        'kong_ai_llm_requests_total{ai_provider="llama2",ai_model="llama2",cache_status="",vector_db="",embeddings_provider="",embeddings_model="",workspace="default"} 2.0'
        in text
    )
    async with http.post(url(gw), json={"prompt": "wrong shape"}) as r:
        assert r.status == 400
    after = await scrape(http, gw)
    for name in ("kong_ai_llm_requests_total", "kong_ai_llm_cost_total"):
        assert value(after, name, **KONG) == value(text, name, **KONG)
    assert (
        value(
            after,
            "llama_gateway_requests_total",
            route="kong",
            target="-",
            outcome="client_error",
            status_class="4xx",
        )
        == 1
    )
    tname = f"llama2@127.0.0.1:{up.port}"
    common = {"route": "kong", "target": tname, "model": "llama2"}
    assert (
        value(
            after, "llama_gateway_requests_total", outcome="success", status_class="2xx", **common
        )
        == 2
    )
    assert (
        value(after, "llama_gateway_tokens_total", token_type="prompt", source="reported", **common)
        == 50
    )
    assert (
        value(
            after,
            "llama_gateway_tokens_total",
            token_type="completion",
            source="reported",
            **common,
        )
        == 24
    )
    assert (
        value(after, "llama_gateway_time_to_first_token_seconds_count", stream="false", **common)
        == 2
    )
    assert value(after, "llama_gateway_time_per_output_token_seconds_count", **common) == 2
    assert value(after, "llama_gateway_request_body_bytes_count", route="kong") == 3
    assert value(after, "llama_gateway_balancer_picks_total", route="kong", target=tname) == 2


async def test_stream_upstream_error_and_failover_series(upstream, gateway, http) -> None:
    up = await upstream("ollama", behaviour=Behaviour(n_tokens=5))
    dead = f"http://127.0.0.1:{_closed_port()}/api/chat"
    gw = await gateway(
        route(target(up, "/api/chat"), name="s"),
        route(
            target(dead, "", weight=100, name="llama2"),
            target(up, "/api/chat", weight=1),
            path="/f",
            name="f",
        ),
    )
    tname = f"llama2@127.0.0.1:{up.port}"
    body = {"messages": CHAT, "stream": True, "stream_options": {"include_usage": True}}
    async with http.post(url(gw), json=body) as r:
        assert (await r.read()).endswith(b"data: [DONE]\n\n")
    up.behaviour.status = 500
    async with http.post(url(gw), json={"messages": CHAT}) as r:
        assert r.status == 500
    up.behaviour.status = None
    async with http.post(url(gw, "/f"), json={"messages": CHAT}) as r:
        assert r.status == 200 and r.headers["X-Gateway-Attempts"] == "2"
    text = await scrape(http, gw)
    s = {"route": "s", "target": tname, "model": "llama2"}
    assert value(text, "llama_gateway_time_to_first_token_seconds_count", stream="true", **s) == 1
    assert (
        value(text, "llama_gateway_tokens_total", token_type="completion", source="reported", **s)
        == 5
    )
    assert (
        value(
            text, "llama_gateway_requests_total", outcome="upstream_error", status_class="5xx", **s
        )
        == 1
    )
    assert (
        value(text, "llama_gateway_upstream_errors_total", route="s", target=tname, reason="status")
        == 1
    )
    # The upstream's 500 reached the client: Kong counts the request, not tokens.
    assert value(text, "kong_ai_llm_requests_total", **KONG) == 3
    assert value(text, "kong_ai_llm_tokens_total", token_type="completion_tokens", **KONG) == 5 + 5
    dead_name = next(t.name for t in gw.router.routes[1].targets if t.cfg.weight == 100)
    assert (
        value(
            text,
            "llama_gateway_upstream_errors_total",
            route="f",
            target=dead_name,
            reason="connect",
        )
        == 1
    )
    assert value(text, "llama_gateway_retries_total", route="f", target=dead_name) == 1
    assert value(text, "llama_gateway_failovers_total", route="f") == 1
    assert value(text, "llama_gateway_balancer_picks_total", route="f", target=dead_name) == 1
    assert value(text, "llama_gateway_balancer_picks_total", route="f", target=tname) == 1


async def test_cancelled_stream_counts_tokens_seen(upstream, gateway) -> None:
    up = await upstream("ollama", behaviour=Behaviour(token_interval=0.05, n_tokens=400))
    gw = await gateway(route(target(up, "/api/chat"), name="c"))
    async with aiohttp.ClientSession() as http:
        r = await http.post(url(gw), json={"messages": CHAT, "stream": True})
        await r.content.readuntil(b"\n\n")
        await r.content.readuntil(b"\n\n")
        r.close()
    await asyncio.wait_for(up.stream_cancelled.wait(), timeout=10)
    async with aiohttp.ClientSession() as http:
        for _ in range(200):
            text = await scrape(http, gw)
            s = {"route": "c", "target": f"llama2@127.0.0.1:{up.port}", "model": "llama2"}
            if value(text, "llama_gateway_requests_total", outcome="cancelled", **s):
                break
            await asyncio.sleep(0.02)
    assert value(text, "llama_gateway_requests_total", outcome="cancelled", **s) == 1
    assert (
        value(text, "llama_gateway_tokens_total", token_type="completion", source="estimated", **s)
        >= 1
    )


async def test_unknown_client_models_never_become_labels(upstream, gateway, http) -> None:
    up = await upstream("ollama", models=("llama2", "x-secret-model"))
    gw = await gateway(route(target(up, "/api/chat", name=None), name="free"))
    async with http.post(url(gw), json={"model": "x-secret-model", "messages": CHAT}) as r:
        assert r.status == 200
    text = await scrape(http, gw)
    assert "x-secret-model" not in text
    assert value(text, "kong_ai_llm_requests_total", **{**KONG, "ai_model": "unnamed"}) == 1


async def test_upstream_connection_series_show_keep_alive(upstream, gateway, http) -> None:
    """Per upstream origin: connections opened (once for sequential traffic: kept
    alive) and how many are idle / busy, with the origin as the only label."""
    up = await upstream("ollama")
    gw = await gateway(
        route(target(up, "/api/chat")),
        route(target(up, "/api/generate", route_type="llm/v1/completions"), path="/gen", name="g"),
    )
    origin = f"http://127.0.0.1:{up.port}"
    text = await scrape(http, gw)
    assert value(text, "llama_gateway_upstream_connections_opened_total", upstream=origin) == 0
    for _ in range(3):
        async with http.post(url(gw), json={"messages": CHAT}) as r:
            assert r.status == 200
        async with http.post(url(gw, "/gen"), json={"prompt": "hi"}) as r:
            assert r.status == 200
    text = await scrape(http, gw)
    # Two routes, one origin: six requests, one connection.
    assert value(text, "llama_gateway_upstream_connections_opened_total", upstream=origin) == 1
    assert value(text, "llama_gateway_upstream_connections", upstream=origin, state="idle") == 1
    assert value(text, "llama_gateway_upstream_connections", upstream=origin, state="busy") == 0
