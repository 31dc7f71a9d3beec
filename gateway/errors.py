"""Gateway-made error answers and their exact texts (SPEC §3.1, §3.2).

Every error body is `{"error":{"message":...}}`: OpenAI clients read `error.message`.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from .jsonutil import dumps

NO_ROUTE = "no route matched"
BODY_TOO_LARGE = "request body is too large"
NO_PROMPTS = "request body doesn't contain valid prompts"
MULTIPLE_FORMATS = "request matches multiple LLM request formats"
NO_MODEL = "model parameter not found in request, nor in gateway configuration"
STREAMING_DISABLED = "response streaming is not enabled for this LLM"
INTERNAL = "internal gateway error"


def incompatible_format(request_type: str, route_type: str) -> str:
    return f"[{request_type}] message format is not compatible with [{route_type}] route type"


def own_model(names: list[str]) -> str:
    if len(names) == 1:
        return f"cannot use own model - must be: {names[0]}"
    return f"cannot use own model - must be one of: {', '.join(names)}"


def transforming_to(route_type: str, fmt: str) -> str:
    return f"error transforming to llama2://{route_type}/{fmt}"


def transformation_failed(route_type: str, reason: str) -> str:
    return f"transformation failed from type llama2://{route_type}: {reason}"


def upstream_unavailable(target: str) -> str:
    return f"upstream unavailable: {target}"


def upstream_timed_out(target: str) -> str:
    return f"upstream timed out: {target}"


def no_healthy_targets(route: str) -> str:
    return f"no healthy targets for route {route}"


class GatewayError(Exception):
    """Raised inside the pipeline to answer with a gateway-made error."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def error_body(message: str) -> bytes:
    return dumps({"error": {"message": message}})


def error_response(
    status: int, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status, body=error_body(message), content_type="application/json", headers=headers
    )
