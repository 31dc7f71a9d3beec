"""The server's generation slots and the FIFO queue in front of them (`SlotPool`), and
the refusal a full queue gives (`QueueFull`).

Apart from the streaming loop because it is the one piece of real concurrency in the
fakes: tests of the gateway's admission and balancing read its high-water marks
(`max_active`, `max_held`) to prove the gateway never sent more than a server runs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque


class QueueFull(Exception):
    """A generation refused because the server's queue is full (Ollama's 503); raised
    before any response byte, so the dialect can still answer with its own error."""


class SlotPool:
    """The server's generation slots (llama-server `--parallel`, OLLAMA_NUM_PARALLEL)
    and the FIFO queue in front of them, as real servers hold what they cannot run yet.

    `size` None: unlimited, every generation starts at once on slot 0 (one slot is all
    the llama.cpp fake showed before slots existed). `queue_limit`: how many may wait
    before a newcomer is refused with `QueueFull`; None waits without limit.
    """

    def __init__(self, size: int | None, queue_limit: int | None = None) -> None:
        if size is not None and size < 1:
            raise ValueError("slots must be at least 1 (None: unlimited)")
        if queue_limit is not None and queue_limit < 0:
            raise ValueError("queue_limit must be at least 0 (None: unlimited)")
        self.size = size
        self.queue_limit = queue_limit
        self._free = list(range(size or 0))
        self._waiters: deque[asyncio.Future[int]] = deque()
        self.busy_ids: set[int] = set()
        self.active = 0
        # The most generations running at once: never above `size`, by construction.
        self.max_active = 0
        # The most requests held at once, running or queued: above `size` exactly when
        # a client (a gateway) sent more than the server can run.
        self.max_held = 0
        self.started = 0
        self.refused = 0

    @property
    def waiting(self) -> int:
        return sum(1 for w in self._waiters if not w.done())

    async def acquire(self) -> int:
        """Wait for a free slot, in arrival order; the slot's id."""
        if self.size is None:
            return self._start(0)
        if self._free and not self.waiting:
            return self._start(self._free.pop(0))
        if self.queue_limit is not None and self.waiting >= self.queue_limit:
            self.refused += 1
            raise QueueFull
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        self.max_held = max(self.max_held, self.active + self.waiting)
        try:
            slot = await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                # Handed a slot just as the waiter left: the next one gets it.
                self._give(fut.result())
            else:
                fut.cancel()
            with contextlib.suppress(ValueError):
                self._waiters.remove(fut)
            raise
        return self._start(slot)

    def release(self, slot: int) -> None:
        self.active -= 1
        if self.size is None:
            return
        self.busy_ids.discard(slot)
        self._give(slot)

    def _start(self, slot: int) -> int:
        self.active += 1
        self.started += 1
        self.max_active = max(self.max_active, self.active)
        self.max_held = max(self.max_held, self.active + self.waiting)
        if self.size is not None:
            self.busy_ids.add(slot)
        return slot

    def _give(self, slot: int) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(slot)
                return
        self._free.append(slot)
        self._free.sort()
