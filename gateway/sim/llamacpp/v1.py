"""llama-server's OpenAI-compatible `/v1` layer: the shared OpenAI fake with
llama.cpp's error objects and checks, its own chunk shapes (no logprobs, a
`system_fingerprint`, timings on the last chunks) and its slot bookkeeping.
"""

from __future__ import annotations

import secrets
import string
import time
from collections.abc import Callable, Iterator
from typing import Any

from aiohttp import web

from gateway.sim.base import Core
from gateway.sim.embed import Item, openai_items, to_base64, token_count
from gateway.sim.llamacpp.errors import (
    BAD_ENCODING,
    BAD_PROMPT,
    EMPTY_CONTENT,
    JSON_TYPE,
    NO_EMBEDDINGS,
    NO_INPUT,
    POOLING_NONE,
    error_obj,
    json_error,
    prompt_error,
)
from gateway.sim.llamacpp.native import STREAM_HEADERS, eos_text, timings_of
from gateway.sim.llamacpp.state import (
    FINGERPRINT,
    Binder,
    Embeddings,
    Slot,
    generation_settings,
    server_model,
)
from gateway.sim.openai import OpenAIDialect, Reply, sse
from gateway.sim.tokens import Plan, as_stops
from gateway.sim.wire import received_of

_ID_CHARS = string.ascii_letters + string.digits


class LlamaCppOpenAI(OpenAIDialect):
    """llama-server's OpenAI layer: serves its one model under any name (and answers
    with its own), llama.cpp's error objects and its own chunk shapes."""

    stream_type = "text/event-stream"
    json_type = JSON_TYPE
    close_on_error = True
    shortens = False  # llama-server ignores `dimensions`

    def __init__(self, core: Core, slots: list[Slot], embeddings: Embeddings) -> None:
        super().__init__(core, owned_by="llamacpp", any_model=True)
        self.slots = slots
        self.embedding_setup = embeddings

    def check_embeddings(self, body: dict[str, Any]) -> web.Response | None:
        if not self.embedding_setup.enabled:
            return self.error(501, NO_EMBEDDINGS)
        if self.embedding_setup.pooling == "none":
            return self.error(400, POOLING_NONE)
        value = self.embedding_input(body)
        if value is None:
            return self.error(400, NO_INPUT)
        if value == []:
            return self.error(400, EMPTY_CONTENT)
        if openai_items(value) is None:
            return self.error(400, BAD_PROMPT)
        if body.get("encoding_format") not in (None, "float", "base64"):
            return self.error(400, BAD_ENCODING)
        return None

    def embedding_input(self, body: dict[str, Any]) -> Any:
        return body.get("input", body.get("content"))

    def embedding_answer(
        self, model: str, items: list[Item], vectors: list[list[float]], base64: bool
    ) -> dict[str, Any]:
        # llama-server's key order, and a base64 item says so itself.
        n = sum(token_count(item) for item in items)
        data: list[dict[str, Any]] = []
        for i, v in enumerate(vectors):
            item: dict[str, Any] = {"embedding": to_base64(v) if base64 else v}
            item.update({"index": i, "object": "embedding"})
            if base64:
                item["encoding_format"] = "base64"
            data.append(item)
        usage = {"prompt_tokens": n, "total_tokens": n}
        return {"model": model, "object": "list", "usage": usage, "data": data}

    def error_obj(
        self,
        status: int,
        message: str,
        type_: str,
        param: str | None = None,
        code: str | None = None,
    ) -> dict[str, Any]:
        return error_obj(status, message, type_)

    def bad_json(self, request: web.Request, chat: bool) -> web.Response:
        raw = received_of(request).body
        if chat and received_of(request).json is not None:
            return self.error(400, "'messages' is required")  # valid JSON, no object
        return self.error(400, json_error(raw))

    def check(self, body: dict[str, Any], chat: bool) -> web.Response | None:
        if not chat:
            message = prompt_error(body)
            return None if message is None else self.error(400, message)
        if "messages" not in body:
            return self.error(400, "'messages' is required")
        if not isinstance(body["messages"], list):
            return self.error(400, "Expected 'messages' to be an array")
        return None

    def reply(self, chat: bool, model: str, plan: Plan, body: dict[str, Any]) -> Reply:
        n_predict = body.get("max_completion_tokens", body.get("max_tokens"))
        settings = generation_settings(body, n_predict, as_stops(body.get("stop")))
        return _OpenAIReply(chat, server_model(self.core), plan, Binder(self.slots, settings))

    def slot_hook(self, reply: Reply) -> Callable[[int], None] | None:
        return reply.binder.bind if isinstance(reply, _OpenAIReply) else None

    def stream_options(self) -> dict[str, Any]:
        return {"headers": STREAM_HEADERS, "close_after": True}


