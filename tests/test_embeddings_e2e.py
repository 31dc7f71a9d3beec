"""`route_type: llm/v1/embeddings` through a real gateway to each fake format: the client
always gets OpenAI's answer (floats, or base64 as the openai SDK asks by default), and
errors, pass-through and metrics behave as for generation."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import aiohttp
import openai
import pytest
from helpers import route, target, url
from prometheus_client.parser import text_string_to_metric_families

from gateway.jsonutil import dumps
from gateway.sim import Behaviour, FakeUpstream
from gateway.sim.embed import vector

EMBEDDINGS = "llm/v1/embeddings"
PATHS = {"ollama": "/api/embed", "openai": "/v1/embeddings", "llamacpp": "/embedding"}
FORMATS = ["ollama", "openai", "llamacpp"]
TEXTS = ["hello world", "foo"]
# Reported by the fakes: words + BOS per input. Estimated (llama.cpp's native answer
# counts nothing): ≈4 characters a token, rounded up per input.
REPORTED = 3 + 2
ESTIMATED = 3 + 1


def emb_target(up: FakeUpstream, fmt: str, **kw: Any) -> dict[str, Any]:
    options = {"raw_flavor": "llamacpp"} if fmt == "llamacpp" else {}
    return target(
        up,
        PATHS[fmt],
        fmt="raw" if fmt == "llamacpp" else fmt,
        route_type=EMBEDDINGS,
        options=options,
        **kw,
    )


async def setup(upstream, gateway, fmt: str, **up_kw: Any) -> tuple[FakeUpstream, Any]:  # type: ignore[no-untyped-def]
    up = await upstream("ollama" if fmt == "ollama" else fmt, **up_kw)
    gw = await gateway(route(emb_target(up, fmt), path="/v1/embeddings", name="emb"))
    return up, gw


async def post(http: aiohttp.ClientSession, gw: Any, body: Any) -> tuple[int, Any, bytes]:
    async with http.post(url(gw, "/v1/embeddings"), json=body) as r:
        raw = await r.read()
        return r.status, json.loads(raw), raw


def floats(b64: str) -> list[float]:
    raw = base64.b64decode(b64)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def message(doc: Any) -> str:
    err = doc["error"]
    return err if isinstance(err, str) else err["message"]


@pytest.mark.parametrize("fmt", FORMATS)
async def test_batch_as_floats(upstream, gateway, http, fmt: str) -> None:
    up, gw = await setup(upstream, gateway, fmt)
    status, doc, _ = await post(http, gw, {"model": "llama2", "input": TEXTS})
    assert status == 200, doc
    n = ESTIMATED if fmt == "llamacpp" else REPORTED
    assert doc == {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": vector(t)} for i, t in enumerate(TEXTS)
        ],
        "model": "llama2",
        "usage": {"prompt_tokens": n, "total_tokens": n},
    }
    sent = up.embedding_requests()[0].json
    assert (
        sent
        == {
            "ollama": {"model": "llama2", "input": TEXTS},
            "openai": {"model": "llama2", "input": TEXTS},
            "llamacpp": {"content": TEXTS},
        }[fmt]
    )


@pytest.mark.parametrize("fmt", FORMATS)
async def test_openai_sdk_base64_by_default_and_float(upstream, gateway, fmt: str) -> None:
    """The SDK asks for base64 unless told otherwise, and decodes it: either way the
    vectors are the upstream's (float32-exact, so equal)."""
    up, gw = await setup(upstream, gateway, fmt)
    client = openai.AsyncOpenAI(base_url=url(gw, "/v1"), api_key="x", max_retries=0)
    try:
        resp = await client.embeddings.create(model="llama2", input=TEXTS)
        assert [d.embedding for d in resp.data] == [vector(t) for t in TEXTS]
        assert resp.usage.prompt_tokens == (ESTIMATED if fmt == "llamacpp" else REPORTED)
        one = await client.embeddings.create(model="llama2", input="hi", encoding_format="float")
        assert one.data[0].embedding == vector("hi") and one.model == "llama2"
    finally:
        await client.close()
    asked = [r.json.get("encoding_format") for r in up.embedding_requests()]
    # Only an OpenAI-compatible upstream is asked for base64; the others are converted.
    assert asked == (["base64", "float"] if fmt == "openai" else [None, None])


