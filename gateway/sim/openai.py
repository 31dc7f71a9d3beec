"""OpenAI API (`/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`, `/v1/models`).

Also mounted by the llama.cpp and Ollama fakes, whose real servers expose the same
OpenAI-compatible layer; they differ only in error shape and model checking.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from http import HTTPStatus
from typing import Any

from aiohttp import web

from gateway import jsonutil
from gateway.sim.base import Core, Dialect
from gateway.sim.embed import DIM, Item, on_slot, openai_items, shorten, to_base64, token_count
from gateway.sim.embed import vector as embed_vector
from gateway.sim.tokens import Plan, as_int, as_stops
from gateway.sim.wire import body_of, json_response

_BAD_JSON = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
    "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
    "sent was not valid JSON.)"
)
_SERVER_ERROR = "The server had an error while processing your request. Sorry about that!"
# status -> (message, type, code) as api.openai.com words them; {model} is filled in.
_STATUS_ERRORS: dict[int, tuple[str, str, str | None]] = {
    400: ("Invalid request.", "invalid_request_error", None),
    401: ("Incorrect API key provided", "invalid_request_error", "invalid_api_key"),
    404: ("The model `{model}` does not exist", "invalid_request_error", "model_not_found"),
    429: ("Rate limit reached for requests", "requests", "rate_limit_exceeded"),
    500: (_SERVER_ERROR, "server_error", None),
    503: ("The engine is currently overloaded, please try again later.", "server_error", None),
}


def sse(obj: Any) -> bytes:
    return b"data: " + jsonutil.dumps(obj) + b"\n\n"


def phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


class OpenAIDialect(Dialect):
    # llama-server's layer overrides these (and the hooks below) with its own wording.
    stream_type = "text/event-stream; charset=utf-8"
    json_type = "application/json"
    close_on_error = False  # answer errors with `Connection: close`

    def __init__(
        self,
        core: Core,
        *,
        owned_by: str = "openai",
        known: Callable[[str], bool] | None = None,
        any_model: bool = False,
        counts_cut_stop: bool = True,
    ) -> None:
        super().__init__(core)
        self.owned_by = owned_by
        # Whether completion_tokens counts the token that completed a stop string and
        # was cut from the text: vLLM cuts only the text, llama-cpp-python counts it
        # too; Ollama's layer reports its native eval_count.
        self.counts_cut_stop = counts_cut_stop
        # llama-server serves its one model under any name; OpenAI and Ollama check.
        self.any_model = any_model
        self.known = known if known is not None else (lambda m: m in core.models)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/chat/completions", self.chat),
            web.post("/v1/completions", self.completions),
            web.post("/v1/embeddings", self.embeddings),
            web.get("/v1/models", self.list_models),
        ]

    # -- error shapes (overridden by llama.cpp) ---------------------------------------

    def error_obj(
        self,
        status: int,
        message: str,
        type_: str,
        param: str | None = None,
        code: str | None = None,
    ) -> dict[str, Any]:
        return {"error": {"message": message, "type": type_, "param": param, "code": code}}

    def error(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> web.Response:
        resp = json_response(
            self.error_obj(status, message, type_, param, code), status, self.json_type
        )
        if self.close_on_error:
            resp.force_close()
        return resp

    def status_error(self, status: int, model: str) -> web.Response:
        default = (
            phrase(status),
            "server_error" if status >= 500 else "invalid_request_error",
            None,
        )
        message, type_, code = _STATUS_ERRORS.get(status, default)
        return self.error(status, message.format(model=model), type_, code=code)

    def unauthorized(self) -> web.Response:
        return self.status_error(401, "")

    # -- handlers ---------------------------------------------------------------------

    async def list_models(self, request: web.Request) -> web.Response:
        data = [
            {"id": m, "object": "model", "created": 1686935002, "owned_by": self.owned_by}
            for m in self.core.models
        ]
        return json_response({"object": "list", "data": data})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._complete(request, chat=True)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._complete(request, chat=False)

    async def _complete(self, request: web.Request, *, chat: bool) -> web.StreamResponse:
        body = body_of(request)
        if body is None:
            return self.bad_json(request, chat)
        model = body.get("model")
        if not isinstance(model, str) or not model:
            if not self.any_model:
                return self.error(400, "you must provide a model parameter")
            model = self.model_of(request)
        elif not self.any_model and not self.known(model):
            return self.status_error(404, model)
        refusal = self.check(body, chat)
        if refusal is not None:
            return refusal
        cap = as_int(body.get("max_completion_tokens"))
        plan = self.core.plan(
            body,
            cap if cap is not None else as_int(body.get("max_tokens")),
            as_stops(body.get("stop")),
        )
        options = body.get("stream_options")
        reply = self.reply(chat, model, plan, body)
        reply.include_usage = isinstance(options, dict) and options.get("include_usage") is True
        on_slot = self.slot_hook(reply)
        if body.get("stream") is not True:
            await self.core.generate(plan, on_slot=on_slot)
            return json_response(reply.whole(), 200, self.json_type)
        return await self.core.stream(
            request,
            self.stream_type,
            head=reply.head(),
            tokens=reply.token_frames(),
            final=reply.final_frames,
            error=sse(self.error_obj(500, _SERVER_ERROR, "server_error")),
            plan=plan,
            on_slot=on_slot,
            **self.stream_options(),
        )

    async def embeddings(self, request: web.Request) -> web.Response:
        body = body_of(request)
        if body is None:
            return self.bad_json(request, False)
        model = body.get("model")
        if not isinstance(model, str) or not model:
            if not self.any_model:
                return self.error(400, "you must provide a model parameter")
            model = self.model_of(request)
        elif not self.any_model and not self.known(model):
            return self.status_error(404, model)
        refusal = self.check_embeddings(body)
        if refusal is not None:
            return refusal
        items = openai_items(self.embedding_input(body))
        assert items is not None  # checked above
        dimensions = body.get("dimensions")
        async with on_slot(self.core):
            vectors = [embed_vector(item) for item in items]
        if isinstance(dimensions, int) and self.shortens:
            vectors = [shorten(v, dimensions) for v in vectors]
        base64 = body.get("encoding_format") == "base64"
        answer = self.embedding_answer(model, items, vectors, base64)
        return json_response(answer, 200, self.json_type)

    # -- hooks (overridden by llama.cpp) ----------------------------------------------

    shortens = True  # honours `dimensions` (llama-server ignores it)

    def embedding_input(self, body: dict[str, Any]) -> Any:
        return body.get("input")

    def check_embeddings(self, body: dict[str, Any]) -> web.Response | None:
        """The refusal of an embeddings body, if it is one (OpenAI's wording)."""
        if body.get("input") is None:
            return self.error(
                400,
                "Missing required parameter: 'input'.",
                param="input",
                code="missing_required_parameter",
            )
        if openai_items(body["input"]) is None:
            return self.error(
                400,
                "Invalid type for 'input': expected a string, an array of strings, an array "
                "of integers or an array of integer arrays.",
                param="input",
                code="invalid_type",
            )
        fmt = body.get("encoding_format")
        if fmt is not None and fmt not in ("float", "base64"):
            return self.error(
                400,
                f"{fmt!r} is not one of ['float', 'base64'] - 'encoding_format'",
                param="encoding_format",
                code="invalid_value",
            )
        dimensions = body.get("dimensions")
        if dimensions is not None and not (
            isinstance(dimensions, int)
            and not isinstance(dimensions, bool)
            and 1 <= dimensions <= DIM
        ):
            return self.error(
                400,
                f"Invalid 'dimensions': must be an integer from 1 to {DIM}.",
                param="dimensions",
                code="invalid_value",
            )
        return None

    def embedding_answer(
        self, model: str, items: list[Item], vectors: list[list[float]], base64: bool
    ) -> dict[str, Any]:
        n = sum(token_count(item) for item in items)
        data = [
            {"object": "embedding", "index": i, "embedding": to_base64(v) if base64 else v}
            for i, v in enumerate(vectors)
        ]
        return {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": n, "total_tokens": n},
        }

    def bad_json(self, request: web.Request, chat: bool) -> web.Response:
        return self.error(400, _BAD_JSON)

    def check(self, body: dict[str, Any], chat: bool) -> web.Response | None:
        """The refusal of a body without usable messages/prompt, if it is one."""
        field = "messages" if chat else "prompt"
        if body.get(field) is None:
            return self.error(
                400,
                f"Missing required parameter: '{field}'.",
                param=field,
                code="missing_required_parameter",
            )
        if chat and not isinstance(body["messages"], list):
            return self.error(
                400,
                "Invalid type for 'messages': expected an array.",
                param="messages",
                code="invalid_type",
            )
        return None

    def reply(self, chat: bool, model: str, plan: Plan, body: dict[str, Any]) -> Reply:
        reply = Reply(chat, model, plan)
        reply.completion_tokens = plan.n_generated if self.counts_cut_stop else plan.n
        return reply

    def slot_hook(self, reply: Reply) -> Callable[[int], None] | None:
        """What learns the slot the generation gets, once it has one (llama.cpp's)."""
        return None

    def stream_options(self) -> dict[str, Any]:
        """Extra arguments of `Core.stream` (headers, closing the connection)."""
        return {}


class Reply:
    """Bodies and chunks of one completion, chat or legacy text."""

    def __init__(self, chat: bool, model: str, plan: Plan) -> None:
        self.chat = chat
        self.model = model
        self.plan = plan
        self.include_usage = False
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        self.object = "chat.completion" if chat else "text_completion"
        self.created = int(time.time())
        self.finish_reason = "length" if plan.finish == "length" else "stop"
        self.completion_tokens = plan.n_generated

    def usage(self) -> dict[str, Any]:
        p, c = self.plan.prompt_tokens, self.completion_tokens
        return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}

    def _envelope(self, obj: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": obj,
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }

    def _choice(self, content: str | None, finish: str | None) -> dict[str, Any]:
        if self.chat:
            delta = {} if content is None else {"content": content}
            return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {"text": content or "", "index": 0, "logprobs": None, "finish_reason": finish}

    def whole(self) -> dict[str, Any]:
        if self.chat:
            choice: dict[str, Any] = {
                "index": 0,
                "message": {"role": "assistant", "content": self.plan.text, "refusal": None},
                "logprobs": None,
                "finish_reason": self.finish_reason,
            }
        else:
            choice = {
                "text": self.plan.text,
                "index": 0,
                "logprobs": None,
                "finish_reason": self.finish_reason,
            }
        return {**self._envelope(self.object, [choice]), "usage": self.usage()}

    def _chunk(self, choice: dict[str, Any]) -> bytes:
        obj = self._envelope(self.object + ("" if not self.chat else ".chunk"), [choice])
        if self.include_usage:
            # With include_usage, OpenAI puts "usage": null on every chunk but the last.
            obj["usage"] = None
        return sse(obj)

    def head(self) -> list[bytes]:
        if not self.chat:
            return []
        role = {
            "index": 0,
            "delta": {"role": "assistant", "content": ""},
            "logprobs": None,
            "finish_reason": None,
        }
        return [self._chunk(role)]

    def token_frames(self) -> Iterator[bytes]:
        for tok in self.plan.tokens:
            yield self._chunk(self._choice(tok, None))

    def final_frames(self) -> list[bytes]:
        frames = [self._chunk(self._choice(None, self.finish_reason))]
        if self.include_usage:
            obj = self._envelope(self.object + (".chunk" if self.chat else ""), [])
            frames.append(sse({**obj, "usage": self.usage()}))
        frames.append(b"data: [DONE]\n\n")
        return frames
