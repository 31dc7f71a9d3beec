"""The simulated upstreams speak their real servers' wire formats over real
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
    # One connection per request: the llama.cpp fake, like llama-server, drops the
    # connection after a stream, and a request sent at once may find it dead.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
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
    await asyncio.wait_for(up.stream_cancelled.wait(), 10)
    assert up.cancelled == 1
    await until(lambda: up.active_streams == 0, "the stream slot was released")


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
    # Three word tokens, then the EOS token: decoded, streamed without text, counted.
    assert [e["stop"] for e in events] == [False, False, False, False, True]
    assert "".join(e["content"] for e in events) == up.expected_text(3)
    assert events[-2]["content"] == "" and events[-2]["tokens"] == [2]
    assert all(e["id_slot"] == -1 and len(e["tokens"]) == 1 for e in events[:-1])
    assert [e["tokens_predicted"] for e in events[:-1]] == [1, 2, 3, 4]
    assert events[-1]["stop_type"] == "eos" and events[-1]["tokens_predicted"] == 4
    assert events[-1]["id_slot"] == 0 and events[-1]["tokens"] == []

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
    await asyncio.wait_for(up.stream_cancelled.wait(), 10)

    up.behaviour = Behaviour(n_tokens=2)
    body = {"model": "anything", "messages": CHAT}
    status, _, raw = await post(session, up, "/v1/chat/completions", body)
    doc = json.loads(raw)
    assert status == 200 and doc["object"] == "chat.completion"
    assert doc["choices"][0]["message"]["content"] == "The quick"
    async with session.get(up.url("/slots")) as r:
        assert (await r.json())[0]["is_processing"] is False


async def test_llamacpp_stop_string_token_is_counted(
    make: Make, session: aiohttp.ClientSession
) -> None:
    """The token that completes a stop string is generated, streamed without its text
    (with the timings) and counted; text that may start a stop string waits for the
    next token, and is lost from a stream if the length limit comes first."""
    up = await make("llamacpp")
    body: dict[str, Any] = {"prompt": "hi", "stop": [" brown"]}
    doc = json.loads((await post(session, up, "/completion", body))[2])
    assert (doc["content"], doc["tokens_predicted"]) == ("The quick", 3)
    assert doc["timings"]["predicted_n"] == 3 and doc["tokens_cached"] == 2 + 3 - 1
    events = [
        json.loads(e)
        for e in sse_data((await post(session, up, "/completion", {**body, "stream": True}))[2])
    ]
    assert [e["content"] for e in events] == ["The", " quick", "", ""]
    assert [e["tokens_predicted"] for e in events] == [1, 2, 3, 3]
    assert ["timings" in e for e in events] == [False, False, True, True]

    body["stop"] = [" brown fox"]  # " brown" waits: it may be the start of the stop string
    _, _, raw = await post(session, up, "/completion", {**body, "stream": True})
    events = [json.loads(e) for e in sse_data(raw)]
    assert [e["content"] for e in events] == ["The", " quick", "", "", ""]
    assert events[-1]["tokens_predicted"] == 4 and events[-1]["stopping_word"] == " brown fox"
    body["n_predict"] = 3  # the limit comes while " brown" waits
    doc = json.loads((await post(session, up, "/completion", body))[2])
    assert (doc["content"], doc["stop_type"]) == ("The quick brown", "limit")
    _, _, raw = await post(session, up, "/completion", {**body, "stream": True})
    assert "".join(json.loads(e)["content"] for e in sse_data(raw)) == "The quick"

    async with session.get(up.url("/metrics")) as r:
        assert "llamacpp:tokens_predicted_total 16" in await r.text()  # 3+3+4+3+3


async def test_llamacpp_closes_after_streams_and_errors(make: Make) -> None:
    """llama-server drops the connection after a streamed answer although its headers
    say Keep-Alive, and answers errors with `Connection: close`."""
    up = await make("llamacpp", behaviour=Behaviour(n_tokens=2))

    async def exchange(path: str, body: bytes) -> bytes:
        """Everything the server sends on one connection until it closes it."""
        reader, writer = await asyncio.open_connection(up.host, up.port)
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        try:
            return await asyncio.wait_for(reader.read(), 10)
        finally:
            writer.close()

    for path, body in [
        ("/completion", {"prompt": "hi", "stream": True}),
        ("/v1/chat/completions", {"messages": CHAT, "stream": True}),
        ("/v1/completions", {"prompt": "hi", "stream": True}),
    ]:
        raw = await exchange(path, json.dumps(body).encode())
        head = raw.split(b"\r\n\r\n", 1)[0].lower()
        assert head.startswith(b"http/1.1 200") and b"keep-alive: timeout=5, max=100" in head
        assert b"connection:" not in head and raw.endswith(b"0\r\n\r\n")
    for path, body in [("/completion", b"{}"), ("/v1/chat/completions", b"{bad")]:
        head = (await exchange(path, body)).split(b"\r\n\r\n", 1)[0].lower()
        assert head.startswith(b"http/1.1 400") and b"connection: close" in head


async def test_llamacpp_request_errors(make: Make, session: aiohttp.ClientSession) -> None:
    up = await make("llamacpp")

    async def error(path: str, **kw: Any) -> tuple[int, str]:
        async with session.post(up.url(path), **kw) as resp:
            doc = await resp.json()
        assert doc["error"]["code"] == resp.status
        assert doc["error"]["type"] == "invalid_request_error"
        return resp.status, doc["error"]["message"]

    assert await error("/completion", data=b"not json") == (
        400,
        "[json.exception.parse_error.101] parse error at line 1, column 2: "
        "syntax error while parsing value - invalid literal; last read: 'no'",
    )
    status, message = await error("/completion", data=b"")
    assert status == 400 and "attempting to parse an empty input" in message
    assert await error("/completion", json=[1]) == (
        400,
        "[json.exception.type_error.304] cannot use at() with array",
    )
    assert await error("/completion", json={"n_predict": 3}) == (
        400,
        "[json.exception.out_of_range.403] key 'prompt' not found",
    )
    status, message = await error("/completion", json={"prompt": None})
    assert status == 400 and message.startswith('"prompt" elements must be a string')
    assert await error("/v1/completions", json={"model": "x"}) == (
        400,
        "[json.exception.out_of_range.403] key 'prompt' not found",
    )
    assert await error("/v1/chat/completions", json={"model": "x"}) == (
        400,
        "'messages' is required",
    )
    assert await error("/v1/chat/completions", json={"messages": "hi"}) == (
        400,
        "Expected 'messages' to be an array",
    )


async def test_llamacpp_slots_before_and_after_use(
    make: Make, session: aiohttp.ClientSession
) -> None:
    up = await make("llamacpp", behaviour=Behaviour(n_tokens=2))
    async with session.get(up.url("/slots")) as r:
        assert await r.json() == [
            {"id": 0, "n_ctx": 4096, "speculative": False, "is_processing": False}
        ]
    await post(session, up, "/completion", {"prompt": "hi", "n_predict": 5})
    async with session.get(up.url("/slots")) as r:
        (slot,) = await r.json()
    assert "prompt" not in slot and slot["is_processing"] is False
    assert slot["id_task"] == 1 and slot["n_prompt_tokens"] == 2
    assert slot["params"]["n_predict"] == 5
    assert slot["next_token"] == [
        {"has_next_token": False, "has_new_line": False, "n_remain": -1, "n_decoded": 0}
    ]


async def test_llamacpp_v1_shapes(make: Make, session: aiohttp.ClientSession) -> None:
    """llama-server's OpenAI layer: its own model name, no logprobs on chat choices, a
    build fingerprint, usage with cache details and timings, no `"usage": null`."""
    up = await make("llamacpp", models=["/models/tiny.gguf"], behaviour=Behaviour(n_tokens=2))
    body: dict[str, Any] = {"model": "gpt-4o", "messages": CHAT, "stop": [" quick"]}
    doc = json.loads((await post(session, up, "/v1/chat/completions", body))[2])
    assert doc["model"] == "/models/tiny.gguf" and doc["system_fingerprint"] == "b0-unknown"
    assert doc["id"].startswith("chatcmpl-") and len(doc["id"]) == 9 + 32
    assert doc["choices"] == [
        {"index": 0, "message": {"role": "assistant", "content": "The"}, "finish_reason": "stop"}
    ]
    p = up.count_prompt_tokens(body)
    assert doc["usage"] == {
        "prompt_tokens": p,
        "completion_tokens": 2,  # " quick" was generated, then cut
        "total_tokens": p + 2,
        "prompt_tokens_details": {"cached_tokens": 0},
    }
    assert doc["timings"]["predicted_n"] == 2

    body = {"messages": CHAT, "stream": True, "stream_options": {"include_usage": True}}
    status, ctype, raw = await post(session, up, "/v1/chat/completions", body)
    assert status == 200 and ctype == "text/event-stream"
    data = sse_data(raw)
    assert data[-1] == b"[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert [c["choices"][0] if c["choices"] else None for c in chunks] == [
        {"index": 0, "delta": {"role": "assistant", "content": None}, "finish_reason": None},
        {"index": 0, "delta": {"content": "The"}, "finish_reason": None},
        {"index": 0, "delta": {"content": " quick"}, "finish_reason": None},
        {"index": 0, "delta": {}, "finish_reason": "stop"},
        None,
    ]
    assert all("usage" not in c and "timings" not in c for c in chunks[:-1])
    assert chunks[-1]["usage"]["completion_tokens"] == 3  # two words and the EOS token
    assert chunks[-1]["timings"]["predicted_n"] == 3
    assert {c["model"] for c in chunks} == {"/models/tiny.gguf"}

    body = {"prompt": "hi", "max_tokens": 2, "stream": True}
    data = sse_data((await post(session, up, "/v1/completions", body))[2])
    chunks = [json.loads(d) for d in data[:-1]]
    assert all(c["id"].startswith("chatcmpl-") for c in chunks)
    assert [c["choices"][0]["text"] for c in chunks] == ["The", " quick", ""]
    assert all(c["choices"][0]["logprobs"] is None for c in chunks)
    assert chunks[-1]["usage"]["completion_tokens"] == 2 and "timings" in chunks[-1]


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
            "message": {"role": "assistant", "content": "The quick brown", "refusal": None},
        }
    ]
    p = up.count_prompt_tokens(body)
    assert doc["usage"] == {"prompt_tokens": p, "completion_tokens": 3, "total_tokens": p + 3}
    body = {"model": "gpt-4o", "prompt": "Once", "max_completion_tokens": 20, "stop": "fox"}
    doc = json.loads((await post(session, up, "/v1/completions", body))[2])
    assert doc["object"] == "text_completion" and doc["id"].startswith("cmpl-")
    assert doc["choices"][0]["text"] == "The quick brown "
    assert doc["choices"][0]["finish_reason"] == "stop"
    body = {"model": "gpt-4o", "messages": CHAT, "stop": [" brown"]}
    doc = json.loads((await post(session, up, "/v1/chat/completions", body))[2])
    assert doc["choices"][0]["message"]["content"] == "The quick"
    assert doc["usage"]["completion_tokens"] == 3  # " brown" was generated, then cut


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


# -- slots, queue, kill ---------------------------------------------------------------


async def until(cond: Callable[[], bool], what: str) -> None:
    """Wait for a state of the fake, polling: bounded in count and time (5 s)."""
    for _ in range(1000):
        if cond():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"never happened: {what}")


async def slot_view(session: aiohttp.ClientSession, up: FakeUpstream) -> list[bool]:
    async with session.get(up.url("/slots")) as r:
        slots = await r.json()
    assert [s["id"] for s in slots] == list(range(len(slots)))
    return [s["is_processing"] for s in slots]


async def gauges(session: aiohttp.ClientSession, up: FakeUpstream) -> tuple[int, int]:
    """llama.cpp's (requests_processing, requests_deferred)."""
    async with session.get(up.url("/metrics")) as r:
        text = await r.text()
    values = dict(line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))
    return int(values["llamacpp:requests_processing"]), int(values["llamacpp:requests_deferred"])