class _OpenAIReply(Reply):
    """llama-server's `/v1` bodies and chunks: no logprobs on chat choices, a
    `system_fingerprint`, usage with cache details and timings, no `"usage": null`."""

    def __init__(self, chat: bool, model: str, plan: Plan, binder: Binder) -> None:
        super().__init__(chat, model, plan)
        # /v1/completions ids are chatcmpl- too.
        self.id = "chatcmpl-" + "".join(secrets.choice(_ID_CHARS) for _ in range(32))
        self.completion_tokens = plan.n_predicted
        binder.plan = plan
        self.binder = binder
        self.started = time.perf_counter()
        self.chunk_object = self.object + (".chunk" if chat else "")

    def usage(self) -> dict[str, Any]:
        return {**super().usage(), "prompt_tokens_details": {"cached_tokens": 0}}

    def _envelope(self, obj: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {**super()._envelope(obj, choices), "system_fingerprint": FINGERPRINT}

    def _choice(self, content: str | None, finish: str | None) -> dict[str, Any]:
        if not self.chat:
            return super()._choice(content, finish)
        delta = {} if content is None else {"content": content}
        return {"index": 0, "delta": delta, "finish_reason": finish}

    def whole(self) -> dict[str, Any]:
        if self.chat:
            message = {"role": "assistant", "content": self.plan.text}
            choice = {"index": 0, "message": message, "finish_reason": self.finish_reason}
            doc = {**self._envelope(self.object, [choice]), "usage": self.usage()}
        else:
            doc = super().whole()
        return {**doc, "timings": timings_of(self.plan, self.started)}

    def _chunk(self, choice: dict[str, Any], **extra: Any) -> bytes:
        return sse({**self._envelope(self.chunk_object, [choice]), **extra})

    def head(self) -> list[bytes]:
        if not self.chat:
            return []
        role = {"role": "assistant", "content": None}
        return [self._chunk({"index": 0, "delta": role, "finish_reason": None})]

    def token_frames(self) -> Iterator[bytes]:
        """One chunk per token (as the native stream; chat leaves out those without
        text), the one completing a stop string with the timings."""
        plan = self.plan
        pieces = list(plan.released)
        if plan.finish == "eos":
            pieces.append(eos_text(plan))
        for i, text in enumerate(pieces):
            self.binder.decoded(i + 1)
            if self.chat and not text:
                continue
            extra = {}
            if plan.finish == "stop" and i == len(pieces) - 1:
                extra["timings"] = timings_of(plan, self.started)
            yield self._chunk(self._choice(text, None), **extra)

    def final_frames(self) -> list[bytes]:
        finish = self._choice(None, self.finish_reason)
        timings = timings_of(self.plan, self.started)
        if not self.chat:
            # Usage always comes with the finish chunk, asked for or not.
            frames = [self._chunk(finish, usage=self.usage(), timings=timings)]
        elif self.include_usage:
            usage = {**self._envelope(self.chunk_object, []), "usage": self.usage()}
            frames = [self._chunk(finish), sse({**usage, "timings": timings})]
        else:
            frames = [self._chunk(finish, timings=timings)]
        return [*frames, b"data: [DONE]\n\n"]
