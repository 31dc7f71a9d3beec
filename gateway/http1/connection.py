"""One upstream connection (an asyncio Protocol) and the response read from it."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, cast

from multidict import CIMultiDict

from .errors import (
    BodyTooLarge,
    Disconnected,
    InvalidResponse,
    ReadTimeout,
    UpstreamError,
    WriteTimeout,
)
from .parser import ResponseParser

if TYPE_CHECKING:
    from .pool import Origin, Pool

HIGH_WATER = 256 * 1024  # buffered body bytes at which we stop reading the socket
LINGER_BYTES = 64 * 1024  # most of an unread body's tail we wait for (then: close)

# Connection states.
_IDLE, _ACTIVE, _CLOSED = range(3)


class Response:
    """One upstream response: `status`, `headers`, then `read()` (the whole body) or
    `readany()` (what has arrived; b"" at the end). `release()` or `close()` it once."""

    __slots__ = ("_conn", "headers", "reason", "status")

    def __init__(
        self, conn: Connection, status: int, reason: str, headers: CIMultiDict[str]
    ) -> None:
        self._conn: Connection | None = conn
        self.status = status
        self.reason = reason
        self.headers = headers

    async def read(self, limit: int | None = None) -> bytes:
        """The whole body. With a `limit` (bytes; None or 0: none) a longer body raises
        BodyTooLarge as soon as it is announced (Content-Length) or has arrived in part:
        the connection is closed and the bytes read so far are dropped."""
        conn = self._conn
        assert conn is not None, "response already released"
        if limit:
            length = conn.parser.body_length
            if (length is not None and length > limit) or conn.buffered > limit:
                conn.too_large()
            conn.limit = limit
        conn.unlimited = True  # the whole body is wanted: never pause the socket
        if conn.paused_reading:
            conn.resume()
        while not conn.parser.done:
            if conn.error is not None:
                raise conn.error
            await conn.wait()
        if conn.error is not None:  # over the limit with the body's last bytes
            raise conn.error
        chunks = conn.take()
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def readany(self) -> bytes:
        conn = self._conn
        assert conn is not None, "response already released"
        while not conn.chunks:
            if conn.parser.done:
                return b""
            if conn.error is not None:
                raise conn.error
            await conn.wait()
        chunks = conn.take()
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def release(self) -> None:
        """Back to the pool if the body was read to its end on a reusable connection;
        closed otherwise (an unread body would corrupt the next exchange)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.finish()

    def close(self) -> None:
        """Drop the connection now: the upstream sees us go and can stop generating."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.abort()


class Connection(asyncio.Protocol):
    """One upstream connection: writes a request, parses its response as it arrives."""

    def __init__(self, pool: Pool, origin: Origin) -> None:
        self.pool = pool
        self.origin = origin
        self.loop = pool.loop
        self.transport: asyncio.Transport  # set by connection_made, before any use
        self.state = _IDLE
        self.reused = False
        self.idle_since = 0.0
        self.read_timeout = 0.0
        self.parser = ResponseParser()
        self.got_bytes = False
        self.error: UpstreamError | None = None
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.unlimited = False
        self.limit = 0  # Response.read's body limit; 0: none
        self.paused_reading = False
        self.paused_writing = False
        self.waiter: asyncio.Future[None] | None = None
        self.drain_waiter: asyncio.Future[None] | None = None
        self.linger: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------------ protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream connection: the loop hands a Transport (uvloop's does not derive from
        # asyncio.Transport, so no isinstance check).
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.linger is not None:
            self._linger_feed(self.linger, data)
            return
        if self.state != _ACTIVE:
            # Bytes nobody asked for: this connection can no longer frame an answer.
            self.parser.keep_alive = False
            if self.state == _IDLE:
                self.abort()
            return
        self.got_bytes = True
        try:
            self.buffered += self.parser.feed(data, self.chunks)
        except InvalidResponse as exc:
            self.error = exc
            self.abort()
        else:
            if self.buffered > HIGH_WATER or self.limit:
                self._buffer_grew()
            drain = self.drain_waiter
            if drain is not None and self.parser.head is not None and not drain.done():
                # Answered (e.g. 413) before taking the whole request: that answer is
                # the result; the rest of the request is never sent, so no reuse.
                self.parser.keep_alive = False
                drain.set_result(None)
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        state, self.state = self.state, _CLOSED
        self.pool.lost(self, state == _IDLE)
        if self.linger is not None:
            self.linger.cancel()
            self.linger = None
        parser = self.parser
        if state == _ACTIVE and self.error is None and not (exc is None and parser.eof()):
            if parser.done:
                pass  # complete; only the connection is gone
            elif self.got_bytes:
                self.error = Disconnected(
                    "upstream closed the connection mid-response", midway=True
                )
            else:
                self.error = Disconnected(
                    "upstream closed the connection before answering",
                    stale=self.reused,
                )
        self._wake()
        drain = self.drain_waiter
        if drain is not None and not drain.done():
            if self.error is None and parser.head is not None:
                drain.set_result(None)  # answered before taking the whole request
            else:
                drain.set_exception(self.error or Disconnected("upstream closed the connection"))

    def _buffer_grew(self) -> None:
        if self.limit and self.buffered > self.limit:
            self.too_large()
        elif self.buffered > HIGH_WATER and not self.unlimited and not self.paused_reading:
            self.paused_reading = True
            self.transport.pause_reading()

    def too_large(self) -> None:
        """The body is over Response.read's limit: drop what arrived and close now (the
        rest would have to be read to reuse the connection)."""
        self.chunks = []
        self.buffered = 0
        if self.error is None:
            self.error = BodyTooLarge("response body too large")
        self.abort()

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost settles the response

    def pause_writing(self) -> None:
        self.paused_writing = True

    def resume_writing(self) -> None:
        self.paused_writing = False
        drain = self.drain_waiter
        if drain is not None and not drain.done():
            drain.set_result(None)

    # ------------------------------------------------------------------ exchange

    def send(self, data: bytes, read_timeout: float) -> None:
        if self.state == _CLOSED:  # lost between connecting (or pooling) and now
            # Nothing was sent: as safe to resend as a stale pooled connection.
            raise Disconnected("upstream closed the connection before answering", self.reused)
        self.state = _ACTIVE
        self.read_timeout = read_timeout
        self.transport.write(data)

    async def drain(self, timeout: float) -> None:
        fut = self.drain_waiter = self.loop.create_future()
        handle = self.loop.call_later(timeout, _expire, fut, WriteTimeout)
        try:
            await fut
        finally:
            handle.cancel()
            self.drain_waiter = None

    async def wait(self) -> None:
        """Until the protocol has news (head, body bytes, end, error) or the read
        timeout passes without any."""
        fut = self.waiter = self.loop.create_future()
        handle = self.loop.call_later(self.read_timeout, _expire, fut, ReadTimeout)
        try:
            await fut
        finally:
            handle.cancel()
            self.waiter = None

    def _wake(self) -> None:
        fut = self.waiter
        if fut is not None and not fut.done():
            fut.set_result(None)

    def take(self) -> list[bytes]:
        chunks, self.chunks, self.buffered = self.chunks, [], 0
        if self.paused_reading:
            self.resume()
        return chunks

    def resume(self) -> None:
        self.paused_reading = False
        if self.state != _CLOSED:
            self.transport.resume_reading()

    def finish(self) -> None:
        parser = self.parser
        if self.state != _ACTIVE or self.error is not None or not parser.keep_alive:
            self.abort()
        elif parser.done:
            self._reuse()  # unread body bytes, if any, are dropped; the framing held
        elif parser.head is not None:
            # Released before the end of the body: typically a stream whose last event
            # ([DONE], Ollama's done line) came before the chunked terminator. Let the
            # tail arrive for a moment and keep the connection if it ends cleanly.
            self.chunks = []
            self.buffered = 0
            if self.paused_reading:
                self.resume()
            self.linger = self.loop.call_later(self.pool.linger, self.abort)
        else:
            self.abort()

    def _linger_feed(self, linger: asyncio.TimerHandle, data: bytes) -> None:
        self.buffered += len(data)
        try:
            self.parser.feed(data, [])
        except InvalidResponse:
            self.abort()
            return
        if self.parser.done and self.parser.keep_alive:
            linger.cancel()
            self.linger = None
            self._reuse()
        elif self.parser.done or self.buffered > LINGER_BYTES:
            self.abort()

    def _reuse(self) -> None:
        self.state = _IDLE
        self.reused = True
        self.got_bytes = False
        self.parser = ResponseParser()
        self.chunks = []
        self.buffered = 0
        self.unlimited = False
        self.limit = 0
        self.pool.put(self)

    def abort(self) -> None:
        """Close now. An exchange still in progress fails as closed by us: never
        mistaken for the upstream ending a body, nor for a stale connection."""
        if self.state == _ACTIVE and self.error is None and not self.parser.done:
            self.error = Disconnected("connection closed by the gateway")
        if self.linger is not None:
            self.linger.cancel()
            self.linger = None
        self.transport.abort()


def _expire(fut: asyncio.Future[None], exc_type: type[UpstreamError]) -> None:
    if not fut.done():
        fut.set_exception(exc_type())
