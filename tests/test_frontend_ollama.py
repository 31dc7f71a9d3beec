"""The `ollama` Python client through the Ollama front door (`frontends.ollama`), in
front of each upstream format: an Ollama server, raw llama.cpp, raw TGI and an
OpenAI-compatible server. What the client gets is Ollama's own API (NDJSON streams,
`done_reason`, counts, durations in ns, `{"error": "…"}`); what each upstream gets is
its own dialect."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import ollama
import pytest
from canned import ollama_tool_answer, openai_tool_answer
from helpers import route, target, url
from prometheus_client.parser import text_string_to_metric_families

from gateway.jsonutil import dumps
from gateway.server import GatewayServer
from gateway.sim import Behaviour, FakeUpstream
from gateway.sim.embed import vector

FRONT = {"openai": {"prefix": "/v1"}, "ollama": {"prefix": ""}}
COMPLETIONS = "llm/v1/completions"
EMBEDDINGS = "llm/v1/embeddings"
OPTIONS = {"num_predict": 3, "temperature": 0, "num_ctx": 4096}
# A 1×1 transparent PNG.
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


@dataclass(frozen=True)
class Kind:
    """One upstream format: its fake, and the target paths and options per route type."""

    fake: str
    fmt: str
    chat: str
    generate: str
    embed: str | None
    options: dict[str, Any]
    # Where that dialect carries the max tokens: a path into the upstream body.
    max_tokens: tuple[str, ...]
    # Counted in eval_count beyond the text's tokens when the model stops by itself:
    # llama.cpp and TGI count the EOS token they generated.
    eos_counted: int


KINDS = {
    "ollama": Kind(
        fake="ollama",
        fmt="ollama",
        chat="/api/chat",
        generate="/api/generate",
        embed="/api/embed",
        options={},
        max_tokens=("options", "num_predict"),
        eos_counted=0,
    ),
    "llamacpp": Kind(
        fake="llamacpp",
        fmt="raw",
        chat="/completion",
        generate="/completion",
        embed="/embedding",
        options={"raw_flavor": "llamacpp"},
        max_tokens=("n_predict",),
        eos_counted=1,
    ),
    # `/` is TGI's compat endpoint: it streams or not as the body says. TGI has no
    # embeddings endpoint.
    "tgi": Kind(
        fake="tgi",
        fmt="raw",
        chat="/",
        generate="/",
        embed=None,
        options={},
        max_tokens=("parameters", "max_new_tokens"),
        eos_counted=1,
    ),
    "openai": Kind(
        fake="openai",
        fmt="openai",
        chat="/v1/chat/completions",
        generate="/v1/completions",
        embed="/v1/embeddings",
        options={},
        max_tokens=("max_tokens",),
        eos_counted=0,
    ),
}
ALL = list(KINDS)
WITH_EMBEDDINGS = [k for k, v in KINDS.items() if v.embed is not None]


def kind_routes(up: FakeUpstream, kind: Kind, name: str = "llama2") -> list[dict[str, Any]]:
    """A chat, a completions and (where the format has one) an embeddings route, all for
    one model, at paths of their own (the front door finds them by model)."""

    def t(path: str, route_type: str) -> dict[str, Any]:
        return target(
            up, path, fmt=kind.fmt, route_type=route_type, name=name, options=dict(kind.options)
        )

    routes = [
        route(t(kind.chat, "llm/v1/chat"), path=f"/{name}/chat", name=f"{name}-chat"),
        route(t(kind.generate, COMPLETIONS), path=f"/{name}/generate", name=f"{name}-generate"),
    ]
    if kind.embed is not None:
        routes.append(route(t(kind.embed, EMBEDDINGS), path=f"/{name}/embed", name=f"{name}-embed"))
    return routes


async def setup(
    upstream: Any, gateway: Any, kind_name: str, **up_kw: Any
) -> tuple[FakeUpstream, GatewayServer]:
    kind = KINDS[kind_name]
    up = await upstream(kind.fake, **up_kw)
    gw = await gateway(*kind_routes(up, kind), frontends=FRONT)
    return up, gw


@pytest.fixture
async def client() -> AsyncIterator[Any]:
    """`make(gw)`: an `ollama.AsyncClient` on the gateway, closed afterwards."""
    made: list[ollama.AsyncClient] = []

    def make(gw: GatewayServer) -> ollama.AsyncClient:
        c = ollama.AsyncClient(host=url(gw, ""))
        made.append(c)
        return c

    yield make
    for c in made:
        await c.close()


def dig(body: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        body = body[key]
    return body


def last_sent(up: FakeUpstream) -> Any:
    return up.generation_requests()[-1].json


def assert_final(final: Any, reason: str, eval_count: int) -> None:
    """Ollama's final line or answer: done, the reason, integer counts and durations
    in ns, the whole request at least as long as its generation part."""
    assert final["done"] is True
    assert final["done_reason"] == reason
    assert final["eval_count"] == eval_count
    for key in (
        "total_duration",
        "load_duration",
        "prompt_eval_count",
        "prompt_eval_duration",
        "eval_duration",
    ):
        assert type(final[key]) is int and final[key] >= 0, (key, final)
    assert final["prompt_eval_count"] > 0
    assert final["total_duration"] > 0
    assert final["total_duration"] >= final["eval_duration"]
    assert final["total_duration"] >= final["prompt_eval_duration"]


async def ndjson(
    http: aiohttp.ClientSession, gw: GatewayServer, path: str, body: dict[str, Any]
) -> tuple[int, str, list[Any]]:
    """POST by raw HTTP: status, Content-Type and the body's lines as JSON."""
    async with http.post(url(gw, path), data=dumps(body)) as r:
        raw = await r.read()
        ctype = r.headers.get("Content-Type", "")
    if ctype.startswith("application/x-ndjson"):
        assert raw.endswith(b"\n"), raw  # every line ends, the last one too
    return r.status, ctype, [json.loads(line) for line in raw.splitlines() if line.strip()]


