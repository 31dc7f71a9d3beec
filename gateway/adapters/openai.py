"""`llama2_format: openai` — an OpenAI-compatible upstream.

Nothing is translated: the request is the client's with the gateway's tuning and model
(every field passes, top_k and native sampling names included), the answer is passed
through byte for byte (unless it lacks a field OpenAI's schema requires, which is then
set to null) and streams event by event. Usage for the metrics is read on the way.
"""

from __future__ import annotations

from typing import Any

from ..config import CHAT, ModelOptions
from ..framing import SSESplitter
from ..jsonutil import JSONDecodeError, dumps, loads
from . import fields
from .base import Adapter, Call, Parsed, ResponseError, Usage
from .common import (
    CLOSED_EARLY,
    DONE,
    FramedDecoder,
    error_message,
    estimated_usage,
    usage_from_openai,
)

FMT = "openai"
_SAMPLING_KEYS = ("temperature", "top_p", "top_k")


class OpenAIAdapter(Adapter):
    format = "openai"

    def build(self, call: Call, opts: ModelOptions) -> dict[str, Any]:
        body = fields.effective_body(call)
        out = dict(body)
        for key in _SAMPLING_KEYS:
            value = getattr(opts, key)
            if value is not None:  # the configured value wins
                out[key] = value
        # The limit goes under the client's name (max_completion_tokens wins when both
        # are sent): a server may know only one of them.
        if body.get("max_completion_tokens") is not None:
            out.pop("max_tokens", None)
            limit = "max_completion_tokens"
        else:
            limit = "max_tokens"
        if opts.max_tokens is not None:
            out[limit] = opts.max_tokens
        if call.native_options or call.native_fields:
            _natives(call, out)
        if call.model is not None:
            out["model"] = call.model
        out["stream"] = call.stream
        return out

    def parse(self, call: Call, opts: ModelOptions, body: bytes) -> Parsed:
        try:
            obj = loads(body)
        except JSONDecodeError:
            raise ResponseError(f"failed to decode {call.route_type} response") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("choices"), list):
            raise ResponseError(f"'choices' not in {call.route_type} response")
        usage = usage_from_openai(obj.get("usage"))
        if usage is None:
            usage = estimated_usage(call, _choice_text_len(obj["choices"]))
        model = obj.get("model")
        if _complete(obj["choices"], call.route_type == CHAT):
            return Parsed(body, usage, model if isinstance(model, str) else None)
        return Parsed(dumps(obj), usage, model if isinstance(model, str) else None)

    def decoder(self, call: Call, opts: ModelOptions) -> OpenAIDecoder:
        return OpenAIDecoder(call)


def _natives(call: Call, out: dict[str, Any]) -> None:
    """Ollama-native options as top-level keys (server-side hints left out: they never
    change the answer); top-level Ollama fields as the other formats take them."""
    for key, value in (call.native_options or {}).items():
        if key not in fields.HINTS and key not in fields.OPENAI_NAMED:
            out.setdefault(key, value)
    untemplated = call.route_type != CHAT
    for key, value in fields.native_fields(call, FMT, untemplated).items():
        out.setdefault(key, value)  # suffix: an OpenAI completions field


def _complete(choices: list[Any], chat: bool) -> bool:
    """Whether every choice has the fields OpenAI's schema requires even when null
    (`logprobs`; chat: `message.refusal`); the ones missing are set to null in place.

    llama.cpp's and Ollama's OpenAI layers leave them out, and clients generated from
    the schema in typed languages reject such answers. A complete answer still goes
    to the client byte for byte."""
    complete = True
    for choice in choices:
        if not isinstance(choice, dict):
            continue
        if "logprobs" not in choice:
            choice["logprobs"] = None
            complete = False
        message = choice.get("message") if chat else None
        if isinstance(message, dict) and "refusal" not in message:
            message["refusal"] = None
            complete = False
    return complete


def _choice_text_len(choices: list[Any]) -> int:
    n = 0
    for choice in choices:
        if not isinstance(choice, dict):
            continue
        text = choice.get("text")
        if not isinstance(text, str):
            message = choice.get("message") or choice.get("delta")
            text = message.get("content") if isinstance(message, dict) else None
        if isinstance(text, str):
            n += len(text)
    return n


class OpenAIDecoder(FramedDecoder):
    """Relays each upstream event unchanged (`data: <payload>\\n\\n`), [DONE] included.

    On the way it reads `usage` (any chunk where it is not null), the generated text
    length (for estimates), and whether a `finish_reason` arrived: an upstream that
    closes after its last chunk without [DONE] still ends cleanly; one that closes
    before any finish_reason ends with the error event.
    """

    def __init__(self, call: Call) -> None:
        super().__init__(call, SSESplitter())
        self._finished = False
        self._reported: Usage | None = None

    def _frame(self, payload: bytes, out: list[bytes]) -> None:
        if payload == b"[DONE]":
            out.append(DONE)
            self._end()
            return
        try:
            obj = loads(payload)
        except JSONDecodeError:
            obj = None
        if isinstance(obj, dict):
            if "error" in obj and not obj.get("choices"):
                self._fail(error_message(obj["error"]), out)
                return
            self._read(obj)
        if b"\n" in payload:  # a multi-line data field stays multi-line
            payload = payload.replace(b"\n", b"\ndata: ")
        out.append(b"data: " + payload + b"\n\n")

    def _eof(self, out: list[bytes]) -> None:
        if self._finished:
            out.append(DONE)
            self._end()
        else:
            self._fail(CLOSED_EARLY, out)

    def _read(self, obj: dict[str, Any]) -> None:
        if self.model is None and isinstance(obj.get("model"), str):
            self.model = obj["model"]
        usage = obj.get("usage")
        if usage is not None:
            self._reported = usage_from_openai(usage) or self._reported
        choices = obj.get("choices")
        if not choices or not isinstance(choices, list):
            return
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            if choice.get("finish_reason") is not None:
                self._finished = True
            if self._chat:
                delta = choice.get("delta")
                text = delta.get("content") if isinstance(delta, dict) else None
            else:
                text = choice.get("text")
            if isinstance(text, str):
                self.completion_text_len += len(text)

    def _end(self) -> None:
        self.done = self._closed = True
        self.usage = self._reported or estimated_usage(self.call, self.completion_text_len)
