"""Gateway-made errors: their exact texts, and the one place their bytes are built.

Every error body is `{"error":{"message":...}}` (OpenAI clients read `error.message`);
a stream that fails after it started ends with the same object as one SSE event.
Pure (no aiohttp), so adapters build their in-band error events here too.
"""

from __future__ import annotations

from collections.abc import Mapping

from .jsonutil import dumps

NO_ROUTE = "no route matched"
BODY_TOO_LARGE = "request body is too large"
NO_PROMPTS = "request body doesn't contain valid prompts"
NO_INPUT = (
    "request body doesn't contain valid input: 'input' must be a non-empty string "
    "or a non-empty list of them (or of token ids)"
)
MULTIPLE_FORMATS = "request matches multiple LLM request formats"
NO_MODEL = "model parameter not found in request, nor in gateway configuration"
STREAMING_DISABLED = "response streaming is not enabled for this LLM"
INTERNAL = "internal gateway error"
SHUTDOWN = "gateway is shutting down"
UNREADABLE_FRAME = "transformation failed: unreadable upstream frame"


def method_not_allowed(method: str) -> str:
    return f"method {method} is not allowed here"


def incompatible_format(request_type: str, route_type: str) -> str:
    return f"[{request_type}] message format is not compatible with [{route_type}] route type"


def own_model(names: list[str]) -> str:
    if len(names) == 1:
        return f"cannot use own model - must be: {names[0]}"
    return f"cannot use own model - must be one of: {', '.join(names)}"


def transforming_to(route_type: str, fmt: str, reason: str = "") -> str:
    """Kong's text, then (ours) why: the field and what to do instead."""
    text = f"error transforming to llama2://{route_type}/{fmt}"
    return f"{text}: {reason}" if reason else text


def transformation_failed(route_type: str, reason: str) -> str:
    return f"transformation failed from type llama2://{route_type}: {reason}"


def upstream_unavailable(target: str) -> str:
    return f"upstream unavailable: {target}"


def upstream_timed_out(target: str) -> str:
    return f"upstream timed out: {target}"


def no_healthy_targets(route: str) -> str:
    return f"no healthy targets for route {route}"


def queue_full(route: str, queued: bool) -> str:
    if queued:
        return f"route {route}: every target is at capacity and the queue is full"
    return f"route {route}: every target is at capacity"


def queue_timeout(route: str, timeout_ms: int) -> str:
    return f"route {route}: no target had a free slot within {timeout_ms} ms"


def bad_priority(header: str, lo: int, hi: int) -> str:
    return f"{header} must be an integer from {lo} to {hi}"


class GatewayError(Exception):
    """Raised inside the pipeline to answer with a gateway-made error."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def error_body(message: str) -> bytes:
    """A non-stream error answer's body."""
    return b'{"error":{"message":' + dumps(message) + b"}}"


def error_event(message: str) -> bytes:
    """The SSE event that ends a stream which failed after it started (no [DONE])."""
    return b"data: " + error_body(message) + b"\n\n"
