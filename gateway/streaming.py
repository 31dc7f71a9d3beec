"""Relay one upstream stream to the client as OpenAI SSE (SPEC §5).

Until the first client event exists nothing is committed, so a failure there is a
`StreamFailure` the attempt loop may fail over; after it, failures end the stream with
one error event. Each event is written (and so flushed) as soon as the decoder makes it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from .adapters.base import StreamDecoder, Usage
from .http1 import Response, UpstreamError
from .jsonutil import dumps
from .upstream import Failure, classify

log = logging.getLogger("llama_gateway")

SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # tells nginx-style proxies in front of us not to buffer
}
SHUTDOWN_MESSAGE = "gateway is shutting down"


class StreamFailure(Exception):
    """The stream failed before anything reached the client (may fail over)."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.detail)
        self.failure = failure


@dataclass(slots=True)
class StreamResult:
    """Filled in by `relay_stream`; the caller owns it so it is readable even when the
    relay ends by cancellation (client disconnect)."""

    response: web.StreamResponse | None = None
    usage: Usage | None = None
    error: str | None = None  # set when the stream ended with an error event
    first_event_at: float = 0.0
    cancelled: bool = False  # the client went away


def error_event(message: str) -> bytes:
    return b"data: " + dumps({"error": {"message": message}}) + b"\n\n"


async def _first_events(upstream: Response, decoder: StreamDecoder) -> list[bytes]:
    try:
        while True:
            data = await upstream.readany()
            events = decoder.feed(data) if data else decoder.finish()
            if events or not data:
                break
    except UpstreamError as exc:
        raise StreamFailure(classify(exc)) from None
    except (ValueError, TypeError, KeyError, AttributeError):
        log.exception("stream decoder failed")
        raise StreamFailure(
            Failure("invalid_header", "invalid", "unreadable upstream stream")
        ) from None
    if decoder.error is not None and len(events) <= 1:
        # An error before any token (e.g. Ollama's out-of-memory line) is a failed attempt;
        # the decoder's one error event is then all there is.
        raise StreamFailure(Failure("error", "midstream", decoder.error))
    return events


async def relay_stream(
    request: web.Request,
    upstream: Response,
    decoder: StreamDecoder,
    headers: dict[str, str],
    closing: Callable[[], bool],
    clock: Callable[[], float],
    result: StreamResult,
) -> web.StreamResponse:
    """Relay until the decoder is done, the upstream fails or the client leaves.

    `closing()` tells a cancellation by the gateway's own shutdown (end the stream with
    an error event) from a client disconnect (just stop).
    """
    events = await _first_events(upstream, decoder)
    resp = result.response = web.StreamResponse(status=200, headers={**SSE_HEADERS, **headers})
    try:
        result.first_event_at = clock()
        await resp.prepare(request)
        await resp.write(b"".join(events))
        while not decoder.done and decoder.error is None:
            try:
                data = await upstream.readany()
            except UpstreamError as exc:
                failure = classify(exc)
                decoder.error = (
                    "upstream timed out" if failure.is_timeout else "upstream connection lost"
                )
                await resp.write(error_event(decoder.error))
                break
            try:
                events = decoder.feed(data) if data else decoder.finish()
            except Exception:
                # A frame the decoder did not expect must not break the HTTP framing
                # of a committed stream: end it with the error event instead.
                log.exception("stream decoder failed")
                decoder.error = "transformation failed: unreadable upstream frame"
                events = [error_event(decoder.error)]
            if events:
                await resp.write(b"".join(events))
            if not data:
                break
        await resp.write_eof()
    except asyncio.CancelledError:
        upstream.close()
        result.usage = decoder.usage
        if not closing():
            result.cancelled = True
            raise
        # Our own shutdown ran out of drain time: tell the client, then end cleanly.
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        decoder.error = SHUTDOWN_MESSAGE
        try:
            await resp.write(error_event(SHUTDOWN_MESSAGE))
            await resp.write_eof()
        except ConnectionError:
            pass
    except ConnectionError:
        # The client went away while we wrote; stop generating upstream at once.
        upstream.close()
        result.cancelled = True
    result.usage = decoder.usage
    result.error = decoder.error
    return resp
