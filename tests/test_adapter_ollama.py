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
        "tools": tools,  # tool_choice "auto" is what Ollama does: not sent
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
    assert out["messages"][2] == {**body["messages"][2], "tool_name": "get_weather"}
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
                "message": {"role": "assistant", "content": "Hello there!", "refusal": None},
                "logprobs": None,
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
        "choices": [
            {"index": 0, "text": "Because of Rayleigh", "logprobs": None, "finish_reason": "length"}
        ],
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
            "refusal": None,
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
        "logprobs": None,
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

    def choice(text: str, finish: str | None) -> dict[str, Any]:
        return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}

    assert events(out) == [
        {**head, "choices": [choice("The", None)]},
        {**head, "choices": [choice(" sky", None)]},
        {**head, "choices": [choice("", "length")]},
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


# ------------------------------------------------------------------ field rules (docs/fields.md)

HI = [{"role": "user", "content": "hi"}]
TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]


def built(extra: dict[str, Any], route_type: str = CHAT, **kw: Any) -> dict[str, Any]:
    body = {"prompt": "Once"} if route_type == COMPLETIONS else {"messages": HI}
    return ADAPTER.build(call({**body, **extra}, route_type), opts(**kw))


def refused(extra: dict[str, Any], route_type: str = CHAT) -> str:
    with pytest.raises(TransformError) as exc:
        built(extra, route_type)
    return str(exc.value)


def test_max_completion_tokens_maps_like_max_tokens() -> None:
    assert built({"max_completion_tokens": 9})["options"] == {"num_predict": 9}
    assert built({"max_tokens": 5, "max_completion_tokens": 9})["options"] == {"num_predict": 9}
    assert built({"max_tokens": 5, "max_completion_tokens": None})["options"] == {"num_predict": 5}
    assert built({"max_completion_tokens": 9}, max_tokens=3)["options"] == {"num_predict": 3}


OPENAI_ONLY = {
    "n": 2,
    "logprobs": True,
    "top_logprobs": 3,
    "logit_bias": {"5": 1},
    "reasoning_effort": "high",
    "modalities": ["text", "audio"],
    "audio": {"voice": "alloy"},
    "prediction": {"type": "content"},
    "web_search_options": {},
    "verbosity": "low",
}
TOOL_CHOICE = 'is not supported by ollama targets (Ollama chooses itself: "auto")'


# fmt: off
REFUSALS = [
    *(
        ({k: v}, f"{k} is not supported by ollama targets; use an openai-format target")
        for k, v in OPENAI_ONLY.items() if k != "n"
    ),
    ({"n": 2}, "n=2 is not supported by ollama targets; use an openai-format target"),
    ({"functions": [{"name": "f"}]}, "functions (legacy function calling) is not supported by ollama targets; send tools instead"),
    ({"function_call": {"name": "f"}}, "function_call (legacy function calling) is not supported by ollama targets; send tools instead"),
    ({"tools": TOOLS, "tool_choice": "required"}, f"tool_choice 'required' {TOOL_CHOICE}; use an openai-format target"),
    ({"tools": TOOLS, "tool_choice": "none"}, f"tool_choice 'none' {TOOL_CHOICE}; use an openai-format target"),
    ({"tool_choice": {"type": "function", "function": {"name": "f"}}}, f'tool_choice {{"type":"function","function":{{"name":"f"}}}} {TOOL_CHOICE}; use an openai-format target'),
    ({"tools": TOOLS, "parallel_tool_calls": False}, "parallel_tool_calls: false is not supported by ollama targets; use an openai-format target"),
    ({"suffix": "end"}, "suffix is not supported on chat routes; use a completions route"),
    ({"response_format": "json"}, "response_format must be an object with a type (text, json_object or json_schema)"),
    ({"response_format": {"type": "grammar"}}, "response_format type 'grammar' is not supported by ollama targets"),
    ({"response_format": {"type": "json_schema"}}, "response_format: json_schema must be an object"),
    ({"response_format": {"type": "json_schema", "json_schema": {"schema": []}}}, "response_format: json_schema.schema must be an object"),
    ({"dry_multiplier": 0.8}, "dry_multiplier is not supported by ollama targets"),
]
# fmt: on


