"""The pod's proxy listener: bound once by the supervisor, served by every worker.

Two ways to share one port between processes (LLAMA_GATEWAY_WORKER_SOCKET):

- `reuseport` (default where the OS has it): every worker binds its own listening
  socket with SO_REUSEPORT and the kernel spreads new connections over them by a hash
  of the client's address and port. The supervisor binds the address too, without
  listening: that fixes the real port (port 0 → one port for all) and holds it while a
  worker restarts, and a socket that does not listen is never given a connection.
- `shared`: the supervisor binds and listens on one socket and every worker accepts on
  it. Whichever worker wakes first takes what is queued, so a burst of connections can
  all land on one worker (measured in docs/performance.md).
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

REUSEPORT = "reuseport"
SHARED = "shared"
ENV_MODE = "LLAMA_GATEWAY_WORKER_SOCKET"
BACKLOG = 1024  # as the single-process proxy listener


def socket_mode(env: Mapping[str, str] = os.environ) -> str:
    value = env.get(ENV_MODE, "").strip().lower() or REUSEPORT
    if value not in (REUSEPORT, SHARED):
        raise ValueError(f"{ENV_MODE} must be {REUSEPORT} or {SHARED} (got {value!r})")
    if value == REUSEPORT and not hasattr(socket, "SO_REUSEPORT"):
        return SHARED
    return value


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One bound address (the real port), as the workers re-bind it."""

    family: int
    address: tuple[Any, ...]

    def to_json(self) -> list[Any]:
        return [int(self.family), list(self.address)]

    @classmethod
    def from_json(cls, value: Sequence[Any]) -> Endpoint:
        return cls(socket.AddressFamily(value[0]), tuple(value[1]))


def _new_socket(family: int, reuse_port: bool) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # What asyncio's create_server does: SO_REUSEADDR on POSIX, IPv6 sockets v6-only
        # (an IPv4 address of the same host gets its own socket).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    except OSError:
        sock.close()
        raise
    return sock


def bind_pod(host: str, port: int, mode: str) -> list[socket.socket]:
    """The supervisor's sockets for every address `host` resolves to, all on one port
    (port 0: one free port for all, retried when only some addresses have it free).
    `shared`: listening; `reuseport`: bound only. Raises OSError like a listener would."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    addrs: list[tuple[int, tuple[Any, ...]]] = []
    for info in infos:
        addr = (int(info[0]), tuple(info[4]))
        if addr not in addrs:
            addrs.append(addr)
    for attempt in range(8):
        socks: list[socket.socket] = []
        try:
            chosen = port
            for family, sockaddr in addrs:
                sock = _new_socket(family, mode == REUSEPORT)
                socks.append(sock)
                sock.bind((sockaddr[0], chosen, *sockaddr[2:]))
                chosen = sock.getsockname()[1]
            if mode == SHARED:
                for sock in socks:
                    sock.listen(BACKLOG)
            return socks
        except OSError as exc:
            for sock in socks:
                sock.close()
            retry = port == 0 and len(addrs) > 1 and exc.errno == errno.EADDRINUSE
            if not retry or attempt == 7:
                raise
    raise AssertionError("unreachable")


def endpoints(socks: Sequence[socket.socket]) -> list[Endpoint]:
    return [Endpoint(s.family, tuple(s.getsockname())) for s in socks]


def worker_proxy_sockets(
    mode: str, bound: Sequence[Endpoint], fds: Sequence[int]
) -> list[socket.socket]:
    """A worker's proxy sockets: its own SO_REUSEPORT sockets on the pod's addresses, or
    the supervisor's listening sockets it inherited (`shared`). aiohttp listens on them."""
    if mode == SHARED:
        return [socket.socket(fileno=fd) for fd in fds]
    out: list[socket.socket] = []
    try:
        for ep in bound:
            sock = _new_socket(ep.family, reuse_port=True)
            out.append(sock)
            sock.bind(ep.address)
    except OSError:
        for sock in out:
            sock.close()
        raise
    return out


def unix_listener(path: str) -> socket.socket:
    """A worker's private status listener. A socket file left by this slot's previous
    worker (killed, so it could not clean up) is removed first."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
    except OSError:
        sock.close()
        raise
    return sock
