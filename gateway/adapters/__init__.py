"""Adapters: one per `llama2_format` and kind of route. Pure request/response translation."""

from __future__ import annotations

from ..config import EMBEDDINGS
from .base import Adapter, Call, Parsed, ResponseError, StreamDecoder, TransformError, Usage
from .embeddings import EMBEDDING_ADAPTERS
from .ollama import OllamaAdapter
from .openai import OpenAIAdapter
from .raw import RawAdapter

# Chat and completions (text generation).
ADAPTERS: dict[str, Adapter] = {
    a.format: a for a in (OllamaAdapter(), RawAdapter(), OpenAIAdapter())
}


def get_adapter(fmt: str, route_type: str | None = None) -> Adapter:
    """The adapter for a `llama2_format` on a route type (None: chat or completions,
    which one adapter serves)."""
    table = EMBEDDING_ADAPTERS if route_type == EMBEDDINGS else ADAPTERS
    try:
        return table[fmt]
    except KeyError:
        raise ValueError(
            f"unknown llama2_format {fmt!r} (expected one of: {', '.join(sorted(table))})"
        ) from None


__all__ = [
    "ADAPTERS",
    "EMBEDDING_ADAPTERS",
    "Adapter",
    "Call",
    "Parsed",
    "ResponseError",
    "StreamDecoder",
    "TransformError",
    "Usage",
    "get_adapter",
]
