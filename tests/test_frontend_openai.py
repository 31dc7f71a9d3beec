"""The `openai` SDK through the OpenAI front door (`frontends.openai`): model listings,
dispatch by `model` across routes, errors as the SDK reads them, and each upstream
dialect behind it. Also the `…/models` sibling of a Kong-style route path."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest
from canned import ollama_tool_answer, openai_tool_answer
from helpers import read_sdk_stream, route, target, url
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel

from gateway.server import GatewayServer
from gateway.sim import Behaviour, FakeUpstream
from gateway.sim.embed import vector

FRONT = {"openai": {"prefix": "/v1"}, "ollama": {"prefix": ""}}
COMPLETIONS = "llm/v1/completions"
EMBEDDINGS = "llm/v1/embeddings"
HI: Any = [{"role": "user", "content": "Hi"}]
WEATHER_TOOL: Any = {
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


@pytest.fixture
async def sdk() -> AsyncIterator[Any]:
    """`make(gw, base="/v1")`: an `AsyncOpenAI` on the gateway, closed afterwards."""
    made: list[openai.AsyncOpenAI] = []

    def make(gw: GatewayServer, base: str = "/v1") -> openai.AsyncOpenAI:
        c = openai.AsyncOpenAI(base_url=url(gw, base), api_key="x", max_retries=0)
        made.append(c)
        return c

    yield make
    for c in made:
        await c.close()


def last_sent(up: FakeUpstream) -> Any:
    return up.generation_requests()[-1].json


async def three_models(
    upstream: Any, gateway: Any
) -> tuple[FakeUpstream, FakeUpstream, FakeUpstream, GatewayServer]:
    """An Ollama chat and completions route for `llama2` (and an embeddings route), a
    raw llama.cpp route for `codellama`, a raw TGI route for `falcon`."""
    oll = await upstream("ollama")
    cpp = await upstream("llamacpp")
    tgi = await upstream("tgi")
    gw = await gateway(
        route(target(oll, "/api/chat"), path="/llama2/chat", name="ollama-chat"),
        route(
            target(oll, "/api/generate", route_type=COMPLETIONS),
            path="/llama2/generate",
            name="ollama-generate",
        ),
        route(
            target(oll, "/api/embed", route_type=EMBEDDINGS),
            path="/llama2/embed",
            name="ollama-embed",
        ),
        route(
            target(
                cpp, "/completion", fmt="raw", name="codellama", options={"raw_flavor": "llamacpp"}
            ),
            path="/codellama",
            name="cpp-chat",
        ),
        route(target(tgi, "/", fmt="raw", name="falcon"), path="/falcon", name="tgi-chat"),
        frontends=FRONT,
    )
    return oll, cpp, tgi, gw


# ------------------------------------------------------------------ listings


async def test_models_list_and_retrieve(upstream, gateway, sdk) -> None:
    _, _, _, gw = await three_models(upstream, gateway)
    client = sdk(gw)
    page = await client.models.list()
    models = page.data
    # One entry per model, whatever route types serve it; owned by its route.
    assert [m.id for m in models] == ["llama2", "codellama", "falcon"]
    assert [m.owned_by for m in models] == ["ollama-chat", "cpp-chat", "tgi-chat"]
    assert all(m.object == "model" and isinstance(m.created, int) for m in models)

    got = await client.models.retrieve("falcon")
    assert (got.id, got.owned_by, got.object) == ("falcon", "tgi-chat", "model")

    with pytest.raises(openai.NotFoundError) as exc:
        await client.models.retrieve("gpt-4")
    assert exc.value.status_code == 404
    body: Any = exc.value.body
    assert body["code"] == "model_not_found"
    assert "codellama, falcon, llama2" in body["message"]


async def test_sibling_models_of_a_route_path(upstream, gateway, sdk, http) -> None:
    """A Kong-style route path `/llama2/v1/chat/completions`: the SDK with that route's
    base URL lists the route's models at `…/v1/models` (front doors off)."""
    a = await upstream("ollama")
    b = await upstream("ollama", models=("mistral",))
    gw = await gateway(
        route(target(a, "/api/chat"), path="/llama2/v1/chat/completions", name="llama-route"),
        route(
            target(b, "/api/generate", name="mistral", route_type=COMPLETIONS),
            path="/mistral/v1/completions",
            name="mistral-route",
        ),
    )
    client = sdk(gw, "/llama2/v1")
    models = (await client.models.list()).data
    assert [(m.id, m.owned_by) for m in models] == [("llama2", "llama-route")]
    resp = await client.chat.completions.create(model="llama2", messages=HI)
    assert resp.choices[0].message.content == a.expected_text(8)

    other = sdk(gw, "/mistral/v1")
    assert [m.id for m in (await other.models.list()).data] == ["mistral"]
    comp = await other.completions.create(model="mistral", prompt="Once", max_tokens=2)
    assert comp.choices[0].text == b.expected_text(2)

    # Front doors are off: no /v1/models, no /api/tags.
    for path in ("/v1/models", "/api/tags"):
        async with http.get(url(gw, path)) as r:
            assert r.status == 404, path
            assert (await r.json())["error"]["message"] == "no route matched"
    # The sibling lists; it answers nothing but GET.
    async with http.post(url(gw, "/llama2/v1/models")) as r:
        assert r.status == 404


