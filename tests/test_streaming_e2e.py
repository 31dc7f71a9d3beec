"""Streaming through the gateway, for every upstream framing (real sockets)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from helpers import route, target, url

from gateway.sim import Behaviour

CHAT = [{"role": "user", "content": "Tell me a story"}]


async def sse(
    http: aiohttp.ClientSession, u: str, body: Any
) -> tuple[aiohttp.ClientResponse, list[str]]:
    """POST and collect the SSE `data:` payloads as they arrive."""
    async with http.post(u, json=body) as r:
        raw = (await r.read()).decode()
    assert raw.endswith("\n\n") or not raw, raw
    events = [block.removeprefix("data: ") for block in raw.split("\n\n") if block]
    return r, events


def chunks(events: list[str]) -> list[dict[str, Any]]:
    return [json.loads(e) for e in events if e != "[DONE]"]


def assert_openai_chat_stream(
    events: list[str], text: str, finish: str, usage: bool
) -> list[dict[str, Any]]:
    assert events[-1] == "[DONE]"
    cs = chunks(events)
    assert all(c["object"] == "chat.completion.chunk" for c in cs)
    assert len({c["id"] for c in cs}) == 1 and all(isinstance(c["created"], int) for c in cs)
    assert cs[0]["choices"][0]["delta"].get("role") == "assistant"
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in cs if c["choices"])
    assert content == text
    finals = [c for c in cs if c["choices"] and c["choices"][0]["finish_reason"] is not None]
    assert len(finals) == 1 and finals[0]["choices"][0]["finish_reason"] == finish
    if usage:
        assert cs[-1]["choices"] == [] and cs[-1]["usage"]["completion_tokens"] > 0
    else:
        assert all("usage" not in c or c["usage"] is None for c in cs)
    return cs


async def test_ollama_ndjson_to_sse(upstream, gateway, http) -> None:
    up = await upstream("ollama")
    gw = await gateway(route(target(up, "/api/chat")))
    body = {
        "messages": CHAT,
        "stream": True,
        "max_tokens": 6,
        "stream_options": {"include_usage": True},
    }
    r, events = await sse(http, url(gw), body)
    assert r.status == 200
    assert r.headers["Content-Type"] == "text/event-stream"
    assert r.headers["Cache-Control"] == "no-cache"
    assert "Content-Length" not in r.headers
    assert r.headers["X-Kong-LLM-Model"] == "llama2/llama2"
    cs = assert_openai_chat_stream(events, up.expected_text(6), "length", usage=True)
    sent = up.generation_requests()[0].json
    assert sent["stream"] is True
    prompt = up.count_prompt_tokens(sent)
    assert cs[-1]["usage"] == {
        "prompt_tokens": prompt,
        "completion_tokens": 6,
        "total_tokens": prompt + 6,
    }


async def test_ollama_completions_stream(upstream, gateway, http) -> None:
    up = await upstream("ollama")
    gw = await gateway(route(target(up, "/api/generate", route_type="llm/v1/completions")))
    _, events = await sse(http, url(gw), {"prompt": "Once", "stream": True})
    cs = chunks(events)
    assert events[-1] == "[DONE]"
    assert all(c["object"] == "text_completion" for c in cs)
    assert "".join(c["choices"][0]["text"] for c in cs if c["choices"]) == up.expected_text(8)


async def test_lines_split_across_reads_are_rejoined(upstream, gateway, http) -> None:
    up = await upstream("ollama", behaviour=Behaviour(split_writes=True, n_tokens=3))
    gw = await gateway(route(target(up, "/api/chat")))
    _, events = await sse(http, url(gw), {"messages": CHAT, "stream": True})
    assert_openai_chat_stream(events, up.expected_text(3), "stop", usage=False)


async def test_tgi_sse_without_space(upstream, gateway, http) -> None:
    up = await upstream("tgi")
    gw = await gateway(route(target(up, "/generate_stream", fmt="raw", options={"max_tokens": 4})))
    body = {"messages": CHAT, "stream": True, "stream_options": {"include_usage": True}}
    _, events = await sse(http, url(gw), body)
    cs = chunks(events)
    assert events[-1] == "[DONE]"
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in cs if c["choices"])
    assert content.strip() == up.expected_text(4).strip()
    assert cs[-1]["usage"]["completion_tokens"] == 4
    sent = up.generation_requests()[0].json
    assert sent["parameters"]["stream"] is True and sent["stream"] is True


async def test_llamacpp_sse_without_done(upstream, gateway, http) -> None:
    up = await upstream("llamacpp")
    t = target(up, "/completion", fmt="raw", options={"raw_flavor": "llamacpp", "max_tokens": 5})
    gw = await gateway(route(t))
    body = {"messages": CHAT, "stream": True, "stream_options": {"include_usage": True}}
    _, events = await sse(http, url(gw), body)
    cs = chunks(events)
    assert events[-1] == "[DONE]"
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in cs if c["choices"])
    assert content == up.expected_text(5)
    assert cs[-1]["usage"]["completion_tokens"] == 5


async def test_openai_stream_passed_through(upstream, gateway, http) -> None:
    up = await upstream("openai")
    gw = await gateway(route(target(up, "/v1/chat/completions", fmt="openai")))
    body = {
        "model": "llama2",
        "messages": CHAT,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    _, events = await sse(http, url(gw), body)
    sent = up.generation_requests()[0].json
    async with http.post(up.url("/v1/chat/completions"), json=sent) as r:
        direct = [b.removeprefix("data: ") for b in (await r.text()).split("\n\n") if b]

    def strip(evs: list[str]) -> list[dict[str, Any]]:
        return [
            {k: v for k, v in json.loads(e).items() if k not in ("id", "created")} for e in evs[:-1]
        ]

    assert strip(events) == strip(direct) and events[-1] == direct[-1] == "[DONE]"


async def test_response_streaming_always(upstream, gateway, http) -> None:
    up = await upstream("ollama")
    gw = await gateway(route(target(up, "/api/chat"), response_streaming="always"))
    r, events = await sse(http, url(gw), {"messages": CHAT})
    assert r.headers["Content-Type"] == "text/event-stream"
    assert_openai_chat_stream(events, up.expected_text(8), "stop", usage=False)
    assert up.generation_requests()[0].json["stream"] is True


async def test_non_200_in_stream_mode_is_passed_through(upstream, gateway, http) -> None:
    up = await upstream("ollama")
    gw = await gateway(route(target(up, "/api/chat", name=None)))
    async with http.post(url(gw), json={"model": "nope", "messages": CHAT, "stream": True}) as r:
        assert r.status == 404
        assert r.headers["Content-Type"].startswith("application/json")
        assert (await r.json())["error"]["message"] == "model 'nope' not found"


async def test_upstream_dies_mid_stream(upstream, gateway, http) -> None:
    up = await upstream("ollama", behaviour=Behaviour(die_after=2, n_tokens=6))
    gw = await gateway(route(target(up, "/api/chat")))
    r, events = await sse(http, url(gw), {"messages": CHAT, "stream": True})
    assert r.status == 200
    assert "[DONE]" not in events
    last = json.loads(events[-1])
    assert set(last) == {"error"} and last["error"]["message"]
    assert "".join(
        c["choices"][0]["delta"].get("content", "") for c in chunks(events[:-1])
    ) == up.expected_text(2)


async def test_in_band_error_mid_stream(upstream, gateway, http) -> None:
    up = await upstream("ollama", behaviour=Behaviour(error_after=2, n_tokens=6))
    gw = await gateway(route(target(up, "/api/chat")))
    _, events = await sse(http, url(gw), {"messages": CHAT, "stream": True})
    assert "[DONE]" not in events
    errors = [json.loads(e) for e in events if "error" in json.loads(e)]
    assert len(errors) == 1 and events[-1] == json.dumps(errors[0], separators=(",", ":"))


async def test_stream_fails_over_before_first_event(upstream, gateway, http) -> None:
    dying = await upstream("ollama", behaviour=Behaviour(die_after=0))
    good = await upstream("ollama")
    gw = await gateway(
        route(target(dying, "/api/chat", weight=100), target(good, "/api/chat", weight=1))
    )
    r, events = await sse(http, url(gw), {"messages": CHAT, "stream": True})
    assert r.headers["X-Gateway-Attempts"] == "2"
    assert_openai_chat_stream(events, good.expected_text(8), "stop", usage=False)


async def test_client_disconnect_cancels_upstream(upstream, gateway) -> None:
    up = await upstream("ollama", behaviour=Behaviour(token_interval=0.05, n_tokens=200))
    gw = await gateway(route(target(up, "/api/chat")))
    async with aiohttp.ClientSession() as http:
        r = await http.post(url(gw), json={"messages": CHAT, "stream": True})
        first = await r.content.readuntil(b"\n\n")
        assert first.startswith(b"data: ")
        r.close()  # drop the connection after the first chunk
    await asyncio.wait_for(up.stream_cancelled.wait(), timeout=10)
    assert up.cancelled == 1
    assert up.active_streams == 0
    for _ in range(100):
        if gw.gateway is not None and gw.gateway.in_flight == 0:
            break
        await asyncio.sleep(0.02)
    assert gw.gateway is not None and gw.gateway.in_flight == 0 and not gw.gateway.tasks


async def test_events_reach_the_client_while_the_upstream_still_generates(
    upstream, gateway
) -> None:
    """No buffering: the first chunk arrives while the upstream has most tokens to go."""
    up = await upstream("ollama", behaviour=Behaviour(token_interval=0.2, n_tokens=100))
    gw = await gateway(route(target(up, "/api/chat")))
    async with aiohttp.ClientSession() as http:
        r = await http.post(url(gw), json={"messages": CHAT, "stream": True})
        first = json.loads((await asyncio.wait_for(r.content.readuntil(b"\n\n"), 15))[6:])
        second = json.loads((await asyncio.wait_for(r.content.readuntil(b"\n\n"), 15))[6:])
        assert first["choices"][0]["delta"]["content"] + second["choices"][0]["delta"][
            "content"
        ] == up.expected_text(2)
        assert up.active_streams == 1, "the upstream is still generating: nothing was buffered"
        r.close()
    await asyncio.wait_for(up.stream_cancelled.wait(), timeout=10)


@pytest.mark.parametrize(
    ("kind", "path", "fmt"),
    [
        ("ollama", "/api/chat", "ollama"),
        ("openai", "/v1/chat/completions", "openai"),
        ("tgi", "/generate_stream", "raw"),
    ],
)
async def test_finished_streams_keep_their_upstream_connection(
    upstream, gateway, http, kind: str, path: str, fmt: str
) -> None:
    """Consecutive streams share one keep-alive upstream connection: a finished stream
    hands its connection back (when the last event and the chunked terminator arrive
    apart, the gateway waits briefly for the terminator: tests/test_http1_pool.py)."""
    up = await upstream(kind)
    gw = await gateway(route(target(up, path, fmt=fmt, options={"max_tokens": 4})))
    pool = gw.gateway.pool
    for _ in range(3):
        async with http.post(url(gw), json={"messages": CHAT, "stream": True}) as r:
            assert r.status == 200
            assert (await r.read()).rstrip().endswith(b"data: [DONE]")
        for _ in range(200):  # bounded: the tail arrives within milliseconds
            if any(pool._idle.values()):
                break
            await asyncio.sleep(0.01)
        idle = [c for conns in pool._idle.values() for c in conns]
        assert len(idle) == 1, f"{kind}: the connection was not kept"
    assert idle[0].reused, "all three streams travelled on one connection"