async def test_slot_pool_hands_a_slot_on_when_its_waiter_leaves() -> None:
    from gateway.sim.base import SlotPool

    pool = SlotPool(1)
    first = await pool.acquire()
    waiter = asyncio.create_task(pool.acquire())
    await until(lambda: pool.waiting == 1, "the second acquire queues")
    pool.release(first)  # hands slot 0 to the waiter ...
    waiter.cancel()  # ... which leaves before it runs again
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert pool.waiting == 0 and pool.active == 0
    assert await asyncio.wait_for(pool.acquire(), 10) == 0  # the slot was not lost
    assert pool.max_active == 1 and pool.started == 2


async def test_one_slot_serves_two_streams_one_after_the_other(
    make: Make, session: aiohttp.ClientSession
) -> None:
    up = await make("llamacpp", slots=1, behaviour=Behaviour(tokens_per_second=500, n_tokens=4))
    body = {"prompt": "hi", "stream": True}
    first = await session.post(up.url("/completion"), json=body)
    await until(lambda: up.busy == 1, "the first stream holds the slot")
    second = asyncio.create_task(session.post(up.url("/completion"), json=body))
    await until(lambda: up.waiting == 1, "the second waits")
    async with await second as resp:
        # Its head comes only once the first generation has run to its end.
        assert up.completed == 1 and resp.status == 200
        events = [json.loads(e) for e in sse_data(await resp.read())]
    assert "".join(e["content"] for e in events) == up.expected_text(4)
    assert "".join(json.loads(e)["content"] for e in sse_data(await first.read())) == (
        up.expected_text(4)
    )
    first.close()
    assert (up.completed, up.max_active, up.pool.started) == (2, 1, 2)
    assert up.busy == 0 and up.waiting == 0


