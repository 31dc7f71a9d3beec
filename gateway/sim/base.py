"""The shared core of the simulated upstreams: `Core` (a server's state, its generation
timing and the one streaming loop every server kind uses) and `Dialect` (what each
kind adds: routes and error shapes).

The rest of the shared machinery lives beside it, one concern a module: tokens.py (the
deterministic token model, `Plan`), behaviour.py (the fault knobs), slots.py (slots and
their queue), wire.py (the request log and answer helpers). Their public names are
re-exported here, where callers have always imported them from.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from aiohttp import web

from gateway.sim.behaviour import SPLIT_PAUSE, Behaviour, interrupted, write
from gateway.sim.slots import QueueFull, SlotPool
from gateway.sim.tokens import (
    DEFAULT_TEXT,
    PER_MESSAGE_TOKENS,
    Plan,
    as_int,
    as_stops,
    count_prompt_tokens,
    make_plan,
    tokenize,
)
from gateway.sim.wire import Received, abort, body_of, json_response, received_of, record

__all__ = [
    "DEFAULT_TEXT",
    "EMBEDDING_PATHS",
    "PER_MESSAGE_TOKENS",
    "SPLIT_PAUSE",
    "Behaviour",
    "Core",
    "Dialect",
    "Plan",
    "QueueFull",
    "Received",
    "SlotPool",
    "abort",
    "as_int",
    "as_stops",
    "body_of",
    "count_prompt_tokens",
    "json_response",
    "received_of",
    "record",
    "tokenize",
]

# Every embeddings endpoint a fake serves (gateway/sim/embed.py computes the answers).
EMBEDDING_PATHS = frozenset(
    {"/api/embed", "/api/embeddings", "/v1/embeddings", "/embedding", "/embeddings"}
)


class Core:
    """State and behaviour shared by every kind; the dialects add the wire formats."""

    def __init__(
        self,
        kind: str,
        models: Sequence[str],
        text: str | None,
        behaviour: Behaviour | None,
        api_key: str | None,
        *,
        slots: int | None = None,
        queue_limit: int | None = None,
        loaded: Sequence[str] | None = None,
    ) -> None:
        self.kind = kind
        self.models = list(models)
        self.text = text if text is not None else DEFAULT_TEXT
        self.behaviour = behaviour if behaviour is not None else Behaviour()
        self.api_key = api_key
        self.received: list[Received] = []
        self.cancelled = 0
        self.active_streams = 0
        # Generations that ran to their end (a stream cut by a fault knob did not).
        self.completed = 0
        self.stream_cancelled = asyncio.Event()
        self.pool = SlotPool(slots, queue_limit)
        # Models in memory (Ollama's /api/ps); a generation loads its model.
        self.loaded = list(self.models if loaded is None else loaded)
        unknown = [m for m in self.loaded if m not in self.models]
        if unknown:
            raise ValueError(f"loaded models {unknown} are not among the models {self.models}")
        self.prompt_tokens_total = 0
        self.predicted_tokens_total = 0
        # Set by stop(): streams it cancels were not abandoned by their client.
        self.stopping = False

    @property
    def busy(self) -> int:
        """Generations holding a slot, streaming or not (llama.cpp /slots, /metrics)."""
        return self.pool.active

    @property
    def waiting(self) -> int:
        """Generations queued for a slot (llama.cpp's `requests_deferred`)."""
        return self.pool.waiting

    @property
    def max_active(self) -> int:
        """The most generations that ever ran at once (never above `slots`)."""
        return self.pool.max_active

    @property
    def max_held(self) -> int:
        """The most generation requests held at once, running or waiting for a slot:
        above `slots` when a client sent more than the server runs at once."""
        return self.pool.max_held

    def expected_text(self, n: int) -> str:
        return "".join(tokenize(self.text, n))

    @staticmethod
    def count_prompt_tokens(body: Any) -> int:
        return count_prompt_tokens(body)

    def generation_requests(self) -> list[Received]:
        """Every request that asks for work (non-GET), embeddings included."""
        return [r for r in self.received if r.method not in ("GET", "HEAD")]

    def embedding_requests(self) -> list[Received]:
        return [r for r in self.received if r.path in EMBEDDING_PATHS and r.method == "POST"]

    def plan(
        self,
        body: Any,
        max_tokens: int | None,
        stops: Sequence[str] = (),
        *,
        keep_stop: bool = False,
    ) -> Plan:
        """The generation this body gets from this server now (see `make_plan`)."""
        return make_plan(
            self.text, self.behaviour.n_tokens, body, max_tokens, stops, keep_stop=keep_stop
        )

    def account(self, plan: Plan) -> None:
        # Only llama.cpp's /metrics shows these, so they count its way.
        self.prompt_tokens_total += plan.prompt_tokens
        self.predicted_tokens_total += plan.n_predicted

    async def generate(self, plan: Plan, on_slot: Callable[[int], None] | None = None) -> None:
        """Non-stream: wait for a slot, then spend the time the tokens would have taken.

        `on_slot` learns which slot the generation got (llama.cpp's /slots shows it).
        Raises `QueueFull` when the queue refuses it.
        """
        slot = await self.pool.acquire()
        try:
            if on_slot is not None:
                on_slot(slot)
            self.account(plan)
            tps = self.behaviour.tokens_per_second
            if tps:
                await asyncio.sleep(plan.n_generated / tps)
            elif self.behaviour.token_interval > 0 and plan.n:
                await asyncio.sleep(self.behaviour.token_interval * plan.n)
            self.completed += 1
        finally:
            self.pool.release(slot)

    async def stream(
        self,
        request: web.Request,
        content_type: str,
        *,
        tokens: Iterable[bytes],
        final: Callable[[], Iterable[bytes]],
        error: bytes,
        head: Sequence[bytes] = (),
        plan: Plan | None = None,
        headers: Mapping[str, str] | None = None,
        close_after: bool = False,
        on_slot: Callable[[int], None] | None = None,
    ) -> web.StreamResponse:
        """Write a stream frame by frame, applying the streaming fault knobs.

        The stream first waits for a slot (raising `QueueFull` when the queue refuses
        it), and only then sends its head: the wait shows as time to first token.
        `tokens` is consumed lazily so per-frame timestamps are real; `final` is called
        only once every token is out. die/error/stall counts refer to token frames.
        `headers` replace the default Cache-Control. `close_after` closes the
        connection once the stream is over without saying so in the headers (as
        llama-server does), so a client that pools it finds it dead on reuse.
        """
        try:
            slot = await self.pool.acquire()
        except asyncio.CancelledError:
            if not self.stopping:
                self._client_gone()
            raise
        try:
            if on_slot is not None:
                on_slot(slot)
            return await self._stream(
                request, content_type, tokens, final, error, head, plan, headers, close_after
            )
        finally:
            self.pool.release(slot)

    async def _stream(
        self,
        request: web.Request,
        content_type: str,
        tokens: Iterable[bytes],
        final: Callable[[], Iterable[bytes]],
        error: bytes,
        head: Sequence[bytes],
        plan: Plan | None,
        headers: Mapping[str, str] | None,
        close_after: bool,
    ) -> web.StreamResponse:
        if plan is not None:
            self.account(plan)
        extra = {"Cache-Control": "no-cache"} if headers is None else dict(headers)
        resp = web.StreamResponse(headers={"Content-Type": content_type, **extra})
        self.active_streams += 1
        tps = self.behaviour.tokens_per_second
        started = asyncio.get_running_loop().time()
        try:
            await resp.prepare(request)
            if close_after:
                # After prepare(), so no `Connection: close` goes out: aiohttp just
                # drops the connection when the response is complete.
                resp.force_close()
            for frame in head:
                await write(self.behaviour, resp, frame)
            sent = 0
            for frame in tokens:
                if await interrupted(self.behaviour, request, resp, sent, error):
                    return resp
                if tps:
                    # Due times from the start, not sleeps in a row: the event loop's
                    # own delays must not slow the slot down.
                    await _sleep_until(started + (sent + 1) / tps)
                elif sent and self.behaviour.token_interval > 0:
                    await asyncio.sleep(self.behaviour.token_interval)
                await write(self.behaviour, resp, frame)
                sent += 1
            if await interrupted(self.behaviour, request, resp, sent, error):
                return resp
            for frame in final():
                await write(self.behaviour, resp, frame)
            self.completed += 1
            return resp
        except ConnectionResetError:
            # The write found the socket gone before the cancellation arrived.
            self._client_gone()
            return resp
        except asyncio.CancelledError:
            if not self.stopping:
                self._client_gone()
            raise
        finally:
            self.active_streams -= 1

    def _client_gone(self) -> None:
        self.cancelled += 1
        self.stream_cancelled.set()


async def _sleep_until(when: float) -> None:
    delay = when - asyncio.get_running_loop().time()
    if delay > 0:
        await asyncio.sleep(delay)


class Dialect:
    """One server kind's routes and error shapes, bound to the shared `Core`."""

    # Paths that answer without credentials even when an api_key is configured.
    public_paths: frozenset[str] = frozenset()

    def __init__(self, core: Core) -> None:
        self.core = core

    def routes(self) -> list[web.RouteDef]:
        raise NotImplementedError

    def status_error(self, status: int, model: str) -> web.Response:
        raise NotImplementedError

    def unauthorized(self) -> web.Response:
        raise NotImplementedError

    def unavailable(self) -> web.Response | None:
        """A state-driven refusal of generation requests (llama.cpp while loading)."""
        return None

    def queue_full(self, request: web.Request) -> web.Response:
        """The answer when the queue refuses a generation (only Ollama has a limit)."""
        return self.status_error(503, self.model_of(request))

    def model_of(self, request: web.Request) -> str:
        body = body_of(request)
        model = body.get("model") if body is not None else None
        if isinstance(model, str) and model:
            return model
        return self.core.models[0] if self.core.models else "unknown"