# ------------------------------------------------------------------ dispatch


async def test_chat_dispatched_by_model_across_routes(upstream, gateway, sdk, http) -> None:
    a = await upstream("ollama", models=("llama2",))
    b = await upstream("openai", models=("mistral",))
    gw = await gateway(
        route(target(a, "/api/chat"), path="/a", name="route-a"),
        route(
            target(b, "/v1/chat/completions", fmt="openai", name="mistral"),
            path="/b",
            name="route-b",
        ),
        frontends=FRONT,
    )
    client = sdk(gw)
    r = await client.chat.completions.create(model="mistral", messages=HI, max_tokens=2)
    assert r.choices[0].message.content == b.expected_text(2)
    assert r.model == "mistral"
    assert len(a.generation_requests()) == 0
    assert last_sent(b)["model"] == "mistral" and last_sent(b)["max_tokens"] == 2

    r = await client.chat.completions.create(model="llama2", messages=HI, max_tokens=2)
    assert r.choices[0].message.content == a.expected_text(2)
    assert last_sent(a)["options"]["num_predict"] == 2
    assert len(b.generation_requests()) == 1

    # Streaming through the front door, usage included.
    stream = await client.chat.completions.create(
        model="mistral", messages=HI, stream=True, stream_options={"include_usage": True}
    )
    text, finish, usage = await read_sdk_stream(stream)
    assert (text, finish) == (b.expected_text(8), "stop")
    assert usage is not None and usage.completion_tokens == 8
    stream = await client.chat.completions.create(model="llama2", messages=HI, stream=True)
    text, finish, _ = await read_sdk_stream(stream)
    assert (text, finish) == (a.expected_text(8), "stop")
    assert last_sent(a)["stream"] is True
    # The answer names the target (and model) that served it, as on a route path.
    async with http.post(
        url(gw, "/v1/chat/completions"), json={"model": "mistral", "messages": HI}
    ) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("application/json")
        assert resp.headers["X-Kong-LLM-Model"] == "llama2/mistral"
        assert resp.headers["X-Gateway-Target"] == gw.router.routes[1].targets[0].name


async def test_completions_and_stream(upstream, gateway, sdk) -> None:
    oll, _, _, gw = await three_models(upstream, gateway)
    client = sdk(gw)
    comp = await client.completions.create(model="llama2", prompt="Once upon", max_tokens=3)
    assert comp.choices[0].text == oll.expected_text(3)
    assert comp.choices[0].finish_reason == "length"
    sent = oll.generation_requests()[-1]
    assert sent.path == "/api/generate" and last_sent(oll)["options"]["num_predict"] == 3
    stream = await client.completions.create(model="llama2", prompt="Once upon", stream=True)
    text = "".join([c.choices[0].text async for c in stream if c.choices])
    assert text == oll.expected_text(8)


async def test_unknown_model_is_openais_404(upstream, gateway, sdk, http) -> None:
    oll, cpp, tgi, gw = await three_models(upstream, gateway)
    client = sdk(gw)
    with pytest.raises(openai.NotFoundError) as exc:
        await client.chat.completions.create(model="gpt-4", messages=HI)
    assert exc.value.status_code == 404
    body: Any = exc.value.body
    assert body["code"] == "model_not_found"
    assert body["param"] == "model" and body["type"] == "invalid_request_error"
    assert body["message"] == (
        "The model 'gpt-4' does not exist here; available models: codellama, falcon, llama2"
    )
    # Completions list what completions routes serve.
    with pytest.raises(openai.NotFoundError) as exc:
        await client.completions.create(model="falcon", prompt="Hi")
    comp_body: Any = exc.value.body
    assert comp_body["message"].endswith("available models: llama2")
    # No model at all, with several routes of the type: the client must say which.
    async with http.post(url(gw, "/v1/chat/completions"), json={"messages": HI}) as r:
        assert r.status == 400
        assert "model" in (await r.json())["error"]["message"]
    assert [len(u.generation_requests()) for u in (oll, cpp, tgi)] == [0, 0, 0]
    async with http.get(f"http://127.0.0.1:{gw.status_port}/metrics") as r:
        text = await r.text()
    counts = {
        s.labels["reason"]: s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == "llama_gateway_frontend_rejected_total" and s.labels["frontend"] == "openai"
    }
    assert counts == {"unknown_model": 2, "bad_request": 1}


