"""The benchmark's Python clients, on raw asyncio protocols (no HTTP library in the way).

- `load()`: closed-loop keep-alive HTTP/1.1 load at a fixed concurrency, bounded by
  time and request count; the fallback when wrk is not installed (and its capacity is
  reported: `direct` is this generator against the upstream alone).
- `streams()`: streaming clients that time every token chunk by its marker (see
  payloads.py): time to first token, total time, lateness against the upstream's
  schedule. One connection per stream (`Connection: close`), as SDK clients often do.
- `fetch()`: one small request (readiness probes, the upstream's counters).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import payloads

HOST = "127.0.0.1"


def request_bytes(method: str, path: str, port: int, body: bytes, close: bool = False) -> bytes:
    return (
        f"{method} {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        + ("Connection: close\r\n" if close else "")
        + "\r\n"
    ).encode() + body


async def fetch(
    port: int, method: str, path: str, body: bytes = b"", timeout: float = 2.0
) -> tuple[int, bytes]:
    """One request on a fresh connection; (status, body). Raises OSError/TimeoutError."""

    async def go() -> tuple[int, bytes]:
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            writer.write(request_bytes(method, path, port, body, close=True))
            data = await reader.read(-1)
        finally:
            writer.close()
        head, _, rest = data.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1."):
            raise OSError("no HTTP answer")
        if b"transfer-encoding: chunked" in head.lower():
            rest = _dechunk(rest)
        return int(head[9:12]), rest

    return await asyncio.wait_for(go(), timeout)


def _dechunk(data: bytes) -> bytes:
    out, i = [], 0
    while True:
        j = data.find(b"\r\n", i)
        if j < 0:
            return b"".join(out)
        size = int(data[i:j].split(b";")[0] or b"0", 16)
        if size == 0:
            return b"".join(out)
        out.append(data[j + 2 : j + 2 + size])
        i = j + 2 + size + 2


# ------------------------------------------------------------------ non-stream load


@dataclass
class LoadResult:
    requests: int = 0
    errors: int = 0
    non2xx: int = 0
    duration: float = 0.0
    latencies: list[float] = field(default_factory=list)  # seconds

    def summary(self) -> dict[str, float]:
        lat = sorted(self.latencies)
        return {
            "requests": self.requests,
            "errors": self.errors,
            "non2xx": self.non2xx,
            "duration_s": self.duration,
            "rps": self.requests / self.duration if self.duration else 0.0,
            "p50_ms": pct(lat, 50) * 1e3,
            "p99_ms": pct(lat, 99) * 1e3,
            "mean_ms": (sum(lat) / len(lat) * 1e3) if lat else 0.0,
            "max_ms": (lat[-1] * 1e3) if lat else 0.0,
        }


def pct(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(p / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


class _Run:
    def __init__(self, req: bytes, deadline: float, max_requests: int) -> None:
        self.req = req
        self.deadline = deadline
        self.max_requests = max_requests
        self.sent = 0
        self.result = LoadResult()
        self.open = 0
        self.finished = asyncio.get_running_loop().create_future()

    def conn_done(self) -> None:
        self.open -= 1
        if self.open == 0 and not self.finished.done():
            self.finished.set_result(None)


class _LoadConn(asyncio.Protocol):
    """One keep-alive connection sending the same request back to back."""

    def __init__(self, run: _Run) -> None:
        self.run = run
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.need = -1
        self.t0 = 0.0
        self.status = b""
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._next()

    def _next(self) -> None:
        run = self.run
        assert self.transport is not None
        if run.sent >= run.max_requests or time.perf_counter() >= run.deadline:
            self.closed = True
            self.transport.close()
            return
        run.sent += 1
        self.buf = b""
        self.need = -1
        self.t0 = time.perf_counter()
        self.transport.write(run.req)

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        if self.need < 0:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            head = buf[:end].lower()
            self.status = head[9:12]
            i = head.find(b"\r\ncontent-length:")
            if i >= 0:
                j = head.find(b"\r\n", i + 2)
                self.need = end + 4 + int(head[i + 17 : j if j >= 0 else end])
            else:  # chunked: complete at the terminal chunk
                self.need = 0
        if self.need == 0:
            if not buf.endswith(b"\r\n0\r\n\r\n"):
                self.buf = buf
                return
        elif len(buf) < self.need:
            self.buf = buf
            return
        now = time.perf_counter()
        res = self.run.result
        res.requests += 1
        res.latencies.append(now - self.t0)
        if self.status != b"200":
            res.non2xx += 1
        self._next()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.run.result.errors += 1
        self.run.conn_done()


async def load(
    port: int,
    path: str,
    body: bytes,
    concurrency: int,
    duration: float,
    max_requests: int = 10_000_000,
) -> LoadResult:
    """Closed-loop load for `duration` seconds (or `max_requests`), never longer."""
    loop = asyncio.get_running_loop()
    req = request_bytes("POST", path, port, body)
    start = time.perf_counter()
    run = _Run(req, start + duration, max_requests)
    run.open = concurrency
    conns = [loop.create_connection(lambda: _LoadConn(run), HOST, port) for _ in range(concurrency)]
    made = await asyncio.gather(*conns, return_exceptions=True)
    for m in made:
        if isinstance(m, BaseException):
            run.result.errors += 1
            run.conn_done()
    try:
        await asyncio.wait_for(run.finished, duration + 30)
    except TimeoutError:
        for m in made:
            if not isinstance(m, BaseException):
                m[0].abort()
    run.result.duration = time.perf_counter() - start
    return run.result


# ------------------------------------------------------------------ streams


@dataclass
class StreamRecord:
    ok: bool = False
    status: int = 0
    chunks: int = 0
    ttft: float = float("nan")  # request written -> first marker (seconds)
    total: float = float("nan")  # request written -> last byte
    error: str = ""


class _StreamConn(asyncio.Protocol):
    def __init__(self, req: bytes, lateness: list[float], done: asyncio.Future[None]) -> None:
        self.req = req
        self.lateness = lateness
        self.done = done
        self.rec = StreamRecord()
        self.t_send = 0.0
        self.t_last = 0.0
        self.head_seen = False
        self.tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t_send = time.monotonic()
        transport.write(self.req)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        self.t_last = now
        if not self.head_seen:
            self.head_seen = True
            if data.startswith(b"HTTP/1."):
                self.rec.status = int(data[9:12])
        buf = self.tail + data if self.tail else data
        end = 0
        for m in payloads.MARKER.finditer(buf):
            if self.rec.chunks == 0:
                self.rec.ttft = now - self.t_send
            self.rec.chunks += 1
            self.lateness.append(now - int(m.group(1)) / 1e6)
            end = m.end()
        self.tail = buf[max(end, len(buf) - 24) :]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.t_last:
            self.rec.total = self.t_last - self.t_send
        if exc is not None:
            self.rec.error = repr(exc)
        if not self.done.done():
            self.done.set_result(None)


@dataclass
class StreamsResult:
    records: list[StreamRecord] = field(default_factory=list)
    lateness: list[float] = field(default_factory=list)
    duration: float = 0.0

    def summary(self, expected_chunks: int) -> dict[str, float]:
        ok = [r for r in self.records if r.status == 200 and r.chunks == expected_chunks]
        bad = [r for r in self.records if not (r.status == 200 and r.chunks == expected_chunks)]
        ttft = sorted(r.ttft for r in ok)
        total = sorted(r.total for r in ok)
        late = sorted(self.lateness)
        return {
            "streams": len(self.records),
            "complete": len(ok),
            "chunks": sum(r.chunks for r in self.records),
            "duration_s": self.duration,
            "ttft_p50_ms": pct(ttft, 50) * 1e3,
            "ttft_p99_ms": pct(ttft, 99) * 1e3,
            "total_p50_ms": pct(total, 50) * 1e3,
            "late_p50_ms": pct(late, 50) * 1e3,
            "late_p99_ms": pct(late, 99) * 1e3,
            "late_max_ms": (late[-1] * 1e3) if late else float("nan"),
            "errors": [r.error or f"status {r.status}, {r.chunks} chunks" for r in bad[:5]],
        }


async def _one_stream(port: int, req: bytes, lateness: list[float], timeout: float) -> StreamRecord:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    proto = _StreamConn(req, lateness, done)
    transport = None
    try:
        transport, _ = await asyncio.wait_for(
            loop.create_connection(lambda: proto, HOST, port), timeout
        )
        await asyncio.wait_for(done, timeout)
    except (OSError, TimeoutError) as exc:
        proto.rec.error = repr(exc) or type(exc).__name__
        if transport is not None:
            transport.abort()
    proto.rec.ok = proto.rec.status == 200 and not proto.rec.error
    return proto.rec


async def streams(
    port: int,
    path: str,
    body: bytes,
    workers: int,
    per_worker: int,
    stagger: float,
    timeout: float,
) -> StreamsResult:
    """`workers` clients, each running `per_worker` streams back to back; worker k starts
    k × `stagger` seconds after the first. Each stream is bounded by `timeout`."""
    req = request_bytes("POST", path, port, body, close=True)
    res = StreamsResult()

    async def worker(k: int) -> None:
        if k and stagger:
            await asyncio.sleep(k * stagger)
        for _ in range(per_worker):
            res.records.append(await _one_stream(port, req, res.lateness, timeout))

    start = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(workers)))
    res.duration = time.perf_counter() - start
    return res
