"""Ollama (`/api/chat`, `/api/generate`, NDJSON streams, `/api/embed` and the older
`/api/embeddings`, plus its `/v1` OpenAI layer)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from gateway import jsonutil
from gateway.sim.base import Core, Dialect
from gateway.sim.embed import Item, on_slot, shorten, token_count
from gateway.sim.embed import vector as embed_vector
from gateway.sim.openai import OpenAIDialect, Reply, phrase
from gateway.sim.tokens import Plan, as_int, as_stops
from gateway.sim.wire import body_of, json_response, received_of

_JSON = "application/json; charset=utf-8"
_NDJSON = "application/x-ndjson"
# Fixed fake costs so durations are plausible and non-zero.
_LOAD_NS = 2_000_000
_PROMPT_NS_PER_TOKEN = 200_000
_EVAL_NS_PER_TOKEN = 1_000_000
_STATUS_MESSAGES = {
    400: "invalid request",
    401: "unauthorized",
    404: "model '{model}' not found",
    500: "llama runner process has terminated: exit status 2",
    503: "server busy, please try again.  maximum pending requests exceeded",
}
_MIDSTREAM_ERROR = "an error was encountered while running the model: unexpected EOF"


def created_at() -> str:
    # Go's time.Time JSON form as Ollama prints it (microseconds, Z).
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _error(status: int, message: str) -> web.Response:
    return json_response({"error": message}, status, _JSON)


class _OllamaOpenAI(OpenAIDialect):
    """Ollama's `/v1` layer: the same scheduler behind it, so a generation loads its
    model too."""

    def __init__(self, dialect: OllamaDialect) -> None:
        super().__init__(
            dialect.core, owned_by="library", known=dialect.known, counts_cut_stop=False
        )
        self.ollama = dialect

    def reply(self, chat: bool, model: str, plan: Plan, body: dict[str, Any]) -> Reply:
        self.ollama.load(model)
        return super().reply(chat, model, plan, body)

    def embedding_answer(
        self, model: str, items: list[Item], vectors: list[list[float]], base64: bool
    ) -> dict[str, Any]:
        self.ollama.load(model)
        return super().embedding_answer(model, items, vectors, base64)


class OllamaDialect(Dialect):
    def __init__(self, core: Core) -> None:
        super().__init__(core)
        self.openai = _OllamaOpenAI(self)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/", self.root),
            web.get("/api/tags", self.tags),
            web.get("/api/ps", self.ps),
            web.get("/api/version", self.version),
            web.post("/api/chat", self.chat),
            web.post("/api/generate", self.generate),
            web.post("/api/embed", self.embed),
            web.post("/api/embeddings", self.embeddings_legacy),
            *self.openai.routes(),
        ]

    def known(self, model: str) -> bool:
        return self.installed(model) is not None

    def installed(self, model: str) -> str | None:
        """The installed model a requested name means: Ollama resolves a bare name to
        its ":latest" tag."""
        models = self.core.models
        for name in (model, f"{model}:latest", model.removesuffix(":latest")):
            if name in models:
                return name
        return None

    def load(self, model: str) -> None:
        name = self.installed(model)
        if name is not None and name not in self.core.loaded:
            self.core.loaded.append(name)

    def queue_full(self, request: web.Request) -> web.Response:
        message = _STATUS_MESSAGES[503]
        if request.path.startswith("/v1/"):
            # Ollama's OpenAI layer wraps every error; types other than 400/404 are
            # "api_error".
            return self.openai.error(503, message, "api_error")
        return _error(503, message)

    def status_error(self, status: int, model: str) -> web.Response:
        message = _STATUS_MESSAGES.get(status, phrase(status).lower())
        return _error(status, message.format(model=model))

    def unauthorized(self) -> web.Response:
        return _error(401, "unauthorized")

    # -- informational GETs -----------------------------------------------------------

    async def root(self, request: web.Request) -> web.Response:
        return web.Response(text="Ollama is running", content_type="text/plain")

    def _model_entry(self, name: str) -> dict[str, Any]:
        tagged = name if ":" in name else f"{name}:latest"
        return {
            "name": tagged,
            "model": tagged,
            "modified_at": "2024-01-15T08:13:38.876196Z",
            "size": 3_826_793_677,
            "digest": hashlib.sha256(tagged.encode()).hexdigest(),
            "details": {
                "parent_model": "",
                "format": "gguf",
                "family": "llama",
                "families": ["llama"],
                "parameter_size": "7B",
                "quantization_level": "Q4_0",
            },
        }

    async def tags(self, request: web.Request) -> web.Response:
        return json_response(
            {"models": [self._model_entry(m) for m in self.core.models]}, 200, _JSON
        )

    async def ps(self, request: web.Request) -> web.Response:
        loaded = [
            {**self._model_entry(m), "expires_at": "2099-01-01T00:00:00Z", "size_vram": 0}
            for m in self.core.loaded
        ]
        for entry in loaded:
            del entry["modified_at"]
        return json_response({"models": loaded}, 200, _JSON)

    async def version(self, request: web.Request) -> web.Response:
        return json_response({"version": "0.5.7"}, 200, _JSON)

    # -- generation -------------------------------------------------------------------

    def _json_error(self, request: web.Request) -> str:
        # Go's encoding/json wording, which Ollama passes through.
        rec = received_of(request)
        raw = rec.body.lstrip()
        if not raw:
            return "missing request body"
        if rec.json is not None:
            kind = "array" if isinstance(rec.json, list) else type(rec.json).__name__
            return f"json: cannot unmarshal {kind} into Go value of type api.Request"
        return f"invalid character '{chr(raw[0])}' looking for beginning of value"

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._complete(request, chat=True)

    async def generate(self, request: web.Request) -> web.StreamResponse:
        return await self._complete(request, chat=False)

    async def _complete(self, request: web.Request, *, chat: bool) -> web.StreamResponse:
        body = body_of(request)
        if body is None:
            return _error(400, self._json_error(request))
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return _error(400, "model is required")
        if not self.known(model):
            return self.status_error(404, model)
        self.load(model)
        if not body.get("messages" if chat else "prompt"):
            # Ollama answers an empty conversation or prompt by just loading the model.
            return self._loaded(model, _content(chat, ""))
        options = body.get("options")
        options = options if isinstance(options, dict) else {}
        plan = self.core.plan(
            body, as_int(options.get("num_predict")), as_stops(options.get("stop"))
        )
        reply = _Reply(chat, model, plan)
        # Ollama's `stream` is a *bool: absent or null means stream.
        if body.get("stream") is False:
            await self.core.generate(plan)
            return json_response(reply.whole(), 200, _JSON)
        return await self.core.stream(
            request,
            _NDJSON,
            tokens=reply.lines(),
            final=reply.final_lines,
            error=jsonutil.dumps({"error": _MIDSTREAM_ERROR}) + b"\n",
            plan=plan,
        )

    # -- embeddings -------------------------------------------------------------------

    def _embed_model(self, request: web.Request) -> tuple[dict[str, Any], str] | web.Response:
        """The body and its installed model, or the error answer."""
        body = body_of(request)
        if body is None:
            return _error(400, self._json_error(request))
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return _error(400, "model is required")
        if not self.known(model):
            return self.status_error(404, model)
        self.load(model)
        return body, model

    async def embed(self, request: web.Request) -> web.Response:
        """`/api/embed`: unit vectors, `dimensions` shortens them; an empty input only
        loads the model; `prompt_eval_count` counts every input's tokens."""
        found = self._embed_model(request)
        if isinstance(found, web.Response):
            return found
        body, model = found
        value = body.get("input")
        items: list[Item]
        if isinstance(value, str):
            items = [value] if value else []
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            items = list(value)
        elif value is None:
            items = []
        else:
            return _error(400, "invalid input type")
        if not items:
            return json_response({"model": model, "embeddings": []}, 200, _JSON)
        started = time.perf_counter_ns()
        async with on_slot(self.core):
            vectors = [embed_vector(item) for item in items]
        dimensions = body.get("dimensions")
        if isinstance(dimensions, int):
            vectors = [shorten(v, dimensions) for v in vectors]
        n = sum(token_count(item) for item in items)
        answer = {
            "model": model,
            "embeddings": vectors,
            "total_duration": max(time.perf_counter_ns() - started, _LOAD_NS),
            "load_duration": _LOAD_NS,
            "prompt_eval_count": n,
        }
        return json_response(answer, 200, _JSON)

    async def embeddings_legacy(self, request: web.Request) -> web.Response:
        """`/api/embeddings` (deprecated): one `prompt`, its raw (not normalised) vector;
        an empty prompt only loads the model."""
        found = self._embed_model(request)
        if isinstance(found, web.Response):
            return found
        body, _ = found
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            return json_response({"embedding": []}, 200, _JSON)
        async with on_slot(self.core):
            vec = embed_vector(prompt, normalize=False)
        return json_response({"embedding": vec}, 200, _JSON)

    def _loaded(self, model: str, payload: dict[str, Any]) -> web.Response:
        return json_response(
            {
                "model": model,
                "created_at": created_at(),
                **payload,
                "done_reason": "load",
                "done": True,
            },
            200,
            _JSON,
        )