# ------------------------------------------------------------------ chat and generate


@pytest.mark.parametrize("kind", ALL)
async def test_chat_non_stream_maps_options(upstream, gateway, client, kind: str) -> None:
    up, gw = await setup(upstream, gateway, kind)
    r = await client(gw).chat(
        model="llama2", messages=[{"role": "user", "content": "Hi there"}], options=OPTIONS
    )
    assert r.model == "llama2"
    assert r.message.role == "assistant"
    assert r.message.content == up.expected_text(3)
    assert_final(r.model_dump(), "length", 3)
    sent_req = up.generation_requests()[-1]
    sent: Any = sent_req.json
    assert dig(sent, KINDS[kind].max_tokens) == 3
    if kind == "ollama":
        assert sent["stream"] is False
        assert sent["options"] == OPTIONS  # num_ctx goes to Ollama, untouched
        assert sent["messages"] == [{"role": "user", "content": "Hi there"}]
    else:
        # A server-side hint only Ollama has: never sent to another server.
        assert b"num_ctx" not in sent_req.body
    if kind in ("llamacpp", "openai"):
        assert sent["temperature"] == 0
    if kind != "tgi":  # TGI's counts here are the gateway's estimate
        assert r.prompt_eval_count == up.count_prompt_tokens(sent)


@pytest.mark.parametrize("kind", ALL)
async def test_chat_stream_with_the_client(upstream, gateway, client, kind: str) -> None:
    up, gw = await setup(upstream, gateway, kind)
    parts = [
        p
        async for p in await client(gw).chat(
            model="llama2", messages=[{"role": "user", "content": "Hi"}], stream=True
        )
    ]
    assert len(parts) == 9  # one line per token, then the final line
    assert all(p.done is False for p in parts[:-1])
    assert "".join(p.message.content or "" for p in parts) == up.expected_text(8)
    assert [p.message.content for p in parts[:-1]] == [
        up.expected_text(i + 1)[len(up.expected_text(i)) :] for i in range(8)
    ]
    final = parts[-1].model_dump()
    assert final["message"]["content"] == ""
    assert_final(final, "stop", 8 + KINDS[kind].eos_counted)
    sent = last_sent(up)
    assert sent["stream"] is True
    if kind != "tgi":
        assert final["prompt_eval_count"] == up.count_prompt_tokens(sent)


@pytest.mark.parametrize("kind", ALL)
async def test_stream_is_the_default_ndjson(upstream, gateway, http, kind: str) -> None:
    """Ollama streams unless told `"stream": false`: a raw request without `stream`
    gets NDJSON lines, chat and generate."""
    up, gw = await setup(upstream, gateway, kind)
    status, ctype, lines = await ndjson(
        http, gw, "/api/chat", {"model": "llama2", "messages": [{"role": "user", "content": "Hi"}]}
    )
    assert status == 200 and ctype.startswith("application/x-ndjson"), (status, ctype, lines)
    assert len(lines) == 9
    assert [line["done"] for line in lines] == [False] * 8 + [True]
    assert "".join(line["message"]["content"] for line in lines) == up.expected_text(8)
    assert all(line["model"] == "llama2" and line["created_at"].endswith("Z") for line in lines)
    assert last_sent(up)["stream"] is True

    status, ctype, lines = await ndjson(
        http,
        gw,
        "/api/generate",
        {"model": "llama2", "prompt": "Once upon", "options": {"num_predict": 2}},
    )
    assert status == 200 and ctype.startswith("application/x-ndjson"), (status, ctype, lines)
    assert [line["done"] for line in lines] == [False, False, True]
    assert "".join(line["response"] for line in lines) == up.expected_text(2)
    assert_final(lines[-1], "length", 2)
    assert dig(last_sent(up), KINDS[kind].max_tokens) == 2


