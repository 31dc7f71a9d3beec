"""Non-streaming requests through the gateway to each upstream dialect (real sockets)."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
from helpers import route, target, url

CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Why is the sky blue?"},
]


async def post_json(
    http: aiohttp.ClientSession, u: str, body: Any, **kw: Any
) -> tuple[int, Any, Any]:
    async with http.post(u, json=body, **kw) as r:
        return r.status, await r.json(content_type=None), r.headers


async def test_ollama_chat_roundtrip_and_headers(upstream, gateway, http) -> None:
    up = await upstream("ollama")
    gw = await gateway(route(target(up, "/api/chat")))
    status, data, headers = await post_json(
        http, url(gw), {"model": "llama2", "messages": CHAT, "max_tokens": 5}
    )
    assert status == 200
    sent = up.generation_requests()[0].json
    assert sent == {
        "model": "llama2",
        "messages": CHAT,
        "stream": False,
        "options": {"num_predict": 5},
    }
    assert data["object"] == "chat.completion"
    assert data["id"].startswith("chatcmpl-") and isinstance(data["created"], int)
    assert data["choices"][0]["message"] == {
        "role": "assistant",
        "content": up.expected_text(5),
        "refusal": None,
    }
    assert data["choices"][0]["finish_reason"] == "length"
    prompt = up.count_prompt_tokens(sent)
    assert data["usage"] == {
        "prompt_tokens": prompt,
        "completion_tokens": 5,
        "total_tokens": prompt + 5,
    }
    assert headers["X-Kong-LLM-Model"] == "llama2/llama2"
    assert headers["X-Gateway-Target"] == f"llama2@127.0.0.1:{up.port}"
    assert headers["X-Gateway-Attempts"] == "1"
    assert (
        int(headers["X-Kong-Upstream-Latency"]) >= 0 and int(headers["X-Kong-Proxy-Latency"]) >= 0
    )
    assert headers["Content-Type"].startswith("application/json")


async def test_ollama_completions(upstream, gateway, http) -> None:
    up = await upstream("ollama")
    gw = await gateway(route(target(up, "/api/generate", route_type="llm/v1/completions")))
    status, data, _ = await post_json(http, url(gw), {"prompt": "Once upon a time"})
    assert status == 200
    assert up.generation_requests()[0].json == {
        "model": "llama2",
        "prompt": "Once upon a time",
        "stream": False,
    }
    assert data["object"] == "text_completion" and data["id"].startswith("cmpl-")
    assert data["choices"][0]["text"] == up.expected_text(8)


async def test_model_name_header_off(upstream, gateway, http) -> None:
    up = await upstream("ollama")
    gw = await gateway(route(target(up, "/api/chat"), model_name_header=False))
    status, _, headers = await post_json(http, url(gw), {"messages": CHAT})
    assert status == 200 and "X-Kong-LLM-Model" not in headers


async def test_raw_llamacpp_meta_template(upstream, gateway, http) -> None:
    up = await upstream("llamacpp")
    t = target(up, "/completion", fmt="raw", options={"raw_flavor": "llamacpp", "max_tokens": 4})
    gw = await gateway(route(t))
    status, data, _ = await post_json(http, url(gw), {"messages": CHAT})
    assert status == 200, data
    sent = up.generation_requests()[0].json
    assert sent["prompt"] == "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nWhy is the sky blue? [/INST]"
    assert sent["n_predict"] == 4 and sent["stream"] is False and sent["cache_prompt"] is True
    assert data["choices"][0]["message"]["content"] == up.expected_text(4).strip()
    assert data["choices"][0]["finish_reason"] == "length"
    assert data["usage"]["completion_tokens"] == 4


async def test_raw_hf_tgi(upstream, gateway, http) -> None:
    up = await upstream("tgi")
    gw = await gateway(route(target(up, "/generate", fmt="raw", options={"max_tokens": 3})))
    status, data, _ = await post_json(http, url(gw), {"messages": CHAT, "temperature": 0.5})
    assert status == 200, data
    sent = up.generation_requests()[0].json
    assert sent == {
        "inputs": "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nWhy is the sky blue? [/INST]",
        "parameters": {
            "max_new_tokens": 3,
            "temperature": 0.5,
            "details": True,
            "stream": False,
        },
    }
    text = up.expected_text(3).strip()
    assert data["choices"][0]["message"]["content"] == text
    # Asked for details, TGI counts the generated tokens itself.
    assert data["usage"]["completion_tokens"] == 3


async def test_openai_passthrough_byte_for_byte(upstream, gateway, http) -> None:
    up = await upstream("openai")
    gw = await gateway(
        route(target(up, "/v1/chat/completions", fmt="openai", options={"temperature": 0.2}))
    )
    body = {
        "model": "llama2",
        "messages": CHAT,
        "top_k": 5,
        "n": 1,
        "stop": ["\n"],
        "temperature": 1.0,
    }
    async with http.post(url(gw), json=body) as r:
        assert r.status == 200
        raw = await r.read()
    sent = up.generation_requests()[0].json
    assert sent == {
        "model": "llama2",
        "messages": CHAT,
        "top_k": 5,  # passed: vLLM, llama.cpp and others take it
        "n": 1,
        "stop": ["\n"],
        "temperature": 0.2,
        "stream": False,
    }
    direct_body = dict(sent)
    async with http.post(up.url("/v1/chat/completions"), json=direct_body) as r:
        direct = await r.json()
    got = json.loads(raw)
    assert got["choices"] == direct["choices"] and got["usage"] == direct["usage"]
    assert got["object"] == "chat.completion"


async def test_tuning_precedence_config_wins(upstream, gateway, http) -> None:
    """Kong's case: request {256, 0.1, 0.2} + options {1024, top_p 0.5} → {1024, 0.1, 0.5}."""
    up = await upstream("ollama")
    t = target(up, "/api/chat", options={"max_tokens": 1024, "top_p": 0.5})
    gw = await gateway(route(t))
    body = {"messages": CHAT, "max_tokens": 256, "temperature": 0.1, "top_p": 0.2}
    status, _, _ = await post_json(http, url(gw), body)
    assert status == 200
    assert up.generation_requests()[0].json["options"] == {
        "num_predict": 1024,
        "temperature": 0.1,
        "top_p": 0.5,
    }