@pytest.mark.parametrize(("extra", "message"), REFUSALS)
def test_refused_fields_name_field_and_format(extra: dict[str, Any], message: str) -> None:
    assert refused(extra) == message


def test_refused_completions_fields() -> None:
    assert refused({"echo": True}, COMPLETIONS) == (
        "echo: true is not supported by ollama targets; use an openai-format target"
    )
    assert refused({"best_of": 3}, COMPLETIONS).startswith("best_of=3 is not supported")
    assert refused({"logprobs": 2}, COMPLETIONS).startswith("logprobs is not supported")


def test_idle_values_and_ignored_fields_are_fine() -> None:
    idle = {
        "n": 1,
        "logprobs": False,
        "top_logprobs": 0,
        "logit_bias": {},
        "functions": [],
        "function_call": "none",
        "tool_choice": "none",  # no tools: nothing to choose
        "parallel_tool_calls": False,  # no tools
        "modalities": ["text"],
        "reasoning_effort": None,
        "response_format": {"type": "text"},
        "user": "u",
        "store": False,
        "metadata": {"a": "b"},
        "service_tier": "auto",
        "prompt_cache_key": "k",
        "safety_identifier": "s",
        "stream_options": {"include_usage": True},
        "unknown_field": 1,
    }
    assert built(idle) == {"model": "llama2", "messages": HI, "stream": False}
    assert built({"echo": False, "best_of": 1, "suffix": ""}, COMPLETIONS) == {
        "model": "llama2",
        "prompt": "Once",
        "stream": False,
    }


def test_tools_pass_tool_choice_auto_and_parallel_true() -> None:
    out = built({"tools": TOOLS, "tool_choice": "auto", "parallel_tool_calls": True})
    assert out["tools"] == TOOLS and "tool_choice" not in out
    assert "parallel_tool_calls" not in out


def test_response_format_json_schema_without_schema_is_any_json() -> None:
    rf = {"type": "json_schema", "json_schema": {"name": "x", "strict": True}}
    assert built({"response_format": rf})["format"] == "json"


def test_suffix_on_generate() -> None:
    assert built({"suffix": "return x"}, COMPLETIONS)["suffix"] == "return x"


@pytest.mark.parametrize(
    ("prompt", "result"),
    [
        (["Once upon"], "Once upon"),
        (
            ["a", "b"],
            "a list of 2 prompts is not supported by ollama targets; send one prompt per "
            "request or use an openai-format target",
        ),
        (
            [1, 2, 3],
            "a token-id prompt is not supported by ollama targets; send text or use an "
            "openai-format target",
        ),
        (
            [[1, 2]],
            "a token-id prompt is not supported by ollama targets; send text or use an openai-format target",
        ),
        ([None], "prompt: not a string, a list of strings or of token ids"),
    ],
)
def test_prompt_lists(prompt: Any, result: str) -> None:
    c = call({"prompt": prompt}, COMPLETIONS)
    if result == "Once upon":
        assert ADAPTER.build(c, opts())["prompt"] == result
        return
    with pytest.raises(TransformError) as exc:
        ADAPTER.build(c, opts())
    assert str(exc.value) == result


def test_native_sampling_hints_and_fields() -> None:
    extra = {"min_p": 0.05, "repetition_penalty": 1.1, "num_ctx": 8192, "keep_alive": "5m"}
    out = built({**extra, "temperature": 0.2})
    assert out["options"] == {
        "temperature": 0.2,
        "min_p": 0.05,
        "repeat_penalty": 1.1,
        "num_ctx": 8192,
    }
    assert out["keep_alive"] == "5m"
    c = call({"messages": HI, "temperature": 0.2})
    c.native_options = {"mirostat": 2, "num_gpu": 1, "temperature": 0.9, "num_predict": 7, "x": 1}
    c.native_fields = {"think": True, "keep_alive": 0}
    out = ADAPTER.build(c, opts())
    # the client's OpenAI field wins over the same option sent natively
    assert out["options"] == {
        "num_predict": 7,
        "temperature": 0.2,
        "mirostat": 2,
        "num_gpu": 1,
        "x": 1,
    }
    assert (out["think"], out["keep_alive"]) == (True, 0)