async def test_a_route_that_denies_streaming(upstream, gateway, http) -> None:
    """Streaming is Ollama's default, not the client's ask: a request without `stream`
    on a route that never streams is answered whole; one that asks for a stream is
    refused, in Ollama's shape."""
    up = await upstream("ollama")
    gw = await gateway(
        route(target(up, "/api/chat"), path="/chat", response_streaming="deny"), frontends=FRONT
    )
    hi = {"model": "llama2", "messages": [{"role": "user", "content": "Hi"}]}
    async with http.post(url(gw, "/api/chat"), json=hi) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("application/json")
        doc = await r.json()
    assert doc["message"]["content"] == up.expected_text(8) and doc["done"] is True
    assert last_sent(up)["stream"] is False
    # generate goes as chat here, and the same holds.
    async with http.post(url(gw, "/api/generate"), json={"model": "llama2", "prompt": "Hi"}) as r:
        assert r.status == 200
        assert (await r.json())["response"] == up.expected_text(8)
    async with http.post(url(gw, "/api/chat"), json={**hi, "stream": True}) as r:
        assert r.status == 400
        assert await r.json() == {"error": "response streaming is not enabled for this LLM"}
    assert len(up.generation_requests()) == 2


@pytest.mark.parametrize("kind", ALL)
async def test_generate_stream_and_not(upstream, gateway, client, kind: str) -> None:
    up, gw = await setup(upstream, gateway, kind)
    c = client(gw)
    r = await c.generate(model="llama2", prompt="Once upon a time", options={"num_predict": 3})
    assert r.response == up.expected_text(3)
    assert r.model == "llama2"
    assert_final(r.model_dump(), "length", 3)
    sent_req = up.generation_requests()[-1]
    assert dig(sent_req.json, KINDS[kind].max_tokens) == 3
    # The completions route got it, at that target's own path.
    assert sent_req.path == KINDS[kind].generate
    if kind == "ollama":
        assert last_sent(up)["prompt"] == "Once upon a time"

    parts = [p async for p in await c.generate(model="llama2", prompt="Once upon", stream=True)]
    assert "".join(p.response for p in parts) == up.expected_text(8)
    assert [p.done for p in parts] == [False] * 8 + [True]
    assert_final(parts[-1].model_dump(), "stop", 8 + KINDS[kind].eos_counted)


async def test_generate_for_a_chat_only_model_goes_as_chat(upstream, gateway, client) -> None:
    """Ollama generates with any model; a model only a chat route serves gets the prompt
    (and `system`) as a conversation."""
    up = await upstream("ollama")
    gw = await gateway(route(target(up, "/api/chat"), path="/chat", name="chat"), frontends=FRONT)
    c = client(gw)
    r = await c.generate(model="llama2", prompt="Once upon a time", system="Be brief.")
    assert r.response == up.expected_text(8)
    assert_final(r.model_dump(), "stop", 8)
    sent = up.generation_requests()[-1]
    assert sent.path == "/api/chat"
    assert sent.json["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Once upon a time"},
    ]
    parts = [p async for p in await c.generate(model="llama2", prompt="Once", stream=True)]
    assert "".join(p.response for p in parts) == up.expected_text(8)
    assert parts[-1].done and parts[-1].done_reason == "stop"


async def test_empty_prompt_only_loads(upstream, gateway, client, http) -> None:
    """Nothing to generate is Ollama's "load the model": done_reason "load", and the
    upstream is not asked."""
    up, gw = await setup(upstream, gateway, "llamacpp")
    c = client(gw)
    r = await c.generate(model="llama2")
    assert (r.done, r.done_reason, r.response, r.model) == (True, "load", "", "llama2")
    chat = await c.chat(model="llama2", messages=[])
    assert (chat.done, chat.done_reason, chat.message.content) == (True, "load", "")
    status, _, lines = await ndjson(http, gw, "/api/chat", {"model": "llama2"})
    assert status == 200 and lines[0]["done_reason"] == "load"
    assert up.generation_requests() == []
    # An unknown model is still not found, prompt or not.
    with pytest.raises(ollama.ResponseError) as exc:
        await c.generate(model="nope")
    assert exc.value.status_code == 404


# ------------------------------------------------------------------ models


async def test_tags_ps_show_version(upstream, gateway, client, http) -> None:
    llama = await upstream("ollama")
    tgi = await upstream("tgi")
    gw = await gateway(
        *kind_routes(llama, KINDS["ollama"]),
        *kind_routes(tgi, KINDS["tgi"], name="falcon"),
        frontends=FRONT,
    )
    c = client(gw)
    tags = await c.list()
    assert [m.model for m in tags.models] == ["llama2", "falcon"]
    for m in tags.models:
        assert m.digest and len(m.digest) == 64
        assert m.modified_at is not None
    ps = await c.ps()
    assert {m.model for m in ps.models} == {"llama2", "falcon"}

    shown = await c.show("llama2")
    assert shown.capabilities == ["completion", "tools", "embedding"]
    raw_shown = await c.show("falcon")
    assert raw_shown.capabilities == ["completion"]  # raw servers take no tools
    assert (await c.show("llama2:latest")).capabilities == shown.capabilities

    with pytest.raises(ollama.ResponseError) as exc:
        await c.show("nope")
    assert exc.value.status_code == 404
    assert exc.value.error == "model 'nope' not found; available: falcon, llama2"

    async with http.get(url(gw, "/api/version")) as r:
        assert r.status == 200
        version = (await r.json())["version"]
    assert isinstance(version, str) and version.count(".") == 2
    async with http.get(url(gw, "/")) as r:
        assert r.status == 200 and await r.text() == "Ollama is running"
    # A POST-only endpoint, and a GET one, refuse the other method in Ollama's shape.
    async with http.get(url(gw, "/api/chat")) as r:
        assert r.status == 405 and "error" in await r.json()
    async with http.post(url(gw, "/api/tags")) as r:
        assert r.status == 405 and "error" in await r.json()
    assert llama.generation_requests() == [] and tgi.generation_requests() == []


SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}


@pytest.mark.parametrize("kind", ["ollama", "llamacpp", "openai"])
async def test_format_reaches_each_upstream(upstream, gateway, client, kind: str) -> None:
    """Structured output: Ollama's `format` (a schema, or "json") as each server asks
    for it."""
    up, gw = await setup(upstream, gateway, kind)
    c = client(gw)
    hi = [{"role": "user", "content": "Hi"}]
    await c.chat(model="llama2", messages=hi, format=SCHEMA)
    sent = last_sent(up)
    if kind == "ollama":
        assert sent["format"] == SCHEMA
    elif kind == "llamacpp":
        assert sent["json_schema"] == SCHEMA
    else:
        assert sent["response_format"]["type"] == "json_schema"
        assert sent["response_format"]["json_schema"]["schema"] == SCHEMA
    await c.chat(model="llama2", messages=hi, format="json")
    sent = last_sent(up)
    if kind == "ollama":
        assert sent["format"] == "json"
    elif kind == "openai":
        assert sent["response_format"] == {"type": "json_object"}


# ------------------------------------------------------------------ embeddings


@pytest.mark.parametrize("kind", WITH_EMBEDDINGS)
async def test_embed_and_legacy_embeddings(upstream, gateway, client, kind: str) -> None:
    up, gw = await setup(upstream, gateway, kind)
    c = client(gw)
    texts = ["hello world", "foo"]
    r = await c.embed(model="llama2", input=texts)
    assert r.model == "llama2"
    assert [list(v) for v in r.embeddings] == [vector(t) for t in texts]
    sent = up.embedding_requests()[-1]
    assert sent.path == KINDS[kind].embed
    one = await c.embed(model="llama2", input="hello world")
    assert [list(v) for v in one.embeddings] == [vector("hello world")]

    legacy = await c.embeddings(model="llama2", prompt="hello world")
    assert list(legacy.embedding) == vector("hello world")
    assert len(up.embedding_requests()) == 3


@pytest.mark.parametrize("kind", WITH_EMBEDDINGS)
async def test_embed_options_and_hints(upstream, gateway, client, kind: str) -> None:
    """Ollama's own embed knobs reach an Ollama server; elsewhere the scheduling hints
    (keep_alive, truncate) are dropped and model options are refused by name."""
    up, gw = await setup(upstream, gateway, kind)
    c = client(gw)
    await c.embed(model="llama2", input="hi", keep_alive="5m", truncate=False)
    sent: Any = up.embedding_requests()[-1].json
    if kind == "ollama":
        assert (sent["keep_alive"], sent["truncate"]) == ("5m", False)
    else:
        assert "keep_alive" not in sent and "truncate" not in sent
    if kind == "ollama":
        await c.embed(model="llama2", input="hi", options={"num_ctx": 4096})
        sent = up.embedding_requests()[-1].json
        assert sent["options"] == {"num_ctx": 4096}
    else:
        with pytest.raises(ollama.ResponseError) as exc:
            await c.embed(model="llama2", input="hi", options={"num_ctx": 4096})
        assert exc.value.status_code == 400 and "num_ctx" in exc.value.error
        assert len(up.embedding_requests()) == 1


# ------------------------------------------------------------------ tools and images


@pytest.mark.parametrize("kind", ["ollama", "openai"])
async def test_tools_both_ways(upstream, gateway, client, kind: str) -> None:
    answer = (
        ollama_tool_answer({"city": "Paris"})
        if kind == "ollama"
        else openai_tool_answer('{"city": "Paris"}')
    )
    up, gw = await setup(
        upstream, gateway, kind, behaviour=Behaviour(status=200, error_body=answer)
    )
    c = client(gw)
    question = {"role": "user", "content": "Weather in Paris?"}
    r = await c.chat(model="llama2", messages=[question], tools=[WEATHER_TOOL])
    assert r.message.tool_calls is not None and len(r.message.tool_calls) == 1
    call = r.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert call.function.arguments == {"city": "Paris"}  # an object, as Ollama gives it
    assert r.done_reason == "stop" and r.eval_count == 5
    sent = last_sent(up)
    assert sent["tools"] == [WEATHER_TOOL]

    # The follow-up with the tool's result reaches the upstream in its dialect.
    up.behaviour = Behaviour()
    follow = await c.chat(
        model="llama2",
        messages=[
            question,
            {"role": "assistant", "content": "", "tool_calls": [call.model_dump()]},
            {"role": "tool", "content": "22 degrees", "tool_name": "get_weather"},
        ],
        tools=[WEATHER_TOOL],
    )
    assert follow.message.content == up.expected_text(8)
    messages = last_sent(up)["messages"]
    assert len(messages) == 3
    assistant, result = messages[1], messages[2]
    assert result["role"] == "tool" and result["content"] == "22 degrees"
    fn = assistant["tool_calls"][0]["function"]
    assert fn["name"] == "get_weather"
    if kind == "ollama":
        assert fn["arguments"] == {"city": "Paris"}
        assert result["tool_name"] == "get_weather"
    else:
        assert json.loads(fn["arguments"]) == {"city": "Paris"}
        # The tool result answers the call by its id, as OpenAI servers need.
        assert result["tool_call_id"] == assistant["tool_calls"][0]["id"]