async def test_queue_is_first_in_first_out_and_skips_leavers(
    make: Make, session: aiohttp.ClientSession
) -> None:
    up = await make("llamacpp", slots=1, behaviour=Behaviour(stall_after=1, n_tokens=3))
    body = {"prompt": "hi", "stream": True}
    holder = await session.post(up.url("/completion"), json=body)
    await holder.content.readline()
    queued: list[asyncio.Task[aiohttp.ClientResponse]] = []
    for n in (1, 2, 3):
        queued.append(asyncio.create_task(session.post(up.url("/completion"), json=body)))
        await until(lambda n=n: up.waiting == n, f"{n} waiting")
    assert await gauges(session, up) == (1, 3)
    queued[0].cancel()  # the first in line gives up
    await until(lambda: up.waiting == 2, "the leaver is out of the queue")
    holder.close()  # frees the slot: the next in line (the second) gets it
    second = await queued[1]
    assert (await second.content.readline()).startswith(b"data: ")
    assert up.busy == 1 and up.waiting == 1 and not queued[2].done()
    up.behaviour.stall_after = None
    second.close()
    async with await queued[2] as resp:
        events = [json.loads(e) for e in sse_data(await resp.read())]
    assert "".join(e["content"] for e in events) == up.expected_text(3)
    # Holder, leaver and second left; the third ran to its end; one at a time, while
    # the server held four requests at its peak.
    assert (up.pool.started, up.completed, up.max_active, up.cancelled) == (3, 1, 1, 3)
    assert up.max_held == 4


