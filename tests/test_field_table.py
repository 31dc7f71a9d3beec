"""docs/fields.md, cell by cell, over real sockets: one case per request field × target
format (ollama, raw hf on the TGI fake, raw llamacpp on the llama.cpp fake, openai),
each asserting what reached the upstream or the exact 400 the client got."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from helpers import route, target, url

CHAT, COMPLETIONS = "llm/v1/chat", "llm/v1/completions"
HI = [{"role": "user", "content": "hi"}]
TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
PNG = "iVBORw0KGgo="

# name → (fake kind, llama2_format, chat path, completions path, model options)
FORMATS: dict[str, tuple[str, str, str, str, dict[str, Any]]] = {
    "ollama": ("ollama", "ollama", "/api/chat", "/api/generate", {}),
    "tgi": ("tgi", "raw", "/generate", "/generate", {}),
    "llamacpp": ("llamacpp", "raw", "/completion", "/completion", {"raw_flavor": "llamacpp"}),
    "openai": ("openai", "openai", "/v1/chat/completions", "/v1/completions", {}),
}


@dataclass(frozen=True)
class Sent:
    """The upstream body has these values (dotted paths) and lacks these keys."""

    has: dict[str, Any] = field(default_factory=dict)
    lacks: tuple[str, ...] = ()


@dataclass(frozen=True)
class Refused:
    """400 `error transforming to llama2://<route type>/<format>: <reason>`."""

    reason: str


PASS = Sent()  # openai: every field of the case reaches the upstream unchanged
RAW = "use an ollama or openai-format target"
OAI = "use an openai-format target"


def refused_everywhere(
    field_: str, fmts: tuple[str, ...] = ("ollama", "tgi", "llamacpp")
) -> dict[str, Any]:
    label = {"ollama": "ollama", "tgi": "raw", "llamacpp": "raw"}
    return {f: Refused(f"{field_} is not supported by {label[f]} targets; {OAI}") for f in fmts}


# case → (route type, what the client adds to a plain request, expectation per format)
# fmt: off
CASES: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "plain": (CHAT, {}, {
        "ollama": Sent({"messages": HI, "stream": False, "options": {"num_predict": 5}}),
        "tgi": Sent({"parameters": {"max_new_tokens": 5, "details": True, "stream": False}}),
        "llamacpp": Sent({"n_predict": 5, "stream": False, "cache_prompt": True}),
        "openai": Sent({"messages": HI, "stream": False}),
    }),
    "max_completion_tokens": (CHAT, {"max_completion_tokens": 7}, {
        "ollama": Sent({"options.num_predict": 7}),
        "tgi": Sent({"parameters.max_new_tokens": 7}),
        "llamacpp": Sent({"n_predict": 7}),
        "openai": Sent({"max_completion_tokens": 7}, ("max_tokens",)),
    }),
    "max_tokens+max_completion_tokens": (CHAT, {"max_tokens": 3, "max_completion_tokens": 7}, {
        "ollama": Sent({"options.num_predict": 7}),
        "tgi": Sent({"parameters.max_new_tokens": 7}),
        "llamacpp": Sent({"n_predict": 7}),
        "openai": Sent({"max_completion_tokens": 7}, ("max_tokens",)),
    }),
    "top_k": (CHAT, {"top_k": 20}, {
        "ollama": Sent({"options.top_k": 20}),
        "tgi": Sent({"parameters.top_k": 20}),
        "llamacpp": Sent({"top_k": 20}),
        "openai": PASS,
    }),
    "stop": (CHAT, {"stop": " fox"}, {
        "ollama": Sent({"options.stop": [" fox"]}),
        "tgi": Sent({"parameters.stop": [" fox"]}),
        "llamacpp": Sent({"stop": [" fox"]}),
        "openai": PASS,
    }),
    "seed": (CHAT, {"seed": 42}, {
        "ollama": Sent({"options.seed": 42}),
        "tgi": Sent({"parameters.seed": 42}),
        "llamacpp": Sent({"seed": 42}),
        "openai": PASS,
    }),
    "frequency_penalty": (CHAT, {"frequency_penalty": 0.5}, {
        "ollama": Sent({"options.frequency_penalty": 0.5}),
        "tgi": Sent({"parameters.frequency_penalty": 0.5}),
        "llamacpp": Sent({"frequency_penalty": 0.5}),
        "openai": PASS,
    }),
    "presence_penalty": (CHAT, {"presence_penalty": 0.5}, {
        "ollama": Sent({"options.presence_penalty": 0.5}),
        "tgi": Refused("presence_penalty is not supported by raw hf (TGI) targets; use frequency_penalty"),
        "llamacpp": Sent({"presence_penalty": 0.5}),
        "openai": PASS,
    }),
    "n": (CHAT, {"n": 2}, {
        "ollama": Refused(f"n=2 is not supported by ollama targets; {OAI}"),
        "tgi": Refused(f"n=2 is not supported by raw targets; {OAI}"),
        "llamacpp": Refused(f"n=2 is not supported by raw targets; {OAI}"),
        "openai": PASS,
    }),
    "n=1": (CHAT, {"n": 1}, {
        "ollama": Sent(lacks=("n",)),
        "tgi": Sent(lacks=("n", "parameters.n")),
        "llamacpp": Sent(lacks=("n",)),
        "openai": PASS,
    }),
    "logprobs": (CHAT, {"logprobs": True}, {**refused_everywhere("logprobs"), "openai": PASS}),
    "top_logprobs": (CHAT, {"top_logprobs": 2}, {**refused_everywhere("top_logprobs"), "openai": PASS}),
    "logit_bias": (CHAT, {"logit_bias": {"15": -100}}, {
        "ollama": Refused(f"logit_bias is not supported by ollama targets; {OAI}"),
        "tgi": Refused(f"logit_bias is not supported by raw hf (TGI) targets; {OAI}"),
        "llamacpp": Sent({"logit_bias": [[15, -100]]}),
        "openai": PASS,
    }),
    "echo": (COMPLETIONS, {"echo": True}, {
        "ollama": Refused(f"echo: true is not supported by ollama targets; {OAI}"),
        "tgi": Refused(f"echo: true is not supported by raw targets; {OAI}"),
        "llamacpp": Refused(f"echo: true is not supported by raw targets; {OAI}"),
        "openai": PASS,
    }),
    "best_of": (COMPLETIONS, {"best_of": 2}, {
        "ollama": Refused(f"best_of=2 is not supported by ollama targets; {OAI}"),
        "tgi": Refused(f"best_of=2 is not supported by raw targets; {OAI}"),
        "llamacpp": Refused(f"best_of=2 is not supported by raw targets; {OAI}"),
        "openai": PASS,
    }),
    "logprobs (completions)": (COMPLETIONS, {"logprobs": 2}, {**refused_everywhere("logprobs"), "openai": PASS}),
    "tools": (CHAT, {"tools": TOOLS, "tool_choice": "auto"}, {
        "ollama": Sent({"tools": TOOLS}, ("tool_choice",)),
        "tgi": Refused(f"tools are not supported by raw targets; {RAW}"),
        "llamacpp": Refused(f"tools are not supported by raw targets; {RAW}"),
        "openai": PASS,
    }),
    "tool_choice": (CHAT, {"tools": TOOLS, "tool_choice": "required"}, {
        "ollama": Refused(f"tool_choice 'required' is not supported by ollama targets (Ollama chooses itself: \"auto\"); {OAI}"),
        "tgi": Refused(f"tools are not supported by raw targets; {RAW}"),
        "llamacpp": Refused(f"tools are not supported by raw targets; {RAW}"),
        "openai": PASS,
    }),
    "tool_choice without tools": (CHAT, {"tool_choice": "required"}, {
        "ollama": Refused(f"tool_choice 'required' is not supported by ollama targets (Ollama chooses itself: \"auto\"); {OAI}"),
        "tgi": Refused(f"tool_choice is not supported by raw targets; {RAW}"),
        "llamacpp": Refused(f"tool_choice is not supported by raw targets; {RAW}"),
        "openai": PASS,
    }),
    "parallel_tool_calls": (CHAT, {"tools": TOOLS, "parallel_tool_calls": False}, {
        "ollama": Refused(f"parallel_tool_calls: false is not supported by ollama targets; {OAI}"),
        "tgi": Refused(f"tools are not supported by raw targets; {RAW}"),
        "llamacpp": Refused(f"tools are not supported by raw targets; {RAW}"),
        "openai": PASS,
    }),
    "parallel_tool_calls without tools": (CHAT, {"parallel_tool_calls": False}, {
        "ollama": Sent(lacks=("parallel_tool_calls",)),
        "tgi": Sent(lacks=("parallel_tool_calls", "parameters.parallel_tool_calls")),
        "llamacpp": Sent(lacks=("parallel_tool_calls",)),
        "openai": PASS,
    }),
    "functions": (CHAT, {"functions": [{"name": "f", "parameters": {}}]}, {
        "ollama": Refused("functions (legacy function calling) is not supported by ollama targets; send tools instead"),
        "tgi": Refused(f"functions (legacy function calling) is not supported by raw targets; send tools and {RAW}"),
        "llamacpp": Refused(f"functions (legacy function calling) is not supported by raw targets; send tools and {RAW}"),
        "openai": PASS,
    }),
    "function_call": (CHAT, {"function_call": {"name": "f"}}, {
        "ollama": Refused("function_call (legacy function calling) is not supported by ollama targets; send tools instead"),
        "tgi": Refused(f"function_call (legacy function calling) is not supported by raw targets; send tools and {RAW}"),
        "llamacpp": Refused(f"function_call (legacy function calling) is not supported by raw targets; send tools and {RAW}"),
        "openai": PASS,
    }),
    "response_format text": (CHAT, {"response_format": {"type": "text"}}, {
        "ollama": Sent(lacks=("format",)),
        "tgi": Sent(lacks=("parameters.grammar",)),
        "llamacpp": Sent(lacks=("json_schema",)),
        "openai": PASS,
    }),
    "response_format json_object": (CHAT, {"response_format": {"type": "json_object"}}, {
        "ollama": Sent({"format": "json"}),
        "tgi": Sent({"parameters.grammar": {"type": "json", "value": {"type": "object"}}}),
        "llamacpp": Sent({"json_schema": {"type": "object"}}),
        "openai": PASS,
    }),
    "response_format json_schema": (
        CHAT,
        {"response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": SCHEMA}}},
        {
            "ollama": Sent({"format": SCHEMA}),
            "tgi": Sent({"parameters.grammar": {"type": "json", "value": SCHEMA}}),
            "llamacpp": Sent({"json_schema": SCHEMA}),
            "openai": PASS,
        },
    ),
    "response_format malformed": (CHAT, {"response_format": {"type": "xml"}}, {
        "ollama": Refused("response_format type 'xml' is not supported by ollama targets"),
        "tgi": Refused("response_format type 'xml' is not supported by raw hf (TGI) targets"),
        "llamacpp": Refused("response_format type 'xml' is not supported by raw llamacpp targets"),
        "openai": PASS,
    }),
    "image_url data:": (
        CHAT,
        {"messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is it?"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        ]}]},
        {
            "ollama": Sent({"messages": [{"role": "user", "content": "what is it?", "images": [PNG]}]}),
            "tgi": Refused(f"messages[0].content[1]: image_url parts are not supported by raw targets; {RAW}"),
            "llamacpp": Refused(f"messages[0].content[1]: image_url parts are not supported by raw targets; {RAW}"),
            "openai": PASS,
        },
    ),
    "image_url https:": (
        CHAT,
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]},
        {
            "ollama": Refused("messages[0].content[0]: the gateway does not fetch images; send image_url as a data: URL (data:<mime>;base64,…)"),
            "tgi": Refused(f"messages[0].content[0]: image_url parts are not supported by raw targets; {RAW}"),
            "llamacpp": Refused(f"messages[0].content[0]: image_url parts are not supported by raw targets; {RAW}"),
            "openai": PASS,
        },
    ),
    "input_audio part": (
        CHAT,
        {"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "AA==", "format": "wav"}}]}]},
        {
            "ollama": Refused(f"messages[0].content[0]: input_audio parts are not supported by ollama targets; {OAI}"),
            "tgi": Refused(f"messages[0].content[0]: input_audio parts are not supported by raw targets; {OAI}"),
            "llamacpp": Refused(f"messages[0].content[0]: input_audio parts are not supported by raw targets; {OAI}"),
            "openai": PASS,
        },
    ),
    "developer role": (
        CHAT,
        {"messages": [{"role": "developer", "content": "Be brief."}, *HI]},
        {
            "ollama": Sent({"messages": [{"role": "system", "content": "Be brief."}, *HI]}),
            "tgi": Sent({"inputs": "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nhi [/INST]"}),
            "llamacpp": Sent({"prompt": "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nhi [/INST]"}),
            "openai": PASS,
        },
    ),
    "tool role": (
        CHAT,
        {"tools": TOOLS, "messages": [
            *HI,
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ]},
            {"role": "tool", "tool_call_id": "c1", "content": "42"},
        ]},
        {
            "ollama": Sent({"messages.2": {"role": "tool", "tool_call_id": "c1", "content": "42", "tool_name": "f"}}),
            "tgi": Refused(f"tools are not supported by raw targets; {RAW}"),
            "llamacpp": Refused(f"tools are not supported by raw targets; {RAW}"),
            "openai": PASS,
        },
    ),
    "tool role without tools": (
        CHAT,
        {"messages": [*HI, {"role": "tool", "tool_call_id": "c1", "content": "42"}]},
        {
            "ollama": Sent({"messages.1": {"role": "tool", "tool_call_id": "c1", "content": "42"}}),
            "tgi": Refused(f"messages[1]: role 'tool' is not supported by raw targets; {RAW}"),
            "llamacpp": Refused(f"messages[1]: role 'tool' is not supported by raw targets; {RAW}"),
            "openai": PASS,
        },
    ),
    "content null": (
        CHAT,
        {"messages": [{"role": "user", "content": None}]},
        {
            "ollama": Refused("messages[0]: content is null"),
            "tgi": Refused("messages[0]: content is null"),
            "llamacpp": Refused("messages[0]: content is null"),
            "openai": PASS,
        },
    ),
    "prompt list of one": (COMPLETIONS, {"prompt": ["Once upon"]}, {
        "ollama": Sent({"prompt": "Once upon"}),
        "tgi": Sent({"inputs": "Once upon"}),
        "llamacpp": Sent({"prompt": "Once upon"}),
        "openai": PASS,
    }),
    "prompt list of two": (COMPLETIONS, {"prompt": ["a", "b"]}, {
        "ollama": Refused(f"a list of 2 prompts is not supported by ollama targets; send one prompt per request or {OAI}"),
        "tgi": Refused(f"a list of 2 prompts is not supported by raw hf (TGI) targets; send one prompt per request or {OAI}"),
        "llamacpp": Refused(f"a list of 2 prompts is not supported by raw llamacpp targets; send one prompt per request or {OAI}"),
        "openai": PASS,
    }),
    "prompt token ids": (COMPLETIONS, {"prompt": [1, 2, 3]}, {
        "ollama": Refused(f"a token-id prompt is not supported by ollama targets; send text or {OAI}"),
        "tgi": Refused(f"a token-id prompt is not supported by raw hf (TGI) targets; send text or {OAI}"),
        "llamacpp": Sent({"prompt": [1, 2, 3]}),
        "openai": PASS,
    }),
    "suffix": (COMPLETIONS, {"suffix": "The end."}, {
        "ollama": Sent({"suffix": "The end."}),
        "tgi": Refused(f"suffix is not supported by raw targets; {RAW}"),
        "llamacpp": Refused(f"suffix is not supported by raw targets; {RAW}"),
        "openai": PASS,
    }),
    **{
        name: (CHAT, {name: value}, {**refused_everywhere(name), "openai": PASS})
        for name, value in (
            ("reasoning_effort", "high"),
            ("modalities", ["text", "audio"]),
            ("audio", {"voice": "alloy", "format": "wav"}),
            ("prediction", {"type": "content", "content": "x"}),
            ("web_search_options", {}),
            ("verbosity", "low"),
        )
    },
    "min_p": (CHAT, {"min_p": 0.1}, {
        "ollama": Sent({"options.min_p": 0.1}),
        "tgi": Refused("min_p is not supported by raw hf (TGI) targets"),
        "llamacpp": Sent({"min_p": 0.1}),
        "openai": PASS,
    }),
    "repeat_penalty": (CHAT, {"repeat_penalty": 1.1}, {
        "ollama": Sent({"options.repeat_penalty": 1.1}),
        "tgi": Sent({"parameters.repetition_penalty": 1.1}),
        "llamacpp": Sent({"repeat_penalty": 1.1}),
        "openai": PASS,
    }),
    "typical_p": (CHAT, {"typical_p": 0.9}, {
        "ollama": Sent({"options.typical_p": 0.9}),
        "tgi": Sent({"parameters.typical_p": 0.9}),
        "llamacpp": Sent({"typical_p": 0.9}),
        "openai": PASS,
    }),
    "num_keep": (CHAT, {"num_keep": 4}, {
        "ollama": Sent({"options.num_keep": 4}),
        "tgi": Refused("num_keep is not supported by raw hf (TGI) targets"),
        "llamacpp": Sent({"n_keep": 4}, ("num_keep",)),
        "openai": PASS,
    }),
    "mirostat": (CHAT, {"mirostat": 2, "mirostat_tau": 5.0}, {
        "ollama": Sent({"options.mirostat": 2, "options.mirostat_tau": 5.0}),
        "tgi": Refused("mirostat is not supported by raw hf (TGI) targets"),
        "llamacpp": Sent({"mirostat": 2, "mirostat_tau": 5.0}),
        "openai": PASS,
    }),
    "tfs_z": (CHAT, {"tfs_z": 0.95}, {
        "ollama": Sent({"options.tfs_z": 0.95}),
        "tgi": Refused("tfs_z is not supported by raw hf (TGI) targets"),
        "llamacpp": Refused("tfs_z is not supported by raw llamacpp targets (llama.cpp removed tail-free sampling)"),
        "openai": PASS,
    }),
    "num_ctx (hint)": (CHAT, {"num_ctx": 4096}, {
        "ollama": Sent({"options.num_ctx": 4096}),
        "tgi": Sent(lacks=("num_ctx", "parameters.num_ctx")),
        "llamacpp": Sent(lacks=("num_ctx",)),
        "openai": PASS,
    }),
    "keep_alive (hint)": (CHAT, {"keep_alive": "5m"}, {
        "ollama": Sent({"keep_alive": "5m"}),
        "tgi": Sent(lacks=("keep_alive",)),
        "llamacpp": Sent(lacks=("keep_alive",)),
        "openai": PASS,
    }),
    "ignored": (
        CHAT,
        IGNORED := {
            "user": "u1",
            "store": True,
            "metadata": {"k": "v"},
            "service_tier": "auto",
            "prompt_cache_key": "p",
            "safety_identifier": "s",
            "stream_options": {"include_usage": True},
        },
        {
            "ollama": Sent(lacks=tuple(IGNORED)),
            "tgi": Sent(lacks=tuple(IGNORED)),
            "llamacpp": Sent(lacks=tuple(IGNORED)),
            "openai": PASS,
        },
    ),
    "unknown field": (CHAT, {"my_extension": 1}, {
        "ollama": Sent(lacks=("my_extension", "options.my_extension")),
        "tgi": Sent(lacks=("my_extension", "parameters.my_extension")),
        "llamacpp": Sent(lacks=("my_extension",)),
        "openai": PASS,
    }),
}
# fmt: on

CELLS = [(case, fmt) for case in CASES for fmt in FORMATS]


def lookup(obj: Any, path: str) -> Any:
    for key in path.split("."):
        obj = obj[int(key)] if isinstance(obj, list) else obj[key]
    return obj


def present(obj: Any, path: str) -> bool:
    try:
        lookup(obj, path)
    except (KeyError, IndexError, TypeError):
        return False
    return True


async def serve(upstream, gateway, fmt: str, route_type: str) -> tuple[Any, str]:
    kind, llama2_format, chat_path, completions_path, options = FORMATS[fmt]
    up = await upstream(kind)
    path = chat_path if route_type == CHAT else completions_path
    t = target(up, path, fmt=llama2_format, route_type=route_type, options=options)
    gw = await gateway(route(t, path="/v1/x"))
    return up, url(gw, "/v1/x")


@pytest.mark.parametrize(("case", "fmt"), CELLS, ids=[f"{c}-{f}" for c, f in CELLS])
async def test_field_cell(
    upstream, gateway, http: aiohttp.ClientSession, case: str, fmt: str
) -> None:
    route_type, extra, expected = CASES[case]
    up, u = await serve(upstream, gateway, fmt, route_type)
    plain = {"messages": HI} if route_type == CHAT else {"prompt": "Once upon a time"}
    # a small limit keeps the fakes quick, unless the case is about the limit
    limit = {} if "max_completion_tokens" in extra else {"max_tokens": 5}
    body = {"model": "llama2", **plain, **limit, **extra}
    async with http.post(u, json=body) as r:
        status, answer = r.status, await r.json(content_type=None)
    want = expected[fmt]
    if isinstance(want, Refused):
        prefix = f"error transforming to llama2://{route_type}/{FORMATS[fmt][1]}: "
        assert (status, answer) == (400, {"error": {"message": prefix + want.reason}})
        assert up.generation_requests() == []
        return
    sent = up.generation_requests()[-1].json
    if want is PASS:
        for key, value in extra.items():
            assert sent[key] == value, key
    for path, value in want.has.items():
        assert lookup(sent, path) == value, path
    for path in want.lacks:
        assert not present(sent, path), path


# ------------------------------------------------------------------ answers


@pytest.mark.parametrize("stream", [False, True])
async def test_tgi_answer_ends_before_the_stop(upstream, gateway, http, stream: bool) -> None:
    """TGI keeps the stop sequence in its text (the fake does too); the client's answer
    ends before it, as from OpenAI, with finish_reason stop."""
    up = await upstream("tgi")
    path = "/generate_stream" if stream else "/generate"
    gw = await gateway(route(target(up, path, fmt="raw"), path="/v1/x"))
    body = {"messages": HI, "max_tokens": 8, "stop": [" fox", "zzz"], "stream": stream}
    async with http.post(url(gw, "/v1/x"), json=body) as r:
        assert r.status == 200
        raw = await r.text()
    if stream:
        chunks = [json.loads(b[6:]) for b in raw.split("\n\n") if b.startswith("data: {")]
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
        finish = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1]
    else:
        answer = json.loads(raw)
        text = answer["choices"][0]["message"]["content"]
        finish = answer["choices"][0]["finish_reason"]
        assert answer["usage"]["completion_tokens"] == 4  # counted by TGI (details: true)
    assert text.strip() == "The quick brown"
    assert finish == "stop"
    assert up.generation_requests()[-1].json["parameters"]["stop"] == [" fox", "zzz"]


# ------------------------------------------------------------------ the Ollama front door

FRONT = {"ollama": {"prefix": ""}}
PREFIX = "error transforming to llama2://llm/v1/completions/{}: "
# format → (where the mapped sampling option lands, its name there)
NATIVE_OPTION = {
    "ollama": ("options.repeat_penalty", "options.num_ctx"),
    "tgi": ("parameters.repetition_penalty", None),
    "llamacpp": ("repeat_penalty", None),
    "openai": ("repeat_penalty", None),
}


async def front_door(upstream, gateway, fmt: str, route_type: str) -> tuple[Any, str]:
    kind, llama2_format, chat_path, completions_path, options = FORMATS[fmt]
    up = await upstream(kind)
    path = chat_path if route_type == CHAT else completions_path
    t = target(up, path, fmt=llama2_format, route_type=route_type, options=options)
    gw = await gateway(route(t, path="/v1/x"), frontends=FRONT)
    return up, f"http://127.0.0.1:{gw.port}"


@pytest.mark.parametrize("fmt", list(FORMATS))
async def test_front_door_native_options(upstream, gateway, http, fmt: str) -> None:
    """Ollama `options` without an OpenAI field reach each format under its own name;
    the server-side hint (num_ctx) only Ollama."""
    up, base = await front_door(upstream, gateway, fmt, CHAT)
    options = {"num_predict": 3, "repeat_penalty": 1.1, "num_ctx": 4096}
    body = {"model": "llama2", "messages": HI, "stream": False, "options": options}
    async with http.post(base + "/api/chat", json=body) as r:
        assert r.status == 200, await r.text()
    sent = up.generation_requests()[-1].json
    mapped, hint = NATIVE_OPTION[fmt]
    assert lookup(sent, mapped) == 1.1
    if hint is not None:
        assert lookup(sent, hint) == 4096
    else:
        assert "num_ctx" not in json.dumps(sent)


@pytest.mark.parametrize("fmt", list(FORMATS))
async def test_front_door_native_fields(upstream, gateway, http, fmt: str) -> None:
    """`system` on /api/generate: Ollama takes it; no other format has a place for it."""
    up, base = await front_door(upstream, gateway, fmt, COMPLETIONS)
    body = {"model": "llama2", "prompt": "Once", "system": "Be brief.", "stream": False}
    async with http.post(base + "/api/generate", json=body) as r:
        status, text = r.status, await r.text()
    if fmt == "ollama":
        assert status == 200, text
        assert up.generation_requests()[-1].json["system"] == "Be brief."
        return
    label = FORMATS[fmt][1]
    reason = f"system is not supported by {label} targets on /api/generate; use /api/chat"
    assert (status, json.loads(text)) == (400, {"error": PREFIX.format(label) + reason}), text
    assert up.generation_requests() == []
