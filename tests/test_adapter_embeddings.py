"""Golden tests for the embeddings adapters (pure: dicts and bytes), and the config
rules for embeddings targets."""

from __future__ import annotations

import base64
import struct
from typing import Any

import pytest
from golden import CREATED, model_options

from gateway.adapters import ADAPTERS, EMBEDDING_ADAPTERS, get_adapter
from gateway.adapters.base import Call, ResponseError, TransformError, Usage
from gateway.adapters.embeddings import LlamaCppEmbeddings, OllamaEmbeddings, OpenAIEmbeddings
from gateway.config import EMBEDDINGS, ConfigError, parse
from gateway.config.schema import ModelOptions
from gateway.jsonutil import dumps, loads

OLLAMA = get_adapter("ollama", EMBEDDINGS)
OPENAI = get_adapter("openai", EMBEDDINGS)
LLAMACPP = get_adapter("raw", EMBEDDINGS)
V1, V2 = [0.5, -0.25], [0.125, 1.0]  # float32-exact


def call(body: dict[str, Any], model: str | None = "m", **kw: Any) -> Call:
    return Call(EMBEDDINGS, body, model, False, False, "embd-abc", CREATED, **kw)


def opts(fmt: str, path: str, **kw: Any) -> ModelOptions:
    return model_options(fmt, 8080, path, **kw)


OLLAMA_OPTS = opts("ollama", "/api/embed")
OPENAI_OPTS = opts("openai", "/v1/embeddings")
LLAMACPP_OPTS = opts("raw", "/embedding", raw_flavor="llamacpp")


def b64(vec: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode()


def answer(vectors: list[Any], model: str, n: int) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)
        ],
        "model": model,
        "usage": {"prompt_tokens": n, "total_tokens": n},
    }


def test_registry() -> None:
    assert set(EMBEDDING_ADAPTERS) == set(ADAPTERS) == {"ollama", "raw", "openai"}
    assert isinstance(OLLAMA, OllamaEmbeddings) and isinstance(OPENAI, OpenAIEmbeddings)
    assert isinstance(LLAMACPP, LlamaCppEmbeddings)
    assert (
        get_adapter("raw") is ADAPTERS["raw"]
        and get_adapter("raw", "llm/v1/chat") is ADAPTERS["raw"]
    )
    with pytest.raises(ValueError, match="unknown llama2_format 'tgi'"):
        get_adapter("tgi", EMBEDDINGS)
    with pytest.raises(NotImplementedError):
        OLLAMA.decoder(call({"input": "a"}), OLLAMA_OPTS)


def test_ollama_request_and_answer() -> None:
    c = call(
        {"model": "client", "input": ["a", "b"], "dimensions": 2, "user": "u"},
        native_options={"num_ctx": 512},
        native_fields={"keep_alive": "5m", "truncate": False, "model": "never"},
    )
    assert OLLAMA.build(c, OLLAMA_OPTS) == {
        "keep_alive": "5m",
        "truncate": False,
        "model": "m",
        "input": ["a", "b"],
        "dimensions": 2,
        "options": {"num_ctx": 512},
    }
    up = {
        "model": "m",
        "embeddings": [V1, V2],
        "total_duration": 5,
        "load_duration": 1,
        "prompt_eval_count": 4,
    }
    parsed = OLLAMA.parse(c, OLLAMA_OPTS, dumps(up))
    assert loads(parsed.body) == answer([V1, V2], "m", 4)
    assert parsed.usage == Usage(4, 0, 4) and parsed.model == "m"
    # Without counts (Ollama omits a 0), the prompt is estimated; base64 on request.
    c = call({"input": "abcdefgh", "encoding_format": "base64"})
    parsed = OLLAMA.parse(c, OLLAMA_OPTS, dumps({"model": "m", "embeddings": [V1]}))
    assert loads(parsed.body) == answer([b64(V1)], "m", 2)
    assert parsed.usage == Usage(2, 0, 2, estimated=True)


