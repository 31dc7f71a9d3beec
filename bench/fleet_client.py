"""The fleet benchmark's open-loop client: requests leave at their scheduled times,
whatever the answers do, each on its own connection, and every stream is timed and
checked token by token.

Raw asyncio protocol with httptools (a gateway dependency) for the HTTP framing, so
the client costs little next to the simulated servers sharing its event loop.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httptools
import orjson

HOST = "127.0.0.1"
PATH = "/v1/chat/completions"
PROMPT = [{"role": "user", "content": "Tell me about llamas."}]


@dataclass
class Record:
    """One request as the client saw it; times in seconds from its scheduled start."""

    index: int
    max_tokens: int
    at: float  # scheduled arrival, seconds from the run's start
    lag: float = math.nan  # how late the client actually sent it
    status: int = 0
    tokens: int = 0
    done: bool = False  # `data: [DONE]` seen
    complete: bool = False  # the HTTP message ended properly
    ttft: float = math.nan
    total: float = math.nan
    error: str = ""

    @property
    def served(self) -> bool:
        return (
            self.status == 200
            and self.done
            and self.complete
            and self.tokens == self.max_tokens
            and not self.error
        )

    def failure(self) -> str:
        """Why the request does not count as served, in a few words (for the report)."""
        if self.served:
            return ""
        if self.error and self.status == 0:
            return self.error
        if self.status != 200:
            return f"status {self.status}"
        if self.error:
            return f"stream error: {self.error}"
        return f"broken stream ({self.tokens}/{self.max_tokens} tokens)"


def body(max_tokens: int) -> bytes:
    return orjson.dumps(
        {"model": "llama2", "messages": PROMPT, "stream": True, "max_tokens": max_tokens}
    )


def request_bytes(port: int, payload: bytes) -> bytes:
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json\r\n"
        f"Accept: text/event-stream\r\nContent-Length: {len(payload)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + payload


class _Stream(asyncio.Protocol):
    """One streamed chat completion: status, SSE events, first-token and end times."""

    def __init__(self, rec: Record, start: float, payload: bytes, done: asyncio.Future[None]):
        self.rec = rec
        self.start = start  # perf_counter() of the scheduled arrival
        self.payload = payload
        self.done = done
        self.parser = httptools.HttpResponseParser(self)
        self.now = 0.0
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.payload)

    def data_received(self, data: bytes) -> None:
        self.now = time.perf_counter()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.rec.error = self.rec.error or f"bad HTTP: {exc}"
            if self.transport is not None:
                self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.rec.complete and not self.rec.error:
            self.rec.error = "connection closed early" if exc is None else f"{exc!r}"
        if not self.done.done():
            self.done.set_result(None)

    # -- httptools callbacks

    def on_headers_complete(self) -> None:
        self.rec.status = self.parser.get_status_code()

    def on_body(self, chunk: bytes) -> None:
        self.buf += chunk
        *events, self.buf = self.buf.split(b"\n\n")
        for event in events:
            self._event(event)

    def on_message_complete(self) -> None:
        self.rec.complete = True
        self.rec.total = time.perf_counter() - self.start

    def _event(self, event: bytes) -> None:
        if not event.startswith(b"data:"):
            return
        data = event[5:].strip()
        if data == b"[DONE]":
            self.rec.done = True
            return
        if self.rec.status != 200:
            return
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            self.rec.error = self.rec.error or "unreadable event"
            return
        if "error" in doc:
            self.rec.error = self.rec.error or str(doc["error"])[:120]
            return
        choices = doc.get("choices") or [{}]
        if (choices[0].get("delta") or {}).get("content"):
            if not self.rec.tokens:
                self.rec.ttft = self.now - self.start
            self.rec.tokens += 1


async def _one(port: int, rec: Record, start: float, deadline: float, stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    rec.lag = time.perf_counter() - start
    proto = _Stream(rec, start, request_bytes(port, body(rec.max_tokens)), done)
    transport: asyncio.Transport | None = None
    try:
        transport, _ = await asyncio.wait_for(
            loop.create_connection(lambda: proto, HOST, port),
            max(0.1, deadline - time.perf_counter()),
        )
        stopped: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({done, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
        if not done.done():
            rec.error = "unfinished at the run's time limit"
    except (OSError, TimeoutError) as exc:
        rec.error = f"connect: {getattr(exc, 'strerror', None) or exc!r}"
    finally:
        if transport is not None and not done.done():
            transport.abort()


@dataclass
class RunResult:
    records: list[Record]
    started: float  # perf_counter() of t = 0
    elapsed: float  # from t = 0 until the last request ended (or the limit)
    loop_lag: list[float] = field(default_factory=list)  # seconds, sampled every 10 ms


async def open_loop(
    port: int,
    arrivals: Sequence[float],
    lengths: Sequence[int],
    limit: float,
    events: Sequence[tuple[float, Callable[[], object]]] = (),
) -> RunResult:
    """Send request i at `arrivals[i]` seconds (asking for `lengths[i]` tokens), no
    matter how the earlier ones fare; stop waiting `limit` seconds after the start.
    `events`: (time, callable) run at their time (a coroutine result is awaited in a
    task of its own), e.g. killing a server."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    lag: list[float] = []
    records = [Record(i, n, t) for i, (t, n) in enumerate(zip(arrivals, lengths, strict=True))]
    start = time.perf_counter()
    deadline = start + limit

    async def sample_lag() -> None:
        # How late the shared event loop runs timers: the client's and the simulated
        # servers' own noise, reported next to the figures.
        while True:
            t = time.perf_counter()
            await asyncio.sleep(0.01)
            lag.append(time.perf_counter() - t - 0.01)

    async def at(when: float, fn: Callable[[], object]) -> None:
        await asyncio.sleep(max(0.0, start + when - time.perf_counter()))
        result = fn()
        if asyncio.iscoroutine(result):
            await result

    sampler = loop.create_task(sample_lag())
    side = [loop.create_task(at(when, fn)) for when, fn in events]
    tasks: list[asyncio.Task[None]] = []
    for rec in records:
        due = start + rec.at
        if due > deadline:
            rec.error = "never sent: past the run's time limit"
            continue
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(loop.create_task(_one(port, rec, due, deadline, stop)))
    if tasks:
        await asyncio.wait(tasks, timeout=max(0.0, deadline - time.perf_counter()))
    stop.set()
    if tasks:
        await asyncio.wait(tasks, timeout=5)
    elapsed = time.perf_counter() - start
    for task in (sampler, *side, *tasks):
        task.cancel()
    await asyncio.gather(sampler, *side, *tasks, return_exceptions=True)
    return RunResult(records, start, elapsed, lag)
