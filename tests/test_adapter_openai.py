"""Golden tests for the openai adapter: the request is the client's with our tuning and
model; answers and stream events pass through byte for byte."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from golden import call, decode, model_options, split_invariant

from gateway.adapters import ADAPTERS, get_adapter
from gateway.adapters.base import Call, ResponseError, TransformError, Usage
from gateway.adapters.common import DONE
from gateway.config import CHAT, COMPLETIONS
from gateway.config.schema import ModelOptions
from gateway.jsonutil import dumps, loads

ADAPTER = get_adapter("openai")


def opts(**kw: Any) -> ModelOptions:
    return model_options("openai", 8080, "/v1/chat/completions", **kw)


def run(c: Call, chunks: list[bytes]) -> tuple[list[bytes], Any]:
    return decode(ADAPTER, c, opts(), chunks)


def assert_split_invariant(c: Call, data: bytes) -> list[bytes]:
    return split_invariant(ADAPTER, c, opts(), data)


def test_registry() -> None:
    assert set(ADAPTERS) == {"ollama", "raw", "openai"}
    assert all(get_adapter(k).format == k for k in ADAPTERS)
    with pytest.raises(ValueError, match="unknown llama2_format 'gemini'"):
        get_adapter("gemini")


# ------------------------------------------------------------------ build


def test_build_passes_everything_with_tuning_model_and_stream() -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    body = {
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        "max_tokens": 256,
        "temperature": 0.1,
        "top_p": 0.2,
        "top_k": 40,
        "tools": tools,
        "stop": "x",
        "n": 2,
        "response_format": {"type": "json_object"},
        "stream_options": {"include_usage": True},
        "stream": True,
    }
    before = copy.deepcopy(body)
    out = ADAPTER.build(call(body, stream=True), opts(max_tokens=1024, top_p=0.5))
    assert out == {
        "model": "llama2",
        "messages": body["messages"],
        "max_tokens": 1024,
        "temperature": 0.1,
        "top_p": 0.5,
        "top_k": 40,  # not OpenAI's, but OpenAI-compatible servers take it
        "tools": tools,
        "stop": "x",
        "n": 2,
        "response_format": {"type": "json_object"},
        "stream_options": {"include_usage": True},
        "stream": True,
    }
    assert body == before


def test_build_stream_explicit_and_config_values_win() -> None:
    body = {"prompt": "Once", "temperature": None, "top_k": 5}
    out = ADAPTER.build(call(body, COMPLETIONS), opts(top_k=40, temperature=0.7))
    assert out == {
        "prompt": "Once",
        "temperature": 0.7,
        "top_k": 40,
        "model": "llama2",
        "stream": False,
    }


def test_build_keeps_client_model_without_effective_name() -> None:
    body = {"model": "their-model", "messages": [{"role": "user", "content": "hi"}]}
    assert ADAPTER.build(call(body, model=None), opts())["model"] == "their-model"


@pytest.mark.parametrize(
    ("limits", "configured", "sent"),
    [
        ({"max_tokens": 5}, None, {"max_tokens": 5}),
        ({"max_completion_tokens": 9}, None, {"max_completion_tokens": 9}),
        ({"max_tokens": 5, "max_completion_tokens": 9}, None, {"max_completion_tokens": 9}),
        ({"max_completion_tokens": 9}, 3, {"max_completion_tokens": 3}),
        ({"max_tokens": 5}, 3, {"max_tokens": 3}),
        ({}, 3, {"max_tokens": 3}),
    ],
)
def test_build_limit_under_the_clients_name(
    limits: dict[str, Any], configured: int | None, sent: dict[str, Any]
) -> None:
    out = ADAPTER.build(call({"messages": [], **limits}), opts(max_tokens=configured))
    assert {k: v for k, v in out.items() if k.startswith("max_")} == sent


def test_build_passes_every_openai_and_native_field() -> None:
    body = {
        "messages": [{"role": "developer", "content": [{"type": "image_url"}]}],
        "n": 3,
        "logprobs": True,
        "top_logprobs": 2,
        "logit_bias": {"1": 2},
        "functions": [{"name": "f"}],
        "function_call": "auto",
        "reasoning_effort": "low",
        "modalities": ["text", "audio"],
        "audio": {"voice": "alloy"},
        "prediction": {"type": "content", "content": "x"},
        "web_search_options": {},
        "verbosity": "low",
        "presence_penalty": 0.5,
        "min_p": 0.1,
        "repeat_penalty": 1.1,
        "user": "u",
        "store": True,
        "metadata": {"k": "v"},
    }
    out = ADAPTER.build(call(body), opts())
    assert out == {**body, "model": "llama2", "stream": False}


def test_build_native_options_top_level_hints_and_keep_alive_left_out() -> None:
    c = call({"prompt": "Once", "temperature": 0.2}, COMPLETIONS)
    c.native_options = {"mirostat": 2, "num_ctx": 4096, "num_predict": 7, "temperature": 0.9}
    c.native_fields = {"keep_alive": "5m", "think": False, "raw": True, "suffix": "end"}
    assert ADAPTER.build(c, opts()) == {
        "max_tokens": 7,
        "temperature": 0.2,
        "prompt": "Once",
        "mirostat": 2,
        "suffix": "end",
        "model": "llama2",
        "stream": False,
    }
    c.native_fields = {"think": True}
    with pytest.raises(TransformError) as exc:
        ADAPTER.build(c, opts())
    assert str(exc.value) == (
        "think is not supported by openai targets; send think: false or use an ollama target"
    )
    c.native_fields = {"system": "S"}
    with pytest.raises(TransformError, match=r"^system is not supported by openai targets on"):
        ADAPTER.build(c, opts())


# ------------------------------------------------------------------ parse

CHAT_BODY = (
    b'{"id":"chatcmpl-upstream","object":"chat.completion","created":1715000000,'
    b'"model":"llama-3-8b","system_fingerprint":"b3000","choices":[{"index":0,'
    b'"message":{"role":"assistant","content":"Hello!","refusal":null},"logprobs":null,'
    b'"finish_reason":"stop"}],"usage":{"prompt_tokens":9, "completion_tokens":3,'
    b' "total_tokens":12}}'
)


def test_parse_returns_upstream_bytes_unchanged() -> None:
    parsed = ADAPTER.parse(call({}), opts(), CHAT_BODY)
    assert parsed.body == CHAT_BODY
    assert parsed.usage == Usage(9, 3, 12, estimated=False)
    assert parsed.model == "llama-3-8b"


def test_parse_reported_total_is_kept() -> None:
    body = b'{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":5}}'
    assert ADAPTER.parse(call({}), opts(), body).usage == Usage(1, 2, 5)


def test_parse_without_usage_is_estimated() -> None:
    body = b'{"choices":[{"index":0,"text":"12345678","logprobs":null,"finish_reason":"stop"}]}'
    parsed = ADAPTER.parse(call({"prompt": "1234"}, COMPLETIONS), opts(), body)
    assert parsed.body == body
    assert parsed.usage == Usage(1, 2, 3, estimated=True)


@pytest.mark.parametrize(
    ("route_type", "body", "completed"),
    [
        # llama.cpp's /v1 layer: no logprobs, no refusal
        (
            CHAT,
            b'{"choices":[{"index":0,"message":{"role":"assistant","content":"Hi"},'
            b'"finish_reason":"stop"}]}',
            {
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "Hi", "refusal": None},
                        "finish_reason": "stop",
                        "logprobs": None,
                    }
                ]
            },
        ),
        (
            COMPLETIONS,
            b'{"choices":[{"index":0,"text":"Hi","finish_reason":"stop"}]}',
            {"choices": [{"index": 0, "text": "Hi", "finish_reason": "stop", "logprobs": None}]},
        ),
    ],
)
def test_parse_completes_fields_the_schema_requires(
    route_type: str, body: bytes, completed: dict[str, Any]
) -> None:
    """OpenAI layers that leave out required-but-nullable fields get them as null."""
    parsed = ADAPTER.parse(call({}, route_type), opts(), body)
    assert loads(parsed.body) == completed


@pytest.mark.parametrize(
    ("route_type", "body", "reason"),
    [
        (CHAT, b'{"error":{"message":"x"}}', "'choices' not in llm/v1/chat response"),
        (COMPLETIONS, b'{"choices":null}', "'choices' not in llm/v1/completions response"),
        (CHAT, b"[]", "'choices' not in llm/v1/chat response"),
        (CHAT, b"<html>", "failed to decode llm/v1/chat response"),
    ],
)
def test_parse_errors(route_type: str, body: bytes, reason: str) -> None:
    with pytest.raises(ResponseError) as exc:
        ADAPTER.parse(call({}, route_type), opts(), body)
    assert str(exc.value) == reason


# ------------------------------------------------------------------ stream


def oai_chunk(delta: dict[str, Any], finish: str | None = None, usage: Any = None) -> bytes:
    obj: dict[str, Any] = {
        "id": "chatcmpl-up",
        "object": "chat.completion.chunk",
        "created": 1715000000,
        "model": "llama-3-8b",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    if usage is not False:
        obj["usage"] = usage
    return b"data: " + dumps(obj) + b"\n\n"


USAGE_CHUNK = (
    b'data: {"id":"chatcmpl-up","object":"chat.completion.chunk","created":1715000000,'
    b'"model":"llama-3-8b","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2,'
    b'"total_tokens":11}}\n\n'
)
STREAM = (
    oai_chunk({"role": "assistant", "content": ""})
    + oai_chunk({"content": "Hel"})
    + oai_chunk({"content": "lo"})
    + oai_chunk({}, "stop")
    + USAGE_CHUNK
    + b"data: [DONE]\n\n"
)


def test_stream_pass_through_byte_identical() -> None:
    c = call({}, stream=True, include_usage=True)
    out = assert_split_invariant(c, STREAM)
    assert b"".join(out) == STREAM
    assert out[-1] == DONE
    _, dec = run(c, [STREAM])
    assert dec.done and dec.error is None
    assert dec.usage == Usage(9, 2, 11, estimated=False)
    assert dec.model == "llama-3-8b"
    assert dec.completion_text_len == 5


def test_stream_without_include_usage_still_unchanged_and_estimated() -> None:
    data = STREAM.replace(USAGE_CHUNK, b"")
    out, dec = run(
        call({"messages": [{"role": "user", "content": "12345678"}]}, stream=True), [data]
    )
    assert b"".join(out) == data
    assert dec.usage == Usage(2, 2, 4, estimated=True)


def test_stream_normalises_framing_only() -> None:
    # no space after "data:", CRLF, comments and other fields: payloads stay identical
    data = b": ping\r\n\r\nevent: message\r\nid: 1\r\n" + STREAM.replace(
        b"data: ", b"data:"
    ).replace(b"\n", b"\r\n")
    out, dec = run(call({}, stream=True), [data])
    assert b"".join(out) == STREAM
    assert dec.done


def test_stream_eof_after_finish_reason_without_done_ends_cleanly() -> None:
    data = oai_chunk({"content": "Hi"}) + oai_chunk({}, "length")
    out, dec = run(call({}, stream=True), [data])
    assert b"".join(out) == data + DONE
    assert dec.done and dec.error is None


def test_stream_eof_before_finish_is_an_error() -> None:
    data = oai_chunk({"content": "Hi"})
    out = assert_split_invariant(call({}, stream=True), data)
    assert out == [
        data,
        b'data: {"error":{"message":"upstream closed the stream before it finished"}}\n\n',
    ]
    _, dec = run(call({}, stream=True), [data])
    assert dec.error and not dec.done


def test_stream_in_band_error() -> None:
    data = (
        oai_chunk({"content": "Hi"})
        + b'data: {"error":{"message":"CUDA out of memory","type":"server_error","code":500}}\n\n'
        + oai_chunk({"content": "x"})
        + b"data: [DONE]\n\n"
    )
    c = call({}, stream=True)
    out = assert_split_invariant(c, data)
    assert out == [
        oai_chunk({"content": "Hi"}),
        b'data: {"error":{"message":"CUDA out of memory"}}\n\n',
    ]
    dec = ADAPTER.decoder(c, opts())
    dec.feed(data)
    assert dec.error == "CUDA out of memory" and not dec.done
    assert dec.feed(b"data: [DONE]\n\n") == [] and dec.finish() == []


def test_stream_completions_text_counted() -> None:
    data = (
        b'data: {"id":"cmpl-1","object":"text_completion","created":1,"model":"m",'
        b'"choices":[{"index":0,"text":"Once upon","finish_reason":null}]}\n\n'
        b'data: {"id":"cmpl-1","object":"text_completion","created":1,"model":"m",'
        b'"choices":[{"index":0,"text":"","finish_reason":"stop"}]}\n\n'
        b"data: [DONE]\n\n"
    )
    out, dec = run(call({"prompt": "x"}, COMPLETIONS, stream=True), [data])
    assert b"".join(out) == data
    assert dec.completion_text_len == 9
    assert dec.usage == Usage(1, 3, 4, estimated=True)


def test_stream_multiline_data_stays_one_event() -> None:
    data = b'data: {"choices":\ndata: []}\n\ndata: [DONE]\n\n'
    out, _ = run(call({}, stream=True), [data])
    assert out == [b'data: {"choices":\ndata: []}\n\n', DONE]
    assert loads(out[0][6:-2].replace(b"\ndata: ", b"\n")) == {"choices": []}