async def test_tool_call_in_a_stream(upstream, gateway, client) -> None:
    """A stream whose final line carries the call: the client's last part has it, with
    object arguments."""
    answer = ollama_tool_answer({"city": "Oslo"}) + b"\n"
    up, gw = await setup(
        upstream, gateway, "ollama", behaviour=Behaviour(status=200, error_body=answer)
    )
    parts = [
        p
        async for p in await client(gw).chat(
            model="llama2",
            messages=[{"role": "user", "content": "Weather in Oslo?"}],
            tools=[WEATHER_TOOL],
            stream=True,
        )
    ]
    assert parts[-1].done is True
    calls = [tc for p in parts for tc in (p.message.tool_calls or [])]
    assert len(calls) == 1
    assert calls[0].function.name == "get_weather"
    assert calls[0].function.arguments == {"city": "Oslo"}
    assert last_sent(up)["stream"] is True


def sse(obj: Any) -> bytes:
    return b"data: " + dumps(obj) + b"\n\n"


def openai_tool_stream() -> bytes:
    """An OpenAI server's stream of one tool call, its arguments sent in pieces."""

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return sse(
            {"id": "c1", "object": "chat.completion.chunk", "model": "llama2", "choices": [choice]}
        )

    first = {
        "index": 0,
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    pieces = ['{"ci', 'ty": "Os', 'lo"}']
    return b"".join(
        [
            chunk({"role": "assistant", "content": None, "tool_calls": [first]}),
            *(chunk({"tool_calls": [{"index": 0, "function": {"arguments": p}}]}) for p in pieces),
            chunk({}, "tool_calls"),
            sse(
                {
                    "id": "c1",
                    "object": "chat.completion.chunk",
                    "model": "llama2",
                    "choices": [],
                    "usage": {"prompt_tokens": 9, "completion_tokens": 6, "total_tokens": 15},
                }
            ),
            b"data: [DONE]\n\n",
        ]
    )


async def test_tool_call_pieces_from_an_openai_stream(upstream, gateway, client) -> None:
    """OpenAI servers stream a call's arguments in pieces; Ollama sends the call whole,
    with object arguments, on the final line."""
    up, gw = await setup(
        upstream,
        gateway,
        "openai",
        behaviour=Behaviour(status=200, error_body=openai_tool_stream()),
    )
    parts = [
        p
        async for p in await client(gw).chat(
            model="llama2",
            messages=[{"role": "user", "content": "Weather in Oslo?"}],
            tools=[WEATHER_TOOL],
            stream=True,
        )
    ]
    final = parts[-1]
    assert final.done is True and final.done_reason == "stop"
    assert (final.prompt_eval_count, final.eval_count) == (9, 6)
    calls = [tc for p in parts for tc in (p.message.tool_calls or [])]
    assert len(calls) == 1 and final.message.tool_calls == calls
    assert calls[0].function.name == "get_weather"
    assert calls[0].function.arguments == {"city": "Oslo"}
    assert last_sent(up)["tools"] == [WEATHER_TOOL]


def ollama_thinking_stream() -> bytes:
    """An Ollama server's stream with `think`: thinking pieces, then the answer."""

    def line(message: dict[str, Any], **extra: Any) -> bytes:
        base = {"model": "llama2", "created_at": "2025-01-01T00:00:00.000000Z"}
        msg = {"role": "assistant", "content": "", **message}
        return dumps({**base, "message": msg, "done": False, **extra}) + b"\n"

    final = {"done": True, "done_reason": "stop", "prompt_eval_count": 4, "eval_count": 4}
    return b"".join(
        [
            line({"thinking": "Let me"}),
            line({"thinking": " think."}),
            line({"content": "Hello"}),
            line({"content": " there"}),
            line({}, **final),
        ]
    )


async def test_thinking_passes_through(upstream, gateway, client) -> None:
    """`think: true` reaches an Ollama server; its thinking comes back in `thinking`,
    streamed piece by piece, and whole in a non-stream answer."""
    body = ollama_thinking_stream()
    up, gw = await setup(
        upstream, gateway, "ollama", behaviour=Behaviour(status=200, error_body=body)
    )
    c = client(gw)
    hi = [{"role": "user", "content": "Hi"}]
    parts = [p async for p in await c.chat(model="llama2", messages=hi, think=True, stream=True)]
    assert last_sent(up)["think"] is True
    assert "".join(p.message.thinking or "" for p in parts) == "Let me think."
    assert "".join(p.message.content or "" for p in parts) == "Hello there"
    assert parts[-1].done and parts[-1].eval_count == 4
    whole_body = dumps(
        {
            "model": "llama2",
            "created_at": "2025-01-01T00:00:00.000000Z",
            "message": {"role": "assistant", "content": "Hello", "thinking": "Hmm."},
            "done": True,
            "done_reason": "stop",
        }
    )
    up.behaviour = Behaviour(status=200, error_body=whole_body)
    r = await c.chat(model="llama2", messages=hi, think=True)
    assert (r.message.thinking, r.message.content) == ("Hmm.", "Hello")


async def test_thinking_in_generate_answered_by_a_chat_route(upstream, gateway, client) -> None:
    up = await upstream(
        "ollama", behaviour=Behaviour(status=200, error_body=ollama_thinking_stream())
    )
    gw = await gateway(route(target(up, "/api/chat"), path="/chat"), frontends=FRONT)
    c = client(gw)
    parts = [
        p async for p in await c.generate(model="llama2", prompt="Hi", think=True, stream=True)
    ]
    assert "".join(p.thinking or "" for p in parts) == "Let me think."
    assert "".join(p.response for p in parts) == "Hello there"


async def chat_with_image(c: ollama.AsyncClient) -> Any:
    return await c.chat(
        model="llama2", messages=[{"role": "user", "content": "What is this?", "images": [PNG]}]
    )


async def test_images_reach_an_ollama_upstream(upstream, gateway, client) -> None:
    up, gw = await setup(upstream, gateway, "ollama")
    c = client(gw)
    r = await c.chat(
        model="llama2", messages=[{"role": "user", "content": "What is this?", "images": [PNG]}]
    )
    assert r.message.content == up.expected_text(8)
    sent = last_sent(up)["messages"][0]
    assert sent["images"] == [PNG]
    assert sent["content"] == "What is this?"

    g = await c.generate(model="llama2", prompt="Describe it", images=[PNG])
    assert g.response == up.expected_text(8)
    sent = last_sent(up)
    assert sent["images"] == [PNG] and sent["prompt"] == "Describe it"


async def test_images_reach_an_openai_upstream_as_data_urls(upstream, gateway, client) -> None:
    up, gw = await setup(upstream, gateway, "openai")
    await chat_with_image(client(gw))
    content = last_sent(up)["messages"][0]["content"]
    assert content == [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + PNG}},
    ]


