"""`strategy: local` for a pod of workers: one set of counters in the supervisor.

Kong's `local` policy counts per node (its nginx workers share one memory zone). Our
workers are separate processes, so without this each would count on its own and a pod
of N workers would let N times the limit through. Instead the supervisor keeps the
counters (a `LocalStore`, so the rules are the same code) and serves them on a unix
socket in its private 0700 directory; each rate-limited route of each worker holds one
connection to it.

The wire is one JSON array per line, in order on each connection:

- `["a", n_requests, [counter, …]]` → `[admitted, [value, …]]` (an admit);
- `["s", tokens, [counter, …]]` → nothing (a spend: the answer is already sent).

A counter is the `Counter` tuple as a list. The supervisor answers each connection's
lines in the order they came, so a client matches answers to admits first in, first
out. A supervisor that does not answer within the timeout is a `StoreError`: the
route then fails open or closed like with a dead Redis (ratelimit.py).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Awaitable
from typing import Any

from ..jsonutil import JSONDecodeError, dumps, loads
from .stores import Counter, LocalStore, StoreError

log = logging.getLogger("llama_gateway.workers")

TIMEOUT = 1.0  # seconds for a connect or an admit: the supervisor only does dict work
_LINE_LIMIT = 1 << 20  # a line holds a few counters; this bounds a broken peer


def _line(op: str, n: int, counters: list[Counter]) -> bytes:
    return dumps([op, n, [tuple(c) for c in counters]]) + b"\n"  # orjson: no NamedTuples


class PodStore:
    """The worker side: a `Store` whose counters are the supervisor's."""

    def __init__(self, path: str, timeout: float = TIMEOUT) -> None:
        self.path = path
        self.timeout = timeout
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._connecting: asyncio.Future[None] | None = None
        self._waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._closed = False

    async def _connection(self) -> asyncio.StreamWriter:
        writer = self._writer
        if writer is not None and not writer.is_closing():
            return writer
        if self._closed:
            raise StoreError("closed")
        if self._connecting is None:  # one connect for every caller waiting on it
            self._connecting = asyncio.ensure_future(self._connect())
        try:
            await asyncio.shield(self._connecting)
        finally:
            if self._connecting is not None and self._connecting.done():
                self._connecting = None
        assert self._writer is not None
        return self._writer

    async def _connect(self) -> None:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(self.path, limit=_LINE_LIMIT), self.timeout
            )
        except (OSError, TimeoutError) as exc:
            raise StoreError(f"pod counters unreachable: {type(exc).__name__}") from None
        self._writer = writer
        self._reader_task = asyncio.ensure_future(self._read(reader, writer))

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answers to admits, first in first out; on EOF or garbage every waiting admit
        fails and the next call connects again."""
        waiting = self._waiting
        try:
            while line := await reader.readline():
                answer = loads(line)
                fut = waiting.popleft() if waiting else None
                if fut is not None and not fut.done():  # done: its caller timed out
                    fut.set_result(answer)
        except (OSError, ValueError, JSONDecodeError, asyncio.LimitOverrunError):
            pass
        finally:
            if self._writer is writer:
                self._writer = None
            writer.close()
            while waiting:
                fut = waiting.popleft()
                if not fut.done():
                    fut.set_exception(StoreError("pod counters connection lost"))

    async def admit(self, counters: list[Counter], n_requests: int) -> tuple[bool, list[int]]:
        line = _line("a", n_requests, counters)
        writer = await self._connection()
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.append(fut)
        writer.write(line)
        try:
            answer = await asyncio.wait_for(fut, self.timeout)
        except TimeoutError:
            raise StoreError("pod counters did not answer in time") from None
        try:
            ok, values = answer
            return bool(ok), [int(v) for v in values]
        except (TypeError, ValueError):  # not our supervisor's answer: never a 500
            raise StoreError("pod counters answered nonsense") from None

    def spend(self, counters: list[Counter], tokens: int) -> Awaitable[None] | None:
        writer = self._writer
        if writer is not None and not writer.is_closing():
            writer.write(_line("s", tokens, counters))
            return None
        return self._spend_connected(_line("s", tokens, counters))

    async def _spend_connected(self, line: bytes) -> None:
        (await self._connection()).write(line)

    async def close(self) -> None:
        self._closed = True
        if self._writer is not None:
            self._writer.close()
        if self._reader_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task


class CounterServer:
    """The supervisor side: one `LocalStore` for every worker."""

    def __init__(self) -> None:
        self.store = LocalStore()
        self._server: asyncio.AbstractServer | None = None
        self._conns: dict[asyncio.StreamWriter, asyncio.Task[Any]] = {}

    async def start(self, path: str) -> None:
        self._server = await asyncio.start_unix_server(self._serve, path, limit=_LINE_LIMIT)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns[writer] = task
        store = self.store
        try:
            while line := await reader.readline():
                op, n, raw = loads(line)
                counters = [Counter(*c) for c in raw]
                if op == "a":
                    # LocalStore.admit never awaits: each admit is atomic for the pod.
                    ok, values = await store.admit(counters, n)
                    writer.write(dumps([ok, values]) + b"\n")
                    if writer.transport.get_write_buffer_size() > _LINE_LIMIT:
                        await writer.drain()  # a worker that stopped reading
                elif op == "s":
                    store.spend(counters, n)
                else:
                    raise ValueError(op)
        except (OSError, ValueError, TypeError, JSONDecodeError, asyncio.LimitOverrunError):
            # Only our workers can reach the socket: this is a bug or a dying worker.
            log.debug("pod counters: dropped a connection", exc_info=True)
        finally:
            self._conns.pop(writer, None)
            writer.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            tasks = list(self._conns.values())
            for w in list(self._conns):
                w.close()
            # Each handler sees its EOF and ends; none is left for the loop to cancel.
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._server.wait_closed()
