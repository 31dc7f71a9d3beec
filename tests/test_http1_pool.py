"""gateway.http1.Pool over real loopback sockets, against a raw scripted TCP server.

Each test scripts what the server does on each accepted connection (exact bytes, pauses on
asyncio.Event handshakes, closes), and the server records how many connections it
accepted, the raw requests it read and whether the client closed each connection.
Timeouts that are expected to fire wait on a server that never answers, so the outcome
does not depend on how fast the machine is.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from gateway.http1 import (
    BodyTooLarge,
    ConnectFailed,
    ConnectTimeout,
    Disconnected,
    InvalidResponse,
    Origin,
    Pool,
    ReadTimeout,
    Response,
    Timeouts,
    WriteTimeout,
)
from gateway.http1.connection import HIGH_WATER

LIMIT = 5.0  # upper bound of every wait in this file; nothing should come close
REQ = b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n{}"
TIMEOUTS = Timeouts(connect=LIMIT, read=LIMIT, write=LIMIT)


def ok(body: bytes = b"ok", extra: bytes = b"") -> bytes:
    """A keep-alive 200 response with a Content-Length body."""
    return b"HTTP/1.1 200 OK\r\n" + extra + b"Content-Length: %d\r\n\r\n" % len(body) + body


def chunk(data: bytes) -> bytes:
    return b"%x\r\n" % len(data) + data + b"\r\n"


CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


async def within(aw: Awaitable[Any], timeout: float = LIMIT) -> Any:
    return await asyncio.wait_for(aw, timeout)


async def eventually(predicate: Callable[[], bool], timeout: float = LIMIT) -> None:
    """Poll `predicate` until it holds; fail after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"condition not reached within {timeout} s")
        await asyncio.sleep(0.005)


def kernel_buffer_capacity() -> int:
    """The most payload the kernel can hold for one loopback TCP stream: the sender's
    largest send buffer plus the receiver's largest receive buffer (autotuning limits)."""
    try:
        with open("/proc/sys/net/ipv4/tcp_rmem") as f:
            rmem = int(f.read().split()[2])
        with open("/proc/sys/net/ipv4/tcp_wmem") as f:
            wmem = int(f.read().split()[2])
    except (OSError, ValueError, IndexError):
        return 48 * 1024 * 1024
    return rmem + wmem


# ------------------------------------------------------------------ scripted server


