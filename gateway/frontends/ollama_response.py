"""OpenAI-shaped answers (what every adapter makes) → Ollama's native shapes.

Pure. Non-stream answers are re-built once; streams are re-encoded event by event
from OpenAI SSE to Ollama NDJSON by a wrapper around the target's own decoder, so
every upstream format works behind the Ollama front door. Durations (ns) are measured
at the gateway: `total_duration` is the whole request, `prompt_eval_duration` the
wait for the first token, `eval_duration` the rest; `load_duration` is not known (0).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..adapters.base import StreamDecoder
from ..adapters.common import DONE, error_message
from ..jsonutil import JSONDecodeError, dumps, loads

NDJSON = "application/x-ndjson"
_NS = 1_000_000_000


def created_at(now: float | None = None) -> str:
    """Ollama's timestamp: RFC 3339, microseconds, `Z`."""
    moment = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def error_line(message: str) -> bytes:
    return dumps({"error": message}) + b"\n"


@dataclass(slots=True)
class Timing:
    """Gateway clock readings (seconds) for the duration fields."""

    started: float
    first_token: float | None
    ended: float

    def fields(self, prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
        total = max(0, int((self.ended - self.started) * _NS))
        first = self.first_token if self.first_token is not None else self.ended
        prompt = max(0, int((first - self.started) * _NS))
        return {
            "total_duration": total,
            "load_duration": 0,
            "prompt_eval_count": prompt_tokens,
            "prompt_eval_duration": prompt,
            "eval_count": completion_tokens,
            "eval_duration": max(0, total - prompt),
        }


def done_reason(finish_reason: Any) -> str:
    # Ollama says "stop" after tool calls too.
    return "length" if finish_reason == "length" else "stop"


def ollama_tool_calls(calls: Any) -> list[dict[str, Any]]:
    """OpenAI tool calls (JSON-string arguments) → Ollama's (object arguments)."""
    out = []
    for i, tc in enumerate(calls if isinstance(calls, list) else ()):
        fn = tc.get("function") if isinstance(tc, dict) else None
        if not isinstance(fn, dict):
            continue
        args: Any = fn.get("arguments")
        if isinstance(args, str):
            # not JSON: handed on as the text it is
            with contextlib.suppress(JSONDecodeError):
                args = loads(args) if args else {}
        entry: dict[str, Any] = {"function": {"name": fn.get("name"), "arguments": args}}
        if isinstance(tc.get("id"), str):
            entry["id"] = tc["id"]
        entry["function"]["index"] = tc.get("index", i)
        out.append(entry)
    return out


def _usage(obj: dict[str, Any]) -> tuple[int, int]:
    usage = obj.get("usage")
    if not isinstance(usage, dict):
        return 0, 0
    p, c = usage.get("prompt_tokens"), usage.get("completion_tokens")
    return (p if isinstance(p, int) else 0, c if isinstance(c, int) else 0)


def chat_answer(obj: dict[str, Any], model: str, timing: Timing) -> dict[str, Any]:
    choice = (obj.get("choices") or [{}])[0]
    message = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(message, dict):
        message = {}
    out_msg: dict[str, Any] = {"role": "assistant", "content": message.get("content") or ""}
    thinking = message.get("reasoning_content")
    if isinstance(thinking, str) and thinking:
        out_msg["thinking"] = thinking
    if message.get("tool_calls"):
        out_msg["tool_calls"] = ollama_tool_calls(message["tool_calls"])
    return {
        "model": model,
        "created_at": created_at(),
        "message": out_msg,
        "done": True,
        "done_reason": done_reason(choice.get("finish_reason")),
        **timing.fields(*_usage(obj)),
    }


def generate_answer(obj: dict[str, Any], model: str, timing: Timing) -> dict[str, Any]:
    choice = (obj.get("choices") or [{}])[0]
    if not isinstance(choice, dict):
        choice = {}
    text = choice.get("text")
    thinking = None
    if not isinstance(text, str):  # a generate request answered by a chat route
        message = choice.get("message")
        message = message if isinstance(message, dict) else {}
        text = message.get("content")
        thinking = message.get("reasoning_content")
    out: dict[str, Any] = {"model": model, "created_at": created_at(), "response": text or ""}
    if isinstance(thinking, str) and thinking:
        out["thinking"] = thinking
    return {
        **out,
        "done": True,
        "done_reason": done_reason(choice.get("finish_reason")),
        **timing.fields(*_usage(obj)),
    }


def embed_answer(obj: dict[str, Any], model: str, timing: Timing, legacy: bool) -> dict[str, Any]:
    data = obj.get("data")
    items = [d for d in data if isinstance(d, dict)] if isinstance(data, list) else []
    vectors = [d.get("embedding") for d in sorted(items, key=lambda d: d.get("index", 0))]
    if legacy:
        return {"embedding": vectors[0] if vectors else []}
    fields = timing.fields(*_usage(obj))
    return {
        "model": model,
        "embeddings": vectors,
        "total_duration": fields["total_duration"],
        "load_duration": 0,
        "prompt_eval_count": fields["prompt_eval_count"],
    }


def warm_up_answer(kind: str, model: str) -> dict[str, Any]:
    """Ollama's answer to a request with nothing to generate: the model is "loaded"."""
    if kind == "embed":
        return {"model": model, "embeddings": []}
    if kind == "embeddings":
        return {"embedding": []}
    out: dict[str, Any] = {"model": model, "created_at": created_at()}
    if kind == "chat":
        out["message"] = {"role": "assistant", "content": ""}
    else:
        out["response"] = ""
    out.update(done=True, done_reason="load")
    return out


class NDJSONStream(StreamDecoder):
    """Wraps a target's decoder: its OpenAI chunks out as Ollama NDJSON lines.

    Text deltas become `{"model","created_at","message":{…}|"response","done":false}`
    lines; tool-call deltas (OpenAI servers send arguments in pieces) are gathered and
    sent whole with the finish, as Ollama does; `[DONE]` becomes the final
    `"done": true` line with the counts and durations; an error event becomes
    `{"error": "…"}`.
    """

    content_type = NDJSON

    def __init__(
        self,
        inner: StreamDecoder,
        chat: bool,
        model: str,
        started: float,
        clock: Callable[[], float],
    ) -> None:
        super().__init__()
        self.inner = inner
        self._chat = chat
        self._model = model
        self._started = started
        self._clock = clock
        self._first: float | None = None
        self._reason: Any = None
        self._tools: dict[int, dict[str, Any]] = {}
        self._key = b'"message"' if chat else b'"response"'

    def error_event(self, message: str) -> bytes:
        return error_line(message)

    def feed(self, data: bytes) -> list[bytes]:
        return self._convert(self.inner.feed(data))

    def finish(self) -> list[bytes]:
        return self._convert(self.inner.finish())

    def _convert(self, events: list[bytes]) -> list[bytes]:
        inner = self.inner
        out: list[bytes] = []
        for event in events:
            if event == DONE:
                out.append(self._final())
                continue
            payload = event[6:].rstrip(b"\n").replace(b"\ndata: ", b"\n")
            try:
                obj = loads(payload)
            except JSONDecodeError:
                continue  # an OpenAI server's non-JSON event carries nothing for Ollama
            if not isinstance(obj, dict):
                continue
            if "error" in obj and not obj.get("choices"):
                out.append(error_line(error_message(obj["error"])))
                continue
            self._choices(obj, out)
        self.usage, self.error, self.done = inner.usage, inner.error, inner.done
        self.model, self.completion_text_len = inner.model, inner.completion_text_len
        return out

    def _choices(self, obj: dict[str, Any], out: list[bytes]) -> None:
        for choice in obj.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            if self._chat:
                delta = choice.get("delta")
                if isinstance(delta, dict):
                    thinking = delta.get("reasoning_content")
                    if isinstance(thinking, str) and thinking:
                        message = {"role": "assistant", "content": "", "thinking": thinking}
                        out.append(self._line(message))
                    text = delta.get("content")
                    if isinstance(text, str) and text:
                        out.append(self._line({"role": "assistant", "content": text}))
                    for tc in delta.get("tool_calls") or ():
                        self._gather(tc)
            else:
                text = choice.get("text")
                if text is None:  # a generate request answered by a chat route
                    delta = choice.get("delta")
                    delta = delta if isinstance(delta, dict) else {}
                    thinking = delta.get("reasoning_content")
                    if isinstance(thinking, str) and thinking:
                        out.append(self._line("", thinking))
                    text = delta.get("content")
                if isinstance(text, str) and text:
                    out.append(self._line(text))
            if choice.get("finish_reason") is not None:
                self._reason = choice["finish_reason"]

    def _gather(self, tc: Any) -> None:
        if not isinstance(tc, dict):
            return
        index = tc.get("index", len(self._tools))
        have = self._tools.setdefault(index, {"function": {"name": "", "arguments": ""}})
        if isinstance(tc.get("id"), str):
            have["id"] = tc["id"]
        fn = tc.get("function")
        if isinstance(fn, dict):
            if isinstance(fn.get("name"), str):
                have["function"]["name"] += fn["name"]
            args = fn.get("arguments")
            if isinstance(args, str):
                have["function"]["arguments"] += args
            elif args is not None:
                have["function"]["arguments"] = args

    def _line(self, value: Any, thinking: str | None = None) -> bytes:
        """One line of the stream; `thinking` is generate's (chat's is in the message)."""
        if self._first is None:
            self._first = self._clock()
        head = b'{"model":' + dumps(self._model) + b',"created_at":"' + created_at().encode()
        extra = b"" if thinking is None else b',"thinking":' + dumps(thinking)
        return head + b'",' + self._key + b":" + dumps(value) + extra + b',"done":false}\n'

    def _final(self) -> bytes:
        timing = Timing(self._started, self._first, self._clock())
        usage = self.inner.usage
        counts = (usage.prompt_tokens, usage.completion_tokens) if usage else (0, 0)
        obj: dict[str, Any] = {"model": self._model, "created_at": created_at()}
        if self._chat:
            message: dict[str, Any] = {"role": "assistant", "content": ""}
            if self._tools:
                calls = [{"index": i, **tc} for i, tc in sorted(self._tools.items())]
                message["tool_calls"] = ollama_tool_calls(calls)
            obj["message"] = message
        else:
            obj["response"] = ""
        obj.update(done=True, done_reason=done_reason(self._reason), **timing.fields(*counts))
        return dumps(obj) + b"\n"
