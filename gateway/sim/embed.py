"""Embeddings as the fakes compute them: deterministic vectors, token counts, input shapes.

A vector depends only on its input (SHA-256 of the text, or of the token ids), has
`DIM` components, and holds float32 values exactly, so a base64 answer decodes to the
very floats a float answer shows. Vectors are unit length (Ollama `/api/embed`,
llama-server and OpenAI normalise); `normalize=False` gives Ollama's legacy
`/api/embeddings` its raw vector.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import math
import sys
from array import array
from collections.abc import AsyncIterator
from typing import Any

from gateway.sim.base import Core

DIM = 8

Item = str | list[int]


def _key(item: Item, salt: str = "") -> bytes:
    text = item if isinstance(item, str) else "\x00".join(str(t) for t in item)
    return (salt + text).encode()


def _unit(values: list[float]) -> list[float]:
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return array("f", [v / norm for v in values]).tolist()


def vector(item: Item, *, normalize: bool = True, dim: int = DIM, salt: str = "") -> list[float]:
    """The embedding of one input."""
    digest = hashlib.sha256(_key(item, salt)).digest()
    raw = [(digest[i] - 127.5) / 127.5 for i in range(dim)]
    return _unit(raw) if normalize else array("f", raw).tolist()


def token_count(item: Item) -> int:
    """Tokens of one input: words plus BOS for text (as `count_prompt_tokens`, but an
    empty text still has its BOS), the ids themselves for token input."""
    if isinstance(item, str):
        return len(item.split()) + 1
    return len(item)


def token_vectors(item: Item) -> list[list[float]]:
    """One vector per token, as llama-server answers with `--pooling none`."""
    return [vector(item, salt=f"{i}:") for i in range(token_count(item))]


def shorten(vec: list[float], dimensions: int) -> list[float]:
    """OpenAI's and Ollama's `dimensions`: the first components, normalised again."""
    return _unit(vec[:dimensions]) if 0 < dimensions < len(vec) else vec


def to_base64(vec: list[float]) -> str:
    floats = array("f", vec)
    if sys.byteorder == "big":
        floats.byteswap()
    return base64.b64encode(floats.tobytes()).decode("ascii")


def _is_token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_tokens(value: Any) -> bool:
    return isinstance(value, list) and len(value) > 0 and all(_is_token(t) for t in value)


def openai_items(value: Any) -> list[Item] | None:
    """OpenAI's `input`: a string, strings, one token-id list or token-id lists (None
    when it is none of these)."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not value:
        return None
    if _is_tokens(value):
        return [value]
    if all(isinstance(v, str) for v in value) or all(_is_tokens(v) for v in value):
        return list(value)
    return None


def llamacpp_items(value: Any) -> list[Item] | None:
    """llama-server's `content`: a string or token ids (one input), or a list whose
    elements are strings or token-id lists (one input each); None when malformed."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        return None
    if all(_is_token(v) for v in value):
        return [value]
    items: list[Item] = []
    for v in value:
        if not isinstance(v, str) and not _is_tokens(v):
            return None
        items.append(v)
    return items


@contextlib.asynccontextmanager
async def on_slot(core: Core) -> AsyncIterator[None]:
    """Hold one of the server's slots while embedding: llama-server and Ollama schedule
    an embeddings request like a generation. Raises `QueueFull` as generations do."""
    slot = await core.pool.acquire()
    try:
        yield
    finally:
        core.pool.release(slot)
