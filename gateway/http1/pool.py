"""Keep-alive connections per origin: take or open one, send, hand back the response."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from dataclasses import dataclass

import aiohappyeyeballs
from aiohappyeyeballs import AddrInfoType

from .connection import Connection, Response
from .errors import ConnectFailed, ConnectTimeout

DNS_TTL = 60.0
NEXT_ADDRESS_DELAY = 0.25  # Happy Eyeballs (RFC 8305 §5): start the next address after this


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

    @property
    def bracketed_host(self) -> str:
        """The host as it appears in a URL or a Host field (IPv6 in brackets)."""
        return f"[{self.host}]" if ":" in self.host else self.host

    def __str__(self) -> str:
        return f"{self.scheme}://{self.bracketed_host}:{self.port}"

    def host_field(self) -> bytes:
        """The request's `Host:` line (RFC 9112 §3.2): the port only when not default."""
        host = self.bracketed_host
        value = host if self.port == (443 if self.tls else 80) else f"{host}:{self.port}"
        return b"Host: " + value.encode("ascii") + b"\r\n"


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
        self._idle: dict[Origin, list[Connection]] = {}
        self._busy: set[Connection] = set()
        self._dns: dict[tuple[str, int], tuple[float, list[AddrInfoType]]] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._opened: dict[Origin, int] = {}
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

    def _take(self, origin: Origin) -> Connection | None:
        idle = self._idle.get(origin)
        if not idle:
            return None
        oldest = self.loop.time() - self.keepalive
        while idle:
            conn = idle.pop()
            if conn.idle_since > oldest and not conn.transport.is_closing():
                return conn
            conn.abort()
        return None

    def put(self, conn: Connection) -> None:
        self._busy.discard(conn)
        if self.closed:
            conn.abort()
            return
        conn.idle_since = self.loop.time()
        self._idle.setdefault(conn.origin, []).append(conn)
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(self.keepalive, self._sweep)

    def lost(self, conn: Connection, idle: bool) -> None:
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

    async def _connect(self, origin: Origin, timeout: float) -> Connection:
        try:
            async with asyncio.timeout(timeout):
                sock = await self._socket(await self._resolve(origin))
                # TLS, if any, on the winning socket only; from here asyncio owns it.
                _, conn = await self.loop.create_connection(
                    lambda: Connection(self, origin),
                    sock=sock,
                    ssl=self._tls() if origin.tls else None,
                    server_hostname=origin.host if origin.tls else None,
                )
        except TimeoutError:
            raise ConnectTimeout("connect timeout") from None
        except ssl.SSLError:
            raise ConnectFailed("TLS handshake failed") from None
        except OSError:
            raise ConnectFailed("connection refused or unreachable") from None
        self._opened[origin] = self._opened.get(origin, 0) + 1
        return conn

    async def _socket(self, addresses: list[AddrInfoType]) -> socket.socket:
        """A socket connected to the first address that answers. The next address starts
        when the previous attempt failed or after NEXT_ADDRESS_DELAY, address families
        interleaved (RFC 8305 §4, §5), so one that silently drops packets (a broken IPv6
        route) does not cost the whole connect timeout."""
        try:
            return await aiohappyeyeballs.start_connection(
                addresses, happy_eyeballs_delay=NEXT_ADDRESS_DELAY, loop=self.loop
            )
        except RuntimeError as exc:  # how uvloop reports some socket errors
            raise OSError(str(exc)) from None

    async def _resolve(self, origin: Origin) -> list[AddrInfoType]:
        host, port = origin.host, origin.port
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            pass
        else:
            family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
            return [(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, port))]
        now = self.loop.time()
        cached = self._dns.get((host, port))
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            infos = await self.loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError:
            raise ConnectFailed("name resolution failed") from None
        addresses: list[AddrInfoType] = list(infos)
        self._dns[(host, port)] = (now + DNS_TTL, addresses)
        return addresses

    def _tls(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    def stats(self) -> list[tuple[str, int, int, int]]:
        """(origin, idle, busy, ever opened) per origin this pool has connected to."""
        busy: dict[Origin, int] = {}
        for conn in self._busy:
            busy[conn.origin] = busy.get(conn.origin, 0) + 1
        return [
            (str(origin), len(self._idle.get(origin, ())), busy.get(origin, 0), opened)
            for origin, opened in self._opened.items()
        ]

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