async def test_header_auth_replaces_client_value(upstream, gateway, http) -> None:
    up = await upstream("ollama")
    auth = {"header_name": "Authorization", "header_value": "Bearer ours"}
    gw = await gateway(route(target(up, "/api/chat", auth=auth)))
    await post_json(
        http,
        url(gw),
        {"messages": CHAT},
        headers={"Authorization": "Bearer theirs", "X-Trace": "1"},
    )
    rec = up.generation_requests()[0]
    assert rec.headers["Authorization"] == "Bearer ours"
    assert rec.headers["X-Trace"] == "1", "other client headers are forwarded"
    assert rec.headers.get("Accept-Encoding") == "identity"


async def test_header_auth_allow_override_keeps_client_value(upstream, gateway, http) -> None:
    up = await upstream("ollama")
    auth = {"header_name": "Authorization", "header_value": "Bearer ours", "allow_override": True}
    gw = await gateway(route(target(up, "/api/chat", auth=auth)))
    await post_json(http, url(gw), {"messages": CHAT}, headers={"Authorization": "Bearer theirs"})
    await post_json(http, url(gw), {"messages": CHAT})
    first, second = up.generation_requests()
    assert first.headers["Authorization"] == "Bearer theirs"
    assert second.headers["Authorization"] == "Bearer ours"


async def test_query_param_auth(upstream, gateway, http) -> None:
    up = await upstream("ollama")
    auth = {"param_name": "key", "param_value": "k1", "param_location": "query"}
    gw = await gateway(route(target(up, "/api/chat", auth=auth)))
    await post_json(http, url(gw) + "?key=client&x=1", {"messages": CHAT})
    assert up.generation_requests()[0].query == {"key": "k1", "x": "1"}


async def test_body_param_auth_reaches_ollama(upstream, gateway, http) -> None:
    """Kong loses body auth params for raw/ollama; we inject them into the upstream body."""
    up = await upstream("ollama")
    auth = {"param_name": "api_key", "param_value": "k1", "param_location": "body"}
    gw = await gateway(route(target(up, "/api/chat", auth=auth)))
    await post_json(http, url(gw), {"messages": CHAT, "api_key": "client"})
    assert up.generation_requests()[0].json["api_key"] == "k1"


async def test_model_selects_target_and_alias(upstream, gateway, http) -> None:
    a = await upstream("ollama", models=("llama2",))
    b = await upstream("ollama", models=("mistral",))
    gw = await gateway(
        route(
            target(a, "/api/chat", name="llama2"),
            target(b, "/api/chat", name="mistral", model={"model_alias": "fast"}),
        )
    )
    for _ in range(3):
        status, _, headers = await post_json(http, url(gw), {"model": "mistral", "messages": CHAT})
        assert status == 200 and headers["X-Kong-LLM-Model"] == "llama2/mistral"
    status, _, headers = await post_json(http, url(gw), {"model": "fast", "messages": CHAT})
    assert status == 200 and headers["X-Gateway-Target"] == f"mistral@127.0.0.1:{b.port}"
    assert len(a.generation_requests()) == 0 and len(b.generation_requests()) == 4
    # No model: every named target is a candidate (round-robin spreads them).
    for _ in range(4):
        await post_json(http, url(gw), {"messages": CHAT})
    assert len(a.generation_requests()) == 2 and len(b.generation_requests()) == 6


async def test_round_robin_spreads_by_weight(upstream, gateway, http) -> None:
    a = await upstream("ollama")
    b = await upstream("ollama")
    gw = await gateway(route(target(a, "/api/chat", weight=3), target(b, "/api/chat", weight=1)))
    for _ in range(8):
        status, _, _ = await post_json(http, url(gw), {"messages": CHAT})
        assert status == 200
    assert (len(a.generation_requests()), len(b.generation_requests())) == (6, 2)


