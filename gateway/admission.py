"""The admission queue: late binding of requests to targets with a free slot.

When every target a request may use is at its capacity (`max_concurrency`), the request
waits here instead of being bound to a busy box. Whenever a slot frees (an attempt ends,
anywhere on the route) the queue is served in order, highest priority first and oldest
first within a priority: each waiter gets a target picked *then*, by the route's
algorithm, among the targets its model allows that have a slot. A waiter no free target
fits is skipped, so a request for another model is not blocked behind it.

Priorities are strict: while higher-priority requests keep arriving faster than slots
free, lower ones wait until their queue timeout (then 503). Nothing ages them up; an
operator who needs that keeps high priority rare.

New arrivals never overtake: they are admitted only after the waiters were served.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from balancers import Balancer, PickContext, TargetState

from . import errors
from .config.schema import PRIORITY_RANGE, QueueConfig
from .errors import GatewayError

KICK = 0.25  # seconds: re-check waiters while any wait (breakers reopening, load signals)


class QueueRejected(GatewayError):
    """429 (queue full) or 503 (waited too long); `reason` is the metric label."""

    def __init__(self, status: int, message: str, reason: str) -> None:
        super().__init__(status, message, {"Retry-After": "1"})
        self.reason = reason


@dataclass(order=True, slots=True)
class _Waiter:
    key: tuple[int, int]  # (-priority, arrival number): heap order
    candidates: list[TargetState] = field(compare=False)
    ctx: PickContext = field(compare=False)
    fut: asyncio.Future[TargetState] = field(compare=False)
    since: float = field(compare=False)


class Admission:
    """One route's queue. `admit()` returns a picked target (the pick is the caller's
    to report or release, as with `Balancer.pick`)."""

    def __init__(
        self,
        route: str,
        balancer: Balancer,
        cfg: QueueConfig | None,
        clock: Callable[[], float],
    ) -> None:
        self.route = route
        self.balancer = balancer
        self.cfg = cfg
        self.clock = clock
        self._heap: list[_Waiter] = []
        self._seq = itertools.count()
        self._kick: asyncio.TimerHandle | None = None
        balancer.on_free = self._freed

    @property
    def depth(self) -> int:
        return len(self._heap)

    def oldest_wait(self) -> float:
        """Seconds the longest-waiting request has waited (0 when none waits)."""
        if not self._heap:
            return 0.0
        return self.clock() - min(w.since for w in self._heap)

    async def admit(
        self, candidates: list[TargetState], ctx: PickContext, priority: int = 0
    ) -> tuple[TargetState | None, float | None]:
        """A target for the next attempt, waiting for a free slot if every usable one is
        full, and the seconds waited (None: not queued). No target when no candidate is
        usable at all (down, circuit open): the caller answers that as before. Raises
        QueueRejected."""
        if self._heap:
            self._serve()  # those already waiting go first
        if not self._heap:
            state = self.balancer.pick(candidates, ctx)
            if state is not None:
                return state, None
        if not self._usable(candidates):
            return None, None
        cfg = self.cfg
        if cfg is None or len(self._heap) >= cfg.max_size:
            raise QueueRejected(429, errors.queue_full(self.route, cfg is not None), "full")
        loop = asyncio.get_running_loop()
        w = _Waiter(
            (-priority, next(self._seq)), candidates, ctx, loop.create_future(), self.clock()
        )
        heapq.heappush(self._heap, w)
        self._arm(loop)
        got = False
        try:
            async with asyncio.timeout(cfg.timeout / 1000):
                state = await w.fut
            got = True
            return state, self.clock() - w.since
        except TimeoutError:
            raise QueueRejected(
                503, errors.queue_timeout(self.route, cfg.timeout), "timeout"
            ) from None
        finally:
            if not w.fut.done():
                w.fut.cancel()
                self._remove(w)
            elif not got and not w.fut.cancelled():
                # Dispatched in the same moment the wait ended (timeout, client gone):
                # the pick was never used.
                self.balancer.release(w.fut.result())

    # ------------------------------------------------------------------ dispatch

    def _freed(self, state: TargetState) -> None:
        if self._heap:
            self._serve()

    def _serve(self) -> None:
        """Give every waiter that fits a free slot its target, in queue order."""
        kept: list[_Waiter] = []
        heap = self._heap
        while heap:
            w = heapq.heappop(heap)
            if w.fut.done():
                continue  # gone (timed out or cancelled)
            state = self.balancer.pick(w.candidates, w.ctx)
            if state is None:
                kept.append(w)
            else:
                w.fut.set_result(state)
        for w in kept:
            heapq.heappush(heap, w)

    def _usable(self, candidates: list[TargetState]) -> bool:
        """Some candidate is up (it only lacks a slot): worth waiting for."""
        now = self.clock()
        return any(s.available(now) for s in candidates)

    def _remove(self, w: _Waiter) -> None:
        try:
            self._heap.remove(w)
        except ValueError:
            return
        heapq.heapify(self._heap)

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._kick is None:
            self._kick = loop.call_later(KICK, self._on_kick, loop)

    def _on_kick(self, loop: asyncio.AbstractEventLoop) -> None:
        self._kick = None
        self._serve()
        if self._heap:
            self._arm(loop)

    def close(self) -> None:
        if self._kick is not None:
            self._kick.cancel()
            self._kick = None


def priority_of(headers: Mapping[str, str], queue: QueueConfig | None) -> int:
    """The request's queue priority (higher first); 400 when the header is not a small
    integer. 0 without the header or without a queue."""
    if queue is None:
        return 0
    raw = headers.get(queue.priority_header)
    if raw is None:
        return 0
    lo, hi = PRIORITY_RANGE
    try:
        value = int(raw.strip())
    except ValueError:
        value = hi + 1
    if not lo <= value <= hi:
        raise GatewayError(400, errors.bad_priority(queue.priority_header, lo, hi))
    return value