class Peer:
    """The server side of one accepted connection, driven by a test's script."""

    def __init__(
        self, server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.server = server
        self.index = len(server.peers)  # 0 for the first accepted connection
        self.reader = reader
        self.writer = writer
        self.requests: list[bytes] = []
        self.got_request = asyncio.Event()
        self.eof = asyncio.Event()  # the client closed (or reset) the connection
        self.closed = False  # the server closed it

    async def read_request(self) -> bytes | None:
        """One whole request (head + Content-Length body), or None at the client's EOF."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            request = head + await self.reader.readexactly(length)
        except (asyncio.IncompleteReadError, ConnectionError):
            self.eof.set()
            return None
        self.requests.append(request)
        self.server.requests.append(request)
        self.got_request.set()
        return request

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def close(self) -> None:
        """Close our side (FIN) after what was written."""
        self.closed = True
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()

    async def wait_eof(self) -> bytes:
        """Read (and return) whatever else comes until the client closes."""
        extra = b""
        try:
            while data := await self.reader.read(65536):
                extra += data
        except ConnectionError:
            pass
        self.eof.set()
        return extra


Script = Callable[[Peer], Awaitable[None]]


class RawServer:
    """asyncio.start_server on 127.0.0.1 running `script(peer)` per connection. After the
    script returns the server keeps reading until the client closes (so `peer.eof` tells
    whether the client dropped the connection), unless the script closed it."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.peers: list[Peer] = []
        self.requests: list[bytes] = []
        self.errors: list[BaseException] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False

    @property
    def accepted(self) -> int:
        return len(self.peers)

    async def start(self) -> RawServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def origin(self, host: str = "127.0.0.1") -> Origin:
        return Origin("http", host, self.port)

    async def peer(self, index: int) -> Peer:
        """The `index`-th accepted connection, once it exists."""
        await within(eventually(lambda: len(self.peers) > index))
        return self.peers[index]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        peer = Peer(self, reader, writer)
        self.peers.append(peer)
        try:
            await self.script(peer)
            if not peer.closed:
                await peer.wait_eof()
        except (ConnectionError, asyncio.IncompleteReadError):
            peer.eof.set()
        except asyncio.CancelledError:
            if not self._closing:
                raise
        except Exception as exc:  # a broken script must fail the test, see close()
            self.errors.append(exc)
        finally:
            writer.transport.abort()

    async def close(self) -> None:
        self._closing = True
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()
        assert not self.errors, self.errors


ServerFactory = Callable[[Script], Awaitable[RawServer]]


@pytest.fixture
async def serve() -> AsyncIterator[ServerFactory]:
    """Start scripted servers; all are closed (and checked for script errors) afterwards."""
    servers: list[RawServer] = []

    async def start(script: Script) -> RawServer:
        server = await RawServer(script).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.close()


@pytest.fixture
async def pool() -> AsyncIterator[Pool]:
    p = Pool()
    yield p
    await p.close()


async def serve_forever(peer: Peer) -> None:
    """Answer every request on the connection with ok(); stop at the client's EOF."""
    while await peer.read_request() is not None:
        await peer.send(ok())


async def never_answer(peer: Peer) -> None:
    """Read the request, then stay silent until the client closes."""
    await peer.read_request()
    await peer.wait_eof()


async def exchange(pool: Pool, origin: Origin, timeouts: Timeouts = TIMEOUTS) -> bytes:
    """One request whose body is read whole and released."""
    resp = await within(pool.request(origin, REQ, timeouts))
    body: bytes = await within(resp.read())
    resp.release()
    return body


# ------------------------------------------------------------------ keep-alive


async def test_keepalive_reuses_one_connection(serve: ServerFactory, pool: Pool) -> None:
    """Two sequential requests, each read and released, travel on one connection; the
    server gets the request bytes unchanged; status, reason, fields and body arrive."""
    server = await serve(serve_forever)
    for _ in range(2):
        resp = await within(pool.request(server.origin(), REQ, TIMEOUTS))
        assert (resp.status, resp.reason) == (200, "OK")
        assert list(resp.headers.items()) == [("Content-Length", "2")]
        assert await within(resp.read()) == b"ok"
        resp.release()
    assert server.accepted == 1
    assert server.requests == [REQ, REQ]
    assert not server.peers[0].eof.is_set()
    assert len(pool._idle[server.origin()]) == 1 and not pool._busy


@pytest.mark.parametrize(
    "response",
    [
        ok(extra=b"Connection: close\r\n"),
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
        # A 204 announcing a body: what follows could be read as the next answer.
        b"HTTP/1.1 204 No Content\r\nContent-Length: 2\r\n\r\n",
    ],
    ids=["connection-close", "http10", "204-with-length"],
)
async def test_not_reusable_response_closes_connection(
    serve: ServerFactory, pool: Pool, response: bytes
) -> None:
    """A response saying the connection cannot be reused: the server keeps it open, yet
    the client closes it after release and the next request opens a new one."""

    async def script(peer: Peer) -> None:
        while await peer.read_request() is not None:
            await peer.send(response)

    server = await serve(script)
    body = b"" if b" 204 " in response else b"ok"
    assert await exchange(pool, server.origin()) == body
    await within(server.peers[0].eof.wait())
    assert await exchange(pool, server.origin()) == body
    assert server.accepted == 2


async def test_until_close_body_then_new_connection(serve: ServerFactory, pool: Pool) -> None:
    """A body without length ends when the server closes; read() returns all of it and the
    next request opens a new connection."""

    async def script(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(b"HTTP/1.1 200 OK\r\n\r\npart one, ")
        await peer.send(b"part two")
        await peer.close()

    server = await serve(script)
    resp = await within(pool.request(server.origin(), REQ, TIMEOUTS))
    assert await within(resp.read()) == b"part one, part two"
    resp.release()
    resp = await within(pool.request(server.origin(), REQ, TIMEOUTS))
    assert await within(resp.read()) == b"part one, part two"
    resp.release()
    assert server.accepted == 2


async def test_whole_body_released_unread_is_reused(serve: ServerFactory, pool: Pool) -> None:
    """release() with the body complete but unread: the framing held, so the connection
    goes back to the pool (the unread bytes are dropped) and the next request uses it."""
    server = await serve(serve_forever)
    resp = await within(pool.request(server.origin(), REQ, TIMEOUTS))
    await within(eventually(lambda: resp._conn is not None and resp._conn.parser.done))
    resp.release()
    assert await within(exchange(pool, server.origin())) == b"ok"
    assert server.accepted == 1


async def test_partial_body_released_waits_for_the_tail() -> None:
    """release() before the body's end (a stream ending at [DONE] before the chunked
    terminator): the tail that arrives within `linger` is read and dropped, and the
    connection is reused; one that never comes closes the connection after `linger`."""
    tail = asyncio.Event()

    async def script(peer: Peer) -> None:
        first = True
        while await peer.read_request() is not None:
            await peer.send(CHUNKED_HEAD + chunk(b"data: [DONE]\n\n"))
            if first:  # the first answer's tail waits for the test; later ones do not
                await tail.wait()
                first = False
            await peer.send(b"0\r\n\r\n")

    server = await RawServer(script).start()
    patient = Pool(linger=LIMIT)  # the tail is sent only after release(): no race
    try:
        resp = await within(patient.request(server.origin(), REQ, TIMEOUTS))
        assert await within(resp.readany()) == b"data: [DONE]\n\n"
        resp.release()
        tail.set()
        await within(eventually(lambda: bool(patient._idle.get(server.origin()))))
        assert await within(exchange(patient, server.origin())) == b"data: [DONE]\n\n"
        assert server.accepted == 1
    finally:
        await patient.close()
    tail.clear()  # the next connection's first tail is held back for good
    hasty = Pool(linger=0.05)
    try:
        resp = await within(hasty.request(server.origin(), REQ, TIMEOUTS))
        assert await within(resp.readany()) == b"data: [DONE]\n\n"
        resp.release()  # the tail never comes (not set): closed after 0.05 s
        assert hasty._busy, "lingering: not closed at once"
        await within(eventually(lambda: not hasty._busy))  # our side closed it
        assert not hasty._idle.get(server.origin())
    finally:
        tail.set()
        await hasty.close()
        await server.close()


async def test_close_drops_connection(serve: ServerFactory, pool: Pool) -> None:
    """Response.close() drops the connection (the server sees EOF), even with the body
    read whole; the next request opens a new one."""
    server = await serve(serve_forever)
    resp = await within(pool.request(server.origin(), REQ, TIMEOUTS))
    assert await within(resp.read()) == b"ok"
    resp.close()
    await within(server.peers[0].eof.wait())
    assert await exchange(pool, server.origin()) == b"ok"
    assert server.accepted == 2


async def test_fresh_skips_the_idle_connection(serve: ServerFactory, pool: Pool) -> None:
    """request(fresh=True) opens a new connection although an idle one is pooled."""
    server = await serve(serve_forever)
    assert await exchange(pool, server.origin()) == b"ok"
    resp = await within(pool.request(server.origin(), REQ, TIMEOUTS, fresh=True))
    assert await within(resp.read()) == b"ok"
    resp.release()
    assert server.accepted == 2
    assert len(pool._idle[server.origin()]) == 2


async def test_idle_connection_closed_by_server_is_not_used(
    serve: ServerFactory, pool: Pool
) -> None:
    """The server closes a keep-alive connection while it is idle: the pool forgets it
    and the next request succeeds on a new connection (no error)."""

    async def script(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(ok())
        if peer.index == 0:
            await peer.close()
        else:
            await serve_forever(peer)

    server = await serve(script)
    assert await exchange(pool, server.origin()) == b"ok"
    await within(eventually(lambda: not pool._idle.get(server.origin())))
    assert await exchange(pool, server.origin()) == b"ok"
    assert server.accepted == 2


async def test_unsolicited_bytes_on_idle_connection(serve: ServerFactory, pool: Pool) -> None:
    """Bytes arriving on an idle connection (nobody asked) make the pool drop it: the
    server sees EOF and the next request uses a new connection."""
    released = asyncio.Event()

    async def script(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(ok())
        if peer.index == 0:
            await released.wait()
            await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        else:
            await serve_forever(peer)

    server = await serve(script)
    assert await exchange(pool, server.origin()) == b"ok"
    released.set()
    await within(server.peers[0].eof.wait())
    assert await exchange(pool, server.origin()) == b"ok"
    assert server.accepted == 2


async def test_interim_response_over_the_wire(serve: ServerFactory, pool: Pool) -> None:
    """A 100 Continue sent before the answer is skipped; the connection stays reusable."""

    async def script(peer: Peer) -> None:
        while await peer.read_request() is not None:
            await peer.send(b"HTTP/1.1 100 Continue\r\n\r\n")
            await peer.send(ok(b"after 100"))

    server = await serve(script)
    resp = await within(pool.request(server.origin(), REQ, TIMEOUTS))
    assert resp.status == 200
    assert await within(resp.read()) == b"after 100"
    resp.release()
    assert await exchange(pool, server.origin()) == b"after 100"
    assert server.accepted == 1


# ------------------------------------------------------------------ streaming


async def test_chunked_body_streamed(serve: ServerFactory, pool: Pool) -> None:
    """readany() returns each chunk as it arrives, while the server holds the rest back
    until the client has seen it (Event handshakes), then b"" at the end; the connection
    is reused afterwards."""
    go = [asyncio.Event(), asyncio.Event()]

    async def script(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(CHUNKED_HEAD + chunk(b"first;"))
        await go[0].wait()
        await peer.send(chunk(b"second;"))
        await go[1].wait()
        await peer.send(b"0\r\n\r\n")
        await serve_forever(peer)

    server = await serve(script)
    resp = await within(pool.request(server.origin(), REQ, TIMEOUTS))
    assert resp.headers["Transfer-Encoding"] == "chunked"
    for i, expected in enumerate([b"first;", b"second;"]):
        got = b""
        while len(got) < len(expected):
            got += await within(resp.readany())
        assert got == expected
        go[i].set()
    assert await within(resp.readany()) == b""
    assert await within(resp.readany()) == b""
    resp.release()
    assert await exchange(pool, server.origin()) == b"ok"
    assert server.accepted == 1


async def test_flow_control_pauses_reading(serve: ServerFactory, pool: Pool) -> None:
    """A body larger than every kernel buffer on the way, and a consumer that does not
    read for a moment: the pool stops reading the socket at HIGH_WATER (paused, buffered
    stays bounded) so the server's writes block; read() then returns the whole body."""
    size = kernel_buffer_capacity() + 8 * 1024 * 1024
    body = bytes(range(256)) * (size // 256)
    piece = 64 * 1024
    sent = [0]
    finished = asyncio.Event()

    async def script(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(CHUNKED_HEAD)
        view = memoryview(body)
        for start in range(0, len(body), piece):
            await peer.send(chunk(bytes(view[start : start + piece])))
            sent[0] += piece
        await peer.send(b"0\r\n\r\n")
        finished.set()

    server = await serve(script)
    resp = await within(pool.request(server.origin(), REQ, TIMEOUTS))
    conn = resp._conn
    assert conn is not None
    await within(eventually(lambda: conn.paused_reading))
    await asyncio.sleep(0.2)  # a moment of not reading; nothing below depends on its length
    assert conn.paused_reading
    assert conn.buffered <= 1024 * 1024, conn.buffered  # ~HIGH_WATER + one socket read
    assert conn.buffered > HIGH_WATER
    assert not finished.is_set()
    assert sent[0] < len(body)
    got = await within(resp.read(), 30)
    assert len(got) == len(body)
    assert got == body
    await within(finished.wait())
    resp.release()
    assert len(pool._idle[server.origin()]) == 1


async def test_readany_takes_resume_reading(serve: ServerFactory, pool: Pool) -> None:
    """With readany() (streaming consumer) the pool pauses and resumes as the buffer is
    taken, and the body arrives whole and in order."""
    body = bytes(range(256)) * (3 * 1024 * 1024 // 256)  # 3 MiB, > HIGH_WATER

    async def script(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
        for start in range(0, len(body), 32 * 1024):
            await peer.send(body[start : start + 32 * 1024])

    server = await serve(script)
    resp = await within(pool.request(server.origin(), REQ, TIMEOUTS))
    conn = resp._conn
    assert conn is not None
    await within(eventually(lambda: conn.paused_reading))
    parts = []
    while data := await within(resp.readany()):
        parts.append(data)
    assert b"".join(parts) == body
    resp.release()
    assert server.accepted == 1


# ------------------------------------------------------------------ body limit


def limited_script(first: bytes) -> Script:
    """Answer with `first`, then hold the connection open until the client closes it."""

    async def script(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(first)

    return script


@pytest.mark.parametrize(
    "first",
    [
        # Announced: 1000 bytes, of which only 10 ever come; no wait for the rest.
        b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789",
        # Chunked, growing past the limit; the terminator never comes.
        CHUNKED_HEAD + chunk(b"a" * 200) + chunk(b"b" * 200),
        # Chunked, over the limit and complete in the same read.
        CHUNKED_HEAD + chunk(b"a" * 200) + chunk(b"b" * 200) + b"0\r\n\r\n",
        # Until close, growing past the limit; the server never closes.
        b"HTTP/1.1 200 OK\r\n\r\n" + b"c" * 400,
    ],
    ids=["content-length", "chunked", "chunked-complete", "until-close"],
)
async def test_body_over_the_limit(serve: ServerFactory, pool: Pool, first: bytes) -> None:
    """read(limit) of a body longer than `limit`: BodyTooLarge (an InvalidResponse) at
    once, the bytes read so far are dropped, the connection is closed (the server sees
    EOF) and never pooled."""
    server = await serve(limited_script(first))
    resp = await within(pool.request(server.origin(), REQ, TIMEOUTS))
    conn = resp._conn
    assert conn is not None
    with pytest.raises(BodyTooLarge) as caught:
        await within(resp.read(300))
    assert isinstance(caught.value, InvalidResponse)
    assert str(caught.value) == "response body too large"
    assert (conn.chunks, conn.buffered) == ([], 0)
    with pytest.raises(BodyTooLarge):  # the response stays failed
        await within(resp.read(300))
    resp.release()
    await within(server.peers[0].eof.wait())
    await within(eventually(lambda: not pool._busy))
    assert not pool._idle.get(server.origin())


async def test_body_over_the_limit_after_readany(serve: ServerFactory, pool: Pool) -> None:
    """Bytes already buffered past the limit when read(limit) starts count too."""
    server = await serve(limited_script(b"HTTP/1.1 200 OK\r\n\r\n" + b"c" * 400))
    resp = await within(pool.request(server.origin(), REQ, TIMEOUTS))
    conn = resp._conn
    assert conn is not None
    await within(eventually(lambda: conn.buffered == 400))
    with pytest.raises(BodyTooLarge):
        await within(resp.read(300))
    assert (conn.chunks, conn.buffered) == ([], 0)
    resp.release()
    await within(server.peers[0].eof.wait())


@pytest.mark.parametrize("limit", [None, 0, 300], ids=["none", "zero", "exact"])
async def test_body_within_the_limit(serve: ServerFactory, pool: Pool, limit: int | None) -> None:
    """A body of exactly `limit` bytes (chunked, then with Content-Length), or any body
    without a limit (None or 0), is read whole; the connection is reused."""
    body = b"x" * 300

    async def script(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(CHUNKED_HEAD + chunk(body[:100]) + chunk(body[100:]) + b"0\r\n\r\n")
        await peer.read_request()
        await peer.send(ok(body))

    server = await serve(script)
    for _ in range(2):
        resp = await within(pool.request(server.origin(), REQ, TIMEOUTS))
        assert await within(resp.read(limit)) == body
        resp.release()
    assert server.accepted == 1
    assert len(pool._idle[server.origin()]) == 1


# ------------------------------------------------------------------ timeouts


async def test_read_timeout_before_head(serve: ServerFactory, pool: Pool) -> None:
    """The server never answers: ReadTimeout after `read` seconds, the connection is
    closed (server sees EOF) and nothing stays busy or idle in the pool."""
    server = await serve(never_answer)
    with pytest.raises(ReadTimeout):
        await within(
            pool.request(server.origin(), REQ, Timeouts(connect=LIMIT, read=0.2, write=LIMIT))
        )
    await within(server.peers[0].eof.wait())
    assert server.requests == [REQ]
    await within(eventually(lambda: not pool._busy))
    assert not pool._idle.get(server.origin())


async def test_read_timeout_between_chunks(serve: ServerFactory, pool: Pool) -> None:
    """The server sends the head and one chunk, then goes silent: readany() returns the
    chunk, then raises ReadTimeout."""

    async def script(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(CHUNKED_HEAD + chunk(b"only this"))
        await peer.wait_eof()

    server = await serve(script)
    resp = await within(pool.request(server.origin(), REQ, Timeouts(LIMIT, 0.2, LIMIT)))
    got = b""
    while len(got) < len(b"only this"):
        got += await within(resp.readany())
    assert got == b"only this"
    with pytest.raises(ReadTimeout):
        await within(resp.readany())
    resp.close()
    await within(server.peers[0].eof.wait())


async def test_read_timeout_in_read(serve: ServerFactory, pool: Pool) -> None:
    """read() of a Content-Length body whose rest never comes raises ReadTimeout."""

    async def script(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01234")
        await peer.wait_eof()

    server = await serve(script)
    resp = await within(pool.request(server.origin(), REQ, Timeouts(LIMIT, 0.2, LIMIT)))
    with pytest.raises(ReadTimeout):
        await within(resp.read())
    resp.close()


async def test_write_timeout(serve: ServerFactory, pool: Pool) -> None:
    """The server accepts but never reads, and the request is bigger than all the kernel
    buffers between the two sockets (sender's max send buffer + receiver's max receive
    buffer): the transport can never drain below its low-water mark, so WriteTimeout after
    `write` seconds whatever the machine's speed. The connection is closed."""
    never = asyncio.Event()

    async def script(peer: Peer) -> None:
        await never.wait()  # cancelled when the server closes

    server = await serve(script)
    size = max(64 * 1024 * 1024, kernel_buffer_capacity() + 16 * 1024 * 1024)
    request = b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % size + bytes(size)
    with pytest.raises(WriteTimeout):
        await within(pool.request(server.origin(), request, Timeouts(LIMIT, LIMIT, 0.3)))
    await within(eventually(lambda: not pool._busy))
    assert server.accepted == 1


async def test_answer_before_the_request_is_taken(serve: ServerFactory, pool: Pool) -> None:
    """An upstream that answers (413) after the head without reading the body and
    without closing: the answer is the result at once (no wait for `write` seconds),
    and the connection, still holding unsent request bytes, is never reused."""
    early = b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 9\r\n\r\ntoo large"

    async def script(peer: Peer) -> None:
        await peer.reader.readuntil(b"\r\n\r\n")
        await peer.send(early)
        await peer.wait_eof()  # reads the rest until the client gives up

    server = await serve(script)
    size = kernel_buffer_capacity() + 16 * 1024 * 1024  # cannot all fit in the buffers
    request = b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % size + bytes(size)
    resp = await within(pool.request(server.origin(), request, Timeouts(LIMIT, LIMIT, 60)))
    assert (resp.status, await within(resp.read())) == (413, b"too large")
    resp.release()
    peer = await server.peer(0)
    await within(peer.eof.wait())
    assert not pool._idle.get(server.origin()) and not pool._busy


async def test_request_after_close_is_refused(serve: ServerFactory) -> None:
    """A closed pool opens no new connections."""
    server = await serve(serve_forever)
    closed = Pool()
    await closed.close()
    with pytest.raises(ConnectFailed):
        await within(closed.request(server.origin(), REQ, TIMEOUTS))
    assert server.accepted == 0


# ------------------------------------------------------------------ connect


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A 127.0.0.1 port bound but not listening for the whole test: connecting to it is
    refused (and nobody else can take it meanwhile)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()


async def test_connect_refused(pool: Pool, refused_port: int) -> None:
    """Nothing listening: ConnectFailed."""
    with pytest.raises(ConnectFailed):
        await within(pool.request(Origin("http", "127.0.0.1", refused_port), REQ, TIMEOUTS))
    assert not pool._busy


@pytest.mark.skipif(sys.platform != "linux", reason="relies on Linux dropping SYNs")
async def test_connect_timeout(pool: Pool) -> None:
    """A listener with backlog 0 whose accept queue is full (one connection, never
    accepted): Linux drops further SYNs, so the connect cannot complete and
    ConnectTimeout comes after `connect` seconds."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port), timeout=LIMIT)
    try:
        with pytest.raises(ConnectTimeout):
            await within(
                pool.request(Origin("http", "127.0.0.1", port), REQ, Timeouts(0.3, LIMIT, LIMIT))
            )
    finally:
        filler.close()
        listener.close()
    assert not pool._busy


async def test_dns_localhost(serve: ServerFactory, pool: Pool) -> None:
    """An origin named `localhost` is resolved and reached (the server is on 127.0.0.1),
    and the name is cached."""
    server = await serve(serve_forever)
    assert await exchange(pool, server.origin("localhost")) == b"ok"
    assert ("localhost", server.port) in pool._dns
    assert server.accepted == 1


def fake_dns(monkeypatch: pytest.MonkeyPatch, answer: Callable[[int], list[Any]]) -> list[Any]:
    """Make the name `upstream.test` resolve to `answer(port)`; any other name or address
    goes to the real resolver (uvloop resolves numeric addresses through it as well).
    Returns the list of (host, port) looked up for `upstream.test`."""
    loop = asyncio.get_running_loop()
    real = loop.getaddrinfo
    calls: list[Any] = []

    async def getaddrinfo(host: Any, port: Any, **kwargs: Any) -> list[Any]:
        if host != "upstream.test":
            return await real(host, port, **kwargs)
        calls.append((host, port))
        return answer(port)

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
    return calls


async def test_dns_falls_back_to_next_address(
    serve: ServerFactory, pool: Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The name resolves to ::1 first (nothing listens there: a socket is bound to that
    port without listening when IPv6 exists) then 127.0.0.1: the pool tries the next
    address. The resolution is cached: a second new connection does not resolve again."""
    server = await serve(serve_forever)
    port = server.port
    blocker = socket.socket(socket.AF_INET6) if socket.has_ipv6 else None
    try:
        if blocker is not None:
            try:
                blocker.bind(("::1", port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    pytest.skip("[::1]:port is taken by something else")
                # no IPv6 loopback: connecting to ::1 fails anyway
        calls = fake_dns(
            monkeypatch,
            lambda p: [
                (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", p, 0, 0)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", p)),
            ],
        )
        origin = Origin("http", "upstream.test", port)
        assert await exchange(pool, origin) == b"ok"
        resp = await within(pool.request(origin, REQ, TIMEOUTS, fresh=True))
        resp.close()
    finally:
        if blocker is not None:
            blocker.close()
    assert calls == [("upstream.test", port)]
    assert server.accepted == 2


@pytest.mark.skipif(sys.platform != "linux", reason="relies on Linux dropping SYNs")
async def test_silent_first_address_does_not_cost_the_connect_timeout(
    serve: ServerFactory, pool: Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first address drops SYNs (a full backlog-0 listener, like a broken IPv6
    route): the next address is started after NEXT_ADDRESS_DELAY and wins, long before
    the 60 s connect timeout; the silent attempt is abandoned."""
    server = await serve(serve_forever)
    listener = socket.socket()
    listener.bind(("127.0.0.2", 0))
    listener.listen(0)
    black_port = listener.getsockname()[1]
    filler = socket.create_connection(("127.0.0.2", black_port), timeout=LIMIT)

    fake_dns(
        monkeypatch,
        lambda p: [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.2", black_port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", server.port)),
        ],
    )
    try:
        origin = Origin("http", "upstream.test", server.port)
        resp = await within(pool.request(origin, REQ, Timeouts(60, LIMIT, LIMIT)))
        assert await within(resp.read()) == b"ok"
        resp.release()
    finally:
        filler.close()
        listener.close()
    assert server.accepted == 1


async def test_every_address_refused(
    pool: Pool, refused_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two addresses, both refused (127.0.0.1 and 127.0.0.2, bound and not listening):
    one ConnectFailed after both were tried, naming neither."""
    other = socket.socket()
    other.bind(("127.0.0.2", 0))
    other_port = other.getsockname()[1]

    fake_dns(
        monkeypatch,
        lambda p: [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", refused_port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.2", other_port)),
        ],
    )
    try:
        with pytest.raises(ConnectFailed) as caught:
            await within(pool.request(Origin("http", "upstream.test", 80), REQ, TIMEOUTS))
    finally:
        other.close()
    assert str(caught.value) == "connection refused or unreachable"
    assert not pool._busy


async def test_ipv6_literal_origin(pool: Pool) -> None:
    """An IPv6 literal origin ([::1]) is connected to without name resolution."""
    accepted: list[bool] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(True)
        await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(2)
        writer.write(ok())
        await writer.drain()
        await reader.read()  # until the client closes
        writer.close()

    try:
        server = await asyncio.start_server(handle, "::1", 0)
    except OSError:
        pytest.skip("no IPv6 loopback")
    try:
        origin = Origin("http", "::1", server.sockets[0].getsockname()[1])
        assert await exchange(pool, origin) == b"ok"
        assert accepted == [True] and not pool._dns
    finally:
        await pool.close()
        server.close()
        await server.wait_closed()


async def test_tls_handshake_failure(serve: ServerFactory, pool: Pool) -> None:
    """An https origin whose server does not speak TLS: ConnectFailed("TLS handshake
    failed"), nothing pooled, no request bytes sent in clear beyond the ClientHello."""

    async def script(peer: Peer) -> None:
        await peer.reader.read(1)  # the ClientHello has begun
        await peer.send(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    server = await serve(script)
    with pytest.raises(ConnectFailed) as caught:
        await within(pool.request(Origin("https", "127.0.0.1", server.port), REQ, TIMEOUTS))
    assert str(caught.value) == "TLS handshake failed"
    assert not pool._busy and not pool._idle
    assert server.requests == []


async def test_gateway_closing_an_exchange_is_not_the_upstream_ending_it(
    serve: ServerFactory,
) -> None:
    """pool.close() (our own abort) during an until-close body fails the read instead of
    ending the body cleanly, and on a pooled connection waiting for its head it is not
    taken for a stale connection (which would send the request again)."""
    first = asyncio.Event()

    async def script(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await peer.read_request()  # the second request on the pooled connection
        first.set()
        await peer.send(b"HTTP/1.1 200 OK\r\n\r\npart")  # until close; never closes
        await never_answer(peer)

    server = await serve(script)
    pool = Pool()
    assert await exchange(pool, server.origin()) == b"ok"
    resp = await within(pool.request(server.origin(), REQ, TIMEOUTS))
    assert await within(resp.readany()) == b"part"
    reading = asyncio.ensure_future(resp.readany())
    await asyncio.sleep(0)
    await pool.close()
    with pytest.raises(Disconnected) as caught:
        await within(reading)
    assert not caught.value.stale

    async def answer_once(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(ok())
        await never_answer(peer)

    waiting = Pool()
    silent = await serve(answer_once)
    assert await exchange(waiting, silent.origin()) == b"ok"
    pending = asyncio.ensure_future(waiting.request(silent.origin(), REQ, TIMEOUTS))
    await within(eventually(lambda: len(silent.requests) == 2))  # on the pooled connection
    await waiting.close()
    with pytest.raises(Disconnected) as caught:
        await within(pending)
    assert not caught.value.stale
    assert first.is_set() and server.accepted == 1 and silent.accepted == 1


# ------------------------------------------------------------------ disconnects


async def test_disconnect_before_answer_on_fresh_connection(
    serve: ServerFactory, pool: Pool
) -> None:
    """A new connection closed by the server after reading the request: Disconnected,
    not stale (it was not a pooled connection), not midway."""

    async def script(peer: Peer) -> None:
        await peer.read_request()
        await peer.close()

    server = await serve(script)
    with pytest.raises(Disconnected) as info:
        await within(pool.request(server.origin(), REQ, TIMEOUTS))
    assert (info.value.stale, info.value.midway) == (False, False)
    assert server.requests == [REQ]
    await within(eventually(lambda: not pool._busy))


async def test_disconnect_on_pooled_connection_is_stale(serve: ServerFactory, pool: Pool) -> None:
    """The server answers once, then reads the second request on the same (pooled)
    connection and closes without answering: Disconnected with stale=True; a fresh
    request afterwards works on a new connection."""

    async def script(peer: Peer) -> None:
        if peer.index == 0:
            await peer.read_request()
            await peer.send(ok())
            await peer.read_request()
            await peer.close()
        else:
            await serve_forever(peer)

    server = await serve(script)
    assert await exchange(pool, server.origin()) == b"ok"
    with pytest.raises(Disconnected) as info:
        await within(pool.request(server.origin(), REQ, TIMEOUTS))
    assert (info.value.stale, info.value.midway) == (True, False)
    assert server.accepted == 1
    assert server.peers[0].requests == [REQ, REQ]
    resp = await within(pool.request(server.origin(), REQ, TIMEOUTS, fresh=True))
    assert await within(resp.read()) == b"ok"
    resp.release()
    assert server.accepted == 2


@pytest.mark.parametrize(
    "partial",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123",
        CHUNKED_HEAD + chunk(b"abc") + b"5\r\nde",
    ],
    ids=["length", "chunked"],
)
async def test_disconnect_midway_in_body(serve: ServerFactory, pool: Pool, partial: bytes) -> None:
    """The server closes in the middle of the body: read() raises Disconnected with
    midway=True and stale=False."""

    async def script(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(partial)
        await peer.close()

    server = await serve(script)
    resp = await within(pool.request(server.origin(), REQ, TIMEOUTS))
    assert resp.status == 200
    with pytest.raises(Disconnected) as info:
        await within(resp.read())
    assert (info.value.stale, info.value.midway) == (False, True)
    resp.release()


async def test_disconnect_midway_in_head(serve: ServerFactory, pool: Pool) -> None:
    """The server closes after part of the head: request() raises Disconnected with
    midway=True (bytes of the response had arrived)."""

    async def script(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(b"HTTP/1.1 200 OK\r\nContent-Le")
        await peer.close()

    server = await serve(script)
    with pytest.raises(Disconnected) as info:
        await within(pool.request(server.origin(), REQ, TIMEOUTS))
    assert (info.value.stale, info.value.midway) == (False, True)


# ------------------------------------------------------------------ invalid responses


async def test_invalid_status_line(serve: ServerFactory, pool: Pool) -> None:
    """A garbage status line: InvalidResponse from request(), the connection is closed
    (server sees EOF) and not pooled."""

    async def script(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")

    server = await serve(script)
    with pytest.raises(InvalidResponse):
        await within(pool.request(server.origin(), REQ, TIMEOUTS))
    await within(server.peers[0].eof.wait())
    await within(eventually(lambda: not pool._busy))
    assert not pool._idle.get(server.origin())


async def test_both_framings_is_invalid(serve: ServerFactory, pool: Pool) -> None:
    """Transfer-Encoding and Content-Length together (a request-smuggling sign): llhttp
    refuses the head, so request() raises InvalidResponse and the connection is closed."""

    async def script(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n"
            + chunk(b"ok")
            + b"0\r\n\r\n"
        )

    server = await serve(script)
    with pytest.raises(InvalidResponse):
        await within(pool.request(server.origin(), REQ, TIMEOUTS))
    await within(server.peers[0].eof.wait())
    await within(eventually(lambda: not pool._busy))
    assert not pool._idle.get(server.origin())


async def test_invalid_chunk_in_body(serve: ServerFactory, pool: Pool) -> None:
    """A malformed chunk size after a valid head: read() raises InvalidResponse and the
    connection is closed."""

    async def script(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(CHUNKED_HEAD + chunk(b"abc") + b"zz\r\n")

    server = await serve(script)
    resp = await within(pool.request(server.origin(), REQ, TIMEOUTS))
    with pytest.raises(InvalidResponse):
        await within(resp.read())
    await within(server.peers[0].eof.wait())
    resp.release()


# ------------------------------------------------------------------ cancellation, close, expiry


async def test_cancelled_request_closes_connection(serve: ServerFactory, pool: Pool) -> None:
    """Cancelling a task waiting in request() (the server never answers) closes the
    connection (server sees EOF) and leaves nothing busy or idle in the pool."""
    server = await serve(never_answer)
    task = asyncio.create_task(pool.request(server.origin(), REQ, TIMEOUTS))
    peer = await server.peer(0)
    await within(peer.got_request.wait())
    assert len(pool._busy) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await within(task)
    await within(peer.eof.wait())
    await within(eventually(lambda: not pool._busy))
    assert not pool._idle.get(server.origin())


async def test_pool_close_closes_idle_connections(serve: ServerFactory) -> None:
    """Pool.close() closes idle connections (the server sees EOF) and empties the pool."""
    server = await serve(serve_forever)
    other = await serve(serve_forever)
    pool = Pool()
    try:
        assert await exchange(pool, server.origin()) == b"ok"
        assert await exchange(pool, other.origin()) == b"ok"
        assert not server.peers[0].eof.is_set()
    finally:
        await pool.close()
    await within(server.peers[0].eof.wait())
    await within(other.peers[0].eof.wait())
    assert not pool._idle and not pool._busy


async def test_pool_close_fails_busy_response(serve: ServerFactory) -> None:
    """Pool.close() also closes a connection in use: its reader gets Disconnected."""

    async def script(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01")
        await peer.wait_eof()

    server = await serve(script)
    pool = Pool()
    try:
        resp: Response = await within(pool.request(server.origin(), REQ, TIMEOUTS))
    finally:
        await pool.close()
    with pytest.raises(Disconnected):
        await within(resp.read())
    await within(server.peers[0].eof.wait())


async def test_idle_connection_expires(serve: ServerFactory) -> None:
    """With keepalive=0.2 an idle connection is closed once it has been idle that long
    (the server sees EOF, polled) and the next request opens a new connection."""
    server = await serve(serve_forever)
    pool = Pool(keepalive=0.2)
    try:
        assert await exchange(pool, server.origin()) == b"ok"
        await within(server.peers[0].eof.wait())
        assert not pool._idle.get(server.origin())
        assert await exchange(pool, server.origin()) == b"ok"
        assert server.accepted == 2
    finally:
        await pool.close()


async def test_expired_idle_connection_skipped_at_take(serve: ServerFactory) -> None:
    """Even before the periodic sweep runs (here: cancelled), a connection idle longer
    than keepalive is not handed out: the next request opens a new one and the old one
    is closed. The sleep is 0.3 s against a 0.2 s keepalive and only has to be longer."""
    server = await serve(serve_forever)
    pool = Pool(keepalive=0.2)
    try:
        assert await exchange(pool, server.origin()) == b"ok"
        assert pool._sweeper is not None
        pool._sweeper.cancel()
        await asyncio.sleep(0.3)
        assert not server.peers[0].eof.is_set()  # nothing closed it yet
        assert await exchange(pool, server.origin()) == b"ok"
        assert server.accepted == 2
        await within(server.peers[0].eof.wait())
    finally:
        await pool.close()


async def test_reused_within_keepalive(serve: ServerFactory) -> None:
    """With a keepalive far longer than the test, the idle connection is reused."""
    server = await serve(serve_forever)
    pool = Pool(keepalive=60)
    try:
        for _ in range(3):
            assert await exchange(pool, server.origin()) == b"ok"
        assert server.accepted == 1
    finally:
        await pool.close()