def test_ollama_legacy_endpoint() -> None:
    legacy = opts("ollama", "/api/embeddings")
    c = call({"input": ["only one"]})
    assert OLLAMA.build(c, legacy) == {"model": "m", "prompt": "only one"}
    parsed = OLLAMA.parse(c, legacy, dumps({"embedding": V1}))
    assert loads(parsed.body)["data"][0]["embedding"] == V1 and parsed.usage.estimated
    with pytest.raises(TransformError, match="takes one text"):
        OLLAMA.build(call({"input": ["a", "b"]}), legacy)


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ({"input": [1, 2]}, "input: ollama embeds text only"),
        ({"input": [[1], "a"]}, "input: ollama embeds text only"),
        ({"input": ["a", 1]}, r"input\[1\]: must be a string or a non-empty list"),
        ({"input": [[]]}, r"input\[0\]"),
        ({"input": "a", "encoding_format": "binary"}, 'encoding_format: "binary" is not'),
    ],
)
def test_ollama_refusals(body: dict[str, Any], match: str) -> None:
    with pytest.raises(TransformError, match=match):
        OLLAMA.build(call(body), OLLAMA_OPTS)


def test_openai_passes_through_what_fits() -> None:
    body = {"model": "client", "input": [[1, 2]], "dimensions": 4, "stream": True, "user": "u"}
    assert OPENAI.build(call(body), OPENAI_OPTS) == {
        "model": "m",
        "input": [[1, 2]],
        "dimensions": 4,
        "user": "u",
    }
    up = dumps({**answer([V1], "served", 0), "usage": {"prompt_tokens": 3, "total_tokens": 3}})
    parsed = OPENAI.parse(call(body), OPENAI_OPTS, up)
    assert parsed.body is up and parsed.usage == Usage(3, 0, 3) and parsed.model == "served"
    # base64 asked, base64 given: as is; floats asked, base64 given: decoded
    up64 = dumps(answer([b64(V1)], "served", 3))
    assert (
        OPENAI.parse(call({"input": "a", "encoding_format": "base64"}), OPENAI_OPTS, up64).body
        is up64
    )
    parsed = OPENAI.parse(call({"input": "a"}), OPENAI_OPTS, up64)
    assert loads(parsed.body) == answer([V1], "served", 3)


def test_openai_converts_floats_when_base64_was_asked() -> None:
    """llama-cpp-python ignores `encoding_format`; items are re-ordered by their index;
    a missing usage is estimated."""
    up = {"object": "list", "data": [{"embedding": V2, "index": 1}, {"embedding": V1, "index": 0}]}
    c = call({"input": ["abcd", "efgh"], "encoding_format": "base64"})
    parsed = OPENAI.parse(c, OPENAI_OPTS, dumps(up))
    assert loads(parsed.body) == answer([b64(V1), b64(V2)], "m", 2)
    assert parsed.usage == Usage(2, 0, 2, estimated=True)


@pytest.mark.parametrize(
    ("answer_", "match"),
    [
        (b"<html>", "failed to decode openai embeddings response"),
        (b'{"error":{"message":"boom"}}', "upstream error: boom"),
        (b'{"object":"list"}', "'data' not in embeddings response"),
        (b'{"data":[{"embedding":[[1.0],[2.0]]}]}', "one embedding per token"),
        (b'{"data":[{"embedding":"!!"}]}', "not base64 of float32"),
        (b'{"data":[{"embedding":null}]}', "not a list of numbers"),
    ],
)
def test_openai_unreadable(answer_: bytes, match: str) -> None:
    with pytest.raises(ResponseError, match=match):
        OPENAI.parse(call({"input": "a"}), OPENAI_OPTS, answer_)


def test_openai_refuses_ollama_model_options() -> None:
    c = call({"input": "a"}, native_options={"num_ctx": 1}, native_fields={"keep_alive": 0})
    with pytest.raises(TransformError, match=r"options \(num_ctx\): Ollama model options"):
        OPENAI.build(c, OPENAI_OPTS)
    c = call({"input": "a"}, native_fields={"keep_alive": 0, "truncate": True})
    assert OPENAI.build(c, OPENAI_OPTS) == {"model": "m", "input": "a"}


