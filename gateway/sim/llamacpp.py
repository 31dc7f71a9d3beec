"""llama.cpp `llama-server` (native `/completion` with SSE streams, `/embedding`,
`/health`, `/slots`, `/props`, `/metrics`, and its OpenAI-compatible `/v1` layer).

Modelled on a real llama-server, down to what surprises clients: it closes the
connection after every streamed answer although the headers say `Keep-Alive`, and after
every error status with `Connection: close`; `tokens_predicted` counts the tokens cut
from the text (a stop string's, the EOS token).
"""

from __future__ import annotations

import secrets
import string
import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any

from aiohttp import web

from gateway import jsonutil
from gateway.sim.base import (
    Core,
    Dialect,
    Plan,
    as_int,
    as_stops,
    body_of,
    json_response,
    received_of,
)
from gateway.sim.embed import (
    Item,
    llamacpp_items,
    on_slot,
    openai_items,
    to_base64,
    token_count,
    token_vectors,
)
from gateway.sim.embed import vector as embed_vector
from gateway.sim.openai import OpenAIDialect, Reply, phrase

_JSON = "application/json; charset=utf-8"
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    500: "server_error",
    501: "not_supported_error",
    503: "unavailable_error",
}
_ERROR_MESSAGES = {
    400: "Invalid request",
    401: "Invalid API Key",
    404: "File Not Found",
    500: "Internal server error",
    501: "This server does not support this feature",
    503: "Loading model",
}
_STOP_TYPES = {"length": "limit", "eos": "eos", "stop": "word"}
_PROMPT_MS_PER_TOKEN = 0.2
_PREDICT_MS_PER_TOKEN = 1.0
# Stream headers as llama-server sends them: `Keep-Alive`, yet it closes afterwards.
_STREAM_HEADERS = {"X-Accel-Buffering": "no", "Keep-Alive": "timeout=5, max=100"}
_N_CTX = 4096
_EOS_ID = 2  # Llama's </s>
_FIRST_WORD_ID = 259  # after <unk>, <s>, </s> and the 256 byte tokens
_VOCAB = 32000
_FINGERPRINT = "b0-unknown"  # a build without version information
_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|' + message['role'] + '|>' + message['content'] }}"
    "{% endfor %}"
)
_ID_CHARS = string.ascii_letters + string.digits
# nlohmann::json's words, which llama-server quotes in its 400s.
_EMPTY_INPUT = (
    "attempting to parse an empty input; check that your input string or stream "
    "contains the expected JSON"
)
_BAD_PROMPT = (
    '"prompt" elements must be a string, a list of tokens, a JSON object containing a '
    "prompt string, or a list of mixed strings & tokens."
)
_NO_PROMPT = "[json.exception.out_of_range.403] key 'prompt' not found"
_NO_EMBEDDINGS = "This server does not support embeddings. Start it with `--embeddings`"
_NO_INPUT = '"input" or "content" must be provided'
_EMPTY_CONTENT = '"input" must not be empty'
_POOLING_NONE = "Pooling type 'none' is not OAI compatible. Please use a different pooling type"
_BAD_ENCODING = "The format to return the embeddings in. Can be either float or base64"


def error_obj(status: int, message: str, type_: str | None = None) -> dict[str, Any]:
    type_ = type_ or _ERROR_TYPES.get(status, "server_error")
    return {"error": {"code": status, "message": message, "type": type_}}


def _error(status: int, message: str | None = None) -> web.Response:
    message = message or _ERROR_MESSAGES.get(status, phrase(status))
    return _closing(json_response(error_obj(status, message), status, _JSON))


def _closing(resp: web.Response) -> web.Response:
    # llama-server (cpp-httplib) answers every error status with `Connection: close`.
    resp.force_close()
    return resp


def _json_type(doc: Any) -> str:
    if doc is None:
        return "null"
    if isinstance(doc, bool):
        return "boolean"
    if isinstance(doc, int | float):
        return "number"
    if isinstance(doc, str):
        return "string"
    return "array" if isinstance(doc, list) else "object"


def json_error(raw: bytes) -> str:
    """llama-server's message for a body that is not a JSON object."""
    try:
        doc = jsonutil.loads(raw)
    except jsonutil.JSONDecodeError as exc:
        return "[json.exception.parse_error.101] " + _parse_error(raw, exc.pos)
    return f"[json.exception.type_error.304] cannot use at() with {_json_type(doc)}"