async def test_slots_props_and_metrics_show_the_load(
    make: Make, session: aiohttp.ClientSession
) -> None:
    up = await make("llamacpp", slots=2, behaviour=Behaviour(stall_after=1))
    assert await slot_view(session, up) == [False, False]
    async with session.get(up.url("/props")) as r:
        props = await r.json()
    assert props["total_slots"] == 2 and props["default_generation_settings"]["n_ctx"] == 4096
    assert props["endpoint_slots"] is True and props["endpoint_metrics"] is True
    body = {"prompt": "hi", "stream": True}
    one = await session.post(up.url("/completion"), json=body)
    await one.content.readline()
    assert await slot_view(session, up) == [True, False]
    assert await gauges(session, up) == (1, 0)
    two = await session.post(up.url("/v1/chat/completions"), json={**body, "messages": CHAT})
    await two.content.readline()
    three = asyncio.create_task(session.post(up.url("/completion"), json=body))
    await until(lambda: up.waiting == 1, "the third waits")
    assert await slot_view(session, up) == [True, True]
    assert await gauges(session, up) == (2, 1)
    one.close()
    async with await three as resp:  # takes the slot the first left: slot 0
        await resp.content.readline()
        assert await slot_view(session, up) == [True, True]
        async with session.get(up.url("/slots")) as r:
            slot0 = (await r.json())[0]
        assert slot0["id_task"] == 2 and slot0["is_processing"] is True
    two.close()
    await until(lambda: up.busy == 0, "every slot free")
    assert await slot_view(session, up) == [False, False]
    assert up.max_active == 2


async def test_max_active_never_exceeds_slots(make: Make, session: aiohttp.ClientSession) -> None:
    up = await make("llamacpp", slots=2, behaviour=Behaviour(tokens_per_second=2000, n_tokens=50))

    async def one(i: int) -> str:
        stream = i % 2 == 0
        body = {"model": "m", "messages": CHAT, "max_tokens": 5, "stream": stream}
        status, _, raw = await post(session, up, "/v1/chat/completions", body)
        assert status == 200
        if not stream:
            return str(json.loads(raw)["choices"][0]["message"]["content"])
        chunks = [json.loads(e) for e in sse_data(raw) if e != b"[DONE]"]
        return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)

    texts = await asyncio.gather(*(one(i) for i in range(12)))
    assert texts == [up.expected_text(5)] * 12
    assert (up.max_active, up.pool.started, up.completed) == (2, 12, 12)
    assert up.busy == 0 and up.waiting == 0