def test_llamacpp_request_and_answers_of_each_version() -> None:
    c = call({"model": "x", "input": ["ab", [1, 2, 3]]})
    assert LLAMACPP.build(c, LLAMACPP_OPTS) == {"content": ["ab", [1, 2, 3]]}
    expected = answer([V1, V2], "m", 1 + 3)
    for up in (
        [{"index": 1, "embedding": [V2]}, {"index": 0, "embedding": [V1]}],  # pooled, nested
        [{"index": 0, "embedding": V1}, {"index": 1, "embedding": V2}],  # flat rows
        {"results": [{"embedding": V1}, {"embedding": V2}]},  # older builds, batch
    ):
        parsed = LLAMACPP.parse(c, LLAMACPP_OPTS, dumps(up))
        assert loads(parsed.body) == expected and parsed.usage.estimated
    single = LLAMACPP.parse(call({"input": "abc"}), LLAMACPP_OPTS, dumps({"embedding": V1}))
    assert loads(single.body)["data"][0]["embedding"] == V1


@pytest.mark.parametrize(
    ("answer_", "match"),
    [
        (b'[{"index":0,"embedding":[[1.0],[2.0]]}]', "--pooling none"),
        (b'{"error":{"code":501,"message":"no"}}', "llama.cpp error: no"),
        (b'{"content":"x"}', "'embedding' not in llama.cpp response"),
        (b"[]", "llama.cpp answered 0 embeddings for 1 input"),
    ],
)
def test_llamacpp_unreadable(answer_: bytes, match: str) -> None:
    with pytest.raises(ResponseError, match=match):
        LLAMACPP.parse(call({"input": "a"}), LLAMACPP_OPTS, answer_)


def test_llamacpp_refusals() -> None:
    with pytest.raises(TransformError, match="cannot shorten"):
        LLAMACPP.build(call({"input": "a", "dimensions": 2}), LLAMACPP_OPTS)
    with pytest.raises(TransformError, match="TGI"):
        LLAMACPP.build(call({"input": "a"}), opts("raw", "/generate"))
    with pytest.raises(TransformError, match="think: not supported"):
        LLAMACPP.build(call({"input": "a"}, native_fields={"think": True}), LLAMACPP_OPTS)


# ------------------------------------------------------------------ config


def config(**options: Any) -> dict[str, Any]:
    opts_ = {"upstream_url": "http://127.0.0.1:8080/embedding", **options}
    t = {"route_type": EMBEDDINGS, "model": {"provider": "llama2", "options": opts_}}
    return {"routes": [{"name": "e", "paths": ["/e"], "config": {"targets": [t]}}]}


def test_config_embeddings_targets() -> None:
    for options in (
        {"llama2_format": "raw", "raw_flavor": "llamacpp"},
        {"llama2_format": "ollama"},
        {"llama2_format": "openai", "input_cost": 0.1},
    ):
        assert parse(config(**options), {}).routes[0].route_type == EMBEDDINGS
    path = "routes[0].config.targets[0].model.options"
    with pytest.raises(ConfigError) as info:
        parse(config(llama2_format="raw", max_tokens=5, chat_template="kong", top_k=None), {})
    assert info.value.errors == [
        f"{path}.raw_flavor: llm/v1/embeddings needs an embeddings endpoint, which TGI "
        "(raw_flavor: hf) does not have; use raw_flavor: llamacpp (llama-server /embedding), "
        "llama2_format: ollama (/api/embed) or llama2_format: openai (/v1/embeddings)",
        f"{path}.max_tokens: does not apply to llm/v1/embeddings (nothing is generated)",
        f"{path}.chat_template: does not apply to llm/v1/embeddings (nothing is generated)",
    ]