@pytest.mark.parametrize("kind", ["ollama", "llamacpp"])
async def test_generate_ollama_only_fields(upstream, gateway, client, kind: str) -> None:
    """`system` and `template` on /api/generate: passed to an Ollama server, refused by
    name by a server that has no such thing."""
    up, gw = await setup(upstream, gateway, kind)
    c = client(gw)
    if kind == "ollama":
        await c.generate(model="llama2", prompt="Hi", system="Be brief.", template="{{ .Prompt }}")
        sent = last_sent(up)
        assert (sent["system"], sent["template"]) == ("Be brief.", "{{ .Prompt }}")
        return
    with pytest.raises(ollama.ResponseError) as exc:
        await c.generate(model="llama2", prompt="Hi", system="Be brief.")
    assert exc.value.status_code == 400 and "system" in exc.value.error
    assert up.generation_requests() == []


@pytest.mark.parametrize("kind", ["llamacpp", "tgi"])
async def test_images_to_a_raw_upstream_are_refused(upstream, gateway, client, kind: str) -> None:
    up, gw = await setup(upstream, gateway, kind)
    with pytest.raises(ollama.ResponseError) as exc:
        await chat_with_image(client(gw))
    assert exc.value.status_code == 400
    assert "image" in exc.value.error and "raw" in exc.value.error
    assert up.generation_requests() == []


# ------------------------------------------------------------------ errors


async def test_unknown_model_is_ollamas_404(upstream, gateway, client, http) -> None:
    up, gw = await setup(upstream, gateway, "ollama")
    async with http.post(
        url(gw, "/api/chat"), json={"model": "x", "messages": [{"role": "user", "content": "Hi"}]}
    ) as r:
        assert r.status == 404
        assert r.headers["Content-Type"].startswith("application/json")
        assert await r.json() == {"error": "model 'x' not found; available: llama2"}
    with pytest.raises(ollama.ResponseError) as exc:
        await client(gw).generate(model="x", prompt="Hi")
    assert exc.value.status_code == 404
    assert exc.value.error == "model 'x' not found; available: llama2"
    with pytest.raises(ollama.ResponseError) as exc:
        await client(gw).embed(model="x", input="Hi")
    assert exc.value.status_code == 404
    assert up.generation_requests() == []


