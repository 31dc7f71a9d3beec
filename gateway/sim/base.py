"""Shared machinery of the simulated upstreams: behaviour knobs, the token model, the
request log and the one streaming loop every server kind uses.

The fakes are deterministic on purpose: a test can predict the exact text, token counts
and finish reason of any request from `Behaviour` and the request body alone.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from gateway import jsonutil

DEFAULT_TEXT = "The quick brown fox jumps over the lazy dog."
# Chat templates wrap every message in role markers; a fixed overhead keeps counts
# predictable without a real tokenizer.
PER_MESSAGE_TOKENS = 4
# Pause between the pieces of a split frame: long enough that the reader's recv()
# returns the first piece on its own (loopback delivers within microseconds).
SPLIT_PAUSE = 0.02
# Every embeddings endpoint a fake serves (gateway/sim/embed.py computes the answers).
EMBEDDING_PATHS = frozenset(
    {"/api/embed", "/api/embeddings", "/v1/embeddings", "/embedding", "/embeddings"}
)


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


@dataclass
class Received:
    method: str
    path: str
    query: dict[str, str]
    headers: Mapping[str, str]
    body: bytes
    json: Any | None


# Newer aiohttp wants typed request keys (and warns on plain strings); 3.9 has none.
_RECEIVED_KEY: Any = (
    web.RequestKey("sim_received", Received) if hasattr(web, "RequestKey") else "sim_received"
)


@dataclass
class Plan:
    """One generation, decided before the first byte so stream and non-stream agree.

    `finish` is neutral ("length" | "eos" | "stop"); each dialect maps it to its own
    vocabulary (Ollama done_reason, llama.cpp stop_type, TGI finish_reason, OpenAI).
    """

    tokens: list[str]
    finish: str
    stop_word: str
    prompt_tokens: int
    # Every token the model produced (EOS aside): `tokens` are the text kept of them;
    # the one that completed a stop string is cut from the text, yet generated, and
    # llama.cpp, vLLM and llama-cpp-python count it.
    generated: list[str] = field(default_factory=list)
    # What llama.cpp's stream sends with each generated token: text that may be the
    # start of a stop string is held back until the next token settles it (and lost
    # if the length limit comes first); the token completing a stop string sends only
    # the held text before the stop string.
    released: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        # A plan made without them: nothing was cut, nothing held back.
        self.generated = self.generated or list(self.tokens)
        self.released = self.released or list(self.generated)

    @property
    def text(self) -> str:
        return "".join(self.tokens)

    @property
    def n(self) -> int:
        """Tokens whose text is kept (the count Ollama and TGI report)."""
        return len(self.tokens)

    @property
    def n_generated(self) -> int:
        """Tokens generated, a cut stop-string token included (EOS not)."""
        return len(self.generated)

    @property
    def n_predicted(self) -> int:
        """llama.cpp's `tokens_predicted`: the EOS token that ended a generation is
        decoded and counted too."""
        return self.n_generated + (1 if self.finish == "eos" else 0)


def tokenize(text: str, n: int) -> list[str]:
    """The first `n` tokens of `text` repeated: words, each but the first with its space."""
    words = text.split() or ["hello"]
    return [words[i % len(words)] if i == 0 else " " + words[i % len(words)] for i in range(n)]


def _cut(tokens: list[str], pos: int) -> list[str]:
    """The tokens covering text[:pos], the last one truncated if the cut falls inside it."""
    kept: list[str] = []
    start = 0
    for tok in tokens:
        if start + len(tok) > pos:
            if pos > start:
                kept.append(tok[: pos - start])
            break
        kept.append(tok)
        start += len(tok)
    return kept


def _holds_stop_prefix(text: str, stops: Sequence[str]) -> bool:
    """Whether `text` ends with the beginning of a stop string (llama.cpp's partial
    stop match: the text waits for the next token)."""
    return any(text.endswith(s[:k]) for s in stops for k in range(1, len(s) + 1))


def _release(tokens: list[str], stops: Sequence[str], stop_at: int | None) -> list[str]:
    """llama.cpp's streamed text per generated token (see `Plan.released`); `stop_at`
    is where the stop string starts in the text, on the last token."""
    out: list[str] = []
    text, sent = "", 0
    for i, tok in enumerate(tokens):
        text += tok
        if stop_at is not None and i == len(tokens) - 1:
            out.append(text[sent:stop_at])
            break
        if _holds_stop_prefix(text[sent:], stops):
            out.append("")
            continue
        out.append(text[sent:])
        sent = len(text)
    return out


def _words(value: Any) -> int:
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        return sum(_words(item) for item in value)
    if isinstance(value, dict):  # OpenAI content part {"type": "text", "text": ...}
        return _words(value.get("text"))
    if isinstance(value, int) and not isinstance(value, bool):  # llama.cpp token id
        return 1
    return 0


def count_prompt_tokens(body: Any) -> int:
    """Deterministic prompt size: chat = sum(words + PER_MESSAGE_TOKENS) per message;
    prompt-style bodies (prompt/system/inputs) = words + 1 for BOS, 0 when empty."""
    if isinstance(body, bytes | str):
        try:
            body = jsonutil.loads(body)
        except jsonutil.JSONDecodeError:
            return 0
    if not isinstance(body, dict):
        return 0
    messages = body.get("messages")
    if isinstance(messages, list):
        return sum(
            PER_MESSAGE_TOKENS + _words(m.get("content")) for m in messages if isinstance(m, dict)
        )
    n = sum(_words(body.get(key)) for key in ("system", "prompt", "inputs"))
    return n + 1 if n else 0


def as_int(value: Any) -> int | None:
    """A max-tokens field as an int; negative means unlimited (Ollama/llama.cpp -1)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value) if value >= 0 else None


