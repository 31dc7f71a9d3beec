"""What the adapter golden tests share: the fixed call, model options, feeding a stream
decoder the way the pipeline does, and reading the client events back."""

from __future__ import annotations

from typing import Any

from gateway.adapters.base import Adapter, Call
from gateway.config import CHAT
from gateway.config.schema import ModelOptions, UpstreamURL
from gateway.jsonutil import loads

CREATED = 1700000000


def model_options(fmt: str, port: int, path: str, **kw: Any) -> ModelOptions:
    """Options of a `llama2_format: fmt` target at http://127.0.0.1:port/path."""
    url = UpstreamURL("http", "127.0.0.1", port, path)
    return ModelOptions(llama2_format=fmt, upstream_url=url, **kw)


def call(
    body: dict[str, Any],
    route_type: str = CHAT,
    model: str | None = "llama2",
    stream: bool = False,
    include_usage: bool = False,
) -> Call:
    rid = "chatcmpl-abc123" if route_type == CHAT else "cmpl-abc123"
    return Call(route_type, body, model, stream, include_usage, rid, CREATED)


def events(data: list[bytes]) -> list[Any]:
    """Client events → parsed JSON (or the literal [DONE])."""
    out = []
    for event in data:
        assert event.startswith(b"data: ") and event.endswith(b"\n\n"), event
        payload = event[6:-2]
        out.append("[DONE]" if payload == b"[DONE]" else loads(payload))
    return out


def chunk(
    delta: dict[str, Any] | None, finish: str | None = None, model: str = "llama2"
) -> dict[str, Any]:
    """The chat chunk we expect for one delta (or the final one, with `finish`)."""
    return {
        "id": "chatcmpl-abc123",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def decode(
    adapter: Adapter, c: Call, o: ModelOptions, chunks: list[bytes]
) -> tuple[list[bytes], Any]:
    """A fresh decoder fed every chunk, then finished: the client events and the decoder."""
    dec = adapter.decoder(c, o)
    out: list[bytes] = []
    for piece in chunks:
        out += dec.feed(piece)
    out += dec.finish()
    return out, dec


def split_invariant(adapter: Adapter, c: Call, o: ModelOptions, data: bytes) -> list[bytes]:
    """Fed whole, byte by byte, and split in two at every position: same events."""
    whole, _ = decode(adapter, c, o, [data])
    assert decode(adapter, c, o, [data[i : i + 1] for i in range(len(data))])[0] == whole
    for i in range(1, len(data)):
        assert decode(adapter, c, o, [data[:i], data[i:]])[0] == whole, i
    return whole
