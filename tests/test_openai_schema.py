"""Every answer and chunk of the OpenAI-shaped surface validates against OpenAI's own
OpenAPI document (vendored, pinned, in tests/openai_schema/; see its README).

Real answers: a real gateway in front of each fake upstream format (Ollama chat and
generate, raw hf on the TGI fake, raw llamacpp on the llama.cpp fake, the OpenAI fake
passed through), chat and completions, whole and streamed; every stream chunk is
checked, the usage chunk of `stream_options.include_usage` included, `[DONE]` not.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest
from helpers import route, target, url
from openai_schema_kit import COMPLETION_CHUNK, COMPONENTS, document, validate, violations

from gateway.sim import Behaviour

CHAT_BODY = {
    "model": "llama2",
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Why is the sky blue?"},
    ],
}
COMPLETIONS_BODY = {"model": "llama2", "prompt": "Once upon a time"}

# name → (fake kind, llama2_format, {route kind: (non-stream path, stream path)}, options)
FORMATS: dict[str, tuple[str, str, dict[str, tuple[str, str]], dict[str, Any]]] = {
    "ollama": (
        "ollama",
        "ollama",
        {"chat": ("/api/chat",) * 2, "completions": ("/api/generate",) * 2},
        {},
    ),
    "raw-hf": (
        "tgi",
        "raw",
        {
            "chat": ("/generate", "/generate_stream"),
            "completions": ("/generate", "/generate_stream"),
        },
        {},
    ),
    "raw-llamacpp": (
        "llamacpp",
        "raw",
        {"chat": ("/completion",) * 2, "completions": ("/completion",) * 2},
        {"raw_flavor": "llamacpp"},
    ),
    "openai": (
        "openai",
        "openai",
        {"chat": ("/v1/chat/completions",) * 2, "completions": ("/v1/completions",) * 2},
        {},
    ),
    # OpenAI layers that leave out fields the schema requires (`message.refusal`,
    # `choices[].logprobs`): the openai adapter completes their answers.
    "openai-on-llamacpp": (
        "llamacpp",
        "openai",
        {"chat": ("/v1/chat/completions",) * 2, "completions": ("/v1/completions",) * 2},
        {},
    ),
    "openai-on-ollama": (
        "ollama",
        "openai",
        {"chat": ("/v1/chat/completions",) * 2, "completions": ("/v1/completions",) * 2},
        {},
    ),
}
KINDS = {
    # route kind → (route_type, request body, whole answer component, chunk component)
    "chat": (
        "llm/v1/chat",
        CHAT_BODY,
        "CreateChatCompletionResponse",
        "CreateChatCompletionStreamResponse",
    ),
    "completions": (
        "llm/v1/completions",
        COMPLETIONS_BODY,
        "CreateCompletionResponse",
        COMPLETION_CHUNK,
    ),
}
MODES = ("json", "stream", "stream+usage")


async def post_json(http: aiohttp.ClientSession, u: str, body: Any) -> Any:
    async with http.post(u, json=body) as r:
        text = await r.text()
        assert r.status == 200, text
        assert r.content_type == "application/json", r.content_type
    return json.loads(text)


async def post_stream(http: aiohttp.ClientSession, u: str, body: Any) -> list[dict[str, Any]]:
    """The chunks of an SSE answer, after checking it ends with exactly one `[DONE]`."""
    async with http.post(u, json=body) as r:
        raw = (await r.read()).decode()
        assert r.status == 200, raw
        assert r.content_type == "text/event-stream", r.content_type
    events = []
    for block in raw.split("\n\n"):
        if not block:
            continue
        assert block.startswith("data: "), block
        events.append(block.removeprefix("data: "))
    assert events and events[-1] == "[DONE]" and events.count("[DONE]") == 1, events
    return [json.loads(e) for e in events[:-1]]


def validate_stream(component: str, chunks: list[dict[str, Any]], what: str) -> None:
    """Validate every chunk, reporting all failing chunks at once."""
    __tracebackhide__ = True
    failures = []
    for i, chunk in enumerate(chunks):
        try:
            validate(component, chunk, f"{what}, chunk {i} (of {len(chunks)})")
        except AssertionError as exc:
            failures.append(str(exc))
    if failures:
        raise AssertionError("\n".join(failures))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("fmt", list(FORMATS))
async def test_answers_validate(upstream, gateway, http, fmt: str, kind: str, mode: str) -> None:
    fake, llama2_format, paths, options = FORMATS[fmt]
    route_type, body, whole_component, chunk_component = KINDS[kind]
    stream = mode != "json"
    up = await upstream(fake)
    t = target(
        up,
        paths[kind][stream],
        fmt=llama2_format,
        route_type=route_type,
        options={"max_tokens": 5, **options},
    )
    gw = await gateway(route(t, path="/v1/x"))
    what = f"{fmt} {kind} {mode}"
    if not stream:
        answer = await post_json(http, url(gw, "/v1/x"), body)
        validate(whole_component, answer, what)
        return
    request = {**body, "stream": True}
    if mode == "stream+usage":
        request["stream_options"] = {"include_usage": True}
    chunks = await post_stream(http, url(gw, "/v1/x"), request)
    # What the validation saw: the text, one finish_reason, and the usage chunk (an
    # OpenAI layer of another server streams as that server does: passed through).
    assert [c for c in chunks if any(ch.get("finish_reason") for ch in c["choices"])], chunks
    if fmt.startswith("openai-on-"):
        pass
    elif mode == "stream+usage":
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0, chunks
    else:
        assert all(c.get("usage") is None for c in chunks), chunks
    validate_stream(chunk_component, chunks, what)


# -- tool calls (Ollama) ---------------------------------------------------------------
# The Ollama fake does not call tools by itself; its canned-body knob (`Behaviour.status`
# with `error_body`, here a 200) makes it answer with Ollama's own tool-call shape.

_TOOL_CALL = {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
_COUNTS = {"prompt_eval_count": 12, "eval_count": 7, "total_duration": 9_000_000}


def _ollama_line(message: dict[str, Any], done: bool) -> dict[str, Any]:
    line = {"model": "llama2", "created_at": "2024-01-15T08:13:38.876196Z", "message": message}
    if done:
        return {**line, "done_reason": "stop", "done": True, **_COUNTS}
    return {**line, "done": False}


async def _tool_gateway(upstream, gateway, body: bytes):  # type: ignore[no-untyped-def]
    up = await upstream("ollama", behaviour=Behaviour(status=200, error_body=body))
    return await gateway(route(target(up, "/api/chat"), path="/v1/x"))


async def test_ollama_tool_call_answer_validates(upstream, gateway, http) -> None:
    message = {"role": "assistant", "content": "", "tool_calls": [_TOOL_CALL]}
    canned = json.dumps(_ollama_line(message, done=True)).encode()
    gw = await _tool_gateway(upstream, gateway, canned)
    answer = await post_json(http, url(gw, "/v1/x"), {**CHAT_BODY, "tools": _TOOLS})
    assert answer["choices"][0]["finish_reason"] == "tool_calls", answer
    assert answer["choices"][0]["message"]["tool_calls"][0]["type"] == "function", answer
    validate("CreateChatCompletionResponse", answer, "ollama chat tool call")


async def test_ollama_tool_call_stream_validates(upstream, gateway, http) -> None:
    lines = [
        _ollama_line({"role": "assistant", "content": "", "tool_calls": [_TOOL_CALL]}, False),
        _ollama_line({"role": "assistant", "content": ""}, True),
    ]
    canned = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    gw = await _tool_gateway(upstream, gateway, canned)
    request = {
        **CHAT_BODY,
        "tools": _TOOLS,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    chunks = await post_stream(http, url(gw, "/v1/x"), request)
    deltas = [ch["delta"] for c in chunks for ch in c["choices"]]
    assert any(d.get("tool_calls") for d in deltas), chunks
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls", chunks
    validate_stream("CreateChatCompletionStreamResponse", chunks, "ollama chat tool call stream")


# -- the validator itself ----------------------------------------------------------------

_USAGE = {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14}
CHAT_ANSWER: dict[str, Any] = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1_700_000_000,
    "model": "llama2",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hi.", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": _USAGE,
}
TEXT_ANSWER: dict[str, Any] = {
    "id": "cmpl-1",
    "object": "text_completion",
    "created": 1_700_000_000,
    "model": "llama2",
    "choices": [{"index": 0, "text": " there", "logprobs": None, "finish_reason": "length"}],
    "usage": _USAGE,
}


def _without(obj: dict[str, Any], *path: str | int) -> dict[str, Any]:
    """A deep copy of obj without the key at path."""
    out: Any = json.loads(json.dumps(obj))
    holder = out
    for step in path[:-1]:
        holder = holder[step]
    del holder[path[-1]]
    return out  # type: ignore[no-any-return]


def test_hand_written_answers_validate() -> None:
    validate("CreateChatCompletionResponse", CHAT_ANSWER)
    validate("CreateCompletionResponse", TEXT_ANSWER)


@pytest.mark.parametrize(
    ("component", "answer"),
    [("CreateChatCompletionResponse", CHAT_ANSWER), ("CreateCompletionResponse", TEXT_ANSWER)],
)
def test_rejects_an_answer_without_logprobs(component: str, answer: dict[str, Any]) -> None:
    """`choices[].logprobs` is required (its value may be null): leaving it out fails."""
    bad = _without(answer, "choices", 0, "logprobs")
    with pytest.raises(AssertionError) as caught:
        validate(component, bad)
    assert "$.choices[0]: 'logprobs' is a required property" in str(caught.value)


def test_rejects_a_chat_message_without_refusal() -> None:
    bad = _without(CHAT_ANSWER, "choices", 0, "message", "refusal")
    with pytest.raises(AssertionError, match=r"\$\.choices\[0\]\.message: 'refusal' is a required"):
        validate("CreateChatCompletionResponse", bad)


def test_lists_every_violation() -> None:
    bad = _without(_without(CHAT_ANSWER, "choices", 0, "logprobs"), "created")
    bad["choices"][0]["finish_reason"] = None
    found = {(e.json_path, e.validator) for e in violations("CreateChatCompletionResponse", bad)}
    assert found == {
        ("$", "required"),
        ("$.choices[0]", "required"),
        ("$.choices[0].finish_reason", "type"),
        ("$.choices[0].finish_reason", "enum"),
    }
    with pytest.raises(AssertionError, match=r"4 violation\(s\)"):
        validate("CreateChatCompletionResponse", bad)


def test_nullable_converted_to_json_schema() -> None:
    """The chunk schema's `nullable: true` fields take null (and still check the rest)."""
    chunk = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "llama2",
        "choices": [
            {"index": 0, "delta": {"content": "Hi"}, "logprobs": None, "finish_reason": None}
        ],
        "usage": None,
    }
    validate("CreateChatCompletionStreamResponse", chunk)
    chunk["choices"][0]["finish_reason"] = "done"
    with pytest.raises(AssertionError, match=r"'done' is not one of"):
        validate("CreateChatCompletionStreamResponse", chunk)


