"""Helpers the adapters share: tuning, message text, OpenAI response and chunk shapes,
token estimates, and the decoder bases: the frame loop every dialect shares, and the
chunk order for the dialects we translate.

Streaming is the hot path: a `ChunkWriter` serialises the parts of a chunk that never
change (id, object, created, model) once per stream, so each relayed token costs one
`dumps` of its text and two byte concatenations.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

from ..config import CHAT, ModelOptions
from ..errors import error_event
from ..framing import FrameTooLarge, Splitter
from ..jsonutil import dumps
from .base import Call, StreamDecoder, TransformError, Usage
from .fields import OPENAI, TOOLS_TARGET

DONE = b"data: [DONE]\n\n"
CLOSED_EARLY = "upstream closed the stream before it finished"
_SAMPLING_KEYS = ("temperature", "top_p", "top_k")


def tuning(body: dict[str, Any], opts: ModelOptions) -> dict[str, Any]:
    """The configured value wins when set, else the request's; only set keys (a client
    `null` counts as unset), in the order max_tokens, temperature, top_p, top_k. The
    client's limit is `max_completion_tokens` when set, else `max_tokens`."""
    out: dict[str, Any] = {}
    limit = opts.max_tokens
    if limit is None:
        limit = body.get("max_completion_tokens")
        if limit is None:
            limit = body.get("max_tokens")
    if limit is not None:
        out["max_tokens"] = limit
    for key in _SAMPLING_KEYS:
        value = getattr(opts, key)
        if value is None:
            value = body.get(key)
        if value is not None:
            out[key] = value
    return out


def stop_list(body: dict[str, Any]) -> Any:
    """The client's `stop` as the servers take it (a string becomes a one-element list),
    or None."""
    stop = body.get("stop")
    return [stop] if isinstance(stop, str) else stop


