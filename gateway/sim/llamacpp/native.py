"""llama-server's native generation and embeddings: `/completion` (one SSE event per
generated token, with its id, then the final event carrying the timings) and
`/embedding`; also the timings and held-back text its `/v1` layer reports the same way.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Iterator
from typing import Any

from aiohttp import web

from gateway.sim.base import Core
from gateway.sim.embed import llamacpp_items, on_slot, token_vectors
from gateway.sim.embed import vector as embed_vector
from gateway.sim.llamacpp.errors import (
    BAD_PROMPT,
    EMPTY_CONTENT,
    JSON_TYPE,
    NO_EMBEDDINGS,
    NO_INPUT,
    error,
    error_obj,
    json_error,
    prompt_error,
)
from gateway.sim.llamacpp.state import Binder, Embeddings, Slot, generation_settings, server_model
from gateway.sim.openai import sse
from gateway.sim.tokens import Plan, as_int, as_stops
from gateway.sim.wire import body_of, json_response, received_of

_STOP_TYPES = {"length": "limit", "eos": "eos", "stop": "word"}
_PROMPT_MS_PER_TOKEN = 0.2
_PREDICT_MS_PER_TOKEN = 1.0
# Stream headers as llama-server sends them: `Keep-Alive`, yet it closes afterwards.
STREAM_HEADERS = {"X-Accel-Buffering": "no", "Keep-Alive": "timeout=5, max=100"}
_EOS_ID = 2  # Llama's </s>
_FIRST_WORD_ID = 259  # after <unk>, <s>, </s> and the 256 byte tokens
_VOCAB = 32000


class Native:
    """The native endpoints, bound to the core, the slots and the embeddings setup."""

    def __init__(self, core: Core, slots: list[Slot], embeddings: Embeddings) -> None:
        self.core = core
        self.slots = slots
        self.embeddings = embeddings

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/completion", self.completion),
            web.post("/completions", self.completion),
            web.post("/embedding", self.embedding),
            web.post("/embeddings", self.embedding),
        ]

    async def completion(self, request: web.Request) -> web.StreamResponse:
        body = body_of(request)
        if body is None:
            return error(400, json_error(received_of(request).body))
        message = prompt_error(body)
        if message is not None:
            return error(400, message)
        n_predict = body.get("n_predict", body.get("max_tokens"))
        stops = as_stops(body.get("stop"))
        plan = self.core.plan(body, as_int(n_predict), stops)
        settings = generation_settings(body, n_predict, stops)
        binder = Binder(self.slots, settings)
        binder.plan = plan
        prompt = body["prompt"] if isinstance(body["prompt"], str) else ""
        reply = _Reply(server_model(self.core), plan, settings, prompt, binder)
        if not settings["stream"]:
            await self.core.generate(plan, on_slot=binder.bind)
            return json_response(reply.final(plan.text), 200, JSON_TYPE)
        return await self.core.stream(
            request,
            "text/event-stream",
            tokens=reply.events(),
            final=reply.final_events,
            error=sse(error_obj(500, "llama_decode failed")),
            plan=plan,
            headers=STREAM_HEADERS,
            close_after=True,
            on_slot=binder.bind,
        )

    async def embedding(self, request: web.Request) -> web.Response:
        """Native `/embedding`: `[{"index":i,"embedding":[[…]]}]`, one row per input when
        pooled, one per token with pooling none; no token counts."""
        if not self.embeddings.enabled:
            return error(501, NO_EMBEDDINGS)
        body = body_of(request)
        if body is None:
            return error(400, json_error(received_of(request).body))
        value = body.get("input", body.get("content"))
        if value is None:
            return error(400, NO_INPUT)
        if value == []:
            return error(400, EMPTY_CONTENT)
        items = llamacpp_items(value)
        if items is None:
            return error(400, BAD_PROMPT)
        per_token = self.embeddings.pooling == "none"
        async with on_slot(self.core):
            data = [
                {"index": i, "embedding": token_vectors(it) if per_token else [embed_vector(it)]}
                for i, it in enumerate(items)
            ]
        return json_response(data, 200, JSON_TYPE)


def _token_id(token: str) -> int:
    """A stable vocabulary id for a word token."""
    return _FIRST_WORD_ID + zlib.crc32(token.encode()) % (_VOCAB - _FIRST_WORD_ID)


def timings_of(plan: Plan, started: float) -> dict[str, float | int]:
    p, n = plan.prompt_tokens, plan.n_predicted
    prompt_ms = p * _PROMPT_MS_PER_TOKEN
    predicted_ms = max((time.perf_counter() - started) * 1000, n * _PREDICT_MS_PER_TOKEN)
    return {
        "cache_n": 0,
        "prompt_n": p,
        "prompt_ms": prompt_ms,
        "prompt_per_token_ms": prompt_ms / p if p else 0.0,
        "prompt_per_second": p * 1000 / prompt_ms if prompt_ms else 0.0,
        "predicted_n": n,
        "predicted_ms": predicted_ms,
        "predicted_per_token_ms": predicted_ms / n if n else 0.0,
        "predicted_per_second": n * 1000 / predicted_ms if predicted_ms else 0.0,
    }


def eos_text(plan: Plan) -> str:
    """Text still held back (a possible stop-string start) when EOS came: the EOS token
    releases it."""
    return plan.text[len("".join(plan.released)) :]


class _Reply:
    """The native `/completion` answer: one event per generated token (EOS included)
    with its id, then the final event."""

    def __init__(
        self, model: str, plan: Plan, settings: dict[str, Any], prompt: str, binder: Binder
    ) -> None:
        self.model = model
        self.plan = plan
        self.settings = settings
        self.prompt = prompt
        self.binder = binder
        self.started = time.perf_counter()

    def final(self, content: str) -> dict[str, Any]:
        plan = self.plan
        return {
            "index": 0,
            "content": content,
            "tokens": [],
            "id_slot": self.binder.id_slot,
            "stop": True,
            "model": self.model,
            "tokens_predicted": plan.n_predicted,
            "tokens_evaluated": plan.prompt_tokens,
            "generation_settings": self.settings,
            "prompt": self.prompt,
            "has_new_line": "\n" in plan.text,
            "truncated": False,
            "stop_type": _STOP_TYPES[plan.finish],
            "stopping_word": plan.stop_word,
            # The last token sampled is not decoded into the cache.
            "tokens_cached": plan.prompt_tokens + max(plan.n_predicted - 1, 0),
            "timings": timings_of(plan, self.started),
        }

    def events(self) -> Iterator[bytes]:
        plan = self.plan
        pieces = [
            (_token_id(tok), text) for tok, text in zip(plan.generated, plan.released, strict=True)
        ]
        if plan.finish == "eos":
            pieces.append((_EOS_ID, eos_text(plan)))
        for i, (token_id, text) in enumerate(pieces):
            self.binder.decoded(i + 1)
            event: dict[str, Any] = {
                "index": 0,
                "content": text,
                "tokens": [token_id],
                "stop": False,
                "id_slot": -1,
                "tokens_predicted": i + 1,
                "tokens_evaluated": plan.prompt_tokens,
            }
            if plan.finish == "stop" and i == len(pieces) - 1:
                # The stop string ends generation inside this token: timings come now.
                event["timings"] = timings_of(plan, self.started)
            yield sse(event)

    def final_events(self) -> list[bytes]:
        return [sse(self.final(""))]
