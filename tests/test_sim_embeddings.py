"""The fakes' embeddings endpoints answer in their real servers' shapes (checked against
a real llama-server and Ollama's source), with deterministic vectors, and show up in the
request log."""

from __future__ import annotations

import base64
import math
import struct
from typing import Any

import aiohttp
import pytest

from gateway.sim import Behaviour, FakeUpstream
from gateway.sim.embed import DIM, token_count, vector

UNIT = pytest.approx(1.0, abs=1e-6)


def norm(v: list[float]) -> float:
    return math.sqrt(sum(x * x for x in v))


def floats(b64: str) -> list[float]:
    raw = base64.b64decode(b64)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


async def post(
    http: aiohttp.ClientSession, up: FakeUpstream, path: str, body: Any
) -> tuple[int, Any, str]:
    async with http.post(up.url(path), json=body) as r:
        return r.status, await r.json(content_type=None), r.headers.get("Content-Type", "")


def test_vectors_are_deterministic_unit_float32() -> None:
    v = vector("hello world")
    assert v == vector("hello world") and v != vector("hello")
    assert len(v) == DIM and norm(v) == UNIT
    assert floats(base64.b64encode(struct.pack(f"<{DIM}f", *v)).decode()) == v  # float32-exact
    assert vector([1, 2]) != vector("1 2")
    assert token_count("hello world") == 3 and token_count("") == 1 and token_count([5, 6]) == 2


async def test_ollama_embed(upstream, http) -> None:
    up = await upstream("ollama", models=["nomic-embed-text"], loaded=[])
    status, doc, ctype = await post(
        http, up, "/api/embed", {"model": "nomic-embed-text", "input": ["hello world", "foo"]}
    )
    assert status == 200 and ctype == "application/json; charset=utf-8"
    assert list(doc) == [
        "model",
        "embeddings",
        "total_duration",
        "load_duration",
        "prompt_eval_count",
    ]
    assert doc["model"] == "nomic-embed-text"
    assert doc["embeddings"] == [vector("hello world"), vector("foo")]
    assert doc["prompt_eval_count"] == 3 + 2
    assert up.loaded == ["nomic-embed-text"]  # embedding loads the model

    # `dimensions` keeps the first components, normalised again
    body = {"model": "nomic-embed-text", "input": "hi", "dimensions": 3}
    short = (await post(http, up, "/api/embed", body))[1]["embeddings"][0]
    assert len(short) == 3 and norm(short) == UNIT
    # an empty input only loads the model
    doc = (await post(http, up, "/api/embed", {"model": "nomic-embed-text", "input": ""}))[1]
    assert doc == {"model": "nomic-embed-text", "embeddings": []}
    # errors in Ollama's words
    assert await post(http, up, "/api/embed", {"model": "nomic-embed-text", "input": [1]}) == (
        400,
        {"error": "invalid input type"},
        "application/json; charset=utf-8",
    )
    assert (await post(http, up, "/api/embed", {"model": "x", "input": "a"}))[:2] == (
        404,
        {"error": "model 'x' not found"},
    )
    assert (await post(http, up, "/api/embed", {"input": "a"}))[:2] == (
        400,
        {"error": "model is required"},
    )
    assert [r.path for r in up.embedding_requests()] == ["/api/embed"] * 6
    assert up.embedding_requests() == up.generation_requests()


async def test_ollama_legacy_embeddings(upstream, http) -> None:
    up = await upstream("ollama")
    status, doc, _ = await post(http, up, "/api/embeddings", {"model": "llama2", "prompt": "hi"})
    assert status == 200 and list(doc) == ["embedding"]
    assert doc["embedding"] == vector("hi", normalize=False) and norm(doc["embedding"]) != UNIT
    doc = (await post(http, up, "/api/embeddings", {"model": "llama2", "prompt": ""}))[1]
    assert doc == {"embedding": []}
    assert up.embedding_requests()[0].json == {"model": "llama2", "prompt": "hi"}


async def test_ollama_v1_embeddings(upstream, http) -> None:
    up = await upstream("ollama", models=["all-minilm"], loaded=[])
    body = {"model": "all-minilm", "input": "hi", "encoding_format": "base64"}
    status, doc, _ = await post(http, up, "/v1/embeddings", body)
    assert status == 200 and floats(doc["data"][0]["embedding"]) == vector("hi")
    assert up.loaded == ["all-minilm"]