async def test_openai_upstream_that_ignores_base64_is_converted(upstream, gateway, http) -> None:
    """llama-cpp-python answers floats whatever `encoding_format` says; a float answer
    that already fits is passed through byte for byte."""
    canned = {
        "object": "list",
        "data": [{"object": "embedding", "embedding": vector("hi"), "index": 0}],
        "model": "served-model",
        "usage": {"prompt_tokens": 2, "total_tokens": 2},
    }
    raw = dumps(canned)
    up, gw = await setup(upstream, gateway, "openai", behaviour=Behaviour(status=200))
    up.behaviour.error_body = raw
    status, doc, got = await post(http, gw, {"model": "llama2", "input": "hi"})
    assert (status, got) == (200, raw)
    body = {"model": "llama2", "input": "hi", "encoding_format": "base64"}
    status, doc, _ = await post(http, gw, body)
    assert status == 200 and floats(doc["data"][0]["embedding"]) == vector("hi")
    assert doc["model"] == "served-model" and doc["usage"]["prompt_tokens"] == 2


async def test_token_ids_stream_flag_and_dimensions(upstream, gateway, http) -> None:
    """Token ids go to OpenAI-compatible servers and llama.cpp; `stream` is never sent
    (embeddings answer one body); `dimensions` reaches Ollama."""
    up, gw = await setup(upstream, gateway, "openai")
    body = {"model": "llama2", "input": [[1, 2, 3]], "stream": True, "dimensions": 4}
    status, doc, _ = await post(http, gw, body)
    assert status == 200 and len(doc["data"][0]["embedding"]) == 4
    assert up.embedding_requests()[0].json == {
        "model": "llama2",
        "input": [[1, 2, 3]],
        "dimensions": 4,
    }

    up, gw = await setup(upstream, gateway, "llamacpp")
    status, doc, _ = await post(http, gw, {"model": "llama2", "input": [5, 6]})
    assert status == 200 and doc["data"][0]["embedding"] == vector([5, 6])
    assert doc["usage"]["prompt_tokens"] == 2  # token ids are counted, not estimated

    up, gw = await setup(upstream, gateway, "ollama")
    status, doc, _ = await post(http, gw, {"model": "llama2", "input": "a b", "dimensions": 3})
    assert status == 200 and len(doc["data"][0]["embedding"]) == 3
    assert up.embedding_requests()[0].json["dimensions"] == 3


@pytest.mark.parametrize(
    ("fmt", "body", "reason"),
    [
        ("ollama", {"input": [[1, 2]]}, "input: ollama embeds text only, not token ids"),
        ("ollama", {"input": [{"a": 1}]}, "input[0]: must be a string or a non-empty list"),
        ("openai", {"input": "a", "encoding_format": "hex"}, 'encoding_format: "hex" is not'),
        ("llamacpp", {"input": "a", "dimensions": 8}, "dimensions: llama.cpp cannot shorten"),
    ],
)
async def test_untransformable_requests(upstream, gateway, http, fmt, body, reason) -> None:
    up, gw = await setup(upstream, gateway, fmt)
    status, doc, _ = await post(http, gw, {"model": "llama2", **body})
    fmt_name = "raw" if fmt == "llamacpp" else fmt
    prefix = f"error transforming to llama2://{EMBEDDINGS}/{fmt_name}: "
    assert status == 400 and message(doc).startswith(prefix + reason), doc
    assert up.embedding_requests() == []


