"""What every `llama2_format` adapter provides.

Adapters are pure: dicts/bytes in, dicts/bytes out, no I/O, no aiohttp. The pipeline
owns the order of things; an adapter only knows its dialect.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..config import ModelOptions
from ..errors import error_event


class TransformError(Exception):
    """The client request cannot be expressed in this dialect (→ 400
    `error transforming to llama2://<route_type>/<format>`)."""


class ResponseError(Exception):
    """An upstream 200 this adapter cannot read; str(exc) is the reason (→ 500
    `transformation failed from type llama2://<route_type>: <reason>`)."""


@dataclass(slots=True)
class Call:
    """One client request as the adapters see it (built once by the pipeline)."""

    route_type: str  # config.CHAT | config.COMPLETIONS | config.EMBEDDINGS
    body: dict[str, Any]  # the client's JSON object (OpenAI shape); adapters never mutate it
    model: str | None  # the target's model.name, else the client's `model`
    stream: bool  # the upstream streams and the client gets SSE
    include_usage: bool  # client sent stream_options.include_usage: true
    id: str  # response id: "chatcmpl-…" (chat) / "cmpl-…" (completions)
    created: int  # unix seconds
    # Ollama-native request fields with no OpenAI equivalent, set only by the Ollama
    # front door: `options` entries (e.g. num_ctx, repeat_penalty) and top-level keys
    # (keep_alive, think, system, template, raw, context, suffix). The ollama adapter
    # passes them on; the others map what their server has or refuse by name.
    native_options: dict[str, Any] | None = None
    native_fields: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    estimated: bool = False  # True when counted by us (≈4 chars/token), not reported


@dataclass(frozen=True, slots=True)
class Parsed:
    body: bytes  # OpenAI-shaped JSON for the client
    usage: Usage
    model: str | None = None  # model the upstream says answered


class StreamDecoder(ABC):
    """Turns upstream stream bytes into OpenAI SSE events for the client.

    `feed` gets raw network reads (frames may be split anywhere) and returns complete
    client events, each `data: <json>\\n\\n`, in order. When the upstream's final frame
    arrives, `done` becomes True and the returned events end with the final chunk (with
    `finish_reason`), the usage chunk (if `include_usage`) and `data: [DONE]\\n\\n`.
    An in-band upstream error frame sets `error` and yields one
    `data: {"error":{"message":…}}\\n\\n` event (and no [DONE]); feed after that returns [].
    An upstream frame past the size limit raises `framing.FrameTooLarge` out of `feed`:
    the rest of the stream cannot be read, and how to end it is the caller's to decide.
    """

    # What the client's stream is: OpenAI SSE here; the Ollama front door's wrapper
    # makes NDJSON and overrides both.
    content_type = "text/event-stream"

    def error_event(self, message: str) -> bytes:
        """The event that ends a committed stream with an error the relay saw itself
        (upstream lost, frame too large, our shutdown)."""
        return error_event(message)

    def __init__(self) -> None:
        self.usage: Usage | None = None
        self.error: str | None = None
        self.done = False
        self.model: str | None = None  # upstream-reported model, when seen
        self.completion_text_len = 0  # characters of generated text, for estimates
        # Applied to an upstream's in-band error text before it reaches the client (an
        # upstream may quote the request, keys included); set by the caller.
        self.redact: Callable[[str], str] | None = None

    @abstractmethod
    def feed(self, data: bytes) -> list[bytes]: ...

    @abstractmethod
    def finish(self) -> list[bytes]:
        """Upstream EOF. If the final frame was not seen, returns the error event
        (connection dropped) and sets `error`, unless the dialect can end cleanly."""


class Adapter(ABC):
    format: str  # "ollama" | "raw" | "openai"

    @abstractmethod
    def build(self, call: Call, opts: ModelOptions) -> dict[str, Any]:
        """Upstream JSON body. Raises TransformError."""

    @abstractmethod
    def parse(self, call: Call, opts: ModelOptions, body: bytes) -> Parsed:
        """Upstream 200 body → client body. Raises ResponseError."""

    @abstractmethod
    def decoder(self, call: Call, opts: ModelOptions) -> StreamDecoder:
        """A fresh decoder for one streamed response."""
