"""What the gateway adds to answers: error responses (their bytes come from `errors`)
and the Kong and gateway response headers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING

from aiohttp import web

from .errors import error_body

# What a path resolves to (front doors register theirs by exact path).
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# The longest client `model` (characters) echoed in X-Kong-LLM-Model; a longer one is
# not echoed at all (a cut name would name no model). Only printable ones get this far.
MAX_MODEL_ECHO = 256

if TYPE_CHECKING:
    from .adapters.base import Call
    from .observe import RequestRecord
    from .routing import Route, Target


def error_response(
    status: int, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status, body=error_body(message), content_type="application/json", headers=headers
    )


def gateway_headers(target: Target, attempts: int) -> dict[str, str]:
    """On every answer that came from (or after) an attempt."""
    return {"X-Gateway-Target": target.name, "X-Gateway-Attempts": str(attempts)}


def success_headers(
    route: Route, target: Target, call: Call, rec: RequestRecord, sent_at: float, headers_at: float
) -> dict[str, str]:
    """On a proxied 200: Kong's latency headers (ms) and model header, and ours."""
    headers = {
        "X-Kong-Upstream-Latency": str(int((headers_at - sent_at) * 1000)),
        "X-Kong-Proxy-Latency": str(int((sent_at - rec.started) * 1000)),
        "X-Gateway-Target": target.name,
        "X-Gateway-Attempts": str(rec.attempts),
    }
    if route.cfg.model_name_header:
        if target.model_header is not None:
            headers["X-Kong-LLM-Model"] = target.model_header
        elif call.model is not None and len(call.model) <= MAX_MODEL_ECHO:
            headers["X-Kong-LLM-Model"] = f"llama2/{call.model}"
    if rec.extra_headers is not None:  # rate-limit headers of an admitted request
        headers.update(rec.extra_headers)
    return headers


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiohttp's own answers (404 unknown path, 405 wrong method) in the JSON error
    shape, for the status listeners (the proxy listener has no router to make them)."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return error_response(exc.status, exc.reason.lower(), headers)
