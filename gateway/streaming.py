"""Relay one upstream stream to the client (OpenAI SSE, or what the decoder makes).

Until the first client event exists nothing is committed, so a failure there is
returned as a `Failure` the attempt loop may fail over; after it, failures end the
stream with one error event. Each event is written (and so flushed) as soon as the
decoder makes it. The relay returns what happened (`StreamEnd`); it never reports to
the balancer or the request record itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from balancers import Reason

from .adapters.base import StreamDecoder, Usage
from .errors import SHUTDOWN, UNREADABLE_FRAME
from .failure import Failure, classify, unreadable
from .framing import FrameTooLarge
from .http1 import Response, UpstreamError
from .jsondepth import TOO_DEEP_ANSWER, encoder_refused_depth

log = logging.getLogger("llama_gateway")

STREAM_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # tells nginx-style proxies in front of us not to buffer
}
TOO_DEEP_FRAME = "transformation failed: " + TOO_DEEP_ANSWER
# Exceptions an adapter (its parse() or decoder) must never raise: our bug, not the
# upstream's (attempt.py uses them too).
ADAPTER_BUGS = (ValueError, TypeError, KeyError, AttributeError, IndexError)


class AdapterBug(Exception):
    """An adapter raised something it never should: our bug, not the upstream's."""


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """How a committed stream ended."""

    response: web.StreamResponse
    first_event_at: float
    usage: Usage | None  # None when the final frame never came
    text_len: int  # characters of generated text relayed (for estimates)
    error: str | None = None  # the error event's text, when the stream ended with one
    failure: Reason | None = None  # set when the upstream broke the stream
    cancelled: bool = False  # the client went away (by cancellation: the caller re-raises)
    shutdown: bool = False  # ended by our own shutdown


async def _first_events(
    upstream: Response, decoder: StreamDecoder, target: str
) -> list[bytes] | Failure:
    try:
        while True:
            data = await upstream.readany()
            events = decoder.feed(data) if data else decoder.finish()
            if events or not data:
                break
    except UpstreamError as exc:
        return classify(exc)
    except FrameTooLarge as exc:
        # Like an oversized body: the upstream is not usable (502), not unreadable (500).
        return Failure("invalid_header", Reason.INVALID, str(exc))
    except ADAPTER_BUGS as exc:
        if encoder_refused_depth(exc):  # the upstream's JSON nests past what we can write
            return unreadable(TOO_DEEP_ANSWER)
        raise AdapterBug(target) from exc
    if decoder.error is not None and len(events) <= 1:
        # An error before any token (e.g. Ollama's out-of-memory line) is a failed attempt;
        # the decoder's one error event is then all there is.
        return Failure("error", Reason.MIDSTREAM, decoder.error)
    return events


async def relay_stream(
    request: web.BaseRequest,
    upstream: Response,
    decoder: StreamDecoder,
    headers: dict[str, str],
    closing: Callable[[], bool],
    clock: Callable[[], float],
    target: str,
) -> StreamEnd | Failure:
    """Relay until the decoder is done, the upstream fails or the client leaves.

    `closing()` tells a cancellation by the gateway's own shutdown (end the stream with
    an error event) from a client disconnect (just stop). Raises AdapterBug when the
    decoder fails before anything was committed.
    """
    first = await _first_events(upstream, decoder, target)
    if isinstance(first, Failure):
        return first
    resp = web.StreamResponse(
        status=200,
        headers={"Content-Type": decoder.content_type, **STREAM_HEADERS, **headers},
    )
    first_at = clock()
    error: str | None = None
    failure: Reason | None = None
    cancelled = shutdown = False
    try:
        await resp.prepare(request)
        await resp.write(b"".join(first))
        while not decoder.done and decoder.error is None:
            try:
                data = await upstream.readany()
                events = decoder.feed(data) if data else decoder.finish()
            except UpstreamError as exc:
                timed_out = classify(exc).is_timeout
                error = "upstream timed out" if timed_out else "upstream connection lost"
                events, failure = [decoder.error_event(error)], Reason.MIDSTREAM
                data = b""
            except FrameTooLarge as exc:
                error, failure = str(exc), Reason.MIDSTREAM
                events, data = [decoder.error_event(error)], b""
            except Exception as exc:
                if encoder_refused_depth(exc):
                    error, failure = TOO_DEEP_FRAME, Reason.INVALID
                else:
                    # Our decoder's bug must not break the HTTP framing of a committed
                    # stream: end it with the error event; not the upstream's fault.
                    log.exception("stream decoder failed (target %s)", target)
                    error = UNREADABLE_FRAME
                events, data = [decoder.error_event(error)], b""
            if events:
                await resp.write(b"".join(events))
            if not data:
                break
        await resp.write_eof()
    except asyncio.CancelledError:
        upstream.close()
        if not closing():
            cancelled = True
        else:
            # Our own shutdown ran out of drain time: tell the client, then end cleanly.
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            error, shutdown = SHUTDOWN, True
            try:
                await resp.write(decoder.error_event(SHUTDOWN))
                await resp.write_eof()
            except ConnectionError:
                pass
    except ConnectionError:
        # The client went away while we wrote; stop generating upstream at once.
        upstream.close()
        cancelled = True
    if error is None and decoder.error is not None:
        error, failure = decoder.error, Reason.MIDSTREAM  # an in-band upstream error
    return StreamEnd(
        response=resp,
        first_event_at=first_at,
        usage=decoder.usage,
        text_len=decoder.completion_text_len,
        error=error,
        failure=failure,
        cancelled=cancelled,
        shutdown=shutdown,
    )
