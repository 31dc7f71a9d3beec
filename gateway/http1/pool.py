"""Keep-alive connections to upstreams, and the one request/response exchange on them."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from dataclasses import dataclass

from multidict import CIMultiDict

from .errors import (
    ConnectFailed,
    ConnectTimeout,
    Disconnected,
    InvalidResponse,
    ReadTimeout,
    UpstreamError,
    WriteTimeout,
)
from .parser import ResponseParser

HIGH_WATER = 256 * 1024  # buffered body bytes at which we stop reading the socket
DNS_TTL = 60.0
NEXT_ADDRESS_DELAY = 0.25  # Happy Eyeballs (RFC 8305 §5): start the next address after this
LINGER_BYTES = 64 * 1024  # most of an unread body's tail we wait for (then: close)

Address = tuple[int, tuple[str, int]]


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float  # seconds to establish the TCP (and TLS) connection
    read: float  # longest silence while waiting for the head or for body bytes
    write: float  # longest wait for the socket to take the request


@dataclass(frozen=True, slots=True)
class Origin:
    scheme: str  # http | https
    host: str  # as it goes on the wire (IDNA-encoded), without IPv6 brackets
    port: int

    @property
    def tls(self) -> bool:
        return self.scheme == "https"

    def host_field(self) -> bytes:
        """The request's `Host:` line (RFC 9112 §3.2): the port only when not default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        value = host if self.port == (443 if self.tls else 80) else f"{host}:{self.port}"
        return b"Host: " + value.encode("ascii") + b"\r\n"


# Connection states.
_IDLE, _ACTIVE, _CLOSED = range(3)


class Response:
    """One upstream response: `status`, `headers`, then `read()` (the whole body) or
    `readany()` (what has arrived; b"" at the end). `release()` or `close()` it once."""

    __slots__ = ("_conn", "headers", "reason", "status")

    def __init__(self, conn: _Conn, status: int, reason: str, headers: CIMultiDict[str]) -> None:
        self._conn: _Conn | None = conn
        self.status = status
        self.reason = reason
        self.headers = headers

    async def read(self) -> bytes:
        conn = self._conn
        assert conn is not None, "response already released"
        conn.unlimited = True  # the whole body is wanted: never pause the socket
        if conn.paused_reading:
            conn.resume()
        while not conn.parser.done:
            if conn.error is not None:
                raise conn.error
            await conn.wait()
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


class _Conn(asyncio.Protocol):
    """One upstream connection: writes a request, parses its response as it arrives."""

    def __init__(self, pool: Pool, origin: Origin) -> None:
        self.pool = pool
        self.origin = origin
        self.loop = pool.loop
        self.transport: asyncio.Transport | None = None
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
        self.paused_reading = False
        self.paused_writing = False
        self.waiter: asyncio.Future[None] | None = None
        self.drain_waiter: asyncio.Future[None] | None = None
        self.linger: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------------ protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.linger is not None:
            self._linger_feed(data)
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
            if self.buffered > HIGH_WATER and not self.unlimited and not self.paused_reading:
                self.paused_reading = True
                self.transport.pause_reading()  # type: ignore[union-attr]
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
            raise Disconnected("upstream closed the connection before answering")
        self.state = _ACTIVE
        self.read_timeout = read_timeout
        self.transport.write(data)  # type: ignore[union-attr]

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
            self.transport.resume_reading()  # type: ignore[union-attr]

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

    def _linger_feed(self, data: bytes) -> None:
        self.buffered += len(data)
        try:
            self.parser.feed(data, [])
        except InvalidResponse:
            self.abort()
            return
        if self.parser.done and self.parser.keep_alive:
            self.linger.cancel()  # type: ignore[union-attr]
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
        self.pool.put(self)

    def abort(self) -> None:
        """Close now. An exchange still in progress fails as closed by us: never
        mistaken for the upstream ending a body, nor for a stale connection."""
        if self.state == _ACTIVE and self.error is None and not self.parser.done:
            self.error = Disconnected("connection closed by the gateway")
        if self.linger is not None:
            self.linger.cancel()
            self.linger = None
        if self.transport is not None:
            self.transport.abort()


def _expire(fut: asyncio.Future[None], exc_type: type[UpstreamError]) -> None:
    if not fut.done():
        fut.set_exception(exc_type())