def test_completion_chunk_admits_only_the_stream_nulls() -> None:
    chunk = {**TEXT_ANSWER, "usage": None}
    chunk["choices"] = [{**TEXT_ANSWER["choices"][0], "finish_reason": None}]
    validate(COMPLETION_CHUNK, chunk)
    with pytest.raises(AssertionError, match="finish_reason"):
        validate("CreateCompletionResponse", chunk)
    with pytest.raises(AssertionError, match="'logprobs' is a required property"):
        validate(COMPLETION_CHUNK, _without(chunk, "choices", 0, "logprobs"))


EMBEDDINGS_ANSWER: dict[str, Any] = {
    "object": "list",
    "model": "nomic-embed-text",
    "data": [
        {"object": "embedding", "index": 0, "embedding": [0.1, -0.2, 0.3]},
        {"object": "embedding", "index": 1, "embedding": [0.0, 0.5, -1.0]},
    ],
    "usage": {"prompt_tokens": 4, "total_tokens": 4},
}
MODELS_ANSWER: dict[str, Any] = {
    "object": "list",
    "data": [
        {"id": "llama2", "object": "model", "created": 1_686_935_002, "owned_by": "library"},
        {"id": "mistral", "object": "model", "created": 0, "owned_by": "llama-gateway"},
    ],
}