def _parse_error(raw: bytes, pos: int) -> str:
    """nlohmann::json's parse error: where, and the token it read up to the first
    character that broke it (a misspelt true/false/null is read as far as it matches)."""
    text = raw.decode("utf-8", "replace")
    if not text:
        return f"parse error at line 1, column 1: {_EMPTY_INPUT}"
    pos = min(pos, len(text))
    read = text[pos : pos + 1]
    for literal in ("true", "false", "null"):
        if read and literal.startswith(read):
            n = 1
            while n < len(literal) and text[pos + n : pos + n + 1] == literal[n]:
                n += 1
            read = text[pos : pos + n + 1]
            break
    line = text.count("\n", 0, pos) + 1
    column = pos - (text.rfind("\n", 0, pos) + 1) + max(len(read), 1)
    where = f"parse error at line {line}, column {column}: syntax error while parsing value"
    if not read:
        return f"{where} - unexpected end of input; expected '[', '{{', or a literal"
    return f"{where} - invalid literal; last read: '{read}'"


def _prompt_error(body: dict[str, Any]) -> str | None:
    if "prompt" not in body:
        return _NO_PROMPT
    prompt = body["prompt"]
    if isinstance(prompt, bool) or not isinstance(prompt, str | list | dict):
        return _BAD_PROMPT
    return None


def _token_id(token: str) -> int:
    """A stable vocabulary id for a word token."""
    return _FIRST_WORD_ID + zlib.crc32(token.encode()) % (_VOCAB - _FIRST_WORD_ID)


def _settings(body: dict[str, Any], n_predict: Any, stops: list[str]) -> dict[str, Any]:
    return {
        "n_predict": n_predict if isinstance(n_predict, int) else -1,
        "seed": 4294967295,
        "temperature": body.get("temperature", 0.8),
        "top_k": body.get("top_k", 40),
        "top_p": body.get("top_p", 0.95),
        "min_p": 0.05,
        "stop": stops,
        "stream": body.get("stream") is True,
        "cache_prompt": body.get("cache_prompt", True),
    }


def _timings(plan: Plan, started: float) -> dict[str, float | int]:
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


def _eos_text(plan: Plan) -> str:
    """Text still held back (a possible stop-string start) when EOS came: the EOS token
    releases it."""
    return plan.text[len("".join(plan.released)) :]


class _Slot:
    """One llama-server slot as `/slots` shows it: a never-used slot only says what it
    is; after a first task it also tells the last (or current) task."""

    def __init__(self, id_: int = 0) -> None:
        self.id = id_
        self.tasks = 0
        self.task: dict[str, Any] | None = None
        self.n_predict = -1
        self.decoded = 0

    def begin(self, plan: Plan, params: dict[str, Any]) -> None:
        self.tasks += 1
        self.n_predict = params["n_predict"]
        self.decoded = 0
        self.task = {
            "id_task": self.tasks,
            "n_prompt_tokens": plan.prompt_tokens,
            "n_prompt_tokens_cache": 0,
            "params": params,
        }

    def view(self, busy: bool) -> dict[str, Any]:
        slot: dict[str, Any] = {
            "id": self.id,
            "n_ctx": _N_CTX,
            "speculative": False,
            "is_processing": busy,
        }
        if self.task is None:
            return slot
        remain = self.n_predict - self.decoded if busy and self.n_predict >= 0 else -1
        return {
            **slot,
            **self.task,
            "n_prompt_tokens_processed": self.task["n_prompt_tokens"] if busy else 0,
            "next_token": [
                {
                    "has_next_token": busy,
                    "has_new_line": False,
                    "n_remain": remain,
                    "n_decoded": self.decoded if busy else 0,
                }
            ],
        }


class Embeddings:
    """How the server was started for embeddings; a test flips these. `enabled`:
    `--embeddings` given (otherwise every embeddings endpoint is 501). `pooling`: the
    `--pooling` type; "none" answers one vector per token natively and refuses /v1."""

    def __init__(self) -> None:
        self.enabled = True
        self.pooling = "mean"


class LlamaCppOpenAI(OpenAIDialect):
    """llama-server's OpenAI layer: serves its one model under any name (and answers
    with its own), llama.cpp's error objects and its own chunk shapes."""

    stream_type = "text/event-stream"
    json_type = _JSON
    close_on_error = True
    shortens = False  # llama-server ignores `dimensions`

    def __init__(self, core: Core, slots: list[_Slot], embeddings: Embeddings) -> None:
        super().__init__(core, owned_by="llamacpp", any_model=True)
        self.slots = slots
        self.embedding_setup = embeddings

    def check_embeddings(self, body: dict[str, Any]) -> web.Response | None:
        if not self.embedding_setup.enabled:
            return self.error(501, _NO_EMBEDDINGS)
        if self.embedding_setup.pooling == "none":
            return self.error(400, _POOLING_NONE)
        value = self.embedding_input(body)
        if value is None:
            return self.error(400, _NO_INPUT)
        if value == []:
            return self.error(400, _EMPTY_CONTENT)
        if openai_items(value) is None:
            return self.error(400, _BAD_PROMPT)
        if body.get("encoding_format") not in (None, "float", "base64"):
            return self.error(400, _BAD_ENCODING)
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
            message = _prompt_error(body)
            return None if message is None else self.error(400, message)
        if "messages" not in body:
            return self.error(400, "'messages' is required")
        if not isinstance(body["messages"], list):
            return self.error(400, "Expected 'messages' to be an array")
        return None

    def reply(self, chat: bool, model: str, plan: Plan, body: dict[str, Any]) -> Reply:
        n_predict = body.get("max_completion_tokens", body.get("max_tokens"))
        settings = _settings(body, n_predict, as_stops(body.get("stop")))
        return _OpenAIReply(chat, server_model(self.core), plan, _Binder(self.slots, settings))

    def slot_hook(self, reply: Reply) -> Callable[[int], None] | None:
        return reply.binder.bind if isinstance(reply, _OpenAIReply) else None

    def stream_options(self) -> dict[str, Any]:
        return {"headers": _STREAM_HEADERS, "close_after": True}


