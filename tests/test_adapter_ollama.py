"""Golden tests for the ollama adapter: exact upstream bodies, exact client bodies and
events. Pure: no sockets."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from golden import CREATED, call, chunk, decode, events, model_options, split_invariant

from gateway.adapters import get_adapter
from gateway.adapters.base import Call, ResponseError, TransformError, Usage
from gateway.adapters.common import DONE, ChunkWriter, sse, tuning
from gateway.config import CHAT, COMPLETIONS
from gateway.config.schema import ModelOptions
from gateway.jsonutil import dumps, loads

ADAPTER = get_adapter("ollama")


def opts(**kw: Any) -> ModelOptions:
    return model_options("ollama", 11434, "/api/chat", **kw)


def run(c: Call, chunks: list[bytes]) -> tuple[list[bytes], Any]:
    return decode(ADAPTER, c, opts(), chunks)


def assert_split_invariant(c: Call, data: bytes) -> list[bytes]:
    return split_invariant(ADAPTER, c, opts(), data)


# ------------------------------------------------------------------ fixtures (Ollama's shapes)

TS = "2024-01-15T08:13:38.876196Z"


def chat_line(content: str, **extra: Any) -> bytes:
    obj = {
        "model": "llama2",
        "created_at": TS,
        "message": {"role": "assistant", "content": content},
        "done": False,
    }
    obj.update(extra)
    return dumps(obj) + b"\n"


CHAT_FINAL = {
    "model": "llama2",
    "created_at": TS,
    "message": {"role": "assistant", "content": ""},
    "done_reason": "stop",
    "done": True,
    "total_duration": 4883583458,
    "load_duration": 1334875,
    "prompt_eval_count": 26,
    "prompt_eval_duration": 342546000,
    "eval_count": 282,
    "eval_duration": 4535599000,
}

GEN_FINAL = {
    "model": "llama2",
    "created_at": TS,
    "response": "",
    "done": True,
    "done_reason": "length",
    "context": [1, 2, 3],
    "total_duration": 10706818083,
    "prompt_eval_count": 3,
    "eval_count": 5,
}

CHAT_STREAM = (
    chat_line("The")
    + chat_line(" sky")
    + chat_line(' is "blue" — ünïcode')
    + dumps(CHAT_FINAL)
    + b"\n"
)

MATH_MESSAGES = [
    {"role": "system", "content": "You are a mathematician."},
    {"role": "user", "content": "What is 1 + 2?"},
    {
        "role": "assistant",
        "content": "The sum of 1 + 2 is 3. If you have any more math questions or if there's "
        "anything else I can help you with, feel free to ask!",
    },
    {"role": "user", "content": "Multiply that by 2"},
    {
        "role": "assistant",
        "content": "Certainly! If you multiply 3 by 2, the result is 6. If you have any more "
        "questions or if there's anything else I can help you with, feel free to ask!",
    },
    {"role": "user", "content": "Why can't you divide by zero?"},
]


# ------------------------------------------------------------------ tuning


def test_tuning_kong_case_config_wins() -> None:
    body = {"max_tokens": 256, "temperature": 0.1, "top_p": 0.2}
    got = tuning(body, opts(max_tokens=1024, top_p=0.5))
    assert got == {"max_tokens": 1024, "temperature": 0.1, "top_p": 0.5}
    assert list(got) == ["max_tokens", "temperature", "top_p"]


def test_tuning_null_is_unset_and_only_set_keys() -> None:
    assert tuning({"temperature": None, "top_k": None}, opts()) == {}
    assert tuning({"top_k": 7}, opts(temperature=0.0)) == {"temperature": 0.0, "top_k": 7}


# ------------------------------------------------------------------ build


def test_build_chat_kong_fixture() -> None:
    # Kong spec/fixtures/ai-proxy/unit/expected-requests/llama2/ollama/llm-v1-chat.json
    body = {"messages": MATH_MESSAGES}
    out = ADAPTER.build(call(body), opts(max_tokens=512, temperature=0.5))
    assert out == {
        "model": "llama2",
        "messages": MATH_MESSAGES,
        "stream": False,
        "options": {"num_predict": 512, "temperature": 0.5},
    }
    assert list(out) == ["model", "messages", "stream", "options"]


def test_build_completions() -> None:
    body = {"prompt": "Why is the sky blue?", "max_tokens": 64, "stream": True}
    out = ADAPTER.build(call(body, COMPLETIONS, stream=True), opts())
    assert out == {
        "model": "llama2",
        "prompt": "Why is the sky blue?",
        "stream": True,
        "options": {"num_predict": 64},
    }


def test_build_kong_tuning_case() -> None:
    body = {
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 256,
        "temperature": 0.1,
        "top_p": 0.2,
    }
    out = ADAPTER.build(call(body), opts(max_tokens=1024, top_p=0.5))
    assert out["options"] == {"num_predict": 1024, "temperature": 0.1, "top_p": 0.5}


def test_build_stream_always_explicit_and_options_omitted_when_empty() -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "temperature": None}
    assert ADAPTER.build(call(body), opts()) == {
        "model": "llama2",
        "messages": body["messages"],
        "stream": False,
    }
    assert ADAPTER.build(call(body, stream=True), opts())["stream"] is True


def test_build_extras_and_format() -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    body = {
        "messages": [{"role": "user", "content": "hi"}],
        "top_k": 40,
        "stop": "\n\n",
        "seed": 42,
        "frequency_penalty": 0.5,
        "presence_penalty": 0.25,
        "tools": tools,
        "tool_choice": "auto",
        "response_format": {"type": "json_object"},
        "n": 1,
        "user": "someone",
    }
    out = ADAPTER.build(call(body), opts())
    assert out == {
        "model": "llama2",
        "messages": body["messages"],
        "stream": False,
        "options": {
            "top_k": 40,
            "stop": ["\n\n"],
            "seed": 42,
            "frequency_penalty": 0.5,
            "presence_penalty": 0.25,
        },
        "tools": tools,
        "tool_choice": "auto",
        "format": "json",
    }
    listed = dict(body, stop=["a", "b"], response_format={"type": "text"})
    out = ADAPTER.build(call(listed), opts())
    assert out["options"]["stop"] == ["a", "b"]
    assert "format" not in out


def test_build_json_schema_format() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    body = {
        "messages": [{"role": "user", "content": "hi"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
    }
    assert ADAPTER.build(call(body), opts())["format"] == schema


def test_build_model_from_effective_name() -> None:
    body = {"model": "client-choice", "messages": [{"role": "user", "content": "hi"}]}
    assert ADAPTER.build(call(body, model="llama3:8b"), opts())["model"] == "llama3:8b"


def test_build_joins_text_parts_without_mutating_client_body() -> None:
    body = {
        "messages": [
            {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
            {
                "role": "user",
                "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}],
            },
        ]
    }
    before = copy.deepcopy(body)
    out = ADAPTER.build(call(body), opts())
    assert out["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "one\ntwo"},
    ]
    assert body == before


def test_build_tool_history_arguments_become_objects() -> None:
    body = {
        "messages": [
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "20C"},
        ]
    }
    before = copy.deepcopy(body)
    out = ADAPTER.build(call(body), opts())
    assert out["messages"][1] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
            }
        ],
    }
    assert out["messages"][2] == body["messages"][2]
    assert body == before


@pytest.mark.parametrize(
    "message",
    [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]},
        {"role": "user", "content": 42},
        {"role": "user", "content": [{"type": "text", "text": 1}]},
        "just a string",
    ],
)
def test_build_rejects_untransformable_messages(message: Any) -> None:
    with pytest.raises(TransformError):
        ADAPTER.build(call({"messages": [message]}), opts())


# ------------------------------------------------------------------ parse (non-stream)


def test_parse_chat() -> None:
    final = dict(CHAT_FINAL, message={"role": "assistant", "content": "Hello there!"})
    parsed = ADAPTER.parse(call({}), opts(), dumps(final))
    assert loads(parsed.body) == {
        "id": "chatcmpl-abc123",
        "object": "chat.completion",
        "created": CREATED,
        "model": "llama2",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello there!"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 26, "completion_tokens": 282, "total_tokens": 308},
    }
    assert parsed.usage == Usage(26, 282, 308, estimated=False)
    assert parsed.model == "llama2"


def test_parse_completions_length() -> None:
    final = dict(GEN_FINAL, response="Because of Rayleigh")
    parsed = ADAPTER.parse(call({}, COMPLETIONS), opts(), dumps(final))
    assert loads(parsed.body) == {
        "id": "cmpl-abc123",
        "object": "text_completion",
        "created": CREATED,
        "model": "llama2",
        "choices": [{"index": 0, "text": "Because of Rayleigh", "finish_reason": "length"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8},
    }


def test_parse_model_is_upstream_model() -> None:
    final = dict(CHAT_FINAL, model="llama3:8b-instruct-q4_0")
    parsed = ADAPTER.parse(call({}, model="llama3"), opts(), dumps(final))
    assert loads(parsed.body)["model"] == "llama3:8b-instruct-q4_0"
    assert parsed.model == "llama3:8b-instruct-q4_0"


def test_parse_missing_counters_are_zero() -> None:
    final = {k: v for k, v in CHAT_FINAL.items() if k not in ("prompt_eval_count", "eval_count")}
    parsed = ADAPTER.parse(call({}), opts(), dumps(final))
    assert loads(parsed.body)["usage"] == {
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "total_tokens": 0,
    }
    assert parsed.usage == Usage(0, 0, 0, estimated=False)


@pytest.mark.parametrize(
    ("done_reason", "expected"),
    [("stop", "stop"), ("length", "length"), (None, "stop"), ("load", "stop")],
)
def test_parse_finish_reasons(done_reason: str | None, expected: str) -> None:
    final = dict(CHAT_FINAL)
    final.pop("done_reason")
    if done_reason is not None:
        final["done_reason"] = done_reason
    parsed = ADAPTER.parse(call({}), opts(), dumps(final))
    assert loads(parsed.body)["choices"][0]["finish_reason"] == expected


def test_parse_tool_calls() -> None:
    message = {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "C"}}},
            {"id": "call_up", "function": {"name": "get_time", "arguments": {}}},
        ],
    }
    parsed = ADAPTER.parse(call({}), opts(), dumps(dict(CHAT_FINAL, message=message)))
    choice = loads(parsed.body)["choices"][0]
    assert choice == {
        "index": 0,
        "message": {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "call_abc123_0",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris","unit":"C"}'},
                },
                {
                    "id": "call_up",
                    "type": "function",
                    "function": {"name": "get_time", "arguments": "{}"},
                },
            ],
        },
        "finish_reason": "tool_calls",
    }


@pytest.mark.parametrize(
    ("route_type", "body", "reason"),
    [
        (CHAT, b"not json", "failed to decode ollama response"),
        (CHAT, b"[1, 2]", "failed to decode ollama response"),
        (CHAT, b'{"model":"llama2","done":true}', "'message' not in ollama chat response"),
        (COMPLETIONS, b'{"model":"llama2"}', "'response' not in ollama generate response"),
        (CHAT, b'{"error":"model runner crashed"}', "ollama error: model runner crashed"),
    ],
)
def test_parse_errors(route_type: str, body: bytes, reason: str) -> None:
    with pytest.raises(ResponseError) as exc:
        ADAPTER.parse(call({}, route_type), opts(), body)
    assert str(exc.value) == reason


# ------------------------------------------------------------------ chunk writer


@pytest.mark.parametrize("text", ["", "plain", 'quo"te\\ \n\t', "ünïcode ✓ 😀", "\u2028"])
def test_chunk_writer_matches_full_serialisation(text: str) -> None:
    head = {"id": "chatcmpl-abc123", "created": CREATED, "model": "m"}
    w = ChunkWriter(call({}, model="m"), "m")
    chunk = {**head, "object": "chat.completion.chunk"}
    choice = {"index": 0, "delta": {"content": text}, "finish_reason": None}
    assert loads(w.text(text)[6:]) == {**chunk, "choices": [choice]}
    assert w.text(text) == sse(
        {
            "id": "chatcmpl-abc123",
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": "m",
            "choices": [choice],
        }
    )


# ------------------------------------------------------------------ streaming


def test_stream_chat_exact_events() -> None:
    c = call({}, stream=True)
    out = assert_split_invariant(c, CHAT_STREAM)
    assert events(out) == [
        chunk({"role": "assistant", "content": "The"}),
        chunk({"content": " sky"}),
        chunk({"content": ' is "blue" — ünïcode'}),
        chunk({}, "stop"),
        "[DONE]",
    ]
    assert out[1] == (
        b'data: {"id":"chatcmpl-abc123","object":"chat.completion.chunk","created":1700000000,'
        b'"model":"llama2","choices":[{"index":0,"delta":{"content":" sky"},'
        b'"finish_reason":null}]}\n\n'
    )
    assert out[-1] == DONE
    _, dec = run(c, [CHAT_STREAM])
    assert dec.done and dec.error is None
    assert dec.usage == Usage(26, 282, 308)
    assert dec.model == "llama2"
    assert dec.completion_text_len == len("The sky") + len(' is "blue" — ünïcode')


def test_stream_include_usage() -> None:
    out, _ = run(call({}, stream=True, include_usage=True), [CHAT_STREAM])
    assert events(out)[-3:] == [
        chunk({}, "stop"),
        {
            "id": "chatcmpl-abc123",
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": "llama2",
            "choices": [],
            "usage": {"prompt_tokens": 26, "completion_tokens": 282, "total_tokens": 308},
        },
        "[DONE]",
    ]


def test_stream_completions() -> None:
    lines = [
        {"model": "llama2", "created_at": TS, "response": "The", "done": False},
        {"model": "llama2", "created_at": TS, "response": " sky", "done": False},
        GEN_FINAL,
    ]
    data = b"".join(dumps(x) + b"\n" for x in lines)
    c = call({}, COMPLETIONS, stream=True, include_usage=True)
    out = assert_split_invariant(c, data)
    head = {"id": "cmpl-abc123", "object": "text_completion", "created": CREATED, "model": "llama2"}
    assert events(out) == [
        {**head, "choices": [{"index": 0, "text": "The", "finish_reason": None}]},
        {**head, "choices": [{"index": 0, "text": " sky", "finish_reason": None}]},
        {**head, "choices": [{"index": 0, "text": "", "finish_reason": "length"}]},
        {
            **head,
            "choices": [],
            "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8},
        },
        "[DONE]",
    ]


def test_stream_empty_answer_still_sends_role_then_final() -> None:
    out, dec = run(call({}, stream=True), [dumps(CHAT_FINAL) + b"\n"])
    assert events(out) == [chunk({"role": "assistant", "content": ""}), chunk({}, "stop"), "[DONE]"]
    assert dec.done


def test_stream_final_line_without_newline_is_flushed_at_eof() -> None:
    data = chat_line("Hi") + dumps(dict(CHAT_FINAL, done_reason="length"))
    out, dec = run(call({}, stream=True), [data])
    assert events(out)[-2:] == [chunk({}, "length"), "[DONE]"]
    assert dec.done and dec.error is None


def test_stream_model_falls_back_to_upstream_when_no_effective_name() -> None:
    out, _ = run(call({}, model=None, stream=True), [CHAT_STREAM])
    assert {e["model"] for e in events(out) if e != "[DONE]"} == {"llama2"}


def test_stream_in_band_error() -> None:
    c = call({}, stream=True)
    data = chat_line("The") + b'{"error":"an error was encountered while running the model"}\n'
    out = assert_split_invariant(c, data + chat_line(" more"))
    assert events(out) == [
        chunk({"role": "assistant", "content": "The"}),
        {"error": {"message": "an error was encountered while running the model"}},
    ]
    dec = ADAPTER.decoder(c, opts())
    dec.feed(data)
    assert dec.error == "an error was encountered while running the model"
    assert not dec.done
    assert dec.feed(chat_line("x") + dumps(CHAT_FINAL) + b"\n") == []
    assert dec.finish() == []


def test_stream_eof_before_final_frame() -> None:
    c = call({}, stream=True)
    out = assert_split_invariant(c, chat_line("The") + chat_line(" sky"))
    assert events(out)[-1] == {
        "error": {"message": "upstream closed the stream before it finished"}
    }
    assert DONE not in out
    _, dec = run(c, [chat_line("The")])
    assert dec.error == "upstream closed the stream before it finished"
    assert not dec.done and dec.usage is None


def test_stream_undecodable_line_is_an_error() -> None:
    out, dec = run(call({}, stream=True), [b"<html>oops</html>\n"])
    assert events(out) == [{"error": {"message": "failed to decode ollama stream line"}}]
    assert dec.error


def test_stream_tool_calls() -> None:
    tool_line = chat_line(
        "",
        message={
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
        },
    )
    c = call({}, stream=True)
    out = assert_split_invariant(c, tool_line + dumps(CHAT_FINAL) + b"\n")
    assert events(out) == [
        chunk(
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_abc123_0",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    }
                ],
            }
        ),
        chunk({}, "tool_calls"),
        "[DONE]",
    ]


def test_stream_tool_call_indexes_run_on_across_lines() -> None:
    def tool(name: str) -> bytes:
        message = {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": name, "arguments": {}}}],
        }
        return chat_line("", message=message)

    data = chat_line("Let me check.") + tool("a") + tool("b") + dumps(CHAT_FINAL) + b"\n"
    got = events(run(call({}, stream=True), [data])[0])
    assert got[0] == chunk({"role": "assistant", "content": "Let me check."})
    calls = [e["choices"][0]["delta"]["tool_calls"][0] for e in got[1:3]]
    assert [(t["index"], t["id"], t["function"]["name"]) for t in calls] == [
        (0, "call_abc123_0", "a"),
        (1, "call_abc123_1", "b"),
    ]
    assert got[3] == chunk({}, "tool_calls")


def test_stream_crlf_and_blank_lines_tolerated() -> None:
    data = CHAT_STREAM.replace(b"\n", b"\r\n\n")
    assert run(call({}, stream=True), [data])[0] == run(call({}, stream=True), [CHAT_STREAM])[0]
