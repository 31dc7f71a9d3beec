"""A misbehaving upstream for fault-injection tests: raw asyncio sockets on 127.0.0.1,
one misbehaviour per mode, each answering one request per connection.

Each mode is a coroutine that gets the request as received (head and body) and the
writer; what it writes is all the gateway sees. Modes that answer in Ollama's shapes
fit `llama2_format: ollama` targets (chat at `/api/chat`).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

CHAT_ANSWER = {
    "model": "llama2",
    "created_at": "2024-01-01T00:00:00Z",
    "message": {"role": "assistant", "content": "four"},
    "done": True,
    "done_reason": "stop",
    "prompt_eval_count": 3,
    "eval_count": 1,
}
# Ollama's stream: NDJSON lines, the last with `done`.
STREAM_LINE = (
    b'{"model":"llama2","created_at":"2024-01-01T00:00:00Z",'
    b'"message":{"role":"assistant","content":"tok "},"done":false}\n'
)
# How long a drip waits between writes: well below any read_timeout the tests set.
DRIP = 0.02


@dataclass
class Request:
    head: bytes  # request line and fields, with the final CRLF CRLF
    body: bytes

    @property
    def raw(self) -> bytes:
        return self.head + self.body


Mode = Callable[[Request, asyncio.StreamWriter], Awaitable[None]]


def response(status: str, fields: list[bytes], body: bytes) -> bytes:
    """A well-framed response (Content-Length added) with the fields given as lines."""
    lines = [b"HTTP/1.1 " + status.encode(), *fields, b"Content-Length: %d" % len(body)]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def _json(status: str, obj: object, *fields: bytes) -> bytes:
    return response(status, [b"Content-Type: application/json", *fields], json.dumps(obj).encode())


# ---------------------------------------------------------------- broken heads


def bad_header_value(name: bytes, value: bytes, status: str = "503 Service Unavailable") -> Mode:
    """A well-framed error answer with one odd header value (control or non-ASCII byte)."""

    async def mode(req: Request, w: asyncio.StreamWriter) -> None:
        fields = [b"Content-Type: application/json", b"Retry-After: 1"]
        fields = [f for f in fields if not f.lower().startswith(name.lower() + b":")]
        w.write(response(status, [*fields, name + b": " + value], b'{"error":"busy"}'))

    return mode


async def header_without_colon(req: Request, w: asyncio.StreamWriter) -> None:
    w.write(response("200 OK", [b"Content-Type: application/json", b"X-Broken"], b"{}"))


async def invalid_status_line(req: Request, w: asyncio.StreamWriter) -> None:
    w.write(b"HTTP/1.1 2OO OK\r\nContent-Length: 2\r\n\r\n{}")


async def endless_headers(req: Request, w: asyncio.StreamWriter) -> None:
    """Header lines and never the empty line that ends them (until the gateway hangs
    up: it must, at its head size limit)."""
    w.write(b"HTTP/1.1 200 OK\r\n")
    line = b"X-More: " + b"m" * 1000 + b"\r\n"
    for _ in range(10_000):  # 10 MB at most: far past any head limit
        w.write(line * 8)
        await w.drain()
        await asyncio.sleep(0.001)


async def huge_header_block(req: Request, w: asyncio.StreamWriter) -> None:
    fields = [b"X-Big-%d: %s" % (i, b"h" * 1000) for i in range(200)]  # ~200 KB
    w.write(_json("200 OK", CHAT_ANSWER, *fields))


# ---------------------------------------------------------------- broken bodies


async def bad_chunk_size(req: Request, w: asyncio.StreamWriter) -> None:
    first = json.dumps(CHAT_ANSWER).encode()[:20]
    w.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"%x\r\n%s\r\n" % (len(first), first)
        + b"zz\r\nmore\r\n0\r\n\r\n"
    )


async def short_body_then_close(req: Request, w: asyncio.StreamWriter) -> None:
    body = json.dumps(CHAT_ANSWER).encode()
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    w.write(head % (len(body) + 100) + body)  # 100 bytes are never sent


async def slow_drip(req: Request, w: asyncio.StreamWriter) -> None:
    """A valid answer, a few bytes at a time: slow, never silent for a read timeout."""
    data = _json("200 OK", CHAT_ANSWER)
    for i in range(0, len(data), 16):
        w.write(data[i : i + 16])
        await w.drain()
        await asyncio.sleep(DRIP)


async def truncated_json(req: Request, w: asyncio.StreamWriter) -> None:
    body = json.dumps(CHAT_ANSWER).encode()
    w.write(response("200 OK", [b"Content-Type: application/json"], body[: len(body) // 2]))


async def gzip_body(req: Request, w: asyncio.StreamWriter) -> None:
    """We ask for identity; this one compresses anyway a body we must transform."""
    body = gzip.compress(json.dumps(CHAT_ANSWER).encode())
    fields = [b"Content-Type: application/json", b"Content-Encoding: gzip"]
    w.write(response("200 OK", fields, body))


async def deep_openai_answer(req: Request, w: asyncio.StreamWriter) -> None:
    """An OpenAI-shaped 200 (for `openai` targets) with a field nested 300 deep: valid
    JSON, deeper than orjson writes when the answer is completed and re-serialised."""
    deep = "[" * 300 + "]" * 300
    body = (
        '{"id":"x","object":"chat.completion","created":1,"model":"llama2","choices":'
        '[{"index":0,"message":{"role":"assistant","content":"four","extra":' + deep + "},"
        '"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,'
        '"total_tokens":4}}'
    )
    w.write(response("200 OK", [b"Content-Type: application/json"], body.encode()))


# ---------------------------------------------------------------- broken streams


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


_STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n"
)


async def stream_stops_mid_event(req: Request, w: asyncio.StreamWriter) -> None:
    """Two lines, then half of a third, then a clean end of the body."""
    w.write(_STREAM_HEAD + _chunk(STREAM_LINE * 2) + _chunk(STREAM_LINE[:30]) + b"0\r\n\r\n")


async def reset_mid_stream(req: Request, w: asyncio.StreamWriter) -> None:
    """Two lines, then a TCP reset."""
    w.write(_STREAM_HEAD + _chunk(STREAM_LINE * 2))
    await w.drain()
    await asyncio.sleep(DRIP)
    sock = w.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    w.transport.abort()


async def stream_error_echo(req: Request, w: asyncio.StreamWriter) -> None:
    """Two lines, then an in-band error line that quotes the request (keys included)."""
    line = json.dumps({"error": "bad request: " + req.raw.decode("utf-8", "replace")})
    w.write(_STREAM_HEAD + _chunk(STREAM_LINE * 2) + _chunk(line.encode() + b"\n") + b"0\r\n\r\n")


def _deep_tool_line() -> bytes:
    """An Ollama stream line whose tool call's arguments nest 300 deep: valid JSON,
    deeper than orjson writes when the gateway re-serialises the arguments."""
    args = '{"a":' * 300 + "1" + "}" * 300
    return (
        b'{"model":"llama2","created_at":"2024-01-01T00:00:00Z","message":{"role":"assistant",'
        b'"content":"","tool_calls":[{"function":{"name":"f","arguments":'
        + args.encode()
        + b'}}]},"done":false}\n'
    )


async def deep_stream_first(req: Request, w: asyncio.StreamWriter) -> None:
    """A stream whose first line nests too deep."""
    w.write(_STREAM_HEAD + _chunk(_deep_tool_line()) + _chunk(STREAM_LINE) + b"0\r\n\r\n")


def deep_stream_later(go: asyncio.Event) -> Mode:
    """Two good lines, then (once `go` is set: the client has them, so the stream is
    committed) one that nests too deep."""

    async def mode(req: Request, w: asyncio.StreamWriter) -> None:
        w.write(_STREAM_HEAD + _chunk(STREAM_LINE * 2))
        await w.drain()
        await go.wait()
        w.write(_chunk(_deep_tool_line()) + b"0\r\n\r\n")

    return mode


# ---------------------------------------------------------------- echoes


def echo(status: str, shape: str) -> Mode:
    """An error page that repeats the request it got (head and body), as many do: `text`
    (a plain page), `ollama` (`{"error": "<request>"}`, JSON-escaped) or `openai`
    (`{"error": {"message": "<request>"}}`, passed to clients byte for byte)."""

    async def mode(req: Request, w: asyncio.StreamWriter) -> None:
        text = req.raw.decode("utf-8", "replace")
        if shape == "text":
            page = b"<html><pre>You sent:\n" + req.raw + b"</pre></html>"
            w.write(response(status, [b"Content-Type: text/html"], page))
        elif shape == "ollama":
            w.write(_json(status, {"error": "bad request: " + text}))
        else:
            w.write(_json(status, {"error": {"message": "bad request: " + text, "type": "x"}}))

    return mode


MODES: dict[str, Mode] = {
    "ctl_content_type_nul": bad_header_value(b"Content-Type", b"text/pl\x00ain"),
    "ctl_content_type_soh": bad_header_value(b"Content-Type", b"application/json\x01"),
    "ctl_retry_after_vt": bad_header_value(b"Retry-After", b"1\x0b"),
    "ctl_retry_after_del": bad_header_value(b"Retry-After", b"1\x7f"),
    # Passes the parser (obs-text), would be re-encoded as UTF-8 on the way out.
    "non_ascii_content_type": bad_header_value(b"Content-Type", b"text/plain\x85"),
    "header_without_colon": header_without_colon,
    "invalid_status_line": invalid_status_line,
    "endless_headers": endless_headers,
    "huge_header_block": huge_header_block,
    "bad_chunk_size": bad_chunk_size,
    "short_body_then_close": short_body_then_close,
    "slow_drip": slow_drip,
    "truncated_json": truncated_json,
    "gzip_body": gzip_body,
    "stream_stops_mid_event": stream_stops_mid_event,
    "reset_mid_stream": reset_mid_stream,
    "echo_401_text": echo("401 Unauthorized", "text"),
    "echo_500_ollama": echo("500 Internal Server Error", "ollama"),
    "echo_500_openai": echo("500 Internal Server Error", "openai"),
}


class FaultyUpstream:
    """Answers every request by `mode`, then closes the connection (unless the mode
    closed or reset it). Keeps every request it got, as received."""

    def __init__(self, mode: Mode) -> None:
        self.mode = mode
        self.requests: list[Request] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def url(self, path: str = "/api/chat") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def start(self) -> FaultyUpstream:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            req = Request(head, await reader.readexactly(length))
            self.requests.append(req)
            await self.mode(req, writer)
            writer.close()  # after what is buffered has been sent (a mode may have reset)
            await writer.wait_closed()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the gateway hung up: what several modes are there to cause
        except asyncio.CancelledError:
            pass  # close(): the task ends here (asyncio would log a re-raised one)
        finally:
            self._tasks.discard(task)
            writer.transport.abort()  # a no-op once closed