def as_stops(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list):
        return [s for s in value if isinstance(s, str) and s]
    return []


def json_response(
    obj: Any, status: int = 200, content_type: str = "application/json"
) -> web.Response:
    return web.Response(
        body=jsonutil.dumps(obj), status=status, headers={"Content-Type": content_type}
    )


def received_of(request: web.Request) -> Received:
    rec: Received = request[_RECEIVED_KEY]
    return rec


def body_of(request: web.Request) -> dict[str, Any] | None:
    """The request's JSON object, or None when the body is not one (each dialect words
    that error its own way)."""
    doc = received_of(request).json
    return doc if isinstance(doc, dict) else None


async def record(request: web.Request, log: list[Received]) -> Received:
    body = await request.read()
    doc: Any | None = None
    if body:
        with contextlib.suppress(jsonutil.JSONDecodeError):
            doc = jsonutil.loads(body)
    rec = Received(
        method=request.method,
        path=request.path,
        query=dict(request.query),
        headers=request.headers.copy(),
        body=body,
        json=doc,
    )
    log.append(rec)
    request[_RECEIVED_KEY] = rec
    return rec


def abort(request: web.Request) -> web.Response:
    """Close the connection at once, dropping anything not yet sent.

    The returned response is never delivered: aiohttp sees the closing transport when
    it tries to send it and drops it quietly as a premature disconnect.
    """
    if request.transport is not None:
        request.transport.abort()
    return web.Response()


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
        """The model "wants" `n_tokens` tokens then EOS; a cap at or below that is hit
        first (finish "length"), like a real server whose limit check precedes EOS.

        A stop string ends generation early ("stop"); llama.cpp/Ollama/OpenAI cut the
        text before it, TGI (`keep_stop`) keeps the token that completed it.
        """
        wanted = max(self.behaviour.n_tokens, 0)
        capped = max_tokens is not None and max_tokens <= wanted
        tokens = tokenize(self.text, max_tokens if max_tokens is not None and capped else wanted)
        finish, stop_word = ("length" if capped else "eos"), ""
        generated, stop_at = tokens, None
        text = ""
        for i, tok in enumerate(tokens if stops else ()):
            text += tok
            hits = [(text.find(s), s) for s in stops if s in text]
            if not hits:
                continue
            stop_at, stop_word = min(hits)
            finish = "stop"
            generated = tokens[: i + 1]
            tokens = generated if keep_stop else _cut(generated, stop_at)
            break
        return Plan(
            tokens,
            finish,
            stop_word,
            count_prompt_tokens(body),
            generated=generated,
            released=_release(generated, stops, stop_at),
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
                await self._write(resp, frame)
            sent = 0
            for frame in tokens:
                if await self._interrupted(request, resp, sent, error):
                    return resp
                if tps:
                    # Due times from the start, not sleeps in a row: the event loop's
                    # own delays must not slow the slot down.
                    await _sleep_until(started + (sent + 1) / tps)
                elif sent and self.behaviour.token_interval > 0:
                    await asyncio.sleep(self.behaviour.token_interval)
                await self._write(resp, frame)
                sent += 1
            if await self._interrupted(request, resp, sent, error):
                return resp
            for frame in final():
                await self._write(resp, frame)
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

    async def _interrupted(
        self, request: web.Request, resp: web.StreamResponse, sent: int, error: bytes
    ) -> bool:
        b = self.behaviour
        if b.die_after is not None and sent >= b.die_after:
            abort(request)
            return True
        if b.error_after is not None and sent >= b.error_after:
            await self._write(resp, error)
            return True
        if b.stall_after is not None and sent >= b.stall_after:
            # Only the client going away (handler cancellation) or stop() ends this.
            await asyncio.Event().wait()
        return False

    async def _write(self, resp: web.StreamResponse, frame: bytes) -> None:
        if not self.behaviour.split_writes or len(frame) < 3:
            await resp.write(frame)
            return
        third = len(frame) // 3
        for i, part in enumerate((frame[:third], frame[third : 2 * third], frame[2 * third :])):
            if i:
                await asyncio.sleep(SPLIT_PAUSE)
            await resp.write(part)


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