def penalties(body: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """The set ones of `names` (seed and the penalties), under the same names."""
    return {k: body[k] for k in names if body.get(k) is not None}


def content_text(content: Any, where: str, fmt: str) -> str:
    """A message `content`: a string, or a list of text parts joined with "\\n" (an
    assistant's refusal parts count as text). Anything else cannot be expressed as text
    for a `fmt` target (→ TransformError naming the message and the part)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for j, part in enumerate(content):
            text = part_text(part)
            if text is None:
                raise TransformError(part_error(part, f"{where}.content[{j}]", fmt))
            texts.append(text)
        return "\n".join(texts)
    if content is None:
        raise TransformError(f"{where}: content is null")
    raise TransformError(f"{where}: content must be a string or a list of text parts")


def part_text(part: Any) -> str | None:
    """The text of a text (or refusal) content part, else None."""
    if isinstance(part, dict):
        kind = part.get("type")
        text = part.get("text") if kind == "text" else part.get("refusal")
        if kind in ("text", "refusal") and isinstance(text, str):
            return text
    return None


def part_error(part: Any, where: str, fmt: str) -> str:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind == "image_url":
        return f"{where}: image_url parts are not supported by {fmt} targets; {TOOLS_TARGET}"
    if kind in ("input_audio", "file"):
        return f"{where}: {kind} parts are not supported by {fmt} targets; {OPENAI}"
    if kind in ("text", "refusal"):
        return f"{where}: a {kind} part needs a string {kind}"
    return f"{where}: content part type {kind!r} is not supported by {fmt} targets"


def estimate_tokens(text: str) -> int:
    """About 4 characters per token (rounded up)."""
    return (len(text) + 3) // 4


def estimate_prompt_tokens(call: Call) -> int:
    """Prompt tokens counted by us from the client request (for upstreams that report none)."""
    body = call.body
    if call.route_type != CHAT:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        if isinstance(prompt, list):  # token ids: the count is known
            return len(prompt) if all(type(t) is int for t in prompt) else 0
        return estimate_tokens(prompt) if isinstance(prompt, str) else 0
    chars = 0
    for message in body.get("messages") or ():
        if isinstance(message, dict):
            content = message.get("content")
            if isinstance(content, str):
                chars += len(content)
            elif isinstance(content, list):
                for part in content:
                    if isinstance(part, dict) and isinstance(part.get("text"), str):
                        chars += len(part["text"])
    return (chars + 3) // 4


def estimated_usage(call: Call, completion_chars: int) -> Usage:
    prompt = estimate_prompt_tokens(call)
    completion = (completion_chars + 3) // 4
    return Usage(prompt, completion, prompt + completion, estimated=True)


def make_usage(prompt: Any, completion: Any, total: Any = None, estimated: bool = False) -> Usage:
    """Usage from upstream counters; missing or non-integer counters count as 0 and a
    missing total is the sum (a reported total is kept as given)."""
    p = prompt if isinstance(prompt, int) else 0
    c = completion if isinstance(completion, int) else 0
    t = total if isinstance(total, int) else p + c
    return Usage(p, c, t, estimated)


def usage_from_openai(obj: Any) -> Usage | None:
    """An OpenAI `usage` object → Usage, or None when it is not an object."""
    if not isinstance(obj, dict):
        return None
    return make_usage(
        obj.get("prompt_tokens"), obj.get("completion_tokens"), obj.get("total_tokens")
    )


def usage_dict(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


# ------------------------------------------------------------------ client events


def sse(obj: Any) -> bytes:
    return b"data: " + dumps(obj) + b"\n\n"


# ------------------------------------------------------------------ non-stream bodies


def chat_response(
    call: Call, model: str | None, message: dict[str, Any], finish_reason: str, usage: Usage
) -> bytes:
    """A `chat.completion`; `message` has at least role, content and refusal (OpenAI's
    schema requires them, and `logprobs` on the choice, null or not)."""
    return dumps(
        {
            "id": call.id,
            "object": "chat.completion",
            "created": call.created,
            "model": model,
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}
            ],
            "usage": usage_dict(usage),
        }
    )


def text_response(
    call: Call, model: str | None, text: str, finish_reason: str, usage: Usage
) -> bytes:
    return dumps(
        {
            "id": call.id,
            "object": "text_completion",
            "created": call.created,
            "model": model,
            "choices": [
                {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
            ],
            "usage": usage_dict(usage),
        }
    )


def completion_response(
    call: Call, model: str | None, text: str, finish_reason: str, usage: Usage
) -> bytes:
    """The client body for generated plain text: chat or completions by route type."""
    if call.route_type == CHAT:
        message = {"role": "assistant", "content": text, "refusal": None}
        return chat_response(call, model, message, finish_reason, usage)
    return text_response(call, model, text, finish_reason, usage)


# ------------------------------------------------------------------ stream chunks


class ChunkWriter:
    """OpenAI stream chunks for one response, as complete `data: …\\n\\n` events.

    Chat: `{"id","object":"chat.completion.chunk","created","model","choices":[{"index":0,
    "delta":{…},"finish_reason":…}]}`; completions: `object: "text_completion"` and
    `choices[0].text` with `"logprobs":null` (required by OpenAI's completion shape, which
    its chunks share). The constant head is serialised once.
    """

    __slots__ = ("_chat", "_head", "_text_post", "_text_pre")

    def __init__(self, call: Call, model: str | None) -> None:
        self._chat = call.route_type == CHAT
        head = {
            "id": call.id,
            "object": "chat.completion.chunk" if self._chat else "text_completion",
            "created": call.created,
            "model": model,
        }
        self._head = b"data: " + dumps(head)[:-1] + b',"choices":'
        if self._chat:
            self._text_pre = self._head + b'[{"index":0,"delta":{"content":'
            self._text_post = b'},"finish_reason":null}]}\n\n'
        else:
            self._text_pre = self._head + b'[{"index":0,"text":'
            self._text_post = b',"logprobs":null,"finish_reason":null}]}\n\n'

    def text(self, text: str) -> bytes:
        return self._text_pre + dumps(text) + self._text_post

    def delta(self, delta: dict[str, Any]) -> bytes:
        """A chat chunk with an arbitrary delta (first chunk with role, tool calls)."""
        return self._head + b'[{"index":0,"delta":' + dumps(delta) + b',"finish_reason":null}]}\n\n'

    def final(self, finish_reason: str) -> bytes:
        reason = dumps(finish_reason)
        if self._chat:
            return self._head + b'[{"index":0,"delta":{},"finish_reason":' + reason + b"}]}\n\n"
        return (
            self._head
            + b'[{"index":0,"text":"","logprobs":null,"finish_reason":'
            + reason
            + b"}]}\n\n"
        )

    def usage(self, usage: Usage) -> bytes:
        return self._head + b'[],"usage":' + dumps(usage_dict(usage)) + b"}\n\n"


class FramedDecoder(StreamDecoder):
    """Base of every decoder: the splitter cuts the upstream bytes into complete frames
    (NDJSON lines or SSE payloads), `_frame` turns each into client events, and `_eof`
    says what the end of the upstream means once the last frames are in. A decoder that
    has ended (`_closed`: done or failed) reads nothing more."""

    def __init__(self, call: Call, splitter: Splitter) -> None:
        super().__init__()
        self.call = call
        self._split = splitter
        self._chat = call.route_type == CHAT
        self._closed = False

    @abstractmethod
    def _frame(self, frame: bytes, out: list[bytes]) -> None:
        """One complete upstream frame → zero or more client events appended to out."""

    @abstractmethod
    def _eof(self, out: list[bytes]) -> None:
        """Upstream EOF with the decoder still open: end cleanly or `_fail`."""

    def feed(self, data: bytes) -> list[bytes]:
        if self._closed:
            return []
        try:
            frames = self._split.feed(data)
        except FrameTooLarge:
            # The caller ends the stream on it; nothing after it can be framed, so read no more.
            self._closed = True
            raise
        out: list[bytes] = []
        for frame in frames:
            self._frame(frame, out)
            if self._closed:
                break
        return out

    def finish(self) -> list[bytes]:
        if self._closed:
            return []
        out: list[bytes] = []
        for frame in self._split.flush():
            self._frame(frame, out)
            if self._closed:
                return out
        self._eof(out)
        return out

    def _fail(self, message: str, out: list[bytes]) -> None:
        if self.redact is not None:
            message = self.redact(message)
        out.append(error_event(message))
        self.error = message
        self._closed = True


class TranslatingDecoder(FramedDecoder):
    """Base of the decoders that turn a non-OpenAI stream into OpenAI chunks.

    Subclasses split frames (NDJSON or SSE) and call `_text`, `_delta`, `_final` and
    `_fail` from `_frame`. This class keeps OpenAI's chunk order: the first chat chunk carries
    `"role":"assistant"`; the end is the final chunk (`delta: {}` + finish_reason), the
    usage chunk when the client asked for it, then [DONE]; an error is one error event
    and nothing after it. An upstream that closes before its final frame is an error.
    """

    def __init__(self, call: Call, splitter: Splitter) -> None:
        super().__init__(call, splitter)
        self._writer: ChunkWriter | None = None

    def _eof(self, out: list[bytes]) -> None:
        self._fail(CLOSED_EARLY, out)

    # -------------------------------------------------------------- for subclasses

    def _writer_now(self) -> ChunkWriter:
        """Made at the first client event, when the upstream model (used only when the
        effective name is unknown) may have been seen."""
        self._writer = w = ChunkWriter(self.call, self.call.model or self.model)
        return w

    def _text(self, text: str, out: list[bytes]) -> None:
        w = self._writer
        if w is None:
            w = self._writer_now()
            if self._chat:  # the first chat chunk carries the role, even with no text
                out.append(w.delta({"role": "assistant", "content": text}))
                self.completion_text_len += len(text)
                return
        if text:
            out.append(w.text(text))
            self.completion_text_len += len(text)

    def _delta(self, delta: dict[str, Any], out: list[bytes]) -> None:
        """A chat delta other than plain text (tool calls)."""
        w = self._writer
        if w is None:
            w = self._writer_now()
            delta = {"role": "assistant", **delta}
        out.append(w.delta(delta))

    def _final(self, finish_reason: str, usage: Usage, out: list[bytes]) -> None:
        if self._writer is None:
            self._text("", out)
        w = self._writer
        assert w is not None
        out.append(w.final(finish_reason))
        if self.call.include_usage:
            out.append(w.usage(usage))
        out.append(DONE)
        self.usage = usage
        self.done = self._closed = True

    def _estimated_usage(self) -> Usage:
        return estimated_usage(self.call, self.completion_text_len)


def error_message(err: Any) -> str:
    """The text of an in-band error: `"…"`, `{"message": "…"}` or anything else."""
    if isinstance(err, str):
        return err
    message = err.get("message") if isinstance(err, dict) else None
    if isinstance(message, str):
        return message
    return dumps(err).decode()