async def test_a_model_of_another_route_type(upstream, gateway, client, http) -> None:
    """A model only an embeddings route serves is not "not found" for chat (it is in
    /api/tags): Ollama's 400 says what it cannot do; the 404s list only what could."""
    up = await upstream("ollama", models=("llama2", "nomic"))
    gw = await gateway(
        route(target(up, "/api/chat"), path="/chat", name="chat"),
        route(
            target(up, "/api/embed", name="nomic", route_type=EMBEDDINGS),
            path="/emb",
            name="emb",
        ),
        frontends=FRONT,
    )
    c = client(gw)
    with pytest.raises(ollama.ResponseError) as exc:
        await c.chat(model="nomic", messages=[{"role": "user", "content": "Hi"}])
    assert (exc.value.status_code, exc.value.error) == (400, '"nomic" does not support chat')
    with pytest.raises(ollama.ResponseError) as exc:
        await c.generate(model="nomic:latest", prompt="Hi")
    assert (exc.value.status_code, exc.value.error) == (
        400,
        '"nomic:latest" does not support generate',
    )
    with pytest.raises(ollama.ResponseError) as exc:
        await c.embed(model="llama2", input="Hi")
    assert (exc.value.status_code, exc.value.error) == (400, '"llama2" does not support embeddings')
    with pytest.raises(ollama.ResponseError) as exc:
        await c.embed(model="gemma", input="Hi")
    assert (exc.value.status_code, exc.value.error) == (
        404,
        "model 'gemma' not found; available: nomic",
    )
    with pytest.raises(ollama.ResponseError) as exc:
        await c.generate(model="gemma", prompt="Hi")
    assert exc.value.error == "model 'gemma' not found; available: llama2"
    assert (await c.embed(model="nomic", input="Hi")).embeddings
    assert len(up.generation_requests()) == 1
    # Refusals never reach a route, so they have their own series.
    async with http.get(f"http://127.0.0.1:{gw.status_port}/metrics") as r:
        text = await r.text()
    rejected = "llama_gateway_frontend_rejected_total"
    assert metric(text, rejected, frontend="ollama", reason="unsupported") == 3
    assert metric(text, rejected, frontend="ollama", reason="unknown_model") == 2
    assert metric(text, rejected, frontend="openai") == 0


@pytest.mark.parametrize(
    ("kind", "text"),
    [
        ("ollama", "llama runner process has terminated: exit status 2"),
        ("openai", "The server had an error while processing your request. Sorry about that!"),
    ],
)
async def test_upstream_error_keeps_status_in_ollamas_shape(
    upstream, gateway, client, http, kind: str, text: str
) -> None:
    _, gw = await setup(upstream, gateway, kind, behaviour=Behaviour(status=500))
    with pytest.raises(ollama.ResponseError) as exc:
        await client(gw).chat(model="llama2", messages=[{"role": "user", "content": "Hi"}])
    assert exc.value.status_code == 500
    assert exc.value.error == text
    # A stream that fails before its first line is answered the same way.
    async with http.post(url(gw, "/api/generate"), json={"model": "llama2", "prompt": "Hi"}) as r:
        assert r.status == 500
        assert await r.json() == {"error": text}


async def test_upstream_404_on_a_route_is_ollamas_shape(upstream, gateway, client) -> None:
    _, gw = await setup(upstream, gateway, "ollama", behaviour=Behaviour(status=404))
    with pytest.raises(ollama.ResponseError) as exc:
        await client(gw).chat(model="llama2", messages=[{"role": "user", "content": "Hi"}])
    assert exc.value.status_code == 404
    assert exc.value.error == "model 'llama2' not found"


# What each fake says in-band when generation fails mid-stream.
MIDSTREAM = {
    "ollama": "an error was encountered while running the model: unexpected EOF",
    "llamacpp": "llama_decode failed",
    "tgi": "Request failed during generation: Server error: CUDA out of memory",
    "openai": "The server had an error while processing your request. Sorry about that!",
}


@pytest.mark.parametrize(
    ("kind", "behaviour", "text"),
    [
        *((k, Behaviour(error_after=2), MIDSTREAM[k]) for k in ALL),
        ("ollama", Behaviour(die_after=2), "upstream connection lost"),
    ],
)
async def test_mid_stream_error_is_a_final_error_line(
    upstream, gateway, client, http, kind: str, behaviour: Behaviour, text: str
) -> None:
    up, gw = await setup(upstream, gateway, kind, behaviour=behaviour)
    status, ctype, lines = await ndjson(
        http, gw, "/api/chat", {"model": "llama2", "messages": [{"role": "user", "content": "Hi"}]}
    )
    assert status == 200 and ctype.startswith("application/x-ndjson")
    assert [line["message"]["content"] for line in lines[:-1]] == [
        up.expected_text(1),
        up.expected_text(2)[len(up.expected_text(1)) :],
    ]
    assert lines[-1] == {"error": text}
    # The client raises on that line, after the parts before it.
    got: list[str] = []
    with pytest.raises(ollama.ResponseError) as exc:
        async for part in await client(gw).chat(
            model="llama2", messages=[{"role": "user", "content": "Hi"}], stream=True
        ):
            got.append(part.message.content or "")
    assert "".join(got) == up.expected_text(2)
    assert exc.value.error == text


async def test_gateway_errors_are_ollamas_shape(upstream, gateway, client, http) -> None:
    """Errors the gateway makes itself (the upstream is down) come as `{"error": "…"}`
    too, not OpenAI's object."""
    up = await upstream("ollama")
    port = up.port
    await up.stop()
    t = target(f"http://127.0.0.1:{port}/api/chat", "")
    gw = await gateway(route(t, path="/chat", balancer={"retries": 0}), frontends=FRONT)
    with pytest.raises(ollama.ResponseError) as exc:
        await client(gw).chat(model="llama2", messages=[{"role": "user", "content": "Hi"}])
    assert exc.value.status_code == 502
    assert isinstance(exc.value.error, str) and "unavailable" in exc.value.error
    async with http.post(url(gw, "/api/chat"), data=b"{" + b" " * 2_000_000 + b"}") as r:
        assert r.status == 413
        assert await r.json() == {"error": "request body is too large"}