class _Binder:
    """Ties a generation to the slot it is given once its wait is over (`bind` is the
    core's `on_slot`); until then the reply has no slot to report its progress to."""

    def __init__(self, slots: list[_Slot], settings: dict[str, Any]) -> None:
        self.slots = slots
        self.settings = settings
        self.plan: Plan | None = None
        self.slot: _Slot | None = None

    def bind(self, slot_id: int) -> None:
        self.slot = self.slots[slot_id]
        if self.plan is not None:
            self.slot.begin(self.plan, self.settings)

    def decoded(self, n: int) -> None:
        if self.slot is not None:
            self.slot.decoded = n

    @property
    def id_slot(self) -> int:
        return self.slot.id if self.slot is not None else -1


def server_model(core: Core) -> str:
    """The model llama-server names in its answers (its model path or alias), whatever
    the request says."""
    return core.models[0] if core.models else "model.gguf"


class LlamaCppDialect(Dialect):
    # llama-server answers these without an API key.
    public_paths = frozenset({"/health", "/v1/health", "/models", "/v1/models"})

    def __init__(self, core: Core) -> None:
        super().__init__(core)
        # Without a slot limit the fake shows one slot, busy while anything generates.
        self.slots = [_Slot(i) for i in range(core.pool.size or 1)]
        self.embeddings = Embeddings()
        self.openai = LlamaCppOpenAI(core, self.slots, self.embeddings)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/health", self.health),
            web.get("/v1/health", self.health),
            web.get("/slots", self.slot_list),
            web.get("/props", self.props),
            web.get("/metrics", self.metrics),
            web.post("/completion", self.completion),
            web.post("/completions", self.completion),
            web.post("/embedding", self.embedding),
            web.post("/embeddings", self.embedding),
            web.post("/chat/completions", self.openai.chat),
            *self.openai.routes(),
        ]

    def status_error(self, status: int, model: str) -> web.Response:
        return _error(status)

    def unauthorized(self) -> web.Response:
        return _error(401)

    def unavailable(self) -> web.Response | None:
        return _error(503) if self.core.behaviour.loading else None

    # -- informational GETs -----------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        return self.unavailable() or json_response({"status": "ok"}, 200, _JSON)

    def _busy(self, slot: _Slot) -> bool:
        pool = self.core.pool
        return slot.id in pool.busy_ids if pool.size is not None else pool.active > 0

    async def slot_list(self, request: web.Request) -> web.Response:
        return json_response([slot.view(self._busy(slot)) for slot in self.slots], 200, _JSON)

    async def props(self, request: web.Request) -> web.Response:
        model = server_model(self.core)
        return json_response(
            {
                "default_generation_settings": {
                    "params": _settings({}, -1, []),
                    "n_ctx": _N_CTX,
                },
                "total_slots": len(self.slots),
                "model_alias": model,
                "model_path": model,
                "modalities": {"vision": False, "audio": False},
                "endpoint_slots": True,
                "endpoint_props": True,
                "endpoint_metrics": True,
                "is_sleeping": False,
                "chat_template": _CHAT_TEMPLATE,
                "bos_token": "<s>",
                "eos_token": "</s>",
                "build_info": _FINGERPRINT,
            },
            200,
            _JSON,
        )

    async def metrics(self, request: web.Request) -> web.Response:
        core = self.core
        series = [
            (
                "prompt_tokens_total",
                "counter",
                "Number of prompt tokens processed.",
                core.prompt_tokens_total,
            ),
            (
                "tokens_predicted_total",
                "counter",
                "Number of generation tokens processed.",
                core.predicted_tokens_total,
            ),
            ("requests_processing", "gauge", "Number of requests processing.", core.busy),
            ("requests_deferred", "gauge", "Number of requests deferred.", core.waiting),
        ]
        lines: list[str] = []
        for name, kind, help_, value in series:
            lines += [
                f"# HELP llamacpp:{name} {help_}",
                f"# TYPE llamacpp:{name} {kind}",
                f"llamacpp:{name} {value}",
            ]
        return web.Response(
            text="\n".join(lines) + "\n", headers={"Content-Type": "text/plain; version=0.0.4"}
        )

    # -- generation -------------------------------------------------------------------

    async def completion(self, request: web.Request) -> web.StreamResponse:
        body = body_of(request)
        if body is None:
            return _error(400, json_error(received_of(request).body))
        message = _prompt_error(body)
        if message is not None:
            return _error(400, message)
        n_predict = body.get("n_predict", body.get("max_tokens"))
        stops = as_stops(body.get("stop"))
        plan = self.core.plan(body, as_int(n_predict), stops)
        settings = _settings(body, n_predict, stops)
        binder = _Binder(self.slots, settings)
        binder.plan = plan
        prompt = body["prompt"] if isinstance(body["prompt"], str) else ""
        reply = _Reply(server_model(self.core), plan, settings, prompt, binder)
        if not settings["stream"]:
            await self.core.generate(plan, on_slot=binder.bind)
            return json_response(reply.final(plan.text), 200, _JSON)
        return await self.core.stream(
            request,
            "text/event-stream",
            tokens=reply.events(),
            final=reply.final_events,
            error=_sse(error_obj(500, "llama_decode failed")),
            plan=plan,
            headers=_STREAM_HEADERS,
            close_after=True,
            on_slot=binder.bind,
        )

    async def embedding(self, request: web.Request) -> web.Response:
        """Native `/embedding`: `[{"index":i,"embedding":[[…]]}]`, one row per input when
        pooled, one per token with pooling none; no token counts."""
        if not self.embeddings.enabled:
            return _error(501, _NO_EMBEDDINGS)
        body = body_of(request)
        if body is None:
            return _error(400, json_error(received_of(request).body))
        value = body.get("input", body.get("content"))
        if value is None:
            return _error(400, _NO_INPUT)
        if value == []:
            return _error(400, _EMPTY_CONTENT)
        items = llamacpp_items(value)
        if items is None:
            return _error(400, _BAD_PROMPT)
        per_token = self.embeddings.pooling == "none"
        async with on_slot(self.core):
            data = [
                {"index": i, "embedding": token_vectors(it) if per_token else [embed_vector(it)]}
                for i, it in enumerate(items)
            ]
        return json_response(data, 200, _JSON)


