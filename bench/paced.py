"""Open-loop load at a fixed rate over keep-alive connections (bench/workers.py).

Each of `concurrency` connections sends on its own schedule, `concurrency / rate`
seconds apart, the schedules staggered evenly. A late answer delays that connection's
next send but not its schedule: latency is counted from the scheduled time, so a
proxy that falls behind shows it (no coordinated omission). wrk cannot pace; this
reuses bench/client.py's raw-asyncio connection.
"""

from __future__ import annotations

import asyncio
import time

import client


class _PacedConn(client._LoadConn):
    def __init__(self, run: client._Run, interval: float, offset: float) -> None:
        super().__init__(run)
        self.interval = interval
        self.due = time.perf_counter() + offset

    def _next(self) -> None:
        run = self.run
        assert self.transport is not None
        if run.sent >= run.max_requests or self.due >= run.deadline:
            self.closed = True
            self.transport.close()
            return
        wait = self.due - time.perf_counter()
        if wait > 0:
            asyncio.get_running_loop().call_later(wait, self._send)
        else:
            self._send()

    def _send(self) -> None:
        assert self.transport is not None
        self.run.sent += 1
        self.buf = b""
        self.need = -1
        self.t0 = self.due
        self.due += self.interval
        self.transport.write(self.run.req)


async def paced_load(
    port: int, path: str, body: bytes, concurrency: int, rate: float, duration: float
) -> client.LoadResult:
    loop = asyncio.get_running_loop()
    req = client.request_bytes("POST", path, port, body)
    start = time.perf_counter()
    run = client._Run(req, start + duration, 10_000_000)
    run.open = concurrency
    interval = concurrency / rate

    def conn(i: int) -> _PacedConn:
        return _PacedConn(run, interval, i * interval / concurrency)

    made = await asyncio.gather(
        *(
            loop.create_connection(lambda i=i: conn(i), client.HOST, port)
            for i in range(concurrency)
        ),
        return_exceptions=True,
    )
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
