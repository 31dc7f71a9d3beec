"""`llama2_format: ollama` — Ollama's native `/api/chat` and `/api/generate`.

Streams are NDJSON: one JSON object per line, no sentinel; the last line has
`"done": true` with the counters; a line `{"error": …}` is an in-band error.
"""

from __future__ import annotations

from typing import Any

from ..config import CHAT, ModelOptions
from ..framing import LineSplitter
from ..jsonutil import JSONDecodeError, dumps, loads
from . import fields
from .base import Adapter, Call, Parsed, ResponseError, TransformError, Usage
from .common import (
    TranslatingDecoder,
    chat_response,
    content_text,
    error_message,
    make_usage,
    part_error,
    part_text,
    penalties,
    stop_list,
    text_response,
    tuning,
)

FMT = "ollama"
_OPTION_NAMES = {"max_tokens": "num_predict"}  # OpenAI name → Ollama option name
_PENALTIES = ("seed", "frequency_penalty", "presence_penalty")
_DATA_URL = "data:<mime>;base64,…"


def _options(body: dict[str, Any], opts: ModelOptions) -> dict[str, Any]:
    options = {_OPTION_NAMES.get(k, k): v for k, v in tuning(body, opts).items()}
    stop = stop_list(body)
    if stop is not None:
        options["stop"] = stop
    return options


def _messages(messages: Any) -> list[Any]:
    if not isinstance(messages, list):
        raise TransformError("messages: not a list")
    out = []
    tool_names: dict[str, str] = {}  # tool_call_id → function name, for tool results
    for i, m in enumerate(messages):
        # The common message is reused as is (a tuple test: a role may be unhashable).
        if (
            isinstance(m, dict)
            and type(m.get("content")) is str
            and m.get("role") in ("user", "system", "assistant")
            and "tool_calls" not in m
            and "reasoning_content" not in m
        ):
            out.append(m)
        else:
            out.append(_message(m, i, tool_names))
    return out


def _message(message: Any, index: int, tool_names: dict[str, str]) -> dict[str, Any]:
    """A client message as Ollama takes it: `developer` as `system`, content parts
    joined to a string with images apart, assistant tool calls with their `arguments`
    as an object (OpenAI sends a JSON string) and earlier reasoning as `thinking`, a
    tool result with the `tool_name` of the call it answers. The client's dict is never
    mutated."""
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise TransformError(f"{where}: not an object")
    role = message.get("role")
    out = dict(message)
    if role == "developer":
        out["role"] = "system"
    elif role == "function":
        raise TransformError(
            f"{where}: role 'function' (legacy function calling) is not supported by ollama "
            "targets; send tools and tool messages instead"
        )
    elif role not in ("system", "user", "assistant", "tool"):
        raise TransformError(f"{where}: role {_show(role)} is not supported by ollama targets")
    content = message.get("content")
    tool_calls = message.get("tool_calls")
    if content is None and role == "assistant" and tool_calls:
        out["content"] = ""  # an assistant turn that only called tools
    elif content is None:
        raise TransformError(f"{where}: content is {'null' if 'content' in message else 'missing'}")
    elif not isinstance(content, str):
        out["content"], images = _content(content, where)
        if images:
            out["images"] = images
    if tool_calls:
        if not isinstance(tool_calls, list):
            raise TransformError(f"{where}: tool_calls must be a list")
        out["tool_calls"] = [_ollama_tool_call(tc, tool_names) for tc in tool_calls]
    else:
        out.pop("tool_calls", None)
    thinking = out.pop("reasoning_content", None)
    if isinstance(thinking, str) and thinking:
        out["thinking"] = thinking
    if role == "tool":
        call_id = message.get("tool_call_id")
        name = tool_names.get(call_id) if isinstance(call_id, str) else None
        if name is None:
            name = message.get("name")  # the Ollama front door's tool_name
        if isinstance(name, str):
            out["tool_name"] = name
    return out


def _content(content: Any, where: str) -> tuple[str, list[str]]:
    """Content parts → (the text parts joined with "\\n", the images as base64)."""
    if not isinstance(content, list):
        return content_text(content, where, FMT), []
    texts: list[str] = []
    images: list[str] = []
    for j, part in enumerate(content):
        text = part_text(part)
        if text is not None:
            texts.append(text)
        elif isinstance(part, dict) and part.get("type") == "image_url":
            images.append(_image(part.get("image_url"), f"{where}.content[{j}]"))
        else:
            raise TransformError(part_error(part, f"{where}.content[{j}]", FMT))
    return "\n".join(texts), images


