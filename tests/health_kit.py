"""What the active health check tests share: a scripted raw HTTP/1.1 server on
127.0.0.1, the servers and checkers a test starts (`Lab`), and a fast policy.

Exact counting is checked with the scripted server, which records what a test asks
(`watch`: the target's `healthy` flag, or the prober's snapshot) as each probe *arrives*:
probes of one prober are sequential, so at arrival every earlier probe's outcome has
been counted. Nothing asserts timing.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable, Sequence
from typing import Any

from helpers import until

from balancers import TargetState
from gateway.health import HealthChecker, HealthPolicy, ProbeSpec

SECRET = "sk-very-secret-123"
T, F = True, False


def fast(**kw: Any) -> HealthPolicy:
    # A generous timeout: only tests about timeouts may ever reach it.
    base: dict[str, Any] = {"timeout": 5.0, "healthy_interval": 0.02, "unhealthy_interval": 0.02}
    return HealthPolicy(**{**base, **kw})


def state(name: str = "t", healthy: bool = True) -> TargetState:
    s = TargetState(index=0, name=name, weight=100)
    s.healthy = healthy
    return s


class Scripted:
    """A raw HTTP/1.1 server answering each request from a script (the last entry
    repeats). Actions: a status (keep-alive, 1-byte body; 3xx with a Location) |
    "reset" (RST) | "hang" (never answers) | "trickle" (a head that never ends, a byte
    at a time) | "endless" (200, then a body that never ends) | "garbage" (not HTTP).

    Records, per request as it arrives: `watch()`, the head, and the connection it came
    on. Connections are kept open after an answer, so reuse would show."""

    def __init__(self, script: Sequence[int | str]) -> None:
        self.script = list(script)
        self.watch: Callable[[], Any] = lambda: None
        self.trace: list[Any] = []
        self.heads: list[tuple[str, dict[str, str]]] = []  # request line, fields
        self.conn_of: list[int] = []  # connection number of each request
        self.connections = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def url(self, path: str = "/h") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = self.connections
        self.connections += 1
        self._writers.add(writer)
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                line, *fields = head[:-4].split("\r\n")
                self.heads.append((line, dict(f.split(": ", 1) for f in fields)))
                self.conn_of.append(conn)
                self.trace.append(self.watch())
                action = self.script[min(len(self.trace) - 1, len(self.script) - 1)]
                if not await self._act(action, reader, writer):
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the prober hung up, as it does after every answer
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _act(
        self, action: int | str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Answer one request; False once the connection is done for."""
        if action == "reset":
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return False
        if action == "hang":
            await reader.read()  # until the prober gives up and hangs up
            return False
        if action == "garbage":
            writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
            await writer.drain()
            await reader.read()
            return False
        if action in ("trickle", "endless"):
            if action == "trickle":  # a head that never ends
                writer.write(b"HTTP/1.1 200 OK\r\nX-Pad: ")
            else:  # a body that never ends
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000000\r\n\r\n")
            while not writer.is_closing():  # until the prober hangs up
                writer.write(b"a")
                await asyncio.sleep(0.005)
            return False
        assert isinstance(action, int)
        extra = "Location: /moved\r\n" if 300 <= action < 400 else ""
        writer.write(f"HTTP/1.1 {action} X\r\n{extra}Content-Length: 1\r\n\r\nx".encode())
        await writer.drain()
        return True

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for w in list(self._writers):
                w.transport.abort()
            await self._server.wait_closed()


class Lab:
    """The scripted servers and checkers one test starts; `close()` stops them all
    (each test module wraps it in a `lab` fixture)."""

    def __init__(self) -> None:
        self.servers: list[Scripted] = []
        self.checkers: list[HealthChecker] = []

    async def server(
        self, script: Sequence[int | str], watch: TargetState | None = None
    ) -> Scripted:
        srv = Scripted(script)
        if watch is not None:
            srv.watch = lambda: watch.healthy
        await srv.start()
        self.servers.append(srv)
        return srv

    def checker(self, **kwargs: Any) -> HealthChecker:
        hc = HealthChecker(**kwargs)
        self.checkers.append(hc)
        return hc

    async def close(self) -> None:
        for hc in self.checkers:
            await hc.stop()
        for srv in self.servers:
            await srv.stop()


async def run_trace(
    lab: Lab, script: Sequence[int | str], n: int, **policy: Any
) -> list[bool | None]:
    """The target's `healthy` flag as each of the first `n` probes arrived."""
    st = state()
    srv = await lab.server(script, st)
    hc = lab.checker()
    hc.add(ProbeSpec(srv.url()), fast(**policy), st)
    await hc.start()
    await until(lambda: len(srv.trace) >= n)
    await hc.stop()
    return srv.trace[:n]
