"""Request bodies for the fuzz tests: valid OpenAI and Ollama requests for the paths
that take them, the same with a few fields set to any JSON value, any body on any path,
deep and wide JSON, bytes that are not JSON."""

from __future__ import annotations

import json
from typing import Any

from fuzz_kit import KNOWN_PATHS
from hypothesis import strategies as st

_scalars = (
    st.none()
    | st.booleans()
    | st.integers()  # beyond 64 bits too
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


_text = st.text(max_size=30)
_roles = st.sampled_from(["system", "user", "assistant", "developer"])
_content = _text | st.lists(
    st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=10)}),
    min_size=1,
    max_size=3,
)
_message = st.fixed_dictionaries({"role": _roles, "content": _content})
_tool = st.fixed_dictionaries(
    {
        "type": st.just("function"),
        "function": st.fixed_dictionaries(
            {"name": st.from_regex(r"[a-z_]{1,8}", fullmatch=True)},
            optional={"parameters": st.just({"type": "object", "properties": {}})},
        ),
    }
)
_sampling = {
    "stream": st.booleans(),
    "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
    "max_tokens": st.integers(1, 64),
    "temperature": st.floats(0, 2),
    "top_p": st.floats(0, 1),
    "top_k": st.integers(1, 100),
    "stop": st.text(min_size=1, max_size=5) | st.lists(st.text(min_size=1, max_size=5), max_size=4),
    "seed": st.integers(0, 2**31),
    "frequency_penalty": st.floats(-2, 2),
    "user": st.text(max_size=8),
}
_chat_model = st.sampled_from(["llama2", "llama2:latest", "secure-llama", "limited-llama"])
chat_bodies = st.fixed_dictionaries(
    {"messages": st.lists(_message, min_size=1, max_size=4)},
    optional={
        "model": _chat_model,
        **_sampling,
        "tools": st.lists(_tool, max_size=2),
        "response_format": st.sampled_from(
            [
                {"type": "text"},
                {"type": "json_object"},
                {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
            ]
        ),
    },
)
completion_bodies = st.fixed_dictionaries(
    {"prompt": _text | st.lists(_text, min_size=1, max_size=1)},
    optional={"model": st.just("llama2"), **_sampling},
)
embedding_bodies = st.fixed_dictionaries(
    {"input": _text | st.lists(_text, min_size=1, max_size=4)},
    optional={
        "model": st.just("nomic-embed-text"),
        "encoding_format": st.sampled_from(["float", "base64"]),
    },
)
_ollama_options = st.fixed_dictionaries(
    {}, optional={"temperature": st.floats(0, 2), "num_predict": st.integers(1, 64)}
)
ollama_chat = st.fixed_dictionaries(
    {"model": _chat_model, "messages": st.lists(_message, min_size=1, max_size=3)},
    optional={"stream": st.booleans(), "options": _ollama_options, "format": st.just("json")},
)
ollama_generate = st.fixed_dictionaries(
    {"model": st.just("llama2"), "prompt": _text},
    optional={"stream": st.booleans(), "options": _ollama_options, "system": _text},
)
ollama_embed = st.fixed_dictionaries(
    {"model": st.just("nomic-embed-text"), "input": _text | st.lists(_text, min_size=1, max_size=3)}
)
ollama_embeddings = st.fixed_dictionaries({"model": st.just("nomic-embed-text"), "prompt": _text})
ollama_show = st.fixed_dictionaries({"model": st.sampled_from(["llama2", "nomic-embed-text", "x"])})


@st.composite
def perturbed(draw: st.DrawFn, valid: st.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    """A valid request, then a few of its fields (or new ones) set to any JSON value."""
    body = draw(valid)
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.sampled_from(sorted(body)) | st.sampled_from(sorted(_sampling)) | _text)
        body[key] = draw(json_values)
    return body


# Which requests belong where: each kind of body on the paths that take it.
FAMILIES: list[tuple[list[str], st.SearchStrategy[dict[str, Any]]]] = [
    (
        [
            "/chat",
            "/re/chat/anything",
            "/r/v1/chat/completions",
            "/secure/chat",
            "/limited/chat",
            "/v1/chat/completions",
        ],
        chat_bodies,
    ),
    (["/completions", "/v1/completions"], completion_bodies),
    (["/embeddings", "/v1/embeddings"], embedding_bodies),
    (["/api/chat"], ollama_chat),
    (["/api/generate"], ollama_generate),
    (["/api/embed"], ollama_embed),
    (["/api/embeddings"], ollama_embeddings),
    (["/api/show"], ollama_show),
]


@st.composite
def requests_for_paths(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """A path and a body of its kind, valid or with a few fields gone wrong."""
    paths, valid = draw(st.sampled_from(FAMILIES))
    body = draw(valid | perturbed(valid))
    return draw(st.sampled_from(paths)), body


def dump(value: Any) -> bytes:
    # allow_nan: NaN and Infinity are not JSON, which is part of the point
    return json.dumps(value, allow_nan=True).encode()


@st.composite
def deep(draw: st.DrawFn) -> bytes:
    """Nesting from shallow to far past any parser's comfort, inside a real request."""
    n = draw(st.integers(1, 5000))
    opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
    core = opener * n + b"1" + closer * n
    where = draw(st.sampled_from(["alone", "content", "model", "options"]))
    if where == "alone":
        return core
    if where == "content":
        return b'{"messages":[{"role":"user","content":' + core + b"}]}"
    if where == "model":
        return b'{"model":' + core + b',"messages":[{"role":"user","content":"hi"}]}'
    return b'{"model":"llama2","prompt":"hi","options":' + core + b"}"


@st.composite
def wide(draw: st.DrawFn) -> bytes:
    n = draw(st.integers(1, 30000))
    kind = draw(st.sampled_from(["keys", "list", "messages"]))
    if kind == "keys":
        fields = b",".join(b'"k%d":%d' % (i, i) for i in range(n))
        return b'{"messages":[{"role":"user","content":"hi"}],' + fields + b"}"
    if kind == "list":
        return b'{"input":[' + b",".join(b'"x"' for _ in range(n)) + b"]}"
    msgs = b",".join(b'{"role":"user","content":"a"}' for _ in range(min(n, 3000)))
    return b'{"messages":[' + msgs + b"]}"


bodies = st.one_of(
    chat_bodies.map(dump),
    perturbed(completion_bodies).map(dump),
    perturbed(ollama_chat).map(dump),
    json_values.map(dump),
    deep(),
    wide(),
    st.binary(max_size=300),
    # JSON with bytes that are not UTF-8, or lone surrogates, inside strings
    st.binary(min_size=1, max_size=8).map(
        lambda b: b'{"messages":[{"role":"user","content":"' + b + b'"}]}'
    ),
    st.just(b'{"messages":[{"role":"user","content":"\\ud800"}],"model":"llama2"}'),
)
body_paths = st.sampled_from(
    [p for p in KNOWN_PATHS if p not in ("/api/tags", "/api/ps", "/api/version", "/")]
)
content_types = st.sampled_from(
    [b"application/json", b"text/plain", b"application/x-www-form-urlencoded", b"", b"\xff/\xfe"]
)