async def test_405_on_get(upstream, gateway, http) -> None:
    _, _, _, gw = await three_models(upstream, gateway)
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings"):
        async with http.get(url(gw, path)) as r:
            assert r.status == 405, path
            assert r.headers["Allow"] == "POST"
            doc = await r.json()
            assert isinstance(doc["error"]["message"], str) and "GET" in doc["error"]["message"]
    async with http.post(url(gw, "/v1/models")) as r:
        assert r.status == 405 and r.headers["Allow"] == "GET"


# ------------------------------------------------------------------ dialects behind it


async def test_max_completion_tokens_in_each_dialect(upstream, gateway, sdk) -> None:
    oll, cpp, tgi, gw = await three_models(upstream, gateway)
    client = sdk(gw)
    for model, up in (("llama2", oll), ("codellama", cpp), ("falcon", tgi)):
        r = await client.chat.completions.create(model=model, messages=HI, max_completion_tokens=3)
        assert r.choices[0].message.content == up.expected_text(3), model
        assert r.choices[0].finish_reason == "length"
        assert r.usage is not None and r.usage.completion_tokens == 3
    assert last_sent(oll)["options"]["num_predict"] == 3
    assert last_sent(cpp)["n_predict"] == 3
    assert last_sent(tgi)["parameters"]["max_new_tokens"] == 3
    for up in (oll, cpp, tgi):
        assert len(up.generation_requests()) == 1
        assert b"max_completion_tokens" not in up.generation_requests()[0].body