async def test_bad_input_is_refused_at_intake(upstream, gateway, http) -> None:
    up, gw = await setup(upstream, gateway, "ollama")
    bodies = [{"input": 5}, {"input": []}, {"model": "llama2"}, {"messages": [{"a": 1}]}]
    bodies += [{"input": ""}, {"input": ["a", ""]}, {"input": [[1], []]}]  # nothing to embed
    for body in bodies:
        assert (await post(http, gw, body))[0] == 400, body
    assert up.generation_requests() == []


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("code", [404, 500])
async def test_upstream_errors_pass_through(upstream, gateway, http, fmt: str, code: int) -> None:
    up, gw = await setup(upstream, gateway, fmt, behaviour=Behaviour(status=code))
    status, doc, _ = await post(http, gw, {"model": "llama2", "input": "a"})
    assert status == code and message(doc)
    assert len(up.embedding_requests()) == 1  # not retried: the default failover is error, timeout


@pytest.mark.parametrize(
    ("fmt", "answer", "reason"),
    [
        ("ollama", b"not json", "failed to decode ollama embeddings response"),
        ("ollama", b'{"model":"m"}', "'embeddings' not in ollama embed response"),
        ("openai", b'{"data":[]}', "the upstream answered 0 embeddings for 1 input"),
        (
            "llamacpp",
            b'[{"index":0,"embedding":["x"]}]',
            "[0]: the embedding is not a list of numbers",
        ),
    ],
)
async def test_unreadable_upstream_answer(upstream, gateway, http, fmt, answer, reason) -> None:
    up, gw = await setup(upstream, gateway, fmt, behaviour=Behaviour(status=200))
    up.behaviour.error_body = answer
    status, doc, _ = await post(http, gw, {"model": "llama2", "input": "a"})
    assert status == 500
    assert message(doc) == f"transformation failed from type llama2://{EMBEDDINGS}: {reason}"


async def test_llamacpp_without_pooling_says_how_to_fix(upstream, gateway, http) -> None:
    up, gw = await setup(upstream, gateway, "llamacpp")
    up.dialect.embeddings.pooling = "none"  # type: ignore[attr-defined]
    status, doc, _ = await post(http, gw, {"model": "llama2", "input": "hello world"})
    assert status == 500 and "start llama-server with --pooling mean" in message(doc)
    up.dialect.embeddings.enabled = False  # type: ignore[attr-defined]
    status, doc, _ = await post(http, gw, {"model": "llama2", "input": "hello world"})
    assert status == 501 and "--embeddings" in message(doc)


def sample(text: str, name: str, **labels: str) -> float:
    return sum(
        s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


async def test_metrics_count_prompt_tokens_only(upstream, gateway, http) -> None:
    up = await upstream("ollama")
    up2 = await upstream("llamacpp")
    gw = await gateway(
        route(emb_target(up, "ollama"), path="/v1/embeddings", name="emb"),
        route(emb_target(up2, "llamacpp"), path="/native", name="native"),
    )
    assert (await post(http, gw, {"model": "llama2", "input": TEXTS}))[0] == 200
    async with http.post(url(gw, "/native"), json={"input": TEXTS}) as r:
        assert r.status == 200
    async with http.get(f"http://127.0.0.1:{gw.status_port}/metrics") as r:
        text = await r.text()
    tokens = "llama_gateway_tokens_total"
    assert sample(text, tokens, route="emb", token_type="prompt", source="reported") == REPORTED
    assert sample(text, tokens, route="native", token_type="prompt", source="estimated") == (
        ESTIMATED
    )
    assert sample(text, tokens, token_type="completion") == 0
    assert sample(text, "llama_gateway_time_per_output_token_seconds_count") == 0
    kong = "kong_ai_llm_tokens_total"
    assert sample(text, kong, token_type="prompt_tokens") == REPORTED + ESTIMATED
    assert sample(text, kong, token_type="total_tokens") == REPORTED + ESTIMATED
    assert sample(text, "llama_gateway_requests_total", outcome="success") == 2