def test_embeddings_component() -> None:
    validate("CreateEmbeddingResponse", EMBEDDINGS_ANSWER)
    bad = _without(EMBEDDINGS_ANSWER, "usage")
    bad["data"][0]["embedding"] = "AAAA"  # base64 encoding_format: not this schema
    bad["data"][1]["object"] = "vector"
    found = {(e.json_path, e.validator) for e in violations("CreateEmbeddingResponse", bad)}
    assert found == {
        ("$", "required"),
        ("$.data[0].embedding", "type"),
        ("$.data[1].object", "enum"),
    }


def test_models_component() -> None:
    validate("ListModelsResponse", MODELS_ANSWER)
    bad = _without(MODELS_ANSWER, "data", 0, "owned_by")
    bad["data"][1]["created"] = "2024-01-01"
    bad["object"] = "models"
    found = {(e.json_path, e.validator) for e in violations("ListModelsResponse", bad)}
    assert found == {("$.object", "enum"), ("$.data[0]", "required"), ("$.data[1].created", "type")}


def test_vendored_document_is_whole() -> None:
    """Every `$ref` resolves inside the vendored file, no OpenAPI `nullable` is left, and
    it says where it came from."""
    doc = json.loads(COMPONENTS.read_text(encoding="utf-8"))
    schemas = doc["components"]["schemas"]
    text = json.dumps(schemas)
    for ref in {r for r in _refs(schemas)}:
        assert ref.startswith("#/components/schemas/") and ref.rpartition("/")[2] in schemas, ref
    assert '"nullable"' not in text
    source = doc["x-source"]
    assert len(source["commit"]) == 40 and source["path"] == "openapi.json"
    assert set(source["roots"]) <= set(schemas)
    readme = (COMPONENTS.parent / "README.md").read_text(encoding="utf-8")
    assert source["commit"] in readme
    assert (COMPONENTS.parent / "LICENSE").read_text(encoding="utf-8").startswith("The MIT License")
    assert COMPLETION_CHUNK in document()["components"]["schemas"]


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "$ref"] + [
            r for k, v in node.items() if k != "$ref" for r in _refs(v)
        ]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


