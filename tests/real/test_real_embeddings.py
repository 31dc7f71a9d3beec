"""`route_type: llm/v1/embeddings` through the gateway to real llama.cpp servers: the
native `/embedding` of `llama-server` (`llama2_format: raw`, `raw_flavor: llamacpp`) and
the OpenAI-compatible `/v1/embeddings` of `llama-server` and `llama-cpp-python`.

Each vector the client gets (from the `openai` SDK, which asks for base64 and decodes
it, or as floats) is the server's own answer to the same text, and as long as the
model's embedding size.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openai
import pytest
import servers
from helpers import route, target, url
from realkit import post
from servers import RealServer, embedding_length

pytestmark = pytest.mark.real_upstream

EMBEDDINGS = "llm/v1/embeddings"
TEXTS = ["hello world", "llama alpaca gateway"]


def native_target(server: RealServer) -> dict[str, Any]:
    return target(
        server.url("/embedding"),
        "",
        fmt="raw",
        route_type=EMBEDDINGS,
        options={"raw_flavor": "llamacpp"},
    )


def openai_target(server: RealServer) -> dict[str, Any]:
    return target(server.url("/v1/embeddings"), "", fmt="openai", route_type=EMBEDDINGS)


async def native(http: Any, server: RealServer, content: Any) -> list[list[float]]:
    """The server's own pooled vectors, one per input."""
    status, got, _ = await post(http, server.url("/embedding"), {"content": content})
    assert status == 200, got
    return [row["embedding"][0] for row in sorted(got, key=lambda r: r["index"])]


def close(a: list[float], b: list[float]) -> bool:
    """Equal up to float32 rounding (base64 carries float32; JSON floats may be longer)."""
    return len(a) == len(b) and all(
        math.isclose(x, y, abs_tol=1e-6) for x, y in zip(a, b, strict=True)
    )


@pytest.fixture
async def sdk(gateway: Any) -> AsyncIterator[Any]:
    """Factory: an `openai.AsyncOpenAI` on a gateway with one embeddings route."""
    clients: list[openai.AsyncOpenAI] = []

    async def make(t: dict[str, Any]) -> openai.AsyncOpenAI:
        gw = await gateway(route(t, path="/v1/embeddings", name="emb"))
        client = openai.AsyncOpenAI(base_url=url(gw, "/v1"), api_key="x", max_retries=0)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


async def test_native_embedding_through_the_sdk(
    llama_server_embeddings, tiny_model: Path, sdk, http
) -> None:
    """The SDK's default base64 and explicit floats both give the server's own vectors,
    one per input, of the model's size; usage is our estimate (the native answer has
    no counts)."""
    size = embedding_length(tiny_model)
    expected = await native(http, llama_server_embeddings, TEXTS)
    client = await sdk(native_target(llama_server_embeddings))
    resp = await client.embeddings.create(model="llama2", input=TEXTS)
    got = [d.embedding for d in resp.data]
    assert [len(v) for v in got] == [size, size]
    assert all(close(g, e) for g, e in zip(got, expected, strict=True))
    assert all(math.isclose(math.sqrt(sum(x * x for x in v)), 1.0, abs_tol=1e-4) for v in got)
    assert resp.usage.prompt_tokens == resp.usage.total_tokens > 0

    floats = await client.embeddings.create(model="llama2", input=TEXTS[0], encoding_format="float")
    # Close, not equal: llama-server's vector of a text alone and within a batch differ
    # in the last bits.
    assert close(floats.data[0].embedding, expected[0])


async def test_native_token_ids_and_raw_http(llama_server_embeddings, gateway, http) -> None:
    gw = await gateway(route(native_target(llama_server_embeddings), path="/emb"))
    status, doc, _ = await post(
        http, url(gw, "/emb"), {"model": "llama2", "input": [[1, 300, 301]]}
    )
    assert status == 200, doc
    assert doc["object"] == "list" and doc["model"] == "llama2"
    assert doc["usage"] == {"prompt_tokens": 3, "total_tokens": 3}  # token ids counted
    assert close(
        doc["data"][0]["embedding"],
        (await native(http, llama_server_embeddings, [[1, 300, 301]]))[0],
    )


@pytest.mark.parametrize("server", ["llama_server_embeddings", "llama_cpp_python_embeddings"])
async def test_openai_compatible_upstreams(request, server: str, tiny_model: Path, sdk) -> None:
    """llama-server honours `encoding_format: base64` (passed through); llama-cpp-python
    ignores it and sends floats, which the gateway encodes for the SDK. Both report
    their token counts."""
    real: RealServer = request.getfixturevalue(server)
    size = embedding_length(tiny_model)
    client = await sdk(openai_target(real))
    resp = await client.embeddings.create(model="llama2", input=TEXTS)
    assert [len(d.embedding) for d in resp.data] == [size, size]
    floats = await client.embeddings.create(model="llama2", input=TEXTS, encoding_format="float")
    assert all(close(a.embedding, b.embedding) for a, b in zip(resp.data, floats.data, strict=True))
    assert resp.usage.prompt_tokens == floats.usage.prompt_tokens > 0


async def test_unpooled_and_disabled_servers_say_what_to_do(
    llama_server_bin: Path, tiny_model: Path, real_workdir: Path, llama_server, gateway, http
) -> None:
    """A llama-server without pooling answers one vector per token (refused with the
    fix); one started without `--embeddings` answers 501, passed through."""
    unpooled = servers.llama_server(
        llama_server_bin, tiny_model, real_workdir, "--embeddings", "--pooling", "none"
    ).start()
    try:
        gw = await gateway(
            route(native_target(unpooled), path="/unpooled", name="unpooled"),
            route(native_target(llama_server), path="/disabled", name="disabled"),
        )
        status, doc, _ = await post(http, url(gw, "/unpooled"), {"model": "llama2", "input": "hi"})
        assert status == 500 and "--pooling mean" in doc["error"]["message"], doc
        status, doc, _ = await post(http, url(gw, "/disabled"), {"model": "llama2", "input": "hi"})
        assert status == 501 and "--embeddings" in doc["error"]["message"], doc
    finally:
        unpooled.stop()
