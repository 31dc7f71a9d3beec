"""What the fuzz tests share: a gateway with fake upstreams running in a thread of its
own (its own event loop, real sockets), and a raw-socket HTTP/1.1 client that reads one
answer within a bound and says how the exchange ended.

The tests drive the gateway from synchronous code (hypothesis, schemathesis' `requests`
transport), so the gateway cannot share their event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from helpers import LONG_WINDOW, route, target

from gateway.config import parse
from gateway.server import GatewayServer
from gateway.sim import FakeUpstream

# Every exchange must end within this (the gateway's client timeouts below are 1 s).
EXCHANGE_BOUND = 10.0
# Examples per property; raise locally for a deeper run (docs/testing.md, "Fuzzing").
EXAMPLES = int(os.environ.get("LLAMA_GATEWAY_FUZZ_EXAMPLES", "150"))
# The same examples on every run, unless asked for new ones (then `--hypothesis-seed`
# repeats a run).
DERANDOMIZE = os.environ.get("LLAMA_GATEWAY_FUZZ_RANDOM") != "1"

# Paths answered by the Ollama front door (its errors are `{"error": "…"}`).
OLLAMA_PATHS = (
    "/api/chat",
    "/api/generate",
    "/api/embed",
    "/api/embeddings",
    "/api/show",
    "/api/tags",
    "/api/ps",
    "/api/version",
    "/",
)
FUZZ_KEY = "fuzz-key-0123456789"  # the one consumer's key (routes with key_auth)
ROUTE_PATHS = (
    "/chat",
    "/secure/chat",
    "/limited/chat",
    "/completions",
    "/embeddings",
    "/re/chat/anything",
    "/r/v1/chat/completions",
)
OPENAI_PATHS = (
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/models",
    "/v1/models/llama2",
    "/r/v1/models",
)
KNOWN_PATHS = ROUTE_PATHS + OPENAI_PATHS + OLLAMA_PATHS


def fuzz_config(ollama: FakeUpstream, llamacpp: FakeUpstream) -> dict[str, Any]:
    """Chat, completions and embeddings routes over an Ollama and a llama.cpp fake, a
    regex path, a chat route with key-auth and one with a rate limit, both front doors,
    small client timeouts and body limits."""
    chat = [
        target(ollama, "/api/chat", name="llama2", weight=100),
        target(
            llamacpp, "/completion", fmt="raw", name="llama2", options={"raw_flavor": "llamacpp"}
        ),
    ]
    completions = [
        target(ollama, "/api/generate", route_type="llm/v1/completions"),
        target(
            llamacpp,
            "/completion",
            fmt="raw",
            route_type="llm/v1/completions",
            options={"raw_flavor": "llamacpp"},
        ),
    ]
    embeddings = [
        target(ollama, "/api/embed", route_type="llm/v1/embeddings", name="nomic-embed-text"),
        target(
            llamacpp,
            "/embedding",
            fmt="raw",
            route_type="llm/v1/embeddings",
            name="nomic-embed-text",
            options={"raw_flavor": "llamacpp"},
        ),
    ]
    chat_route = route(*chat, path="/chat", name="chat", max_request_body_size=65536)
    chat_route["paths"] += ["~^/re/chat/", "/r/v1/chat/completions"]
    secure = route(
        target(ollama, "/api/chat", name="secure-llama"), path="/secure/chat", name="secure"
    )
    secure["key_auth"] = {"key_names": ["apikey"]}
    limited = route(
        target(ollama, "/api/chat", name="limited-llama"), path="/limited/chat", name="limited"
    )
    limited["rate_limiting"] = {
        "identifier": "ip",
        "limits": [{"requests": 5, "window": LONG_WINDOW}],
    }
    return {
        "server": {
            "port": 0,
            "status_port": 0,
            "client_header_timeout": 1,
            "client_body_timeout": 1,
            "keepalive_timeout": 2,
        },
        "frontends": {"openai": {"prefix": "/v1"}, "ollama": {"prefix": ""}},
        "consumers": [{"username": "fuzz", "keyauth_credentials": [{"key": FUZZ_KEY}]}],
        "routes": [
            chat_route,
            secure,
            limited,
            route(
                *completions, path="/completions", name="completions", max_request_body_size=65536
            ),
            route(*embeddings, path="/embeddings", name="embeddings", max_request_body_size=65536),
        ],
    }


class LiveGateway:
    """Two fake upstreams and a gateway on 127.0.0.1, served by a background thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="gateway", daemon=True)
        self.upstreams: list[FakeUpstream] = []
        self.server: GatewayServer | None = None
        self.port = 0
        self.status_port = 0

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> LiveGateway:
        self.thread.start()
        self.run(self._start())
        return self

    async def _start(self) -> None:
        models = ("llama2", "nomic-embed-text", "secure-llama", "limited-llama")
        ollama = FakeUpstream("ollama", models=models)
        llamacpp = FakeUpstream("llamacpp")
        for up in (ollama, llamacpp):
            await up.start()
            self.upstreams.append(up)
        self.server = GatewayServer(parse(fuzz_config(ollama, llamacpp), {}))
        await self.server.start()
        self.port, self.status_port = self.server.port, self.server.status_port

    async def _stop(self) -> None:
        if self.server is not None and self.server.ready:
            await self.server.stop()
        for up in self.upstreams:
            await up.stop()

    def stop(self) -> None:
        try:
            self.run(self._stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


# --------------------------------------------------------------------------- raw client


@dataclass
class Exchange:
    """How one request went: `status` is None when no answer came."""

    status: int | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    hang: bool = False  # nothing ended the exchange within the bound
    truncated: bool = False  # an answer began and the connection ended inside it
    reset: bool = False  # the connection was reset (rather than closed)
    received: bytes = b""
    sent: bytes = b""

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None

    def describe(self) -> str:
        sent = f"\nsent: {self.sent[:600]!r}{' …' if len(self.sent) > 600 else ''}"
        if self.hang:
            return f"no end within {EXCHANGE_BOUND} s (got {self.received[:300]!r}){sent}"
        if self.status is None:
            got = f"reset={self.reset}, got {self.received[:300]!r}"
            return f"closed without an answer ({got}){sent}"
        return f"{self.status} {self.headers} {self.body[:500]!r}{sent}"


class _Hang(Exception):
    pass


class _Closed(Exception):
    pass


class _Reader:
    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.buf = b""
        self.seen = b""
        self.reset = False

    def more(self) -> None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise _Hang
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            raise _Hang from None
        except ConnectionResetError:
            self.reset = True
            raise _Closed from None
        if not data:
            raise _Closed
        self.buf += data
        self.seen += data

    def until(self, marker: bytes) -> bytes:
        while marker not in self.buf:
            self.more()
        head, _, self.buf = self.buf.partition(marker)
        return head

    def exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            self.more()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def rest(self) -> bytes:
        try:
            while True:
                self.more()
        except _Closed:
            pass
        out, self.buf = self.buf, b""
        return out


def _chunked(r: _Reader) -> bytes:
    out = b""
    while True:
        size = int(r.until(b"\r\n").split(b";")[0].strip(), 16)
        if size == 0:
            r.until(b"\r\n")  # no trailers from aiohttp: the empty line ends it
            return out
        out += r.exactly(size)
        r.exactly(2)


def exchange(port: int, data: bytes, head: bool = False) -> Exchange:
    """Send `data` as it is and read one answer (skipping 1xx) within the bound."""
    deadline = time.monotonic() + EXCHANGE_BOUND
    ex = Exchange(sent=data)
    with socket.create_connection(("127.0.0.1", port), timeout=EXCHANGE_BOUND) as sock:
        # The gateway may answer (or close) before taking it all: then read what it said.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, TimeoutError):
            sock.sendall(data)
        r = _Reader(sock, deadline)
        try:
            while True:
                status_line, *lines = r.until(b"\r\n\r\n").split(b"\r\n")
                parts = status_line.split(b" ", 2)
                ex.status = int(parts[1])
                ex.headers = [
                    (k.strip().lower().decode("latin-1"), v.strip().decode("latin-1"))
                    for k, _, v in (line.partition(b":") for line in lines)
                ]
                if not 100 <= ex.status < 200:
                    break
            length = ex.header("content-length")
            te = (ex.header("transfer-encoding") or "").lower()
            if head or ex.status in (204, 304):
                ex.body = b""
            elif "chunked" in te:
                ex.body = _chunked(r)
            elif length is not None:
                ex.body = r.exactly(int(length))
            else:
                ex.body = r.rest()
        except _Hang:
            ex.hang = True
        except _Closed:
            ex.truncated = ex.status is not None  # the status stays, for the report
        ex.reset = r.reset
        ex.received = r.seen
    return ex


def request(
    method: bytes | str,
    target: bytes | str,
    headers: list[tuple[bytes, bytes]] | None = None,
    body: bytes = b"",
    version: bytes = b"HTTP/1.1",
    content_length: bool = True,
) -> bytes:
    """A request's bytes, exactly as given (plus Host and Content-Length unless told)."""
    m = method.encode("latin-1") if isinstance(method, str) else method
    t = target.encode("latin-1") if isinstance(target, str) else target
    hs = list(headers or [])
    names = {k.lower() for k, _ in hs}
    if b"host" not in names:
        hs.insert(0, (b"Host", b"127.0.0.1"))
    if content_length and body and b"content-length" not in names:
        hs.append((b"Content-Length", str(len(body)).encode()))
    line = b" ".join(x for x in (m, t, version) if x)
    return line + b"\r\n" + b"".join(k + b": " + v + b"\r\n" for k, v in hs) + b"\r\n" + body