def _content(chat: bool, text: str) -> dict[str, Any]:
    if chat:
        return {"message": {"role": "assistant", "content": text}}
    return {"response": text}


class _Reply:
    def __init__(self, chat: bool, model: str, plan: Plan) -> None:
        self.chat = chat
        self.model = model
        self.plan = plan
        self.started = time.perf_counter_ns()

    def _stats(self) -> dict[str, Any]:
        p, n = self.plan.prompt_tokens, self.plan.n
        prompt_ns = p * _PROMPT_NS_PER_TOKEN
        eval_ns = n * _EVAL_NS_PER_TOKEN
        elapsed = time.perf_counter_ns() - self.started
        stats = {
            "total_duration": max(elapsed, _LOAD_NS + prompt_ns + eval_ns),
            "load_duration": _LOAD_NS,
            "prompt_eval_count": p,
            "prompt_eval_duration": prompt_ns,
            "eval_count": n,
            "eval_duration": eval_ns,
        }
        # Go's `omitempty`: Ollama leaves zero metrics out entirely.
        return {k: v for k, v in stats.items() if v}

    def _final(self, text: str) -> dict[str, Any]:
        done_reason = "length" if self.plan.finish == "length" else "stop"
        head = {"model": self.model, "created_at": created_at(), **_content(self.chat, text)}
        if self.chat:
            return {**head, "done_reason": done_reason, "done": True, **self._stats()}
        context = list(range(1, self.plan.prompt_tokens + self.plan.n + 1))
        return {
            **head,
            "done": True,
            "done_reason": done_reason,
            "context": context,
            **self._stats(),
        }

    def whole(self) -> dict[str, Any]:
        return self._final(self.plan.text)

    def lines(self) -> Iterator[bytes]:
        for tok in self.plan.tokens:
            line = {
                "model": self.model,
                "created_at": created_at(),
                **_content(self.chat, tok),
                "done": False,
            }
            yield jsonutil.dumps(line) + b"\n"

    def final_lines(self) -> list[bytes]:
        return [jsonutil.dumps(self._final("")) + b"\n"]
