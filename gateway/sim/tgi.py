"""Hugging Face text-generation-inference (`/generate`, `/generate_stream`, the compat
route `/`, `/health`, `/info`), with the HF Inference API's 503 while loading."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from aiohttp import web

from gateway import jsonutil
from gateway.sim.base import Dialect
from gateway.sim.openai import phrase
from gateway.sim.tokens import Plan, as_int, as_stops
from gateway.sim.wire import json_response, received_of

_TEXT = "text/plain; charset=utf-8"
_FINISH = {"length": "length", "eos": "eos_token", "stop": "stop_sequence"}
# TGI's default when the request gives no max_new_tokens.
_DEFAULT_MAX_NEW_TOKENS = 100
_EOS = {"id": 2, "text": "</s>", "logprob": -0.01, "special": True}
_STATUS_ERRORS = {
    422: (
        "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096. "
        "Given: 4000 `inputs` tokens and 200 `max_new_tokens`",
        "validation",
    ),
    424: ("Request failed during generation: Server error: transport error", "generation"),
    429: ("Model is overloaded", "overloaded"),
    500: ("Incomplete generation", "incomplete_generation"),
}
_MIDSTREAM_ERROR = "Request failed during generation: Server error: CUDA out of memory"


def _error(status: int, message: str, error_type: str) -> web.Response:
    return json_response({"error": message, "error_type": error_type}, status)


def _rejection(status: int, message: str) -> web.Response:
    # axum's Json extractor answers malformed bodies in plain text, before TGI sees them.
    return web.Response(text=message, status=status, headers={"Content-Type": _TEXT})


def _sse(obj: Any) -> bytes:
    # TGI writes "data:" with no space after the colon (legal SSE, trips naive parsers).
    return b"data:" + jsonutil.dumps(obj) + b"\n\n"


def _token(i: int, text: str) -> dict[str, Any]:
    return {
        "id": 1000 + i,
        "text": text,
        "logprob": round(-0.05 * (1 + i % 5), 4),
        "special": False,
    }


class TGIDialect(Dialect):
    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/health", self.health),
            web.get("/info", self.info),
            web.post("/generate", self.generate),
            web.post("/generate_stream", self.generate_stream),
            web.post("/", self.compat),
        ]

    def status_error(self, status: int, model: str) -> web.Response:
        if status == 503:
            # What the HF Inference API (TGI behind it) says while the model loads.
            return json_response(
                {"error": f"Model {model} is currently loading", "estimated_time": 20.0}, 503
            )
        if status == 401:
            return self.unauthorized()
        default = (phrase(status), phrase(status).lower().replace(" ", "_"))
        return _error(status, *_STATUS_ERRORS.get(status, default))

    def unauthorized(self) -> web.Response:
        return json_response({"error": "unauthorized"}, 401)

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def info(self, request: web.Request) -> web.Response:
        model = self.core.models[0] if self.core.models else "meta-llama/Llama-2-7b-chat-hf"
        return json_response(
            {
                "model_id": model,
                "model_sha": None,
                "model_dtype": "torch.float16",
                "model_device_type": "cuda",
                "model_pipeline_tag": "text-generation",
                "max_concurrent_requests": 128,
                "max_best_of": 2,
                "max_stop_sequences": 4,
                "max_input_tokens": 4095,
                "max_total_tokens": 4096,
                "validation_workers": 2,
                "max_client_batch_size": 4,
                "router": "text-generation-router",
                "version": "2.0.4",
                "sha": None,
                "docker_label": None,
            }
        )

    # -- generation -------------------------------------------------------------------

    async def generate(self, request: web.Request) -> web.StreamResponse:
        parsed = self._parse(request)
        if isinstance(parsed, web.Response):
            return parsed
        await self.core.generate(parsed.plan)
        return json_response(parsed.whole())

    async def generate_stream(self, request: web.Request) -> web.StreamResponse:
        parsed = self._parse(request)
        if isinstance(parsed, web.Response):
            return parsed
        return await self._stream(request, parsed)

    async def compat(self, request: web.Request) -> web.StreamResponse:
        parsed = self._parse(request)
        if isinstance(parsed, web.Response):
            return parsed
        if parsed.body.get("stream") is True:
            return await self._stream(request, parsed)
        await self.core.generate(parsed.plan)
        return json_response([parsed.whole()])

    async def _stream(self, request: web.Request, reply: _Reply) -> web.StreamResponse:
        return await self.core.stream(
            request,
            "text/event-stream",
            tokens=reply.events(),
            final=reply.final_events,
            error=_sse({"error": _MIDSTREAM_ERROR, "error_type": "generation"}),
            plan=reply.plan,
        )

    def _parse(self, request: web.Request) -> _Reply | web.Response:
        if request.content_type != "application/json":
            return _rejection(415, "Expected request with `Content-Type: application/json`")
        rec = received_of(request)
        if rec.json is None:
            where = (
                "EOF while parsing a value at line 1 column 0"
                if not rec.body.strip()
                else "expected value at line 1 column 1"
            )
            return _rejection(400, f"Failed to parse the request body as JSON: {where}")
        body = rec.json
        bad = "Failed to deserialize the JSON body into the target type: "
        if not isinstance(body, dict):
            return _rejection(422, bad + "invalid type: expected struct GenerateRequest")
        inputs = body.get("inputs")
        if inputs is None:
            return _rejection(422, bad + "missing field `inputs`")
        params = body.get("parameters") if body.get("parameters") is not None else {}
        if not isinstance(inputs, str) or not isinstance(params, dict):
            return _rejection(422, bad + "invalid type")
        if not inputs:
            return _error(422, "Input validation error: `inputs` cannot be empty", "validation")
        max_new = params.get("max_new_tokens", _DEFAULT_MAX_NEW_TOKENS)
        max_new = _DEFAULT_MAX_NEW_TOKENS if max_new is None else max_new
        if not isinstance(max_new, int) or max_new <= 0:
            return _error(
                422,
                "Input validation error: `max_new_tokens` must be strictly positive",
                "validation",
            )
        plan = self.core.plan(body, as_int(max_new), as_stops(params.get("stop")), keep_stop=True)
        return _Reply(body, params, plan)


class _Reply:
    def __init__(self, body: dict[str, Any], params: dict[str, Any], plan: Plan) -> None:
        self.body = body
        self.plan = plan
        self.details = params.get("details") is True
        prefix = body["inputs"] if params.get("return_full_text") is True else ""
        self.generated_text = prefix + plan.text
        self.finish = _FINISH[plan.finish]
        # TGI generates the EOS token too: it is counted and streamed, never in the text.
        self.eos = plan.finish == "eos" or not plan.tokens
        self.generated_tokens = plan.n + (1 if self.eos else 0)

    def whole(self) -> dict[str, Any]:
        out: dict[str, Any] = {"generated_text": self.generated_text}
        if self.details:
            tokens = [_token(i, t) for i, t in enumerate(self.plan.tokens)]
            out["details"] = {
                "finish_reason": self.finish,
                "generated_tokens": self.generated_tokens,
                "seed": None,
                "prefill": [],
                "tokens": [*tokens, _EOS] if self.eos else tokens,
            }
        return out

    def _texts(self) -> list[str]:
        """Token texts streamed before the final event (which carries the last token)."""
        return self.plan.tokens if self.eos else self.plan.tokens[:-1]

    def events(self) -> Iterator[bytes]:
        for i, text in enumerate(self._texts()):
            yield _sse(
                {"index": i + 1, "token": _token(i, text), "generated_text": None, "details": None}
            )

    def final_events(self) -> list[bytes]:
        n = len(self._texts())
        token = _EOS if self.eos else _token(n, self.plan.tokens[-1])
        return [
            _sse(
                {
                    "index": n + 1,
                    "token": token,
                    "generated_text": self.generated_text,
                    "details": {
                        "finish_reason": self.finish,
                        "generated_tokens": self.generated_tokens,
                        "seed": None,
                    },
                }
            )
        ]
