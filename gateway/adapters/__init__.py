"""Adapters: one per `llama2_format`. Pure request/response translation."""

from __future__ import annotations

from .base import Adapter, Call, Parsed, ResponseError, StreamDecoder, TransformError, Usage
from .ollama import OllamaAdapter
from .openai import OpenAIAdapter
from .raw import RawAdapter

ADAPTERS: dict[str, Adapter] = {
    a.format: a for a in (OllamaAdapter(), RawAdapter(), OpenAIAdapter())
}


def get_adapter(fmt: str) -> Adapter:
    try:
        return ADAPTERS[fmt]
    except KeyError:
        raise ValueError(
            f"unknown llama2_format {fmt!r} (expected one of: {', '.join(sorted(ADAPTERS))})"
        ) from None


__all__ = [
    "ADAPTERS",
    "Adapter",
    "Call",
    "Parsed",
    "ResponseError",
    "StreamDecoder",
    "TransformError",
    "Usage",
    "get_adapter",
]