async def test_bad_requests_are_ollamas_400(upstream, gateway, http) -> None:
    up, gw = await setup(upstream, gateway, "ollama")
    cases = [
        ("/api/chat", b"not json", "invalid JSON body: expected an object"),
        ("/api/chat", b'{"messages": []}', "model is required"),
        ("/api/generate", b'{"model": "llama2", "prompt": 5}', "prompt must be a string"),
        ("/api/chat", b'{"model": "llama2", "messages": "hi"}', "messages must be a list"),
        (
            "/api/embed",
            b'{"model": "llama2", "input": 5}',
            "input must be a string or a list of strings",
        ),
    ]
    for path, body, message in cases:
        async with http.post(url(gw, path), data=body) as r:
            assert r.status == 400, (path, body)
            assert await r.json() == {"error": message}
    assert up.generation_requests() == []


# ------------------------------------------------------------------ dispatch and metrics


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of the samples called `name` whose labels include `labels`."""
    return sum(
        s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


async def test_dispatch_by_model_through_each_routes_balancer(
    upstream, gateway, client, http
) -> None:
    """Two routes, two models: each request goes to the route serving its model, through
    that route's balancer (round-robin over its two targets), and counts in that route's
    metrics."""
    a1 = await upstream("ollama", models=("llama2",), name="a1")
    a2 = await upstream("ollama", models=("llama2",), name="a2")
    b = await upstream("ollama", models=("mistral",), name="b")
    t1, t2 = target(a1, "/api/chat", name="llama2"), target(a2, "/api/chat", name="llama2")
    t1["name"], t2["name"] = "a1", "a2"
    gw = await gateway(
        route(t1, t2, path="/llama", name="llama-route"),
        route(target(b, "/api/chat", name="mistral"), path="/mistral", name="mistral-route"),
        frontends=FRONT,
    )
    c = client(gw)
    hi = [{"role": "user", "content": "Hi"}]
    r = await c.chat(model="mistral", messages=hi)
    assert r.model == "mistral" and r.message.content == b.expected_text(8)
    assert (len(a1.generation_requests()), len(a2.generation_requests())) == (0, 0)
    assert [x.json["model"] for x in b.generation_requests()] == ["mistral"]

    await c.chat(model="llama2", messages=hi)
    await c.chat(model="llama2:latest", messages=hi)  # Ollama's other spelling of it
    # Round-robin: one each; and both got the name their route knows.
    assert [x.json["model"] for x in a1.generation_requests()] == ["llama2"]
    assert [x.json["model"] for x in a2.generation_requests()] == ["llama2"]
    assert len(b.generation_requests()) == 1

    parts = [p async for p in await c.chat(model="mistral", messages=hi, stream=True)]
    assert parts[-1].model == "mistral" and parts[-1].done
    assert len(b.generation_requests()) == 2

    async with http.get(f"http://127.0.0.1:{gw.status_port}/metrics") as resp:
        text = await resp.text()
    name = "llama_gateway_requests_total"
    assert metric(text, name, route="llama-route", outcome="success") == 2
    assert metric(text, name, route="mistral-route", outcome="success") == 2
    assert metric(text, name, route="llama-route", target="a1", outcome="success") == 1
    assert metric(text, name, route="llama-route", target="a2", outcome="success") == 1
    assert metric(text, "llama_gateway_balancer_picks_total", route="llama-route") == 2
    # A model no route serves reaches no route and no metric.
    with pytest.raises(ollama.ResponseError):
        await c.chat(model="gemma", messages=hi)
    async with http.get(f"http://127.0.0.1:{gw.status_port}/metrics") as resp:
        after = await resp.text()
    assert metric(after, name) == metric(text, name)


async def test_empty_embed_input_loads_the_model_like_ollama(upstream, gateway, http) -> None:
    """Ollama answers an empty input with no vectors (a load), without an upstream call;
    an empty string inside a list is refused (nothing to embed)."""
    up = await upstream("ollama")
    t = target(up, "/api/embed", route_type="llm/v1/embeddings", name="nomic-embed-text")
    gw = await gateway(route(t, path="/embed"), frontends={"ollama": {"prefix": ""}})
    for body, want in [
        (
            {"model": "nomic-embed-text", "input": ""},
            {"model": "nomic-embed-text", "embeddings": []},
        ),
        (
            {"model": "nomic-embed-text", "input": []},
            {"model": "nomic-embed-text", "embeddings": []},
        ),
    ]:
        async with http.post(url(gw, "/api/embed"), json=body) as r:
            assert r.status == 200 and await r.json() == want
    async with http.post(
        url(gw, "/api/embeddings"), json={"model": "nomic-embed-text", "prompt": ""}
    ) as r:
        assert r.status == 200 and await r.json() == {"embedding": []}
    async with http.post(
        url(gw, "/api/embed"), json={"model": "nomic-embed-text", "input": ["a", ""]}
    ) as r:
        assert r.status == 400
        assert "non-empty" in (await r.json())["error"]
    assert up.embedding_requests() == []
