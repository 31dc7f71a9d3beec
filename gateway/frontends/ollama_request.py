"""Ollama-native requests → the OpenAI-shaped body the pipeline and adapters take.

Pure. What has an OpenAI equivalent is mapped to it (num_predict → max_tokens, format →
response_format, images → image parts, tool calls with object arguments → JSON-string
arguments); what has none travels beside the body (`native_options`, `native_fields`)
for the adapters to pass on to an Ollama server, map, or refuse by name.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..adapters.fields import OPENAI_NAMED
from ..config import CHAT, COMPLETIONS, EMBEDDINGS
from ..jsonutil import dumps

# Ollama option → OpenAI request field: one table with the adapters'.
_OPTION_FIELDS = OPENAI_NAMED
# Top-level Ollama keys with no OpenAI field (the adapters decide).
_NATIVE = ("keep_alive", "think", "system", "template", "raw", "context", "images")
_IMAGE_TYPES = (
    (b"\x89PNG", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF8", "image/gif"),
    (b"RIFF", "image/webp"),
)


class BadRequest(Exception):
    """An Ollama request we cannot read (→ 400 `{"error": "<text>"}`)."""


# The JSON types Ollama's own API takes for the fields read here (its Go structs; the
# client gets a 400 for another type there too). Checked once, before any converter
# iterates a field or an adapter passes it on: `"images": 1` is a 400, not a 500.
# null is "not sent". orjson gives an integer too large for 64 bits as a float.
Rule = tuple[Callable[[Any], bool], str]
_BOOL: Rule = (lambda v: v is True or v is False, "a boolean")
_INT: Rule = (lambda v: type(v) is int, "an integer")
_NUMBER: Rule = (lambda v: type(v) is int or type(v) is float, "a number")
_STRING: Rule = (lambda v: type(v) is str, "a string")
_OBJECT: Rule = (lambda v: type(v) is dict, "an object")
_STRINGS = "a string or a list of strings"
_TYPES: dict[str, Rule] = {
    "stream": _BOOL,
    "raw": _BOOL,
    "truncate": _BOOL,
    "logprobs": _BOOL,
    "top_logprobs": _INT,
    "dimensions": _INT,
    "system": _STRING,
    "template": _STRING,
    "suffix": _STRING,
    "options": _OBJECT,
    "think": (lambda v: v is True or v is False or type(v) is str, "a boolean or a string"),
    "keep_alive": (
        lambda v: type(v) in (str, int, float),
        'a duration ("5m") or a number of seconds',
    ),
    "images": (
        lambda v: type(v) is list and all(type(i) is str for i in v),
        "a list of base64 strings",
    ),
    "context": (lambda v: type(v) is list and all(type(i) is int for i in v), "a list of integers"),
    "tools": (lambda v: type(v) is list and all(type(t) is dict for t in v), "a list of objects"),
}
# Ollama's `options` (api.Options); other names pass on unchecked (the adapters pass,
# map or refuse them by name).
_OPTION_TYPES: dict[str, Rule] = {
    **dict.fromkeys(
        ("num_predict", "top_k", "seed", "num_keep", "repeat_last_n", "mirostat", "num_ctx",
         "num_batch", "num_gpu", "main_gpu", "num_thread"),
        _INT,
    ),
    **dict.fromkeys(
        ("temperature", "top_p", "min_p", "typical_p", "repeat_penalty", "presence_penalty",
         "frequency_penalty", "mirostat_tau", "mirostat_eta", "tfs_z"),
        _NUMBER,
    ),
    **dict.fromkeys(
        ("penalize_newline", "use_mmap", "use_mlock", "numa", "low_vram", "vocab_only", "f16_kv"),
        _BOOL,
    ),
    "stop": (
        lambda v: type(v) is str or (type(v) is list and all(type(i) is str for i in v)),
        _STRINGS,
    ),
}  # fmt: skip
# The fields each endpoint reads besides its own (model, messages, prompt, input, format).
_CHAT_FIELDS = ("stream", "options", "tools", "think", "keep_alive", "logprobs", "top_logprobs")
_GENERATE_FIELDS = ("stream", "options", "suffix", *_NATIVE)
_EMBED_FIELDS = ("options", "keep_alive", "truncate", "dimensions")


def check_types(obj: dict[str, Any], fields: tuple[str, ...]) -> None:
    """400 for a field in `fields` (or an option) of a type Ollama does not take."""
    for key in fields:
        value = obj.get(key)
        if value is not None:
            ok, what = _TYPES[key]
            if not ok(value):
                raise BadRequest(f"{key} must be {what}")
    options = obj.get("options")
    if options:
        for key, value in options.items():
            rule = _OPTION_TYPES.get(key)
            if rule is not None and value is not None and not rule[0](value):
                raise BadRequest(f"options.{key} must be {rule[1]}")


@dataclass(slots=True)
class Converted:
    route_type: str
    body: dict[str, Any]  # OpenAI shape
    native_options: dict[str, Any] | None = None
    native_fields: dict[str, Any] | None = None
    warm_up: bool = False  # no prompt at all: Ollama's "load the model" request
    # No `stream` in the request: streaming is Ollama's default, not the client's ask
    # (a route that denies streaming answers such a request whole instead of a 400).
    stream_defaulted: bool = False


def _model(obj: dict[str, Any]) -> str:
    model = obj.get("model")
    if model is None:
        model = obj.get("name")  # older clients
    if not isinstance(model, str) or not model:
        raise BadRequest("model is required")
    return model


def _options(obj: dict[str, Any], body: dict[str, Any]) -> dict[str, Any] | None:
    options = obj.get("options")  # an object, its values of Ollama's types (check_types)
    if options is None:
        return None
    native: dict[str, Any] = {}
    for key, value in options.items():
        if value is None:
            continue
        mapped = _OPTION_FIELDS.get(key)
        if mapped is not None:
            body[mapped] = value
        else:
            native[key] = value
    return native or None


def _format(value: Any) -> dict[str, Any] | None:
    if value is None or value == "":
        return None
    if value == "json":
        return {"type": "json_object"}
    if isinstance(value, dict):
        return {"type": "json_schema", "json_schema": {"name": "format", "schema": value}}
    raise BadRequest('format must be "json" or a JSON schema object')


def _natives(obj: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any] | None:
    out = {k: obj[k] for k in keys if obj.get(k) is not None}
    return out or None


def _common(obj: dict[str, Any], body: dict[str, Any]) -> dict[str, Any] | None:
    """`stream` (Ollama streams unless told not to), `format` and `options`."""
    stream = obj.get("stream")
    body["stream"] = stream is not False
    if body["stream"]:
        body["stream_options"] = {"include_usage": True}  # the final line's counts
    fmt = _format(obj.get("format"))
    if fmt is not None:
        body["response_format"] = fmt
    return _options(obj, body)


def image_url(data: Any, where: str) -> dict[str, Any]:
    """An Ollama image (base64, no header) as an OpenAI image part with a data: URL."""
    if not isinstance(data, str):
        raise BadRequest(f"{where}: images must be base64 strings")
    if data.startswith("data:"):
        url = data
    else:
        try:
            head = base64.b64decode(data[:24] + "=" * (-len(data[:24]) % 4))
        except (binascii.Error, ValueError):
            raise BadRequest(f"{where}: images must be base64 strings") from None
        mime = next((m for magic, m in _IMAGE_TYPES if head.startswith(magic)), "image/png")
        url = f"data:{mime};base64,{data}"
    return {"type": "image_url", "image_url": {"url": url}}


def _tool_calls(calls: Any, where: str, ids: dict[str, list[str]], counter: list[int]) -> list[Any]:
    if not isinstance(calls, list):
        raise BadRequest(f"{where}.tool_calls must be a list")
    out = []
    for tc in calls:
        fn = tc.get("function") if isinstance(tc, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise BadRequest(f"{where}.tool_calls: each needs function.name")
        args = fn.get("arguments")
        text = args if isinstance(args, str) else dumps(args if args is not None else {}).decode()
        call_id = tc.get("id") if isinstance(tc.get("id"), str) else f"call_{counter[0]}"
        counter[0] += 1
        ids.setdefault(fn["name"], []).append(call_id)
        out.append(
            {"id": call_id, "type": "function", "function": {"name": fn["name"], "arguments": text}}
        )
    return out


def _messages(messages: Any) -> list[dict[str, Any]]:
    if not isinstance(messages, list):
        raise BadRequest("messages must be a list")
    out: list[dict[str, Any]] = []
    ids: dict[str, list[str]] = {}  # tool name → ids of calls not yet answered
    counter = [0]
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise BadRequest(f"{where}: needs a role")
        content = m.get("content")
        if content is not None and not isinstance(content, str):
            raise BadRequest(f"{where}.content must be a string")
        msg: dict[str, Any] = {"role": m["role"], "content": content or ""}
        images = m.get("images")
        if images is not None and type(images) is not list:
            raise BadRequest(f"{where}.images must be a list of base64 strings")
        if images:
            parts: list[dict[str, Any]] = [{"type": "text", "text": content or ""}]
            parts.extend(image_url(img, where) for img in images)
            msg["content"] = parts
        if m.get("tool_calls"):
            msg["tool_calls"] = _tool_calls(m["tool_calls"], where, ids, counter)
            if not content:
                msg["content"] = None
        if m["role"] == "tool":
            name = m.get("tool_name") or m.get("name")
            pending = ids.get(name) if isinstance(name, str) else None
            if pending:
                msg["tool_call_id"] = pending.pop(0)
            else:
                msg["tool_call_id"] = f"call_{counter[0]}"
                counter[0] += 1
            if isinstance(name, str):
                msg["name"] = name
        if isinstance(m.get("thinking"), str) and m["role"] == "assistant":
            msg["reasoning_content"] = m["thinking"]
        out.append(msg)
    return out


def chat(obj: dict[str, Any]) -> Converted:
    body: dict[str, Any] = {"model": _model(obj)}
    check_types(obj, _CHAT_FIELDS)
    messages = obj.get("messages")
    warm_up = messages is None or messages == []
    if not warm_up:
        body["messages"] = _messages(messages)
    options = _common(obj, body)
    tools = obj.get("tools")
    if tools:  # a list of objects (check_types)
        body["tools"] = [{"type": "function", **t} if "type" not in t else t for t in tools]
    for key in ("logprobs", "top_logprobs"):
        if obj.get(key) is not None:
            body[key] = obj[key]
    natives = _natives(obj, ("keep_alive", "think"))
    return Converted(CHAT, body, options, natives, warm_up, obj.get("stream") is None)


def generate(obj: dict[str, Any]) -> Converted:
    body: dict[str, Any] = {"model": _model(obj)}
    check_types(obj, _GENERATE_FIELDS)
    prompt = obj.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise BadRequest("prompt must be a string")
    warm_up = not prompt and not obj.get("images")
    body["prompt"] = prompt or ""
    if obj.get("suffix"):
        body["suffix"] = obj["suffix"]
    options = _common(obj, body)
    natives = _natives(obj, _NATIVE)
    return Converted(COMPLETIONS, body, options, natives, warm_up, obj.get("stream") is None)


def generate_as_chat(conv: Converted) -> Converted:
    """A generate request for a model only a chat route serves: the prompt (and the
    `system` field) as a conversation. Template-level fields cannot follow."""
    body = dict(conv.body)
    prompt = body.pop("prompt")
    body.pop("suffix", None)
    natives = dict(conv.native_fields or {})
    messages: list[dict[str, Any]] = []
    system = natives.pop("system", None)
    if isinstance(system, str) and system:
        messages.append({"role": "system", "content": system})
    user: dict[str, Any] = {"role": "user", "content": prompt}
    images = natives.pop("images", None)
    if images:
        user["content"] = [
            {"type": "text", "text": prompt},
            *(image_url(img, "images") for img in images),
        ]
    messages.append(user)
    body["messages"] = messages
    return Converted(
        CHAT, body, conv.native_options, natives or None, conv.warm_up, conv.stream_defaulted
    )


def embed(obj: dict[str, Any], legacy: bool) -> Converted:
    """`/api/embed` ({input}) or the older `/api/embeddings` ({prompt}, one vector)."""
    body: dict[str, Any] = {"model": _model(obj), "encoding_format": "float"}
    check_types(obj, _EMBED_FIELDS)
    value = obj.get("prompt") if legacy else obj.get("input")
    if legacy and not isinstance(value, str):
        raise BadRequest("prompt must be a string")
    if not legacy and not (
        isinstance(value, str)
        or (isinstance(value, list) and all(isinstance(v, str) for v in value))
    ):
        raise BadRequest("input must be a string or a list of strings")
    body["input"] = value
    # Ollama answers an empty input with no vectors (it only loads the model); an
    # upstream asked to embed "" would fail or answer nothing.
    warm_up = value in ("", [])
    if obj.get("dimensions") is not None:
        body["dimensions"] = obj["dimensions"]
    # Ollama's own knobs (options such as num_ctx, keep_alive, truncate) travel beside
    # the body: an Ollama server gets them, the embeddings adapters decide for others.
    options = obj.get("options")
    native = {k: v for k, v in (options or {}).items() if v is not None}
    natives = _natives(obj, ("keep_alive", "truncate"))
    return Converted(EMBEDDINGS, body, native or None, natives, warm_up)