def _sse(obj: Any) -> bytes:
    return b"data: " + jsonutil.dumps(obj) + b"\n\n"


class _Reply:
    """The native `/completion` answer: one event per generated token (EOS included)
    with its id, then the final event."""

    def __init__(
        self, model: str, plan: Plan, settings: dict[str, Any], prompt: str, binder: _Binder
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
            "timings": _timings(plan, self.started),
        }

    def events(self) -> Iterator[bytes]:
        plan = self.plan
        pieces = [
            (_token_id(tok), text) for tok, text in zip(plan.generated, plan.released, strict=True)
        ]
        if plan.finish == "eos":
            pieces.append((_EOS_ID, _eos_text(plan)))
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
                event["timings"] = _timings(plan, self.started)
            yield _sse(event)

    def final_events(self) -> list[bytes]:
        return [_sse(self.final(""))]


class _OpenAIReply(Reply):
    """llama-server's `/v1` bodies and chunks: no logprobs on chat choices, a
    `system_fingerprint`, usage with cache details and timings, no `"usage": null`."""

    def __init__(self, chat: bool, model: str, plan: Plan, binder: _Binder) -> None:
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
        return {**super()._envelope(obj, choices), "system_fingerprint": _FINGERPRINT}

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
        return {**doc, "timings": _timings(self.plan, self.started)}

    def _chunk(self, choice: dict[str, Any], **extra: Any) -> bytes:
        return _sse({**self._envelope(self.chunk_object, [choice]), **extra})

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
            pieces.append(_eos_text(plan))
        for i, text in enumerate(pieces):
            self.binder.decoded(i + 1)
            if self.chat and not text:
                continue
            extra = {}
            if plan.finish == "stop" and i == len(pieces) - 1:
                extra["timings"] = _timings(plan, self.started)
            yield self._chunk(self._choice(text, None), **extra)

    def final_frames(self) -> list[bytes]:
        finish = self._choice(None, self.finish_reason)
        timings = _timings(self.plan, self.started)
        if not self.chat:
            # Usage always comes with the finish chunk, asked for or not.
            frames = [self._chunk(finish, usage=self.usage(), timings=timings)]
        elif self.include_usage:
            usage = {**self._envelope(self.chunk_object, []), "usage": self.usage()}
            frames = [self._chunk(finish), _sse({**usage, "timings": timings})]
        else:
            frames = [self._chunk(finish, timings=timings)]
        return [*frames, b"data: [DONE]\n\n"]