async def test_failover_to_another_format_on_connect_error(upstream, gateway, http) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    good = await upstream("openai")
    gw = await gateway(
        route(
            target(f"http://127.0.0.1:{dead}/api/chat", "", weight=100),
            target(good, "/v1/chat/completions", fmt="openai", weight=1),
        )
    )
    status, data, headers = await post_json(http, url(gw), {"messages": CHAT})
    assert status == 200, data
    assert headers["X-Gateway-Attempts"] == "2"
    assert headers["X-Gateway-Target"] == f"llama2@127.0.0.1:{good.port}"


async def test_failover_on_listed_status_then_passthrough_when_exhausted(
    upstream, gateway, http
) -> None:
    from gateway.sim import Behaviour

    bad = await upstream("ollama", behaviour=Behaviour(status=503))
    good = await upstream("ollama")
    gw = await gateway(
        route(
            target(bad, "/api/chat", weight=100),
            target(good, "/api/chat", weight=1),
            balancer={"failover_criteria": ["error", "timeout", "http_503"]},
        )
    )
    status, _, headers = await post_json(http, url(gw), {"messages": CHAT})
    assert status == 200 and headers["X-Gateway-Attempts"] == "2"
    good.behaviour.status = 503
    status, data, headers = await post_json(http, url(gw), {"messages": CHAT})
    assert status == 503 and "error" in data, "the last upstream answer is what the client gets"
    # Not in failover_criteria → passed through at once.
    gw2 = await gateway(
        route(target(bad, "/api/chat"), target(good, "/api/chat"), path="/x", name="x")
    )
    status, _, headers = await post_json(http, url(gw2, "/x"), {"messages": CHAT})
    assert status == 503 and headers["X-Gateway-Attempts"] == "1"


async def test_hop_by_hop_headers_are_not_forwarded(upstream, gateway, http) -> None:
    up = await upstream("ollama")
    gw = await gateway(route(target(up, "/api/chat")))
    headers = {"Proxy-Secret": "p", "Connection": "x-hop", "X-Hop": "h", "X-Keep": "k"}
    await post_json(http, url(gw), {"messages": CHAT}, headers=headers)
    rec = up.generation_requests()[0]
    assert "Proxy-Secret" not in rec.headers and "X-Hop" not in rec.headers
    assert rec.headers["X-Keep"] == "k"


async def raw_post(port: int, path: str, fields: list[bytes], body: bytes) -> bytes:
    """One request with exactly these header lines (aiohttp's client would merge or
    rewrite some); returns the whole response (the gateway is asked to close)."""
    import asyncio

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = b"POST " + path.encode() + b" HTTP/1.1\r\nHost: gw\r\n" + b"".join(fields)
    writer.write(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
    try:
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


async def test_connection_named_headers_dropped_over_all_connection_fields(
    upstream, gateway, http
) -> None:
    """Every Connection field line counts (RFC 9110 §7.6.1), not just one of them."""
    up = await upstream("ollama")
    gw = await gateway(route(target(up, "/api/chat")))
    fields = [
        b"Connection: x-secret\r\n",
        b"Connection: close\r\n",
        b"X-Secret: s3cr3t\r\n",
        b"X-Keep: k\r\n",
        b"Content-Type: application/json\r\n",
    ]
    answer = await raw_post(gw.port, "/chat", fields, json.dumps({"messages": CHAT}).encode())
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    rec = up.generation_requests()[0]
    assert "X-Secret" not in rec.headers and rec.headers["X-Keep"] == "k"


async def test_compressed_request_body_is_refused(upstream, gateway, http) -> None:
    """A gzip request body is never inflated (a small one can inflate to gigabytes): 415
    before the body is read, and nothing reaches the upstream (more in
    tests/test_client_limits.py)."""
    import gzip

    up = await upstream("ollama")
    gw = await gateway(route(target(up, "/api/chat")))
    body = gzip.compress(json.dumps({"messages": CHAT}).encode())
    fields = [
        b"Content-Type: application/json\r\n",
        b"Content-Encoding: gzip\r\n",
        b"Content-Digest: sha-256=:AAAA:\r\n",
        b"Connection: close\r\n",
    ]
    answer = await raw_post(gw.port, "/chat", fields, body)
    assert answer.startswith(b"HTTP/1.1 415"), answer[:200]
    assert b"unsupported content encoding: gzip" in answer
    assert up.generation_requests() == []


async def test_repeated_headers_and_query_params_are_all_forwarded(upstream, gateway, http) -> None:
    from multidict import CIMultiDict

    up = await upstream("ollama")
    gw = await gateway(route(target(up, "/api/chat")))
    headers = CIMultiDict([("X-Tag", "a"), ("X-Tag", "b")])
    await post_json(http, url(gw) + "?tag=1&tag=2", {"messages": CHAT}, headers=headers)
    rec = up.generation_requests()[0]
    assert rec.headers.getall("X-Tag") == ["a", "b"]  # type: ignore[attr-defined]
    from multidict import MultiDict

    t = gw.router.routes[0].targets[0]
    assert str(t.request.upstream_url(MultiDict([("tag", "1"), ("tag", "2")]))).endswith(
        "/api/chat?tag=1&tag=2"
    )