async def test_unlimited_by_default(make: Make, session: aiohttp.ClientSession) -> None:
    up = await make("ollama", behaviour=Behaviour(stall_after=1))
    resps = []
    for _ in range(3):
        resp = await session.post(up.url("/api/chat"), json={"model": "llama2", "messages": CHAT})
        await resp.content.readline()  # each one streams at once: none waits
        resps.append(resp)
    assert (up.busy, up.waiting, up.max_active) == (3, 0, 3)
    for resp in resps:
        resp.close()
    llamacpp = await make("llamacpp")
    async with session.get(llamacpp.url("/props")) as r:
        assert (await r.json())["total_slots"] == 1


async def test_ollama_queue_limit_answers_server_busy(
    make: Make, session: aiohttp.ClientSession
) -> None:
    up = await make("ollama", slots=1, queue_limit=1, behaviour=Behaviour(stall_after=1))
    body = {"model": "llama2", "messages": CHAT}
    holder = await session.post(up.url("/api/chat"), json=body)
    await holder.content.readline()
    waiting = asyncio.create_task(session.post(up.url("/api/chat"), json=body))
    await until(lambda: up.waiting == 1, "one waits")
    busy = "server busy, please try again.  maximum pending requests exceeded"
    status, ctype, raw = await post(session, up, "/api/chat", {**body, "stream": False})
    assert (status, json.loads(raw)) == (503, {"error": busy})
    assert ctype.startswith("application/json")
    status, _, raw = await post(session, up, "/v1/chat/completions", body)
    assert (status, json.loads(raw)) == (
        503,
        {"error": {"message": busy, "type": "api_error", "param": None, "code": None}},
    )
    # Refusals are not generations: nothing was queued or started for them.
    assert (up.pool.refused, up.waiting, up.pool.started) == (2, 1, 1)
    up.behaviour.stall_after = None
    holder.close()
    async with await waiting as resp:
        assert resp.status == 200 and ndjson(await resp.read())[-1]["done"] is True
    assert up.max_active == 1


async def test_ollama_ps_lists_loaded_models(make: Make, session: aiohttp.ClientSession) -> None:
    up = await make("ollama", models=["llama2", "mistral:7b"], loaded=["llama2"])

    async def names(path: str) -> list[str]:
        async with session.get(up.url(path)) as r:
            return [m["name"] for m in (await r.json())["models"]]

    assert await names("/api/tags") == ["llama2:latest", "mistral:7b"]
    assert await names("/api/ps") == ["llama2:latest"]
    body = {"model": "mistral:7b", "messages": CHAT, "stream": False}
    assert (await post(session, up, "/v1/chat/completions", body))[0] == 200
    assert await names("/api/ps") == ["llama2:latest", "mistral:7b"]
    assert (await make("ollama", loaded=[])).loaded == []
    with pytest.raises(ValueError, match="not among the models"):
        FakeUpstream("ollama", loaded=["mistral"])
    with pytest.raises(ValueError, match="Ollama"):
        FakeUpstream("llamacpp", queue_limit=4)


async def test_kill_drops_running_and_queued_and_refuses_new(
    make: Make, session: aiohttp.ClientSession
) -> None:
    up = await make("llamacpp", slots=1, behaviour=Behaviour(stall_after=2))
    body = {"prompt": "hi", "stream": True}
    running = await session.post(up.url("/completion"), json=body)
    await running.content.readline()
    queued = asyncio.create_task(session.post(up.url("/completion"), json=body))
    await until(lambda: up.waiting == 1, "one waits")
    await up.kill()
    assert (up.killed_active, up.killed_waiting) == (1, 1)
    with pytest.raises(aiohttp.ClientError):
        await running.read()  # the stream never ends properly
    with pytest.raises(aiohttp.ClientError):
        await queued  # no answer at all
    with pytest.raises(aiohttp.ClientConnectionError):
        await session.get(up.url("/health"))
    assert up.cancelled == 0 and up.completed == 0  # the server died, no client left
    await up.stop()  # harmless after kill