def test_messages_developer_images_and_tool_name() -> None:
    png = "iVBORw0KGgo="
    messages = [
        {"role": "developer", "content": "Be brief."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "look", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "a cat"}]},
        {"role": "tool", "tool_call_id": "unknown", "content": "?"},
        {"role": "tool", "tool_call_id": "x", "name": "look", "content": "!"},
        {"role": "assistant", "content": "It is a cat.", "reasoning_content": "cats..."},
    ]
    out = ADAPTER.build(call({"messages": messages}), opts())["messages"]
    assert out[0] == {"role": "system", "content": "Be brief."}
    assert out[1] == {"role": "user", "content": "What is this?", "images": [png]}
    assert out[2]["content"] == "" and out[2]["tool_calls"][0]["function"]["arguments"] == {}
    assert out[3] == {"role": "tool", "tool_call_id": "c1", "content": "a cat", "tool_name": "look"}
    assert out[4] == {"role": "tool", "tool_call_id": "unknown", "content": "?"}
    assert out[5]["tool_name"] == "look"  # the name the Ollama front door carries
    assert out[6] == {"role": "assistant", "content": "It is a cat.", "thinking": "cats..."}


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ({"role": "user", "content": None}, "messages[0]: content is null"),
        ({"role": "user"}, "messages[0]: content is missing"),
        ({"role": "assistant", "content": None}, "messages[0]: content is null"),
        (
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}],
            },
            "messages[0].content[0]: the gateway does not fetch images; send image_url as a "
            "data: URL (data:<mime>;base64,…)",
        ),
        (
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": "data:image/png,raw"}}],
            },
            "messages[0].content[0]: image_url must be a base64 data: URL (data:<mime>;base64,…)",
        ),
        (
            {"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]},
            "messages[0].content[0]: input_audio parts are not supported by ollama targets; "
            "use an openai-format target",
        ),
        (
            {"role": "user", "content": [{"type": "file", "file": {}}]},
            "messages[0].content[0]: file parts are not supported by ollama targets; use an "
            "openai-format target",
        ),
        (
            {"role": "function", "name": "f", "content": "1"},
            "messages[0]: role 'function' (legacy function calling) is not supported by ollama "
            "targets; send tools and tool messages instead",
        ),
        (
            {"role": "critic", "content": "x"},
            "messages[0]: role 'critic' is not supported by ollama targets",
        ),
    ],
)
def test_message_refusals(message: dict[str, Any], reason: str) -> None:
    with pytest.raises(TransformError) as exc:
        ADAPTER.build(call({"messages": [message]}), opts())
    assert str(exc.value) == reason


def test_parse_builds_openai_message_thinking_as_reasoning_content() -> None:
    message = {
        "role": "assistant",
        "content": "4",
        "thinking": "2+2 is 4",
        "images": None,
        "tool_name": "x",
    }
    parsed = ADAPTER.parse(call({}), opts(), dumps(dict(CHAT_FINAL, message=message)))
    assert loads(parsed.body)["choices"][0]["message"] == {
        "role": "assistant",
        "content": "4",
        "refusal": None,
        "reasoning_content": "2+2 is 4",
    }


def test_stream_thinking_as_reasoning_content() -> None:
    thinking = {"role": "assistant", "content": "", "thinking": "hmm"}
    data = chat_line("", message=thinking) + chat_line("4") + dumps(CHAT_FINAL) + b"\n"
    out = assert_split_invariant(call({}, stream=True), data)
    assert events(out) == [
        chunk({"role": "assistant", "reasoning_content": "hmm"}),
        chunk({"content": "4"}),
        chunk({}, "stop"),
        "[DONE]",
    ]