# embeddings / models
#
# An `llm/v1/embeddings` route answered by the gateway (Ollama `/api/embed`, OpenAI
# `/v1/embeddings`, llama.cpp `/embedding` upstreams) and the model lists: the OpenAI
# front door's `{prefix}/models` and the `…/models` next to a route path. Floats only:
# OpenAI's schema has no form for `encoding_format: "base64"` (a string `embedding`).

EMBEDDING_UPSTREAMS = {
    # format → (fake kind, llama2_format, path, options)
    "ollama": ("ollama", "ollama", "/api/embed", {}),
    "openai": ("openai", "openai", "/v1/embeddings", {}),
    "raw-llamacpp": ("llamacpp", "raw", "/embedding", {"raw_flavor": "llamacpp"}),
}


@pytest.mark.parametrize("fmt", list(EMBEDDING_UPSTREAMS))
async def test_embeddings_validate(upstream, gateway, http, fmt: str) -> None:  # type: ignore[no-untyped-def]
    fake, llama2_format, path, options = EMBEDDING_UPSTREAMS[fmt]
    up = await upstream(fake)
    t = target(up, path, fmt=llama2_format, route_type="llm/v1/embeddings", options=options)
    gw = await gateway(route(t, path="/v1/embeddings"))
    for given in ("one text", ["first text", "second text"]):
        body = {"model": "llama2", "input": given, "encoding_format": "float"}
        answer = await post_json(http, url(gw, "/v1/embeddings"), body)
        validate("CreateEmbeddingResponse", answer, f"{fmt} embeddings {type(given).__name__}")


async def test_models_validate(upstream, http) -> None:  # type: ignore[no-untyped-def]
    from gateway.config import parse
    from gateway.server import GatewayServer

    up = await upstream("ollama", models=("llama2", "mistral"))
    routes = [
        route(target(up, "/api/chat", name=name), path=f"/{name}/v1/chat/completions", name=name)
        for name in ("llama2", "mistral")
    ]
    raw = {"server": {"port": 0, "status_port": 0}, "routes": routes, "frontends": {"openai": True}}
    gw = GatewayServer(parse(raw, {}))
    await gw.start()
    try:
        for path in ("/v1/models", "/llama2/v1/models"):
            async with http.get(url(gw, path)) as r:
                assert r.status == 200, await r.text()
                answer = await r.json()
            assert answer["data"], answer
            validate("ListModelsResponse", answer, f"GET {path}")
    finally:
        await gw.stop()