@pytest.mark.parametrize("kind", ["ollama", "openai"])
async def test_tools(upstream, gateway, sdk, kind: str) -> None:
    """The fakes have no model to decide on a tool call: each is told to answer the body
    its real server sends for one."""
    answer = ollama_tool_answer() if kind == "ollama" else openai_tool_answer()
    up = await upstream(kind, behaviour=Behaviour(status=200, error_body=answer))
    path, fmt = ("/api/chat", "ollama") if kind == "ollama" else ("/v1/chat/completions", "openai")
    gw = await gateway(route(target(up, path, fmt=fmt), path="/chat"), frontends=FRONT)
    client = sdk(gw)
    question: Any = {"role": "user", "content": "Weather in Paris?"}
    r = await client.chat.completions.create(
        model="llama2", messages=[question], tools=[WEATHER_TOOL]
    )
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert calls is not None and len(calls) == 1
    call: Any = calls[0]
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    assert call.id
    assert last_sent(up)["tools"] == [WEATHER_TOOL]

    up.behaviour = Behaviour()
    follow = await client.chat.completions.create(
        model="llama2",
        messages=[
            question,
            {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
            {"role": "tool", "tool_call_id": call.id, "content": "22 degrees"},
        ],
        tools=[WEATHER_TOOL],
    )
    assert follow.choices[0].message.content == up.expected_text(8)
    result = last_sent(up)["messages"][2]
    assert result["role"] == "tool" and result["content"] == "22 degrees"
    if kind == "ollama":
        assert result["tool_name"] == "get_weather"  # Ollama matches results by name
        assert last_sent(up)["messages"][1]["tool_calls"][0]["function"]["arguments"] == {
            "city": "Paris"
        }
    else:
        assert result["tool_call_id"] == call.id


class Weather(BaseModel):
    city: str
    temperature: int


async def test_structured_output_parse(upstream, gateway, sdk) -> None:
    """`chat.completions.parse(response_format=<pydantic model>)` against an Ollama
    server: the schema reaches it as `format`, and its JSON answer parses."""
    answer = '{"city": "Paris", "temperature": 21}'
    up = await upstream("ollama", text=answer, behaviour=Behaviour(n_tokens=len(answer.split())))
    gw = await gateway(route(target(up, "/api/chat"), path="/chat"), frontends=FRONT)
    client = sdk(gw)
    completion = await client.chat.completions.parse(
        model="llama2", messages=HI, response_format=Weather
    )
    parsed = completion.choices[0].message.parsed
    assert parsed == Weather(city="Paris", temperature=21)
    fmt = last_sent(up)["format"]
    assert fmt["type"] == "object"
    assert set(fmt["properties"]) == {"city", "temperature"}
    assert fmt["required"] == ["city", "temperature"]


async def test_embeddings_float_and_base64(upstream, gateway, sdk) -> None:
    oll, _, _, gw = await three_models(upstream, gateway)
    client = sdk(gw)
    texts = ["hello world", "foo"]
    # The SDK asks for base64 by default and decodes it.
    default = await client.embeddings.create(model="llama2", input=texts)
    assert [d.embedding for d in default.data] == [vector(t) for t in texts]
    assert default.model == "llama2"
    assert default.usage.prompt_tokens == 5
    floats = await client.embeddings.create(model="llama2", input=texts, encoding_format="float")
    assert [d.embedding for d in floats.data] == [vector(t) for t in texts]
    sent = oll.embedding_requests()
    assert [r.path for r in sent] == ["/api/embed", "/api/embed"]
    last: Any = sent[-1].json
    assert last["input"] == texts
    with pytest.raises(openai.NotFoundError):
        await client.embeddings.create(model="falcon", input="x")


async def test_embeddings_raw_base64_on_the_wire(upstream, gateway, http) -> None:
    *_, gw = await three_models(upstream, gateway)
    async with http.post(
        url(gw, "/v1/embeddings"),
        json={"model": "llama2", "input": "hello world", "encoding_format": "base64"},
    ) as r:
        assert r.status == 200
        doc = await r.json()
    assert isinstance(doc["data"][0]["embedding"], str)
    async with http.post(
        url(gw, "/v1/embeddings"), json={"model": "llama2", "input": "hello world"}
    ) as r:
        doc = await r.json()
    assert doc["data"][0]["embedding"] == vector("hello world")


# ------------------------------------------------------------------ upstream errors


async def test_ollama_error_reshaped_for_the_sdk(upstream, gateway, sdk) -> None:
    """Ollama answers errors as `{"error": "…"}`; an OpenAI client reads
    `error.message`: on a route path and through the front door alike."""
    up = await upstream("ollama", behaviour=Behaviour(status=404))
    gw = await gateway(
        route(target(up, "/api/chat"), path="/llama2/v1/chat/completions", name="kong-style"),
        frontends=FRONT,
    )
    for base in ("/llama2/v1", "/v1"):
        with pytest.raises(openai.NotFoundError) as exc:
            await sdk(gw, base).chat.completions.create(model="llama2", messages=HI)
        body: Any = exc.value.body
        assert body["message"] == "model 'llama2' not found", base
        assert body["type"] == "not_found_error"
    up.behaviour = Behaviour(status=500)
    with pytest.raises(openai.InternalServerError) as err:
        await sdk(gw).chat.completions.create(model="llama2", messages=HI)
    err_body: Any = err.value.body
    assert err_body["message"] == "llama runner process has terminated: exit status 2"
    assert err_body["type"] == "server_error"


async def test_front_door_prefix_elsewhere(upstream, gateway, sdk, http) -> None:
    """Another prefix moves every front-door path, the listing too."""
    up = await upstream("ollama")
    gw = await gateway(
        route(target(up, "/api/chat"), path="/chat"),
        frontends={"openai": {"prefix": "/openai/v1"}},
    )
    client = sdk(gw, "/openai/v1")
    assert [m.id for m in (await client.models.list()).data] == ["llama2"]
    r = await client.chat.completions.create(model="llama2", messages=HI)
    assert r.choices[0].message.content == up.expected_text(8)
    for path in ("/v1/models", "/api/tags"):  # the Ollama door is off
        async with http.get(url(gw, path)) as resp:
            assert resp.status == 404, path


async def test_no_model_goes_to_the_only_route(upstream, gateway, http) -> None:
    up = await upstream("ollama")
    gw = await gateway(route(target(up, "/api/chat"), path="/chat"), frontends=FRONT)
    async with http.post(url(gw, "/v1/chat/completions"), json={"messages": HI}) as r:
        assert r.status == 200
        doc = await r.json()
    assert doc["choices"][0]["message"]["content"] == up.expected_text(8)
    assert last_sent(up)["model"] == "llama2"  # the target's own model


async def test_front_door_bad_bodies(upstream, gateway, http) -> None:
    _, _, _, gw = await three_models(upstream, gateway)
    async with aiohttp.ClientSession() as s:
        for body in (b"not json", b"[1]", b""):
            async with s.post(url(gw, "/v1/chat/completions"), data=body) as r:
                assert r.status == 400, body
                doc = await r.json()
                assert isinstance(doc["error"]["message"], str)