async def test_openai_embeddings(upstream, http) -> None:
    up = await upstream("openai", models=["text-embedding-3-small"])
    body: dict[str, Any] = {"model": "text-embedding-3-small", "input": ["hello world", "foo"]}
    status, doc, ctype = await post(http, up, "/v1/embeddings", body)
    assert status == 200 and ctype == "application/json"
    assert doc == {
        "object": "list",
        "data": [
            {"object": "embedding", "index": 0, "embedding": vector("hello world")},
            {"object": "embedding", "index": 1, "embedding": vector("foo")},
        ],
        "model": "text-embedding-3-small",
        "usage": {"prompt_tokens": 5, "total_tokens": 5},
    }
    doc = (await post(http, up, "/v1/embeddings", {**body, "encoding_format": "base64"}))[1]
    assert [floats(d["embedding"]) for d in doc["data"]] == [vector("hello world"), vector("foo")]
    doc = (await post(http, up, "/v1/embeddings", {**body, "input": [[1, 2, 3]]}))[1]
    assert doc["data"][0]["embedding"] == vector([1, 2, 3]) and doc["usage"]["prompt_tokens"] == 3
    doc = (await post(http, up, "/v1/embeddings", {**body, "dimensions": 4}))[1]
    assert all(len(d["embedding"]) == 4 for d in doc["data"])

    async def refusal(extra: dict[str, Any]) -> tuple[int, Any]:
        status, doc, _ = await post(http, up, "/v1/embeddings", {**body, **extra})
        return status, doc["error"]["message"]

    assert await refusal({"encoding_format": "hex"}) == (
        400,
        "'hex' is not one of ['float', 'base64'] - 'encoding_format'",
    )
    assert await refusal({"input": None}) == (400, "Missing required parameter: 'input'.")
    assert (await refusal({"input": [{"a": 1}]}))[0] == 400
    assert (await refusal({"dimensions": DIM + 1}))[0] == 400
    assert await refusal({"model": "nope"}) == (404, "The model `nope` does not exist")


async def test_llamacpp_native_embedding(upstream, http) -> None:
    """As llama-server answers `/embedding` (b6xxx): a list with one row per input, rows
    nested once more; token-id and mixed inputs; no token counts."""
    up = await upstream("llamacpp")
    status, doc, ctype = await post(http, up, "/embedding", {"content": "hello world"})
    assert status == 200 and ctype == "application/json; charset=utf-8"
    assert doc == [{"index": 0, "embedding": [vector("hello world")]}]
    doc = (await post(http, up, "/embedding", {"content": ["hello world", [1, 2]]}))[1]
    assert doc == [
        {"index": 0, "embedding": [vector("hello world")]},
        {"index": 1, "embedding": [vector([1, 2])]},
    ]
    doc = (await post(http, up, "/embeddings", {"input": [7, 8, 9]}))[1]  # one token input
    assert doc == [{"index": 0, "embedding": [vector([7, 8, 9])]}]

    up.dialect.embeddings.pooling = "none"  # type: ignore[attr-defined]
    doc = (await post(http, up, "/embedding", {"content": "hello world"}))[1]
    assert len(doc[0]["embedding"]) == token_count("hello world")  # one row per token

    async def error(body: Any, path: str = "/embedding") -> tuple[int, Any]:
        status, doc, _ = await post(http, up, path, body)
        return status, doc["error"]["message"]

    assert await error({}) == (400, '"input" or "content" must be provided')
    assert await error({"content": []}) == (400, '"input" must not be empty')
    assert (await error({"content": 5}))[0] == 400
    up.dialect.embeddings.enabled = False  # type: ignore[attr-defined]
    assert await error({"content": "a"}) == (
        501,
        "This server does not support embeddings. Start it with `--embeddings`",
    )
    assert len(up.embedding_requests()) == 8


async def test_llamacpp_v1_embeddings(upstream, http) -> None:
    """llama-server's /v1/embeddings: its key order, a base64 item says so, any model
    name, `dimensions` ignored; pooling none is refused."""
    up = await upstream("llamacpp", models=["tiny.gguf"])
    status, doc, _ = await post(http, up, "/v1/embeddings", {"input": "hi", "dimensions": 2})
    assert status == 200
    assert list(doc) == ["model", "object", "usage", "data"] and doc["model"] == "tiny.gguf"
    assert doc["data"] == [{"embedding": vector("hi"), "index": 0, "object": "embedding"}]
    body = {"input": ["a", "b"], "model": "x", "encoding_format": "base64"}
    doc = (await post(http, up, "/v1/embeddings", body))[1]
    assert doc["model"] == "x" and doc["data"][1]["encoding_format"] == "base64"
    assert floats(doc["data"][1]["embedding"]) == vector("b")
    status, doc, _ = await post(http, up, "/v1/embeddings", {"input": "a", "encoding_format": 1})
    assert status == 400 and doc["error"]["code"] == 400
    up.dialect.embeddings.pooling = "none"  # type: ignore[attr-defined]
    status, doc, _ = await post(http, up, "/v1/embeddings", {"input": "a"})
    assert status == 400 and "Pooling type 'none' is not OAI compatible" in doc["error"]["message"]


async def test_fault_knobs_apply_to_embeddings(upstream, http) -> None:
    up = await upstream("ollama", behaviour=Behaviour(status=500))
    status, doc, _ = await post(http, up, "/api/embed", {"model": "llama2", "input": "a"})
    assert status == 500 and "error" in doc
    up.behaviour = Behaviour(status=200, error_body=b"not json")
    async with http.post(up.url("/api/embed"), json={"model": "llama2", "input": "a"}) as r:
        assert (r.status, await r.read()) == (200, b"not json")


async def test_embeddings_hold_a_slot(upstream, http) -> None:
    up = await upstream("llamacpp", slots=1)
    await post(http, up, "/embedding", {"content": "a"})
    assert up.pool.started == 1 and up.busy == 0
