"""`llama2_format: ollama` — Ollama's native `/api/chat` and `/api/generate`.

Streams are NDJSON: one JSON object per line, no sentinel; the last line has
`"done": true` with the counters; a line `{"error": …}` is an in-band error.
"""

from __future__ import annotations

from typing import Any

from ..config import CHAT, ModelOptions
from ..framing import LineSplitter
from ..jsonutil import JSONDecodeError, dumps, loads
from .base import Adapter, Call, Parsed, ResponseError, TransformError, Usage
from .common import (
    TranslatingDecoder,
    chat_response,
    content_text,
    error_message,
    make_usage,
    sampling_extras,
    text_response,
    tuning,
)

_OPTION_NAMES = {"max_tokens": "num_predict"}  # OpenAI name → Ollama option name


def _options(body: dict[str, Any], opts: ModelOptions) -> dict[str, Any]:
    options = {_OPTION_NAMES.get(k, k): v for k, v in tuning(body, opts).items()}
    options.update(sampling_extras(body))
    return options


def _message(message: Any, index: int) -> Any:
    """A client message as Ollama takes it: content parts joined to a string, and
    assistant tool calls with their `arguments` as an object (OpenAI sends a JSON string).
    The client's dict is never mutated; an unchanged message is reused as is."""
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise TransformError(f"{where}: not an object")
    content = message.get("content")
    tool_calls = message.get("tool_calls")
    if isinstance(content, str) and not tool_calls:
        return message
    out = dict(message)
    if content is None:
        out["content"] = ""  # an assistant turn that only called tools
    elif not isinstance(content, str):
        out["content"] = content_text(content, where)
    if isinstance(tool_calls, list):
        out["tool_calls"] = [_ollama_tool_call(tc) for tc in tool_calls]
    return out


def _ollama_tool_call(tc: Any) -> Any:
    fn = tc.get("function") if isinstance(tc, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("arguments"), str):
        return tc
    try:
        args = loads(fn["arguments"])
    except JSONDecodeError:
        return tc
    return {**tc, "function": {**fn, "arguments": args}}


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
        body = call.body
        out: dict[str, Any] = {"model": call.model if call.model is not None else body.get("model")}
        if call.route_type == CHAT:
            messages = body.get("messages")
            if not isinstance(messages, list):
                raise TransformError("messages: not a list")
            out["messages"] = [_message(m, i) for i, m in enumerate(messages)]
        else:
            out["prompt"] = body.get("prompt")
        out["stream"] = call.stream  # Ollama streams unless told not to
        options = _options(body, opts)
        if options:
            out["options"] = options
        for key in ("tools", "tool_choice"):
            if body.get(key) is not None:
                out[key] = body[key]
        fmt = _format(body.get("response_format"))
        if fmt is not None:
            out["format"] = fmt
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
            tool_calls = message.get("tool_calls")
            if tool_calls:
                message = {**message, "tool_calls": openai_tool_calls(tool_calls, call.id, False)}
            reason = _finish_reason(obj, bool(tool_calls))
            out = chat_response(call, model, message, reason, usage)
        else:
            text = obj.get("response")
            if not isinstance(text, str):
                raise ResponseError("'response' not in ollama generate response")
            out = text_response(call, model, text, _finish_reason(obj, False), usage)
        return Parsed(out, usage, upstream_model)

    def decoder(self, call: Call, opts: ModelOptions) -> OllamaDecoder:
        return OllamaDecoder(call)


def _format(response_format: Any) -> Any:
    """OpenAI `response_format` → Ollama `format`: "json", or the JSON schema itself."""
    if not isinstance(response_format, dict):
        return None
    kind = response_format.get("type")
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if isinstance(spec, dict) and isinstance(spec.get("schema"), dict):
            return spec["schema"]
        return "json"
    return None


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
