"""`Behaviour`: the knobs a test flips to make a fake slow, wrong or broken, and how a
stream applies the per-frame ones (cut, error, stall, split writes).

The knobs and the code that honours them live together so a knob's meaning is read in
one place; the streaming loop in base.py only asks, frame by frame, what to do.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiohttp import web

from gateway.sim.wire import abort

# Pause between the pieces of a split frame: long enough that the reader's recv()
# returns the first piece on its own (loopback delivers within microseconds).
SPLIT_PAUSE = 0.02


@dataclass
class Behaviour:
    """Knobs a test flips between requests (or replaces wholesale).

    Everything except `loading` applies to generation requests only (non-GET), so
    health probes keep answering normally. The *_after knobs count token frames and
    affect streaming responses only.

    `tokens_per_second` is one slot's generation speed: once a generation has its slot,
    token k (from 1) is due k / tokens_per_second seconds later, streamed or not, so
    a generation of n tokens holds its slot n / tokens_per_second seconds whatever else
    runs. None keeps the older timing: `token_interval` between stream frames.
    """

    status: int | None = None
    error_body: bytes | None = None
    delay: float = 0.0
    token_interval: float = 0.0
    n_tokens: int = 8
    split_writes: bool = False
    die_after: int | None = None
    error_after: int | None = None
    drop_connection: bool = False
    loading: bool = False
    stall_after: int | None = None
    tokens_per_second: float | None = None


async def interrupted(
    b: Behaviour, request: web.Request, resp: web.StreamResponse, sent: int, error: bytes
) -> bool:
    """Whether the stream ends here, `sent` token frames in: cut, or an error frame
    written instead of the next token. A stall never returns."""
    if b.die_after is not None and sent >= b.die_after:
        abort(request)
        return True
    if b.error_after is not None and sent >= b.error_after:
        await write(b, resp, error)
        return True
    if b.stall_after is not None and sent >= b.stall_after:
        # Only the client going away (handler cancellation) or stop() ends this.
        await asyncio.Event().wait()
    return False


async def write(b: Behaviour, resp: web.StreamResponse, frame: bytes) -> None:
    if not b.split_writes or len(frame) < 3:
        await resp.write(frame)
        return
    third = len(frame) // 3
    for i, part in enumerate((frame[:third], frame[third : 2 * third], frame[2 * third :])):
        if i:
            await asyncio.sleep(SPLIT_PAUSE)
        await resp.write(part)
