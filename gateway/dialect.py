"""The client's dialect: how answers are shaped for the door a request came in by.

Adapters always produce OpenAI shapes; a `Dialect` decides what the client finally gets.
`Dialect` itself is OpenAI's (route paths and the OpenAI front door): answers as the
adapters made them, gateway errors as `{"error":{"message"}}`, and upstream error
bodies in another server's shape (Ollama's `{"error":"…"}`, TGI's `error_type`, an HTML
page) re-shaped to OpenAI's `{"error":{"message","type","code"}}`, status kept, so
`error.message` works in every OpenAI client. The Ollama front door subclasses it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .adapters.base import Call, Parsed, StreamDecoder
from .errors import error_body
from .jsonutil import JSONDecodeError, dumps, loads

if TYPE_CHECKING:
    from .observe import RequestRecord

JSON = "application/json"
# The longest upstream error text put into a re-shaped body (an HTML error page can be
# large; the whole raw body stays in the access log).
MAX_ERROR_TEXT = 2000
# OpenAI's error `type` by status class, for bodies that carry none.
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def error_type(status: int) -> str:
    return _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")


def upstream_error_text(body: bytes) -> tuple[str, Any, Any]:
    """The message of an upstream error body in any known shape, and the `type` and
    `code` it names (None when it names none)."""
    try:
        obj = loads(body) if body else None
    except JSONDecodeError:
        obj = None
    if isinstance(obj, dict):
        err = obj.get("error")
        if isinstance(err, dict):  # OpenAI / llama.cpp: {"error":{"message","type","code"}}
            message = err.get("message")
            text = message if isinstance(message, str) else dumps(err).decode()
            return text, err.get("type"), err.get("code")
        if isinstance(err, str):  # Ollama {"error"}; TGI / HF {"error","error_type"}
            return err, None, obj.get("error_type")
        detail = obj.get("detail") or obj.get("message")  # FastAPI-style servers
        if isinstance(detail, str):
            return detail, None, None
    text = body.decode("utf-8", "replace").strip()
    if len(text) > MAX_ERROR_TEXT:
        text = text[:MAX_ERROR_TEXT] + "…"
    return text, None, None


def _openai_shaped(body: bytes) -> bool:
    """Already `{"error":{"message": "…", …}}`: passed through byte for byte."""
    if not body.startswith(b"{"):
        return False
    try:
        obj = loads(body)
    except JSONDecodeError:
        return False
    err = obj.get("error") if isinstance(obj, dict) else None
    return isinstance(err, dict) and isinstance(err.get("message"), str)


class Dialect:
    """OpenAI's: the default for every route path and the OpenAI front door."""

    name = "openai"

    def error(
        self, status: int, message: str, headers: Mapping[str, str] | None = None
    ) -> web.Response:
        """A gateway-made error answer."""
        return web.Response(
            status=status, body=error_body(message), content_type=JSON, headers=headers
        )

    def upstream_error(self, status: int, body: bytes) -> tuple[bytes, bool]:
        """An upstream non-200 body as this dialect's clients read it, and whether it
        was re-shaped (then it is JSON, whatever the upstream's Content-Type said)."""
        if _openai_shaped(body):
            return body, False
        text, type_, code = upstream_error_text(body)
        if not text:
            text = f"upstream answered {status}"
        return dumps(
            {
                "error": {
                    "message": text,
                    "type": type_ if isinstance(type_, str) else error_type(status),
                    "code": code if isinstance(code, str | int) else None,
                }
            }
        ), True

    def answer(self, call: Call, parsed: Parsed, rec: RequestRecord) -> bytes:
        """A non-stream 200 body."""
        return parsed.body

    def stream(
        self, call: Call, decoder: StreamDecoder, rec: RequestRecord, clock: Callable[[], float]
    ) -> StreamDecoder:
        """The decoder whose events the client gets."""
        return decoder


OPENAI = Dialect()
