"""Golden tests for the raw adapter: prompt templates byte for byte, hf and llama.cpp
request bodies, every accepted response shape, both stream dialects."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from golden import CREATED, call, chunk, decode, events, model_options, split_invariant

from gateway.adapters import get_adapter
from gateway.adapters.base import Call, ResponseError, TransformError, Usage
from gateway.adapters.common import DONE, estimate_tokens
from gateway.config import CHAT, COMPLETIONS
from gateway.config.schema import ModelOptions
from gateway.jsonutil import dumps, loads

ADAPTER = get_adapter("raw")


def opts(**kw: Any) -> ModelOptions:
    return model_options("raw", 8080, "/completion", **kw)


HF = opts()
LLAMACPP = opts(raw_flavor="llamacpp")
KONG = opts(chat_template="kong")


def chat(*pairs: tuple[str, Any]) -> dict[str, Any]:
    return {"messages": [{"role": r, "content": c} for r, c in pairs]}


def inputs(body: dict[str, Any], o: ModelOptions = HF, route_type: str = CHAT) -> str:
    out = ADAPTER.build(call(body, route_type), o)
    return out["prompt"] if o.raw_flavor == "llamacpp" else out["inputs"]


def run(c: Call, o: ModelOptions, chunks: list[bytes]) -> tuple[list[bytes], Any]:
    return decode(ADAPTER, c, o, chunks)


def assert_split_invariant(c: Call, o: ModelOptions, data: bytes) -> list[bytes]:
    return split_invariant(ADAPTER, c, o, data)


# ------------------------------------------------------------------ llama2 (Meta) template


def test_meta_system_and_two_turns() -> None:
    body = chat(
        ("system", "You are a helpful assistant."),
        ("user", "What is the capital of France?"),
        ("assistant", "Paris."),
        ("user", "And of Italy?"),
    )
    assert inputs(body) == (
        "<s>[INST] <<SYS>>\nYou are a helpful assistant.\n<</SYS>>\n\n"
        "What is the capital of France? [/INST] Paris. </s>"
        "<s>[INST] And of Italy? [/INST]"
    )


def test_meta_no_system() -> None:
    assert inputs(chat(("user", "Hello"))) == "<s>[INST] Hello [/INST]"


def test_meta_contents_stripped_and_parts_joined() -> None:
    body = chat(
        ("system", "  Be brief.\n"),
        ("user", [{"type": "text", "text": " one"}, {"type": "text", "text": "two "}]),
    )
    assert inputs(body) == "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\none\ntwo [/INST]"


def test_meta_several_system_messages_join_in_order() -> None:
    body = chat(
        ("system", "First rule."),
        ("system", "Second rule."),
        ("user", "Hi"),
        ("assistant", "Hello"),
        ("system", "Third rule."),
        ("user", "Bye"),
    )
    assert inputs(body) == (
        "<s>[INST] <<SYS>>\nFirst rule.\nSecond rule.\nThird rule.\n<</SYS>>\n\n"
        "Hi [/INST] Hello </s><s>[INST] Bye [/INST]"
    )


def test_meta_consecutive_same_role_joined() -> None:
    body = chat(
        ("user", "Line one"),
        ("user", "Line two"),
        ("assistant", "A1"),
        ("assistant", "A2"),
        ("user", "Next"),
    )
    assert inputs(body) == (
        "<s>[INST] Line one\nLine two [/INST] A1\nA2 </s><s>[INST] Next [/INST]"
    )


def test_meta_final_assistant_is_prefill() -> None:
    body = chat(("system", "S"), ("user", "Write JSON"), ("assistant", ' {"a": '))
    assert inputs(body) == ('<s>[INST] <<SYS>>\nS\n<</SYS>>\n\nWrite JSON [/INST] {"a":')
    body = chat(("user", "u1"), ("assistant", "a1"), ("user", "u2"), ("assistant", "Sure,"))
    assert inputs(body) == "<s>[INST] u1 [/INST] a1 </s><s>[INST] u2 [/INST] Sure,"


@pytest.mark.parametrize(
    "body",
    [
        chat(("user", "hi"), ("tool", "42")),
        chat(("user", "hi"), ("function", "42")),
        chat(("system", "S"), ("assistant", "I start")),
        chat(("assistant", "I start"), ("user", "hi")),
        chat(("system", "only a system prompt")),
        chat(("user", {"not": "text"})),
        chat(("user", [{"type": "image_url", "image_url": {"url": "data:..."}}])),
        {"messages": ["not an object"]},
    ],
)
def test_meta_rejects(body: dict[str, Any]) -> None:
    with pytest.raises(TransformError):
        ADAPTER.build(call(body), HF)


def test_meta_llamacpp_drops_leading_bos_only() -> None:
    body = chat(("user", "u1"), ("assistant", "a1"), ("user", "u2"))
    assert inputs(body, LLAMACPP) == "[INST] u1 [/INST] a1 </s><s>[INST] u2 [/INST]"


def test_meta_completions_prompt_sent_as_given() -> None:
    body = {"prompt": "<s>Once upon a time"}
    assert inputs(body, HF, COMPLETIONS) == "<s>Once upon a time"
    assert inputs(body, LLAMACPP, COMPLETIONS) == "<s>Once upon a time"


# ------------------------------------------------------------------ kong template

MISSINGNO = chat(
    ("system", "You are a video game knowledgebase."),
    ("user", "What is Missingno.?"),
    ("system", "Missingno. is a weird character from a popular game."),
    ("user", "Why is it popular?"),
)


def test_kong_missingno_byte_exact() -> None:
    assert inputs(MISSINGNO, KONG) == (
        "<s>[INST] <<SYS>> You are a video game knowledgebase. <</SYS>> What is Missingno.? "
        "[/INST] Missingno. is a weird character from a popular game. </s> <s>[INST] Why is it "
        "popular? [/INST]"
    )


def test_kong_mathematician_fixture_drops_assistant_turns() -> None:
    # Kong spec/fixtures/ai-proxy/unit/expected-requests/llama2/raw/llm-v1-chat.json
    body = chat(
        ("system", "You are a mathematician."),
        ("user", "What is 1 + 2?"),
        ("assistant", "The sum of 1 + 2 is 3."),
        ("user", "Multiply that by 2"),
        ("assistant", "Certainly! If you multiply 3 by 2, the result is 6."),
        ("user", "Why can't you divide by zero?"),
    )
    assert inputs(body, KONG) == (
        "<s>[INST] <<SYS>> You are a mathematician. <</SYS>> What is 1 + 2? [/INST] <s>[INST] "
        "Multiply that by 2 [/INST] <s>[INST] Why can't you divide by zero? [/INST]"
    )


def test_kong_positions_not_roles_and_no_strip() -> None:
    body = chat(("user", " hi "), ("assistant", "a"), ("assistant", "dropped"), ("user", "u"))
    assert inputs(body, KONG) == "<s>[INST] <<SYS>>  hi  <</SYS>> a [/INST] <s>[INST] u [/INST]"
    assert inputs(chat(("user", "alone")), KONG) == "<s>[INST] <<SYS>> alone <</SYS>>"


def test_kong_completions_wrapper() -> None:
    body = {"prompt": "Explain why you can't divide by zero?"}
    expected = (
        "<s> [INST] <<SYS>> You are a helpful assistant. <<SYS>> "
        "Explain why you can't divide by zero? [/INST]"
    )
    assert inputs(body, KONG, COMPLETIONS) == expected
    kong_llamacpp = opts(chat_template="kong", raw_flavor="llamacpp")
    assert inputs(body, kong_llamacpp, COMPLETIONS) == expected[3:]
    assert inputs(MISSINGNO, kong_llamacpp).startswith("[INST] <<SYS>> You are")


# ------------------------------------------------------------------ request bodies


def test_hf_request_kong_tuning_case() -> None:
    body = {**chat(("user", "Hi")), "max_tokens": 256, "temperature": 0.1, "top_p": 0.2}
    out = ADAPTER.build(call(body), opts(max_tokens=1024, top_p=0.5))
    assert out == {
        "inputs": "<s>[INST] Hi [/INST]",
        "parameters": {
            "max_new_tokens": 1024,
            "temperature": 0.1,
            "top_p": 0.5,
            "details": True,
            "stream": False,
        },
    }
    assert list(out) == ["inputs", "parameters"]


def test_hf_request_streaming_and_unset_omitted() -> None:
    out = ADAPTER.build(call(chat(("user", "Hi")), stream=True), opts(top_k=40))
    assert out == {
        "inputs": "<s>[INST] Hi [/INST]",
        "parameters": {"top_k": 40, "details": True, "stream": True},
        "stream": True,
    }
    out = ADAPTER.build(call({"prompt": "Once", "model": "x"}, COMPLETIONS), HF)
    assert out == {"inputs": "Once", "parameters": {"details": True, "stream": False}}


def test_hf_request_values_tgi_rejects_are_omitted() -> None:
    body = {**chat(("user", "Hi")), "temperature": 0, "top_p": 1.0, "top_k": 0, "max_tokens": 8}
    assert ADAPTER.build(call(body), HF)["parameters"] == {
        "max_new_tokens": 8,
        "details": True,
        "stream": False,
    }


def test_hf_request_forwards_stop_seed_and_frequency_penalty() -> None:
    body = {**chat(("user", "Hi")), "stop": "###", "seed": 7, "frequency_penalty": 0.5}
    assert ADAPTER.build(call(body), HF)["parameters"] == {
        "stop": ["###"],
        "seed": 7,
        "frequency_penalty": 0.5,
        "details": True,
        "stream": False,
    }


def test_llamacpp_request() -> None:
    body = {
        **chat(("system", "S"), ("user", "Hi")),
        "max_tokens": 256,
        "temperature": 0.1,
        "top_p": 0.2,
        "stop": ["</s>", "User:"],
    }
    before = copy.deepcopy(body)
    out = ADAPTER.build(call(body, stream=True), opts(raw_flavor="llamacpp", max_tokens=1024))
    assert out == {
        "prompt": "[INST] <<SYS>>\nS\n<</SYS>>\n\nHi [/INST]",
        "n_predict": 1024,
        "temperature": 0.1,
        "top_p": 0.2,
        "stop": ["</s>", "User:"],
        "stream": True,
        "cache_prompt": True,
    }
    assert list(out) == [
        "prompt",
        "n_predict",
        "temperature",
        "top_p",
        "stop",
        "stream",
        "cache_prompt",
    ]
    assert body == before


def test_llamacpp_request_minimal_and_stop_string() -> None:
    out = ADAPTER.build(call({"prompt": "Once", "stop": "\n"}, COMPLETIONS), LLAMACPP)
    assert out == {"prompt": "Once", "stop": ["\n"], "stream": False, "cache_prompt": True}


# ------------------------------------------------------------------ hf responses

KONG_GOOD = (
    b'{"data":[{"generated_text":"[INST]\\nWhat is Missingno. ?\\n[/INST]\\n\\n'
    b'Missingno. is a glitch from a well-known video game."}]}'
)
ANSWER = "Missingno. is a glitch from a well-known video game."


def expected_chat(content: str, reason: str, usage: dict[str, int]) -> dict[str, Any]:
    return {
        "id": "chatcmpl-abc123",
        "object": "chat.completion",
        "created": CREATED,
        "model": "llama2",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "logprobs": None,
                "finish_reason": reason,
            }
        ],
        "usage": usage,
    }


def test_hf_kong_shape_estimated_usage() -> None:
    body = chat(("user", "What is Missingno. ?"))  # 20 chars → 5 tokens
    parsed = ADAPTER.parse(call(body), HF, KONG_GOOD)
    completion = estimate_tokens(ANSWER)
    assert completion == 13
    usage = {"prompt_tokens": 5, "completion_tokens": 13, "total_tokens": 18}
    assert loads(parsed.body) == expected_chat(ANSWER, "stop", usage)
    assert parsed.usage == Usage(5, 13, 18, estimated=True)
    assert parsed.model is None


def test_hf_list_shape_completions() -> None:
    body = b'[{"generated_text":"  Once upon a time "}]'
    parsed = ADAPTER.parse(call({"prompt": "12345678"}, COMPLETIONS), HF, body)
    assert loads(parsed.body) == {
        "id": "cmpl-abc123",
        "object": "text_completion",
        "created": CREATED,
        "model": "llama2",
        "choices": [
            {"index": 0, "text": "Once upon a time", "logprobs": None, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 2, "completion_tokens": 4, "total_tokens": 6},
    }
    assert parsed.usage.estimated


def test_hf_tgi_generate_shape_with_details() -> None:
    body = dumps(
        {
            "generated_text": " Paris is the capital",
            "details": {"finish_reason": "length", "generated_tokens": 5, "seed": None},
        }
    )
    parsed = ADAPTER.parse(call(chat(("user", "12345678"))), HF, body)
    usage = {"prompt_tokens": 2, "completion_tokens": 5, "total_tokens": 7}
    assert loads(parsed.body) == expected_chat("Paris is the capital", "length", usage)
    assert parsed.usage == Usage(2, 5, 7, estimated=True)


def test_hf_reported_usage_wins() -> None:
    body = dumps(
        {
            "data": [{"generated_text": "[INST] hi [/INST] x [/INST] Hello!"}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14},
        }
    )
    parsed = ADAPTER.parse(call(chat(("user", "hi"))), HF, body)
    usage = {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}
    assert loads(parsed.body) == expected_chat("Hello!", "stop", usage)
    assert parsed.usage == Usage(11, 3, 14, estimated=False)


def test_hf_output_model_is_effective_name() -> None:
    parsed = ADAPTER.parse(call(chat(("user", "hi")), model="my-llama"), HF, KONG_GOOD)
    assert loads(parsed.body)["model"] == "my-llama"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"<html>", "failed to decode llama2 response"),
        (b'{"data":[]}', "cannot parse response from llama2 endpoint"),
        (b"[]", "cannot parse response from llama2 endpoint"),
        (b'"text"', "cannot parse response from llama2 endpoint"),
        (b'{"data":[{"text":"x"}]}', "response data is empty from llama2 endpoint"),
        (b'{"generated_text":null}', "response data is empty from llama2 endpoint"),
    ],
)
def test_hf_parse_errors(body: bytes, reason: str) -> None:
    with pytest.raises(ResponseError) as exc:
        ADAPTER.parse(call(chat(("user", "hi"))), HF, body)
    assert str(exc.value) == reason


# ------------------------------------------------------------------ llama.cpp responses

LLAMACPP_FINAL = {
    "index": 0,
    "content": " The sky is blue.",
    "tokens": [],
    "id_slot": 0,
    "stop": True,
    "model": "tiny-llama.gguf",
    "tokens_predicted": 6,
    "tokens_evaluated": 14,
    "generation_settings": {"n_predict": 16, "temperature": 0.0},
    "prompt": "[INST] Why? [/INST]",
    "has_new_line": False,
    "truncated": False,
    "stop_type": "eos",
    "stopping_word": "",
    "tokens_cached": 19,
    "timings": {"prompt_n": 14, "predicted_n": 6},
}


def test_llamacpp_parse_chat() -> None:
    parsed = ADAPTER.parse(call(chat(("user", "Why?"))), LLAMACPP, dumps(LLAMACPP_FINAL))
    usage = {"prompt_tokens": 14, "completion_tokens": 6, "total_tokens": 20}
    assert loads(parsed.body) == expected_chat(" The sky is blue.", "stop", usage)
    assert parsed.usage == Usage(14, 6, 20, estimated=False)
    assert parsed.model == "tiny-llama.gguf"


@pytest.mark.parametrize(
    ("stop_type", "reason"), [("limit", "length"), ("eos", "stop"), ("word", "stop")]
)
def test_llamacpp_finish_reasons_completions(stop_type: str, reason: str) -> None:
    body = dumps(dict(LLAMACPP_FINAL, stop_type=stop_type))
    parsed = ADAPTER.parse(call({"prompt": "Why?"}, COMPLETIONS), LLAMACPP, body)
    choice = loads(parsed.body)["choices"][0]
    assert choice == {
        "index": 0,
        "text": " The sky is blue.",
        "logprobs": None,
        "finish_reason": reason,
    }


def test_llamacpp_missing_counters_are_estimated() -> None:
    parsed = ADAPTER.parse(
        call({"prompt": "12345678"}, COMPLETIONS), LLAMACPP, b'{"content":"abcd"}'
    )
    assert parsed.usage == Usage(2, 1, 3, estimated=True)


@pytest.mark.parametrize("body", [b"nope", b"[]", b'{"text":"x"}'])
def test_llamacpp_parse_errors(body: bytes) -> None:
    with pytest.raises(ResponseError):
        ADAPTER.parse(call(chat(("user", "hi"))), LLAMACPP, body)


# ------------------------------------------------------------------ streams


def usage_chunk(p: int, c: int) -> dict[str, Any]:
    return {
        "id": "chatcmpl-abc123",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": "llama2",
        "choices": [],
        "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c},
    }


def tgi_token(i: int, text: str, special: bool = False, **last: Any) -> bytes:
    obj = {
        "index": i,
        "token": {"id": 100 + i, "text": text, "logprob": -0.25, "special": special},
        "generated_text": last.get("generated_text"),
        "details": last.get("details"),
    }
    return b"data:" + dumps(obj) + b"\n\n"


TGI_STREAM = (
    tgi_token(1, " The")
    + tgi_token(2, " sky")
    + tgi_token(
        3,
        "</s>",
        special=True,
        generated_text="The sky",
        details={"finish_reason": "eos_token", "generated_tokens": 3, "seed": None},
    )
)


def test_tgi_stream() -> None:
    c = call(chat(("user", "12345678")), stream=True, include_usage=True)
    out = assert_split_invariant(c, HF, TGI_STREAM)
    assert events(out) == [
        chunk({"role": "assistant", "content": " The"}),
        chunk({"content": " sky"}),
        chunk({}, "stop"),
        usage_chunk(2, 3),
        "[DONE]",
    ]
    _, dec = run(c, HF, [TGI_STREAM])
    assert dec.done and dec.usage == Usage(2, 3, 5, estimated=True)


def text_chunk(text: str, finish: str | None) -> dict[str, Any]:
    return {
        "id": "cmpl-abc123",
        "object": "text_completion",
        "created": CREATED,
        "model": "llama2",
        "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}],
    }


def test_tgi_stream_length_and_completions() -> None:
    data = tgi_token(1, "Once") + tgi_token(
        2,
        " upon",
        generated_text="Once upon",
        details={"finish_reason": "length", "generated_tokens": 2},
    )
    out, _ = run(call({"prompt": "x"}, COMPLETIONS, stream=True), HF, [data])
    assert events(out) == [
        text_chunk("Once", None),
        text_chunk(" upon", None),
        text_chunk("", "length"),
        "[DONE]",
    ]


def test_tgi_stream_in_band_error() -> None:
    data = (
        tgi_token(1, " The")
        + b'data:{"error":"Request failed during generation","error_type":"generation"}\n\n'
    )
    c = call(chat(("user", "hi")), stream=True)
    out = assert_split_invariant(c, HF, data + tgi_token(2, " more"))
    assert events(out) == [
        chunk({"role": "assistant", "content": " The"}),
        {"error": {"message": "Request failed during generation"}},
    ]


def test_tgi_stream_eof_before_final() -> None:
    c = call(chat(("user", "hi")), stream=True)
    out = assert_split_invariant(c, HF, tgi_token(1, " The"))
    assert events(out)[-1] == {
        "error": {"message": "upstream closed the stream before it finished"}
    }
    _, dec = run(c, HF, [tgi_token(1, " The")])
    assert dec.error and not dec.done


def llamacpp_event(content: str, **extra: Any) -> bytes:
    obj = {"index": 0, "content": content, "tokens": [1], "stop": False, "id_slot": 0}
    obj.update(extra)
    return b"data: " + dumps(obj) + b"\n\n"


LLAMACPP_STREAM = (
    llamacpp_event(" The")
    + b": keep-alive\n\n"
    + llamacpp_event(" sky")
    + b"data: "
    + dumps(dict(LLAMACPP_FINAL, content="", stop_type="limit"))
    + b"\n\n"
)


def test_llamacpp_stream() -> None:
    c = call(chat(("user", "hi")), stream=True, include_usage=True)
    out = assert_split_invariant(c, LLAMACPP, LLAMACPP_STREAM)
    assert events(out) == [
        chunk({"role": "assistant", "content": " The"}),
        chunk({"content": " sky"}),
        chunk({}, "length"),
        usage_chunk(14, 6),
        "[DONE]",
    ]
    assert out[-1] == DONE
    _, dec = run(c, LLAMACPP, [LLAMACPP_STREAM])
    assert dec.usage == Usage(14, 6, 20, estimated=False)
    assert dec.model == "tiny-llama.gguf"


def test_llamacpp_stream_crlf() -> None:
    c = call(chat(("user", "hi")), stream=True)
    crlf = LLAMACPP_STREAM.replace(b"\n", b"\r\n")
    assert run(c, LLAMACPP, [crlf])[0] == run(c, LLAMACPP, [LLAMACPP_STREAM])[0]


@pytest.mark.parametrize(
    "error",
    [
        b'data: {"error":{"code":500,"message":"context shift disabled","type":"server_error"}}\n\n',
        b'error: {"code":500,"message":"context shift disabled","type":"server_error"}\n\n',
    ],
)
def test_llamacpp_stream_in_band_error(error: bytes) -> None:
    c = call(chat(("user", "hi")), stream=True)
    out = assert_split_invariant(c, LLAMACPP, llamacpp_event(" The") + error)
    assert events(out) == [
        chunk({"role": "assistant", "content": " The"}),
        {"error": {"message": "context shift disabled"}},
    ]


def test_llamacpp_stream_eof_before_final() -> None:
    c = call(chat(("user", "hi")), stream=True)
    out, dec = run(c, LLAMACPP, [llamacpp_event(" The") + b": ping\n\n"])
    assert events(out)[-1] == {
        "error": {"message": "upstream closed the stream before it finished"}
    }
    assert dec.error and not dec.done and DONE not in out


def test_tgi_stream_reported_prompt_tokens() -> None:
    details = {"finish_reason": "eos_token", "generated_tokens": 2, "prompt_tokens": 17}
    data = tgi_token(1, "Hi") + tgi_token(
        2, "</s>", special=True, generated_text="Hi", details=details
    )
    _, dec = run(call(chat(("user", "hi")), stream=True), HF, [data])
    assert dec.usage == Usage(17, 2, 19, estimated=False)


def test_tgi_stream_done_sentinel_from_look_alikes_ends_cleanly() -> None:
    out, dec = run(call(chat(("user", "12345678")), stream=True), HF, [tgi_token(1, "Hi") + DONE])
    assert events(out)[-2:] == [chunk({}, "stop"), "[DONE]"]
    assert dec.done and dec.usage == Usage(2, 1, 3, estimated=True)


def test_llamacpp_one_counter_missing_is_estimated() -> None:
    body = b'{"content":"abcd","tokens_predicted":9,"stop_type":"eos"}'
    parsed = ADAPTER.parse(call({"prompt": "12345678"}, COMPLETIONS), LLAMACPP, body)
    assert parsed.usage == Usage(2, 9, 11, estimated=True)


# ------------------------------------------------------------------ field rules (docs/fields.md)

HI = chat(("user", "Hi"))
TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {}}}]


def params(extra: dict[str, Any], o: ModelOptions = HF, route_type: str = CHAT) -> dict[str, Any]:
    body = {"prompt": "Once"} if route_type == COMPLETIONS else HI
    out = ADAPTER.build(call({**body, **extra}, route_type), o)
    return out["parameters"] if o.raw_flavor != "llamacpp" else out


def refused(extra: dict[str, Any], o: ModelOptions = HF, route_type: str = CHAT) -> str:
    with pytest.raises(TransformError) as exc:
        params(extra, o, route_type)
    return str(exc.value)


def test_max_completion_tokens_maps_like_max_tokens() -> None:
    assert params({"max_completion_tokens": 9})["max_new_tokens"] == 9
    assert params({"max_tokens": 5, "max_completion_tokens": 9}, LLAMACPP)["n_predict"] == 9
    assert params({"max_completion_tokens": 9}, opts(max_tokens=3))["max_new_tokens"] == 3


def test_tgi_and_llamacpp_mappings() -> None:
    schema = {"type": "string", "enum": ["yes", "no"]}
    rf = {"type": "json_schema", "json_schema": {"name": "a", "schema": schema}}
    natives = {"repeat_penalty": 1.1, "typical_p": 0.9, "num_ctx": 4096}
    extra = {"seed": 1, "frequency_penalty": 0.5, "response_format": rf, **natives}
    assert params(extra) == {
        "seed": 1,
        "frequency_penalty": 0.5,
        "repetition_penalty": 1.1,
        "typical_p": 0.9,
        "grammar": {"type": "json", "value": schema},
        "details": True,
        "stream": False,
    }
    extra.update(presence_penalty=0.2, logit_bias={"15": -100}, min_p=0.1, num_keep=4)
    assert params(extra, LLAMACPP) == {
        "prompt": "[INST] Hi [/INST]",
        "seed": 1,
        "frequency_penalty": 0.5,
        "presence_penalty": 0.2,
        "json_schema": schema,
        "logit_bias": [[15, -100]],
        "repeat_penalty": 1.1,
        "typical_p": 0.9,
        "min_p": 0.1,
        "n_keep": 4,
        "stream": False,
        "cache_prompt": True,
    }
    json_object = {"response_format": {"type": "json_object"}}
    assert params(json_object)["grammar"] == {"type": "json", "value": {"type": "object"}}
    assert params(json_object, LLAMACPP)["json_schema"] == {"type": "object"}
    assert "grammar" not in params({"response_format": {"type": "text"}, "typical_p": 1.0})


@pytest.mark.parametrize(
    ("extra", "o", "message"),
    [
        (
            {"tools": TOOLS},
            HF,
            "tools are not supported by raw targets; use an ollama or openai-format target",
        ),
        (
            {"tool_choice": "required"},
            LLAMACPP,
            "tool_choice is not supported by raw targets; use an ollama or openai-format target",
        ),
        (
            {"functions": [{"name": "f"}]},
            HF,
            "functions (legacy function calling) is not supported by raw targets; send tools and use an ollama or openai-format target",
        ),
        ({"n": 3}, LLAMACPP, "n=3 is not supported by raw targets; use an openai-format target"),
        (
            {"logprobs": True, "top_logprobs": 2},
            HF,
            "logprobs is not supported by raw targets; use an openai-format target",
        ),
        (
            {"logit_bias": {"1": 2}},
            HF,
            "logit_bias is not supported by raw hf (TGI) targets; use an openai-format target",
        ),
        ({"logit_bias": {"a": 2}}, LLAMACPP, "logit_bias must map token ids to biases"),
        (
            {"presence_penalty": 0.5},
            HF,
            "presence_penalty is not supported by raw hf (TGI) targets; use frequency_penalty",
        ),
        (
            {"reasoning_effort": "low"},
            LLAMACPP,
            "reasoning_effort is not supported by raw targets; use an openai-format target",
        ),
        ({"min_p": 0.1}, HF, "min_p is not supported by raw hf (TGI) targets"),
        (
            {"tfs_z": 0.9},
            LLAMACPP,
            "tfs_z is not supported by raw llamacpp targets (llama.cpp removed tail-free sampling)",
        ),
        (
            {"penalize_newline": True},
            LLAMACPP,
            "penalize_newline is not supported by raw llamacpp targets (llama.cpp removed penalize_nl)",
        ),
        (
            {"response_format": {"type": "regex"}},
            LLAMACPP,
            "response_format type 'regex' is not supported by raw llamacpp targets",
        ),
    ],
)
def test_refused_fields(extra: dict[str, Any], o: ModelOptions, message: str) -> None:
    assert refused(extra, o) == message


def test_refused_completions_fields() -> None:
    assert refused({"suffix": "x"}, LLAMACPP, COMPLETIONS) == (
        "suffix is not supported by raw targets; use an ollama or openai-format target"
    )
    assert refused({"echo": True}, HF, COMPLETIONS).startswith("echo: true is not supported")
    assert refused({"best_of": 2}, HF, COMPLETIONS).startswith("best_of=2 is not supported")


def test_idle_values_ignored_fields_and_hints() -> None:
    idle = {
        "n": 1,
        "presence_penalty": 0,
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "logprobs": False,
        "user": "u",
        "metadata": {},
        "num_ctx": 4096,
        "keep_alive": "1m",
        "unknown": 1,
    }
    assert params(idle) == {"details": True, "stream": False}
    assert params(idle, LLAMACPP) == {
        "prompt": "[INST] Hi [/INST]",
        "presence_penalty": 0,
        "stream": False,
        "cache_prompt": True,
    }


@pytest.mark.parametrize("o", [HF, KONG])
@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (
            {"role": "tool", "tool_call_id": "1", "content": "20C"},
            "messages[1]: role 'tool' is not supported by raw targets; use an ollama or "
            "openai-format target",
        ),
        (
            {"role": "assistant", "content": None, "tool_calls": [{"id": "1"}]},
            "messages[1]: tool_calls are not supported by raw targets; use an ollama or "
            "openai-format target",
        ),
        ({"role": "user", "content": None}, "messages[1]: content is null"),
        (
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:x"}}]},
            "messages[1].content[0]: image_url parts are not supported by raw targets; use an "
            "ollama or openai-format target",
        ),
        (
            {"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]},
            "messages[1].content[0]: input_audio parts are not supported by raw targets; use "
            "an openai-format target",
        ),
    ],
)
def test_message_refusals(o: ModelOptions, message: dict[str, Any], reason: str) -> None:
    body = {"messages": [{"role": "user", "content": "Hi"}, message]}
    with pytest.raises(TransformError) as exc:
        ADAPTER.build(call(body), o)
    assert str(exc.value) == reason


def test_developer_is_system() -> None:
    body = chat(("developer", "Be brief."), ("user", "Hi"))
    assert inputs(body) == "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST]"
    assert inputs(body, KONG) == "<s>[INST] <<SYS>> Be brief. <</SYS>> Hi [/INST]"


def test_prompt_lists() -> None:
    assert inputs({"prompt": ["Once"]}, HF, COMPLETIONS) == "Once"
    assert inputs({"prompt": [[1, 2, 3]]}, LLAMACPP, COMPLETIONS) == [1, 2, 3]  # type: ignore[comparison-overlap]
    assert inputs({"prompt": [1, 2]}, LLAMACPP, COMPLETIONS) == [1, 2]  # type: ignore[comparison-overlap]
    assert refused({"prompt": ["a", "b"]}, LLAMACPP, COMPLETIONS) == (
        "a list of 2 prompts is not supported by raw llamacpp targets; send one prompt per "
        "request or use an openai-format target"
    )
    assert refused({"prompt": [1, 2]}, HF, COMPLETIONS) == (
        "a token-id prompt is not supported by raw hf (TGI) targets; send text or use an "
        "openai-format target"
    )


def test_native_options_and_fields() -> None:
    c = call({"prompt": "Once"}, COMPLETIONS)
    c.native_options = {"repeat_last_n": 32, "num_thread": 4, "num_predict": 6}
    c.native_fields = {"keep_alive": "5m", "think": False, "raw": True}
    assert ADAPTER.build(c, LLAMACPP) == {
        "prompt": "Once",
        "n_predict": 6,
        "repeat_last_n": 32,
        "stream": False,
        "cache_prompt": True,
    }
    with pytest.raises(TransformError) as exc:
        ADAPTER.build(c, HF)
    assert str(exc.value) == "repeat_last_n is not supported by raw hf (TGI) targets"
    c.native_options = {"flash": 1}
    with pytest.raises(TransformError, match=r"^option flash is not supported by raw llamacpp"):
        ADAPTER.build(c, LLAMACPP)
    for native, reason in [
        ({"system": "S"}, "system is not supported by raw targets on /api/generate; use /api/chat"),
        ({"raw": True}, "raw is not supported by raw targets on /api/generate; use /api/chat"),
        ({"images": ["iVBO"]}, "images is not supported by raw targets; use an ollama target"),
        (
            {"think": True},
            "think is not supported by raw targets; send think: false or use an ollama target",
        ),
        (
            {"suffix": "x"},
            "suffix is not supported by raw targets; use an ollama or openai-format target",
        ),
    ]:
        c.native_options, c.native_fields = None, native
        with pytest.raises(TransformError) as exc:
            ADAPTER.build(c, KONG)  # kong templates completions: raw: true cannot hold
        assert str(exc.value) == reason


# ------------------------------------------------------------------ TGI stop sequences


def test_tgi_stop_is_cut_from_the_answer() -> None:
    body = {**chat(("user", "12345678")), "stop": ["###", "User:"]}
    generated = {
        "generated_text": " Paris.\nUser:",
        "details": {"finish_reason": "stop_sequence", "generated_tokens": 4},
    }
    parsed = ADAPTER.parse(call(body), HF, dumps(generated))
    assert loads(parsed.body)["choices"][0]["message"]["content"] == "Paris."
    assert loads(parsed.body)["choices"][0]["finish_reason"] == "stop"
    assert parsed.usage == Usage(2, 4, 6, estimated=True)
    # a stop inside the text stays; only the end is cut
    parsed = ADAPTER.parse(call(body), HF, b'[{"generated_text":"a ### b"}]')
    assert loads(parsed.body)["choices"][0]["message"]["content"] == "a ### b"


def test_tgi_stream_holds_back_a_possible_stop_and_drops_it() -> None:
    body = {**chat(("user", "hi")), "stop": ["<|end|>", "##"]}
    final = {"finish_reason": "stop_sequence", "generated_tokens": 6}
    data = (
        tgi_token(1, " The")
        + tgi_token(2, " <|")  # could start <|end|>: held
        + tgi_token(3, "x|>")  # it did not: released
        + tgi_token(4, " sky #")  # "#" could start "##": held
        + tgi_token(5, " <|en")
        + tgi_token(6, "d|>", generated_text="…", details=final)
    )
    c = call(body, stream=True)
    out = assert_split_invariant(c, HF, data)
    got = events(out)
    assert [e["choices"][0]["delta"] for e in got[:-2]] == [
        {"role": "assistant", "content": " The"},
        {"content": " "},
        {"content": "<|x|>"},
        {"content": " sky "},
        {"content": "# "},
    ]
    assert got[-2:] == [chunk({}, "stop"), "[DONE]"]
    _, dec = run(c, HF, [data])
    assert dec.completion_text_len == len(" The <|x|> sky # ")


def test_tgi_stream_held_text_without_stop_is_sent_at_the_end() -> None:
    body = {**chat(("user", "hi")), "stop": "###"}
    details = {"finish_reason": "length", "generated_tokens": 2}
    data = tgi_token(1, "a #") + tgi_token(2, "#", generated_text="a ##", details=details)
    got = events(run(call(body, stream=True), HF, [data])[0])
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in got[:-1] if e["choices"])
    assert text == "a ##"
    assert got[-2] == chunk({}, "length")
