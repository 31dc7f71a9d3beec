"""The simulated upstreams speak their real servers' wire formats (SPEC §8) over real
sockets, and their fault knobs do what the rest of the suite relies on."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from gateway.sim import Behaviour, FakeUpstream

Make = Callable[..., Awaitable[FakeUpstream]]
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi now"}]


@pytest.fixture
async def make() -> AsyncIterator[Make]:
    started: list[FakeUpstream] = []

    async def _make(kind: str, **kwargs: Any) -> FakeUpstream:
        up = FakeUpstream(kind, **kwargs)  # type: ignore[arg-type]
        await up.start()
        started.append(up)
        return up

    yield _make
    for up in started:
        await up.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def ndjson(raw: bytes) -> list[dict[str, Any]]:
    assert raw.endswith(b"\n")
    return [json.loads(line) for line in raw.splitlines() if line.strip()]


def sse_data(raw: bytes) -> list[bytes]:
    """`data` payloads of the complete events in `raw` ("data:" with or without space)."""
    out = []
    for event in raw.split(b"\n\n"):
        if event.startswith(b"data:"):
            out.append(event[5:].removeprefix(b" "))
    return out


async def post(
    session: aiohttp.ClientSession, up: FakeUpstream, path: str, body: Any, **kw: Any
) -> tuple[int, str, bytes]:
    async with session.post(up.url(path), json=body, **kw) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), await resp.read()


# -- shared token model ---------------------------------------------------------------


def test_expected_text_and_prompt_counting() -> None:
    up = FakeUpstream("openai", text="one two three")
    assert up.expected_text(0) == ""
    assert up.expected_text(2) == "one two"
    assert up.expected_text(5) == "one two three one two"
    assert FakeUpstream("ollama").expected_text(3) == "The quick brown"
    # chat: words + 4 per message; prompt-style: words + 1 (BOS), 0 when empty
    assert FakeUpstream.count_prompt_tokens({"messages": CHAT}) == (2 + 4) + (3 + 4)
    assert up.count_prompt_tokens({"prompt": "a b c"}) == 4
    assert up.count_prompt_tokens(b'{"inputs": "a b"}') == 3
    assert up.count_prompt_tokens({"prompt": ""}) == 0


# -- Ollama ---------------------------------------------------------------------------


async def test_ollama_chat_non_stream(make: Make, session: aiohttp.ClientSession) -> None:
    up = await make("ollama")
    body = {"model": "llama2", "messages": CHAT, "stream": False}
    status, ctype, raw = await post(session, up, "/api/chat", body)
    assert status == 200 and ctype.startswith("application/json")
    doc = json.loads(raw)
    assert doc["message"] == {"role": "assistant", "content": up.expected_text(8)}
    assert doc["done"] is True and doc["done_reason"] == "stop"
    assert doc["prompt_eval_count"] == up.count_prompt_tokens(body)
    assert doc["eval_count"] == 8
    assert doc["created_at"].endswith("Z") and "T" in doc["created_at"]
    for key in ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration"):
        assert isinstance(doc[key], int) and doc[key] > 0


async def test_ollama_streams_by_default(make: Make, session: aiohttp.ClientSession) -> None:
    up = await make("ollama", behaviour=Behaviour(n_tokens=5))
    body = {"model": "llama2", "messages": CHAT, "options": {"num_predict": 3}}
    status, ctype, raw = await post(session, up, "/api/chat", body)
    assert status == 200 and ctype == "application/x-ndjson"
    lines = ndjson(raw)
    assert len(lines) == 4
    assert all(ln["done"] is False and ln["message"]["role"] == "assistant" for ln in lines[:3])
    assert "".join(ln["message"]["content"] for ln in lines) == up.expected_text(3)
    final = lines[-1]
    assert final["done"] is True and final["done_reason"] == "length"
    assert final["message"] == {"role": "assistant", "content": ""}
    assert final["eval_count"] == 3


async def test_ollama_generate_stream_and_zero_counters_omitted(
    make: Make, session: aiohttp.ClientSession
) -> None:
    up = await make("ollama", behaviour=Behaviour(n_tokens=0))
    body = {"model": "llama2", "prompt": "Why is the sky blue?", "stream": True}
    _, _, raw = await post(session, up, "/api/generate", body)
    (final,) = ndjson(raw)
    assert final["done"] is True and final["response"] == "" and final["done_reason"] == "stop"
    assert "eval_count" not in final and "eval_duration" not in final
    assert final["prompt_eval_count"] == 6
    assert isinstance(final["context"], list)

    up.behaviour.n_tokens = 2
    _, _, raw = await post(session, up, "/api/generate", body)
    lines = ndjson(raw)
    assert [ln["response"] for ln in lines] == ["The", " quick", ""]
    assert lines[-1]["eval_count"] == 2


async def test_ollama_errors(make: Make, session: aiohttp.ClientSession) -> None:
    up = await make("ollama", models=["llama2", "mistral:7b"])
    status, _, raw = await post(session, up, "/api/chat", {"model": "x", "messages": CHAT})
    assert (status, json.loads(raw)) == (404, {"error": "model 'x' not found"})
    status, _, raw = await post(session, up, "/api/chat", {"messages": CHAT})
    assert (status, json.loads(raw)) == (400, {"error": "model is required"})
    async with session.post(up.url("/api/chat"), data=b"{nope") as resp:
        assert resp.status == 400 and "error" in await resp.json()
    # bare names resolve to :latest, explicit tags must match
    assert (
        await post(
            session, up, "/api/chat", {"model": "llama2:latest", "messages": CHAT, "stream": False}
        )
    )[0] == 200
    assert (
        await post(
            session, up, "/api/chat", {"model": "mistral:7b", "messages": CHAT, "stream": False}
        )
    )[0] == 200
    up.behaviour.status = 503
    status, _, raw = await post(session, up, "/api/chat", {"model": "llama2", "messages": CHAT})
    assert status == 503
    assert json.loads(raw)["error"].startswith("server busy, please try again.")


async def test_ollama_info_endpoints(make: Make, session: aiohttp.ClientSession) -> None:
    up = await make("ollama")
    async with session.get(up.url("/")) as resp:
        assert resp.status == 200 and await resp.text() == "Ollama is running"
    async with session.get(up.url("/api/tags")) as resp:
        assert (await resp.json())["models"][0]["name"] == "llama2:latest"
    async with session.get(up.url("/api/version")) as resp:
        assert "version" in await resp.json()
    async with session.get(up.url("/api/ps")) as resp:
        assert "models" in await resp.json()
    status, _, raw = await post(session, up, "/api/chat", {"model": "llama2", "messages": []})
    assert status == 200 and json.loads(raw)["done_reason"] == "load"
    assert [r.method for r in up.received] == ["GET"] * 4 + ["POST"]
    assert len(up.generation_requests()) == 1


async def test_split_writes_give_partial_reads(make: Make, session: aiohttp.ClientSession) -> None:
    up = await make("ollama", behaviour=Behaviour(n_tokens=2, split_writes=True))
    body = {"model": "llama2", "messages": CHAT}
    chunks = []
    async with session.post(up.url("/api/chat"), json=body) as resp:
        while chunk := await resp.content.readany():
            chunks.append(chunk)
    assert any(not c.endswith(b"\n") for c in chunks)
    lines = ndjson(b"".join(chunks))
    assert len(lines) == 3 and lines[-1]["done"] is True


async def test_die_after_aborts_mid_stream(make: Make, session: aiohttp.ClientSession) -> None:
    up = await make("ollama", behaviour=Behaviour(die_after=2))
    got = b""
    with pytest.raises(aiohttp.ClientError):
        async with session.post(
            up.url("/api/chat"), json={"model": "llama2", "messages": CHAT}
        ) as resp:
            assert resp.status == 200
            while chunk := await resp.content.readany():
                got += chunk
    assert [ln["done"] for ln in ndjson(got)] == [False, False]
    assert up.cancelled == 0  # the server hung up, not the client


async def test_ollama_error_after(make: Make, session: aiohttp.ClientSession) -> None:
    up = await make("ollama", behaviour=Behaviour(error_after=1))
    _, _, raw = await post(session, up, "/api/chat", {"model": "llama2", "messages": CHAT})
    first, err = ndjson(raw)
    assert first["done"] is False
    assert set(err) == {"error"}


async def test_client_disconnect_is_counted(make: Make, session: aiohttp.ClientSession) -> None:
    up = await make("ollama", behaviour=Behaviour(stall_after=1))
    resp = await session.post(up.url("/api/chat"), json={"model": "llama2", "messages": CHAT})
    assert (await resp.content.readline()).startswith(b"{")
    assert up.active_streams == 1
    resp.close()
    await asyncio.wait_for(up.stream_cancelled.wait(), 2)
    assert up.cancelled == 1
    for _ in range(50):
        if up.active_streams == 0:
            break
        await asyncio.sleep(0.01)
    assert up.active_streams == 0


async def test_drop_connection_delay_and_status_overrides(
    make: Make, session: aiohttp.ClientSession
) -> None:
    up = await make("ollama", behaviour=Behaviour(drop_connection=True))
    body = {"model": "llama2", "messages": CHAT, "stream": False}
    with pytest.raises(aiohttp.ClientError):
        await post(session, up, "/api/chat", body)
    assert len(up.received) == 1  # recorded before the hang-up
    async with session.get(up.url("/")) as resp:  # probes are not affected
        assert resp.status == 200
    up.behaviour = Behaviour(delay=0.01, status=500, error_body=b'{"error":"custom"}')
    status, _, raw = await post(session, up, "/api/chat", body)
    assert (status, raw) == (500, b'{"error":"custom"}')
    up.behaviour.error_body = None
    status, _, raw = await post(session, up, "/api/chat", body)
    assert status == 500 and "error" in json.loads(raw)


# -- llama.cpp ------------------------------------------------------------------------


async def test_llamacpp_completion(make: Make, session: aiohttp.ClientSession) -> None:
    up = await make("llamacpp")
    body = {"prompt": "[INST] Say hi [/INST]", "n_predict": 3, "cache_prompt": True}
    status, _, raw = await post(session, up, "/completion", body)
    assert status == 200
    doc = json.loads(raw)
    assert doc["content"] == up.expected_text(3) and doc["stop"] is True
    assert doc["stop_type"] == "limit" and doc["stopping_word"] == ""
    assert doc["tokens_predicted"] == 3 and doc["tokens_evaluated"] == 5
    assert doc["timings"]["predicted_n"] == 3 and doc["timings"]["prompt_n"] == 5
    assert doc["id_slot"] == 0 and doc["truncated"] is False
    _, _, raw = await post(session, up, "/completion", {"prompt": "hi", "stop": [" brown"]})
    doc = json.loads(raw)
    assert (doc["content"], doc["stop_type"], doc["stopping_word"]) == (
        "The quick",
        "word",
        " brown",
    )
    _, _, raw = await post(session, up, "/completion", {"prompt": "hi"})
    assert json.loads(raw)["stop_type"] == "eos"


async def test_llamacpp_stream_and_error_after(make: Make, session: aiohttp.ClientSession) -> None:
    up = await make("llamacpp", behaviour=Behaviour(n_tokens=3))
    status, ctype, raw = await post(session, up, "/completion", {"prompt": "hi", "stream": True})
    assert status == 200 and ctype.startswith("text/event-stream")
    assert raw.startswith(b"data: {") and b"[DONE]" not in raw
    events = [json.loads(e) for e in sse_data(raw)]
    assert [e["stop"] for e in events] == [False, False, False, True]
    assert "".join(e["content"] for e in events) == up.expected_text(3)
    assert events[-1]["stop_type"] == "eos" and events[-1]["tokens_predicted"] == 3

    up.behaviour.error_after = 1
    _, _, raw = await post(session, up, "/completion", {"prompt": "hi", "stream": True})
    first, err = (json.loads(e) for e in sse_data(raw))
    assert first["content"] == "The"
    assert err["error"]["code"] == 500 and err["error"]["type"] == "server_error"


async def test_llamacpp_loading(make: Make, session: aiohttp.ClientSession) -> None:
    up = await make("llamacpp", behaviour=Behaviour(loading=True))
    loading = {"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}}
    async with session.get(up.url("/health")) as resp:
        assert resp.status == 503 and await resp.json() == loading
    status, _, raw = await post(session, up, "/completion", {"prompt": "hi"})
    assert (status, json.loads(raw)) == (503, loading)
    up.behaviour.loading = False
    async with session.get(up.url("/health")) as resp:
        assert resp.status == 200 and await resp.json() == {"status": "ok"}


async def test_llamacpp_slots_metrics_and_v1(make: Make, session: aiohttp.ClientSession) -> None:
    up = await make("llamacpp", behaviour=Behaviour(stall_after=1))
    resp = await session.post(up.url("/completion"), json={"prompt": "hi", "stream": True})
    await resp.content.readline()
    async with session.get(up.url("/slots")) as r:
        assert (await r.json())[0]["is_processing"] is True
    async with session.get(up.url("/metrics")) as r:
        assert "llamacpp:requests_processing 1" in await r.text()
    resp.close()
    await asyncio.wait_for(up.stream_cancelled.wait(), 2)

    up.behaviour = Behaviour(n_tokens=2)
    body = {"model": "anything", "messages": CHAT}
    status, _, raw = await post(session, up, "/v1/chat/completions", body)
    doc = json.loads(raw)
    assert status == 200 and doc["object"] == "chat.completion"
    assert doc["choices"][0]["message"]["content"] == "The quick"
    async with session.get(up.url("/slots")) as r:
        assert (await r.json())[0]["is_processing"] is False


# -- TGI ------------------------------------------------------------------------------


async def test_tgi_generate(make: Make, session: aiohttp.ClientSession) -> None:
    up = await make("tgi", behaviour=Behaviour(n_tokens=4))
    body: dict[str, Any] = {"inputs": "<s>[INST] hi [/INST]", "parameters": {"max_new_tokens": 2}}
    status, _, raw = await post(session, up, "/generate", body)
    assert (status, json.loads(raw)) == (200, {"generated_text": "The quick"})
    body["parameters"]["details"] = True
    doc = json.loads((await post(session, up, "/generate", body))[2])
    assert doc["details"]["finish_reason"] == "length"
    assert doc["details"]["generated_tokens"] == 2 and doc["details"]["seed"] is None
    doc = json.loads(
        (await post(session, up, "/generate", {"inputs": "hi", "parameters": {"details": True}}))[2]
    )
    assert doc["generated_text"] == up.expected_text(4)
    assert doc["details"]["finish_reason"] == "eos_token"
    assert doc["details"]["generated_tokens"] == 5  # the EOS token counts
    status, _, raw = await post(session, up, "/", {"inputs": "hi"})
    assert (status, json.loads(raw)) == (200, [{"generated_text": up.expected_text(4)}])


async def test_tgi_stream(make: Make, session: aiohttp.ClientSession) -> None:
    up = await make("tgi", behaviour=Behaviour(n_tokens=3))
    body = {"inputs": "hi", "parameters": {"max_new_tokens": 3}}
    status, ctype, raw = await post(session, up, "/generate_stream", body)
    assert status == 200 and ctype.startswith("text/event-stream")
    assert raw.startswith(b"data:{") and b"data: " not in raw and b"[DONE]" not in raw
    events = [json.loads(e) for e in sse_data(raw)]
    assert [e["token"]["text"] for e in events] == ["The", " quick", " brown"]
    assert [e["generated_text"] for e in events] == [None, None, "The quick brown"]
    assert events[-1]["details"] == {"finish_reason": "length", "generated_tokens": 3, "seed": None}
    # compat route streams only with top-level "stream": true; EOS arrives as a special token
    _, _, raw = await post(session, up, "/", {"inputs": "hi", "stream": True})
    events = [json.loads(e) for e in sse_data(raw)]
    assert events[-1]["token"]["special"] is True
    assert events[-1]["details"]["finish_reason"] == "eos_token"
    assert events[-1]["generated_text"] == "The quick brown"

    up.behaviour.error_after = 1
    _, _, raw = await post(session, up, "/generate_stream", body)
    err = json.loads(sse_data(raw)[-1])
    assert err["error_type"] == "generation" and "error" in err


async def test_tgi_errors_and_probes(make: Make, session: aiohttp.ClientSession) -> None:
    up = await make("tgi")
    async with session.get(up.url("/health")) as resp:
        assert resp.status == 200 and await resp.read() == b""
    async with session.get(up.url("/info")) as resp:
        assert (await resp.json())["model_id"] == "llama2"
    status, _, raw = await post(session, up, "/generate", {"inputs": ""})
    assert status == 422 and json.loads(raw)["error_type"] == "validation"
    up.behaviour.status = 429
    status, _, raw = await post(session, up, "/generate", {"inputs": "hi"})
    assert (status, json.loads(raw)) == (
        429,
        {"error": "Model is overloaded", "error_type": "overloaded"},
    )
    up.behaviour.status = 503
    status, _, raw = await post(session, up, "/generate", {"inputs": "hi"})
    assert (status, json.loads(raw)) == (
        503,
        {"error": "Model llama2 is currently loading", "estimated_time": 20.0},
    )


# -- OpenAI ---------------------------------------------------------------------------


async def test_openai_non_stream(make: Make, session: aiohttp.ClientSession) -> None:
    up = await make("openai", models=["gpt-4o"])
    body = {"model": "gpt-4o", "messages": CHAT, "max_tokens": 3}
    status, _, raw = await post(session, up, "/v1/chat/completions", body)
    doc = json.loads(raw)
    assert status == 200 and doc["object"] == "chat.completion"
    assert doc["id"].startswith("chatcmpl-") and isinstance(doc["created"], int)
    assert doc["choices"] == [
        {
            "index": 0,
            "logprobs": None,
            "finish_reason": "length",
            "message": {"role": "assistant", "content": "The quick brown"},
        }
    ]
    p = up.count_prompt_tokens(body)
    assert doc["usage"] == {"prompt_tokens": p, "completion_tokens": 3, "total_tokens": p + 3}
    body = {"model": "gpt-4o", "prompt": "Once", "max_completion_tokens": 20, "stop": "fox"}
    doc = json.loads((await post(session, up, "/v1/completions", body))[2])
    assert doc["object"] == "text_completion" and doc["id"].startswith("cmpl-")
    assert doc["choices"][0]["text"] == "The quick brown "
    assert doc["choices"][0]["finish_reason"] == "stop"


async def test_openai_stream(make: Make, session: aiohttp.ClientSession) -> None:
    up = await make("openai", behaviour=Behaviour(n_tokens=2))
    body: dict[str, Any] = {"model": "llama2", "messages": CHAT, "stream": True}
    status, ctype, raw = await post(session, up, "/v1/chat/completions", body)
    assert status == 200 and ctype.startswith("text/event-stream")
    data = sse_data(raw)
    assert data[-1] == b"[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [c["choices"][0]["delta"] for c in chunks[1:]] == [
        {"content": "The"},
        {"content": " quick"},
        {},
    ]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all(c["object"] == "chat.completion.chunk" and "usage" not in c for c in chunks)

    body["stream_options"] = {"include_usage": True}
    chunks = [
        json.loads(d)
        for d in sse_data((await post(session, up, "/v1/chat/completions", body))[2])[:-1]
    ]
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == []
    p = up.count_prompt_tokens(body)
    assert chunks[-1]["usage"] == {
        "prompt_tokens": p,
        "completion_tokens": 2,
        "total_tokens": p + 2,
    }

    up.behaviour.error_after = 1
    data = sse_data((await post(session, up, "/v1/chat/completions", body))[2])
    assert b"[DONE]" not in data
    assert json.loads(data[-1])["error"]["type"] == "server_error"


async def test_openai_errors_and_models(make: Make, session: aiohttp.ClientSession) -> None:
    up = await make("openai")
    status, _, raw = await post(
        session, up, "/v1/chat/completions", {"model": "x", "messages": CHAT}
    )
    assert status == 404
    assert json.loads(raw) == {
        "error": {
            "message": "The model `x` does not exist",
            "type": "invalid_request_error",
            "param": None,
            "code": "model_not_found",
        }
    }
    status, _, raw = await post(session, up, "/v1/chat/completions", {"model": "llama2"})
    assert status == 400 and json.loads(raw)["error"]["type"] == "invalid_request_error"
    async with session.get(up.url("/v1/models")) as resp:
        doc = await resp.json()
    assert doc["object"] == "list" and doc["data"][0]["id"] == "llama2"
    assert doc["data"][0]["object"] == "model"


async def test_api_key(make: Make, session: aiohttp.ClientSession) -> None:
    up = await make("openai", api_key="sk-test")
    body = {"model": "llama2", "messages": CHAT}
    status, _, raw = await post(session, up, "/v1/chat/completions", body)
    assert status == 401 and json.loads(raw)["error"]["code"] == "invalid_api_key"
    auth = {"Authorization": "Bearer sk-test"}
    assert (await post(session, up, "/v1/chat/completions", body, headers=auth))[0] == 200
    assert up.received[-1].headers["authorization"] == "Bearer sk-test"
    assert up.received[-1].json == body

    ollama = await make("ollama", api_key="k")
    status, _, raw = await post(session, ollama, "/api/chat", {"model": "llama2"})
    assert (status, json.loads(raw)) == (401, {"error": "unauthorized"})
    llamacpp = await make("llamacpp", api_key="k")
    async with session.get(llamacpp.url("/health")) as resp:
        assert resp.status == 200  # llama-server keeps /health public
