"""Request bodies for the fuzz tests: OpenAI and Ollama requests whose fields take
valid values or any JSON value at all, deep and wide JSON, bytes that are not JSON."""

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


def maybe(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A field's valid values, or any JSON value at all."""
    return st.one_of(valid, json_values)


_roles = st.sampled_from(["system", "user", "assistant", "tool", "developer", "function", "x"])
_content = st.text(max_size=40) | st.lists(
    st.fixed_dictionaries(
        {"type": st.sampled_from(["text", "image_url"]), "text": st.text(max_size=10)}
    ),
    max_size=3,
)
_message = st.fixed_dictionaries(
    {"role": maybe(_roles), "content": maybe(_content)},
    optional={
        "name": maybe(st.text(max_size=8)),
        "tool_calls": json_values,
        "tool_call_id": json_values,
    },
)
_tool = st.fixed_dictionaries(
    {
        "type": maybe(st.just("function")),
        "function": maybe(
            st.fixed_dictionaries({"name": maybe(st.text(max_size=8)), "parameters": json_values})
        ),
    }
)
_sampling = {
    "model": maybe(st.sampled_from(["llama2", "nomic-embed-text", "llama2:latest", "", "x"])),
    "stream": maybe(st.booleans()),
    "stream_options": maybe(st.fixed_dictionaries({"include_usage": maybe(st.booleans())})),
    "max_tokens": maybe(st.integers(-2, 64)),
    "max_completion_tokens": maybe(st.integers(-2, 64)),
    "temperature": maybe(st.floats(-1, 3)),
    "top_p": maybe(st.floats(-1, 2)),
    "top_k": maybe(st.integers(-2, 100)),
    "n": maybe(st.integers(0, 3)),
    "stop": maybe(st.text(max_size=5) | st.lists(st.text(max_size=5), max_size=5)),
    "seed": maybe(st.integers()),
    "presence_penalty": maybe(st.floats(-3, 3)),
    "frequency_penalty": maybe(st.floats(-3, 3)),
    "logit_bias": json_values,
    "logprobs": json_values,
    "user": json_values,
    "options": json_values,
    "format": maybe(st.just("json")),
    "keep_alive": json_values,
}
chat_bodies = st.fixed_dictionaries(
    {"messages": maybe(st.lists(_message, max_size=4))},
    optional={
        **_sampling,
        "tools": maybe(st.lists(_tool, max_size=2)),
        "tool_choice": json_values,
        "response_format": maybe(
            st.fixed_dictionaries(
                {"type": maybe(st.sampled_from(["text", "json_object", "json_schema"]))},
                optional={"json_schema": json_values},
            )
        ),
    },
)
completion_bodies = st.fixed_dictionaries(
    {"prompt": maybe(st.text(max_size=30) | st.lists(st.integers(0, 50), max_size=5))},
    optional={**_sampling, "suffix": json_values, "echo": json_values, "system": json_values},
)
embedding_bodies = st.fixed_dictionaries(
    {"input": maybe(st.text(max_size=30) | st.lists(st.text(max_size=10), max_size=4))},
    optional={
        "model": _sampling["model"],
        "encoding_format": maybe(st.sampled_from(["float", "base64"])),
        "dimensions": maybe(st.integers(-1, 8)),
        "prompt": json_values,
        "truncate": json_values,
    },
)


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
    completion_bodies.map(dump),
    embedding_bodies.map(dump),
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