class Pool:
    """Keep-alive connections per origin, most recently used first; no size limit
    (concurrency is bounded by clients, not by an arbitrary pool size)."""

    def __init__(
        self,
        keepalive: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
        linger: float = 0.1,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.keepalive = keepalive
        self.linger = linger  # seconds to wait for the tail of a body released unread
        self._ssl = ssl_context
        self._idle: dict[Origin, list[_Conn]] = {}
        self._busy: set[_Conn] = set()
        self._dns: dict[tuple[str, int], tuple[float, list[Address]]] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self.closed = False

    async def request(
        self, origin: Origin, data: bytes, timeouts: Timeouts, fresh: bool = False
    ) -> Response:
        """Send `data` (a whole request) and return once the response head is in.
        `fresh` skips pooled connections (the one resend after a stale one)."""
        if self.closed:
            raise ConnectFailed("the gateway is shutting down")
        conn = None if fresh else self._take(origin)
        if conn is None:
            conn = await self._connect(origin, timeouts.connect)
        self._busy.add(conn)
        try:
            conn.send(data, timeouts.read)
            if conn.paused_writing:
                await conn.drain(timeouts.write)
            while conn.parser.head is None:
                if conn.error is not None:
                    raise conn.error
                await conn.wait()
        except BaseException:  # also cancellation: the answer would arrive unread
            conn.abort()
            raise
        return Response(conn, *conn.parser.head)

    def _take(self, origin: Origin) -> _Conn | None:
        idle = self._idle.get(origin)
        if not idle:
            return None
        oldest = self.loop.time() - self.keepalive
        while idle:
            conn = idle.pop()
            if conn.idle_since > oldest and not conn.transport.is_closing():  # type: ignore[union-attr]
                return conn
            conn.abort()
        return None

    def put(self, conn: _Conn) -> None:
        self._busy.discard(conn)
        if self.closed:
            conn.abort()
            return
        conn.idle_since = self.loop.time()
        self._idle.setdefault(conn.origin, []).append(conn)
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(self.keepalive, self._sweep)

    def lost(self, conn: _Conn, idle: bool) -> None:
        self._busy.discard(conn)
        if idle:
            conns = self._idle.get(conn.origin)
            if conns and conn in conns:
                conns.remove(conn)

    def _sweep(self) -> None:
        self._sweeper = None
        oldest = self.loop.time() - self.keepalive
        for conns in self._idle.values():
            for conn in [c for c in conns if c.idle_since <= oldest]:
                conns.remove(conn)
                conn.abort()
        if any(self._idle.values()):
            self._sweeper = self.loop.call_later(self.keepalive / 2, self._sweep)

    async def _connect(self, origin: Origin, timeout: float) -> _Conn:
        try:
            async with asyncio.timeout(timeout):
                return await self._open_any(origin, await self._resolve(origin))
        except TimeoutError:
            raise ConnectTimeout("connect timeout") from None
        except ssl.SSLError:
            raise ConnectFailed("TLS handshake failed") from None
        except OSError:
            raise ConnectFailed("connection refused or unreachable") from None

    async def _open(self, origin: Origin, family: int, address: tuple[str, int]) -> _Conn:
        _, conn = await self.loop.create_connection(
            lambda: _Conn(self, origin),
            address[0],
            address[1],
            family=family,
            ssl=self._tls() if origin.tls else None,
            server_hostname=origin.host if origin.tls else None,
        )
        return conn

    async def _open_any(self, origin: Origin, addresses: list[Address]) -> _Conn:
        """The first address that connects. The next one starts when the previous
        attempt failed or after NEXT_ADDRESS_DELAY (RFC 8305 §5), so an address that
        silently drops packets (a broken IPv6 route) does not cost the connect timeout."""
        if len(addresses) == 1:
            return await self._open(origin, *addresses[0])
        waiting = list(addresses)
        pending: set[asyncio.Task[_Conn]] = set()
        error: BaseException | None = None
        try:
            while waiting or pending:
                if waiting:
                    family, address = waiting.pop(0)
                    pending.add(asyncio.ensure_future(self._open(origin, family, address)))
                done, pending = await asyncio.wait(
                    pending,
                    timeout=NEXT_ADDRESS_DELAY if waiting else None,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                won = [t.result() for t in done if t.exception() is None]
                for extra in won[1:]:
                    extra.abort()
                if won:
                    return won[0]
                for task in done:
                    error = task.exception()
        finally:
            for task in pending:
                task.cancel()
        assert error is not None
        raise error

    async def _resolve(self, origin: Origin) -> list[Address]:
        host, port = origin.host, origin.port
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            pass
        else:
            return [(socket.AF_INET6 if ip.version == 6 else socket.AF_INET, (host, port))]
        now = self.loop.time()
        cached = self._dns.get((host, port))
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            infos = await self.loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError:
            raise ConnectFailed("name resolution failed") from None
        addresses: list[Address] = [(info[0], info[4][:2]) for info in infos]  # type: ignore[misc]
        self._dns[(host, port)] = (now + DNS_TTL, addresses)
        return addresses

    def _tls(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    async def close(self) -> None:
        self.closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        conns = [c for idle in self._idle.values() for c in idle] + list(self._busy)
        self._idle.clear()
        for conn in conns:
            conn.abort()
        await asyncio.sleep(0)  # let the transports report connection_lost
