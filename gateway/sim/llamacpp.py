"""llama.cpp `llama-server` (native `/completion` with SSE streams, `/health`, `/slots`,
`/metrics`, and its OpenAI-compatible `/v1` layer)."""

from __future__ import annotations

import time
from collections.abc import Iterator
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
from gateway.sim.openai import OpenAIDialect, phrase

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


def error_obj(status: int, message: str, type_: str | None = None) -> dict[str, Any]:
    type_ = type_ or _ERROR_TYPES.get(status, "server_error")
    return {"error": {"code": status, "message": message, "type": type_}}


def _error(status: int, message: str | None = None) -> web.Response:
    message = message or _ERROR_MESSAGES.get(status, phrase(status))
    return json_response(error_obj(status, message), status, _JSON)


class LlamaCppOpenAI(OpenAIDialect):
    """llama-server's OpenAI layer: any model name, llama.cpp's error objects."""

    def error_obj(
        self,
        status: int,
        message: str,
        type_: str,
        param: str | None = None,
        code: str | None = None,
    ) -> dict[str, Any]:
        return error_obj(status, message, type_)


class LlamaCppDialect(Dialect):
    # llama-server answers these without an API key.
    public_paths = frozenset({"/health", "/v1/health", "/models", "/v1/models"})

    def __init__(self, core: Core) -> None:
        super().__init__(core)
        self.openai = LlamaCppOpenAI(core, owned_by="llamacpp", any_model=True)
        self.tasks = 0

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/health", self.health),
            web.get("/v1/health", self.health),
            web.get("/slots", self.slots),
            web.get("/metrics", self.metrics),
            web.post("/completion", self.completion),
            web.post("/completions", self.completion),
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

    async def slots(self, request: web.Request) -> web.Response:
        busy = self.core.busy > 0
        slot = {
            "id": 0,
            "id_task": self.tasks if busy else -1,
            "n_ctx": 4096,
            "speculative": False,
            "is_processing": busy,
            "params": {"n_predict": -1, "temperature": 0.8, "top_k": 40, "top_p": 0.95},
            "prompt": "",
            "next_token": {
                "has_next_token": busy,
                "n_remain": -1,
                "n_decoded": 0,
                "stopping_word": "",
            },
        }
        return json_response([slot], 200, _JSON)

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
            ("requests_deferred", "gauge", "Number of requests deferred.", 0),
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
            # nlohmann::json's exception text, surfaced by llama-server as a 500.
            raw = received_of(request).body[:1].decode("latin-1")
            return _error(
                500,
                "[json.exception.parse_error.101] parse error at line 1, "
                f"column 1: syntax error while parsing value - invalid literal; "
                f"last read: '{raw}'",
            )
        if body.get("prompt") is None:
            return _error(400, '"prompt" must be provided')
        n_predict = body.get("n_predict", body.get("max_tokens"))
        stops = as_stops(body.get("stop"))
        plan = self.core.plan(body, as_int(n_predict), stops)
        self.tasks += 1
        stream = body.get("stream") is True
        settings = {
            "n_predict": n_predict if isinstance(n_predict, int) else -1,
            "seed": 4294967295,
            "temperature": body.get("temperature", 0.8),
            "top_k": body.get("top_k", 40),
            "top_p": body.get("top_p", 0.95),
            "min_p": 0.05,
            "stop": stops,
            "stream": stream,
            "cache_prompt": body.get("cache_prompt", True),
        }
        prompt = body["prompt"] if isinstance(body["prompt"], str) else ""
        reply = _Reply(self._model(), plan, settings, prompt)
        if not stream:
            await self.core.generate(plan)
            return json_response(reply.final(plan.text), 200, _JSON)
        return await self.core.stream(
            request,
            "text/event-stream",
            tokens=reply.events(),
            final=reply.final_events,
            error=_sse(error_obj(500, "llama_decode failed")),
            plan=plan,
        )

    def _model(self) -> str:
        # The native endpoint reports the server's own model, whatever the request says.
        return self.core.models[0] if self.core.models else "model.gguf"


def _sse(obj: Any) -> bytes:
    return b"data: " + jsonutil.dumps(obj) + b"\n\n"


class _Reply:
    def __init__(self, model: str, plan: Plan, settings: dict[str, Any], prompt: str) -> None:
        self.model = model
        self.plan = plan
        self.settings = settings
        self.prompt = prompt
        self.started = time.perf_counter()

    def _timings(self) -> dict[str, float | int]:
        p, n = self.plan.prompt_tokens, self.plan.n
        prompt_ms = p * _PROMPT_MS_PER_TOKEN
        predicted_ms = max((time.perf_counter() - self.started) * 1000, n * _PREDICT_MS_PER_TOKEN)
        return {
            "prompt_n": p,
            "prompt_ms": prompt_ms,
            "prompt_per_token_ms": prompt_ms / p if p else 0.0,
            "prompt_per_second": p * 1000 / prompt_ms if prompt_ms else 0.0,
            "predicted_n": n,
            "predicted_ms": predicted_ms,
            "predicted_per_token_ms": predicted_ms / n if n else 0.0,
            "predicted_per_second": n * 1000 / predicted_ms if predicted_ms else 0.0,
        }

    def final(self, content: str) -> dict[str, Any]:
        plan = self.plan
        return {
            "index": 0,
            "content": content,
            "tokens": [],
            "id_slot": 0,
            "stop": True,
            "model": self.model,
            "tokens_predicted": plan.n,
            "tokens_evaluated": plan.prompt_tokens,
            "generation_settings": self.settings,
            "prompt": self.prompt,
            "has_new_line": "\n" in plan.text,
            "truncated": False,
            "stop_type": _STOP_TYPES[plan.finish],
            "stopping_word": plan.stop_word,
            "tokens_cached": plan.prompt_tokens + plan.n,
            "timings": self._timings(),
        }

    def events(self) -> Iterator[bytes]:
        for i, tok in enumerate(self.plan.tokens):
            yield _sse(
                {
                    "index": 0,
                    "content": tok,
                    "tokens": [],
                    "stop": False,
                    "id_slot": 0,
                    "tokens_predicted": i + 1,
                    "tokens_evaluated": self.plan.prompt_tokens,
                }
            )

    def final_events(self) -> list[bytes]:
        return [_sse(self.final(""))]
