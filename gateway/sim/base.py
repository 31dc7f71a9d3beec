"""Shared machinery of the simulated upstreams: behaviour knobs, the token model, the
request log and the one streaming loop every server kind uses.

The fakes are deterministic on purpose: a test can predict the exact text, token counts
and finish reason of any request from `Behaviour` and the request body alone.
"""

from __future__ import annotations

import asyncio
import contextlib
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


@dataclass
class Behaviour:
    """Knobs a test flips between requests (or replaces wholesale).

    Everything except `loading` applies to generation requests only (non-GET), so
    health probes keep answering normally. The *_after knobs count token frames and
    affect streaming responses only.
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


class Core:
    """State and behaviour shared by every kind; the dialects add the wire formats."""

    def __init__(
        self,
        kind: str,
        models: Sequence[str],
        text: str | None,
        behaviour: Behaviour | None,
        api_key: str | None,
    ) -> None:
        self.kind = kind
        self.models = list(models)
        self.text = text if text is not None else DEFAULT_TEXT
        self.behaviour = behaviour if behaviour is not None else Behaviour()
        self.api_key = api_key
        self.received: list[Received] = []
        self.cancelled = 0
        self.active_streams = 0
        self.stream_cancelled = asyncio.Event()
        # Generations in progress, streaming or not (llama.cpp /slots and /metrics).
        self.busy = 0
        self.prompt_tokens_total = 0
        self.predicted_tokens_total = 0
        # Set by stop(): streams it cancels were not abandoned by their client.
        self.stopping = False

    def expected_text(self, n: int) -> str:
        return "".join(tokenize(self.text, n))

    @staticmethod
    def count_prompt_tokens(body: Any) -> int:
        return count_prompt_tokens(body)

    def generation_requests(self) -> list[Received]:
        return [r for r in self.received if r.method not in ("GET", "HEAD")]

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

    async def generate(self, plan: Plan) -> None:
        """Non-stream: spend the time the tokens would have taken."""
        self.account(plan)
        self.busy += 1
        try:
            if self.behaviour.token_interval > 0 and plan.n:
                await asyncio.sleep(self.behaviour.token_interval * plan.n)
        finally:
            self.busy -= 1

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
    ) -> web.StreamResponse:
        """Write a stream frame by frame, applying the streaming fault knobs.

        `tokens` is consumed lazily so per-frame timestamps are real; `final` is called
        only once every token is out. die/error/stall counts refer to token frames.
        `headers` replace the default Cache-Control. `close_after` closes the
        connection once the stream is over without saying so in the headers (as
        llama-server does), so a client that pools it finds it dead on reuse.
        """
        if plan is not None:
            self.account(plan)
        extra = {"Cache-Control": "no-cache"} if headers is None else dict(headers)
        resp = web.StreamResponse(headers={"Content-Type": content_type, **extra})
        self.active_streams += 1
        self.busy += 1
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
                if sent and self.behaviour.token_interval > 0:
                    await asyncio.sleep(self.behaviour.token_interval)
                await self._write(resp, frame)
                sent += 1
            if await self._interrupted(request, resp, sent, error):
                return resp
            for frame in final():
                await self._write(resp, frame)
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
            self.busy -= 1

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

    def model_of(self, request: web.Request) -> str:
        body = body_of(request)
        model = body.get("model") if body is not None else None
        if isinstance(model, str) and model:
            return model
        return self.core.models[0] if self.core.models else "unknown"
