"""The benchmark's Python upstream: a lean HTTP/1.1 server on raw asyncio.

    python bench/stream_server.py --port PORT

It streams on a fixed schedule, never on "sleep after send": chunk i of a stream is
due at t0 + i × interval (t0 = when the request was read) and carries that due time as
its marker (see payloads.py), so a client can tell how late each chunk arrives and an
overloaded proxy cannot hide behind evenly spaced gaps.

POST /api/chat              Ollama: NDJSON stream unless the body says "stream":false
POST /generate_stream       TGI SSE stream
POST /generate              TGI non-stream
POST /v1/chat/completions   OpenAI: SSE stream when "stream":true
GET  /, /health, /v1/models the gateway's health probes
GET  /_stats                {"active", "max_active", "started", "completed", "frames"}
POST /_stats/reset          zero the counters (max_active = active)

The prompt `n=<chunks> iv=<ms>` sets the stream's length and interval (default 64 at
10 ms). Non-stream answers are the fixed bodies nginx serves (payloads.py): used when
nginx is not installed, and for the gateway's startup probe on stream configs.
Only stdlib; keep-alive; listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import sys

import payloads

_REASONS = {200: b"OK", 404: b"Not Found", 400: b"Bad Request"}


class Stats:
    def __init__(self) -> None:
        self.active = 0
        self.max_active = 0
        self.started = 0
        self.completed = 0
        self.frames = 0

    def doc(self) -> bytes:
        return json.dumps(self.__dict__).encode()

    def reset(self) -> None:
        self.max_active = self.active
        self.started = self.completed = self.frames = 0


STATS = Stats()


class Stream:
    """One scheduled stream on a connection."""

    __slots__ = ("close_after", "final", "handle", "i", "interval", "kind", "n", "proto", "t0")

    def __init__(self, proto: Conn, kind: str, n: int, interval: float, close_after: bool) -> None:
        self.proto = proto
        self.kind = kind
        self.n = n
        self.interval = interval
        self.close_after = close_after
        self.i = 0
        self.handle: asyncio.TimerHandle | None = None
        loop = asyncio.get_running_loop()
        self.t0 = loop.time()  # asyncio's clock is CLOCK_MONOTONIC, shared with clients
        STATS.active += 1
        STATS.started += 1
        STATS.max_active = max(STATS.max_active, STATS.active)
        proto.stream = self
        ctype = payloads.STREAM_KINDS[kind][0]
        head = (
            b"HTTP/1.1 200 OK\r\nContent-Type: "
            + ctype.encode()
            + b"\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n"
            + (b"Connection: close\r\n" if close_after else b"")
            + b"\r\n"
        )
        self._send(head)

    def _send(self, head: bytes = b"") -> None:
        transport = self.proto.transport
        if transport is None or transport.is_closing():
            self.cancel()
            return
        if self.i < self.n:
            due = self.t0 + self.i * self.interval
            frame = payloads.token_frame(self.kind, int(due * 1e6))
            self.i += 1
            STATS.frames += 1
            transport.write(head + b"%x\r\n" % len(frame) + frame + b"\r\n")
            loop = asyncio.get_running_loop()
            self.handle = loop.call_at(self.t0 + self.i * self.interval, self._send)
            return
        final = payloads.STREAM_KINDS[self.kind][2](self.n)
        STATS.frames += 1
        transport.write(head + b"%x\r\n" % len(final) + final + b"\r\n0\r\n\r\n")
        self._end(completed=True)
        if self.close_after:
            transport.close()
        else:
            self.proto.stream_done()

    def cancel(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
        self._end(completed=False)

    def _end(self, completed: bool) -> None:
        if self.proto.stream is self:
            self.proto.stream = None
            STATS.active -= 1
            if completed:
                STATS.completed += 1


class Conn(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.stream: Stream | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.stream is not None:
            self.stream.cancel()
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self._process()

    def stream_done(self) -> None:
        if self.buf:
            self._process()

    def _process(self) -> None:
        while self.stream is None and self.transport is not None:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end]
            lines = head.split(b"\r\n")
            try:
                method, path, _ = lines[0].split(b" ", 2)
            except ValueError:
                self._respond(400, "text/plain", b"bad request line", close=True)
                return
            length = 0
            close = False
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value.strip())
                elif name == b"connection" and value.strip().lower() == b"close":
                    close = True
            if len(self.buf) < end + 4 + length:
                return
            body = self.buf[end + 4 : end + 4 + length]
            self.buf = self.buf[end + 4 + length :]
            self._handle(method, path.split(b"?", 1)[0].decode(), body, close)

    def _handle(self, method: bytes, path: str, body: bytes, close: bool) -> None:
        if method == b"GET":
            if path == "/_stats":
                self._respond(200, "application/json", STATS.doc(), close)
                return
            probe = payloads.PROBES.get(path)
            if probe is None:
                self._respond(404, "text/plain", b"not found", close)
                return
            self._respond(200, probe[0], probe[1], close)
            return
        if path == "/_stats/reset":
            STATS.reset()
            self._respond(200, "application/json", STATS.doc(), close)
            return
        kind = None
        if path == "/api/chat":
            kind = None if b'"stream":false' in body else "ollama"
        elif path == "/generate_stream":
            kind = "tgi"
        elif path == "/v1/chat/completions":
            kind = "openai" if b'"stream":true' in body else None
        if kind is None:
            answer = payloads.NONSTREAM.get(path)
            if answer is None:
                self._respond(404, "text/plain", b"not found", close)
            else:
                self._respond(200, answer[0], answer[1], close)
            return
        n, interval_ms = 64, 10
        m = payloads.STREAM_PARAMS.search(body)
        if m is not None:
            n, interval_ms = int(m.group(1)), int(m.group(2))
        Stream(self, kind, n, interval_ms / 1000, close)  # sets self.stream

    def _respond(self, status: int, ctype: str, body: bytes, close: bool) -> None:
        assert self.transport is not None
        self.transport.write(
            b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s\r\n"
            % (
                status,
                _REASONS.get(status, b"X"),
                ctype.encode(),
                len(body),
                b"Connection: close\r\n" if close else b"",
            )
            + body
        )
        if close:
            self.transport.close()


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Conn, "127.0.0.1", port, backlog=4096, reuse_address=True)
    print(f"upstream listening on 127.0.0.1:{port}", file=sys.stderr, flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args()
    raise_nofile()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port))


if __name__ == "__main__":
    main()