def _image(spec: Any, where: str) -> str:
    """An `image_url` part → the base64 data Ollama takes. Only data: URLs: the gateway
    does not fetch images (a fetch is slow, can fail, and would reach any URL for the
    client)."""
    url = spec.get("url") if isinstance(spec, dict) else spec
    if not isinstance(url, str):
        raise TransformError(f"{where}: image_url.url must be a string")
    if not url.startswith("data:"):
        raise TransformError(
            f"{where}: the gateway does not fetch images; send image_url as a data: URL "
            f"({_DATA_URL})"
        )
    head, comma, data = url.partition(",")
    if not comma or not head.endswith(";base64") or not data:
        raise TransformError(f"{where}: image_url must be a base64 data: URL ({_DATA_URL})")
    return data


def _ollama_tool_call(tc: Any, tool_names: dict[str, str]) -> Any:
    fn = tc.get("function") if isinstance(tc, dict) else None
    if not isinstance(fn, dict):
        return tc
    if isinstance(tc.get("id"), str) and isinstance(fn.get("name"), str):
        tool_names[tc["id"]] = fn["name"]
    if not isinstance(fn.get("arguments"), str):
        return tc
    try:
        args = loads(fn["arguments"])
    except JSONDecodeError:
        return tc
    return {**tc, "function": {**fn, "arguments": args}}


def _show(value: Any) -> str:
    return dumps(value).decode() if value is None or not isinstance(value, str) else repr(value)


def _special(call: Call, body: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """The fields beyond the plain ones: checks, more options, and the top-level keys
    that follow `options` in the request."""
    fields.refuse(body, fields.OLLAMA)
    options.update(penalties(body, _PENALTIES))
    extras: dict[str, Any] = {}
    tools = body.get("tools")
    if tools:
        extras["tools"] = tools
    choice = body.get("tool_choice")
    if choice not in (None, "auto") and (choice != "none" or tools):
        raise TransformError(
            f"tool_choice {_show(choice)} is not supported by ollama targets (Ollama chooses "
            'itself: "auto"); use an openai-format target'
        )
    if tools and body.get("parallel_tool_calls") is False:
        raise TransformError(
            "parallel_tool_calls: false is not supported by ollama targets; "
            "use an openai-format target"
        )
    is_json, schema = fields.json_format(body.get("response_format"), FMT)
    if is_json:
        extras["format"] = schema if schema is not None else "json"
    suffix = body.get("suffix")
    if suffix and call.route_type == CHAT:
        raise TransformError("suffix is not supported on chat routes; use a completions route")
    if suffix:
        extras["suffix"] = suffix
    for key, value in fields.natives(call, fields.OLLAMA, hints=True).items():
        options.setdefault(key, value)
    if body.get("keep_alive") is not None:
        extras["keep_alive"] = body["keep_alive"]
    for key, value in (call.native_fields or {}).items():
        extras.setdefault(key, value)
    return extras


def openai_tool_calls(
    tool_calls: list[Any], call_id: str, stream: bool, start: int = 0
) -> list[Any]:
    """Ollama tool calls → OpenAI's: `id`, `type: "function"`, `arguments` as a JSON
    string (Ollama gives an object); stream deltas also carry `index` (counted from
    `start`, as calls may arrive over several lines). Ids Ollama does not give are
    made from the response id."""
    out = []
    prefix = "call_" + call_id.rpartition("-")[2] + "_"
    for i, tc in enumerate(tool_calls, start):
        fn = tc.get("function") if isinstance(tc, dict) else None
        if not isinstance(fn, dict):
            continue
        args = fn.get("arguments")
        if not isinstance(args, str):
            args = dumps(args if args is not None else {}).decode()
        converted: dict[str, Any] = {"index": i} if stream else {}
        converted["id"] = tc.get("id") or f"{prefix}{i}"
        converted["type"] = "function"
        converted["function"] = {"name": fn.get("name"), "arguments": args}
        out.append(converted)
    return out


def _finish_reason(obj: dict[str, Any], tool_calls: bool) -> str:
    # Ollama says "stop" when it called tools; OpenAI clients act on "tool_calls".
    if tool_calls:
        return "tool_calls"
    return "length" if obj.get("done_reason") == "length" else "stop"


def _usage(obj: dict[str, Any]) -> Usage:
    # Ollama omits counters that are 0.
    return make_usage(obj.get("prompt_eval_count"), obj.get("eval_count"))


class OllamaAdapter(Adapter):
    format = "ollama"

    def build(self, call: Call, opts: ModelOptions) -> dict[str, Any]:
        body = fields.effective_body(call)
        out: dict[str, Any] = {"model": call.model if call.model is not None else body.get("model")}
        if call.route_type == CHAT:
            out["messages"] = _messages(body.get("messages"))
        else:
            out["prompt"] = fields.one_prompt(body.get("prompt"), FMT)
        out["stream"] = call.stream  # Ollama streams unless told not to
        options = _options(body, opts)
        extras = _special(call, body, options) if fields.special(call) else None
        if options:
            out["options"] = options
        if extras:
            out.update(extras)
        return out

    def parse(self, call: Call, opts: ModelOptions, body: bytes) -> Parsed:
        try:
            obj = loads(body)
        except JSONDecodeError:
            raise ResponseError("failed to decode ollama response") from None
        if not isinstance(obj, dict):
            raise ResponseError("failed to decode ollama response")
        if "error" in obj:
            raise ResponseError("ollama error: " + error_message(obj["error"]))
        upstream_model = obj.get("model")
        model = upstream_model or call.model
        usage = _usage(obj)
        if call.route_type == CHAT:
            message = obj.get("message")
            if not isinstance(message, dict):
                raise ResponseError("'message' not in ollama chat response")
            answer = _answer(message, call.id)
            reason = _finish_reason(obj, "tool_calls" in answer)
            out = chat_response(call, model, answer, reason, usage)
        else:
            text = obj.get("response")
            if not isinstance(text, str):
                raise ResponseError("'response' not in ollama generate response")
            out = text_response(call, model, text, _finish_reason(obj, False), usage)
        return Parsed(out, usage, upstream_model)

    def decoder(self, call: Call, opts: ModelOptions) -> OllamaDecoder:
        return OllamaDecoder(call)


def _answer(message: dict[str, Any], call_id: str) -> dict[str, Any]:
    """Ollama's answer message → OpenAI's: role, content, refusal (null), Ollama's
    `thinking` as `reasoning_content`, tool calls; Ollama's other fields stay behind."""
    content = message.get("content")
    out: dict[str, Any] = {
        "role": "assistant",
        "content": content if isinstance(content, str) else None,
        "refusal": None,
    }
    thinking = message.get("thinking")
    if isinstance(thinking, str) and thinking:
        out["reasoning_content"] = thinking
    tool_calls = message.get("tool_calls")
    if isinstance(tool_calls, list) and tool_calls:
        out["tool_calls"] = openai_tool_calls(tool_calls, call_id, False)
    return out


class OllamaDecoder(TranslatingDecoder):
    def __init__(self, call: Call) -> None:
        super().__init__(call, LineSplitter())
        self._key = "message" if call.route_type == CHAT else "response"
        self._tool_calls = 0

    def _frame(self, frame: bytes, out: list[bytes]) -> None:
        try:
            obj = loads(frame)
        except JSONDecodeError:
            self._fail("failed to decode ollama stream line", out)
            return
        if not isinstance(obj, dict):
            self._fail("failed to decode ollama stream line", out)
            return
        if "error" in obj:
            self._fail(error_message(obj["error"]), out)
            return
        if self.model is None:
            self.model = obj.get("model")
        done = obj.get("done") is True
        value = obj.get(self._key)
        if self._chat:
            if isinstance(value, dict):
                thinking = value.get("thinking")
                if isinstance(thinking, str) and thinking:
                    self._delta({"reasoning_content": thinking}, out)
                text = value.get("content")
                tool_calls = value.get("tool_calls")
                # an empty non-final line still opens the stream (the role chunk)
                if isinstance(text, str) and (text or not (done or tool_calls)):
                    self._text(text, out)
                if tool_calls:
                    converted = openai_tool_calls(tool_calls, self.call.id, True, self._tool_calls)
                    self._tool_calls += len(tool_calls)
                    self._delta({"tool_calls": converted}, out)
        elif isinstance(value, str) and value:
            self._text(value, out)
        if done:
            self._final(_finish_reason(obj, self._tool_calls > 0), _usage(obj), out)
